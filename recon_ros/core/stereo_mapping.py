"""Color-only mapping: posed color images in, depth frames for TSDF fusion out.

:class:`StereoDepthFrames` takes posed color images one at a time. A frame becomes a keyframe
when the camera moved or turned enough since the last keyframe
(:class:`~recon_ros.core.keyframes.KeyframeSelector`, ``stereo.keyframe_*``); each keyframe,
once ``stereo.reference_delay`` newer keyframes exist, is a plane-sweep reference
(:class:`~recon_ros.core.plane_sweep.PlaneSweepStereo`) whose source views are the nearest
kept keyframes (older and newer) at least ``stereo.min_baseline_m`` away and turned at most
``stereo.max_source_rotation_deg``. Its depth map, with its own color, pose and stamp, is
returned as a :class:`~recon_ros.core.frame.Frame` that TSDF fusion integrates like a depth
camera's (:meth:`recon_ros.core.mapper.Mapper.integrate_color`). A keyframe with fewer than
``stereo.min_consistent_views`` usable source views yields no frame.

Conventions as in :mod:`recon_ros.core.frame`: ``T_world_cam`` (4, 4) is the pose of the color
camera's optical frame in the map, metres; depth is z in metres, 0 = no estimate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from .config import StereoConfig
from .errors import FrameError
from .frame import ArrayLike, Frame, PinholeCamera
from .keyframes import Keyframe, KeyframeSelector
from .plane_sweep import PlaneSweepStereo


@dataclass(frozen=True)
class ColorImage:
    """A keyframe's image.

    Attributes:
        color: (H, W, 3) uint8 RGB.
        camera: its intrinsics.
        stamp_ns: acquisition time, nanoseconds.
        frame_id: its optical frame's name.
    """

    color: ArrayLike
    camera: PinholeCamera
    stamp_ns: int
    frame_id: str


def check_color_image(color: ArrayLike, camera: PinholeCamera) -> None:
    """Raise :class:`FrameError` unless ``color`` is an (H, W, 3) uint8 image (numpy or torch)
    of ``camera``'s size."""
    if color.ndim != 3 or color.shape[2] != 3 or color.dtype not in (np.uint8, torch.uint8):
        raise FrameError(f"color must be (H, W, 3) uint8 RGB, got shape "
                         f"{tuple(color.shape)} dtype {color.dtype}")
    if tuple(color.shape[:2]) != (camera.height, camera.width):
        raise FrameError(f"color image is {color.shape[1]}x{color.shape[0]} but its camera "
                         f"model is {camera.width}x{camera.height}")


class StereoDepthFrames:
    """Depth frames from a stream of posed color images (see the module docstring).

    Args:
        config: the ``stereo`` config section.
        device: torch device of the stereo matching and of the returned depth maps.

    Attributes:
        frames_seen: images offered to :meth:`add`.
        keyframes: images kept as keyframes.
        depth_frames: depth frames returned.
        without_sources: keyframes that had too few source views for a depth map.
    """

    def __init__(self, config: StereoConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.stereo = PlaneSweepStereo(config.plane_sweep(), device)
        self.reset()

    def reset(self) -> None:
        """Forget every keyframe and count (the configuration is kept)."""
        c = self.config
        self.selector: KeyframeSelector[ColorImage] = KeyframeSelector(
            c.keyframe_translation_m, c.keyframe_rotation_deg, c.window)
        self._pending: deque[Keyframe[ColorImage]] = deque()
        self.frames_seen = self.keyframes = self.depth_frames = self.without_sources = 0

    def to(self, device: torch.device | str) -> None:
        """Run the stereo matching on ``device`` from now on."""
        self.stereo = PlaneSweepStereo(self.stereo.config, device)

    def add(self, color: ArrayLike, camera: PinholeCamera, T_world_cam: np.ndarray,
            stamp_ns: int, frame_id: str = "camera") -> Frame | None:
        """Offer the next posed color image.

        Args:
            color: (H, W, 3) uint8 RGB image (numpy or torch, any device).
            camera: its intrinsics (size must match).
            T_world_cam: (4, 4) pose of its optical frame in the map, metres.
            stamp_ns: acquisition time, nanoseconds.
            frame_id: its optical frame's name (copied into the frame).

        Returns:
            The depth frame of the keyframe whose turn came (this image's, or with
            ``reference_delay`` > 0 an earlier keyframe's), or None: not a keyframe, a keyframe
            waiting for newer ones, or one without enough source views.

        Raises:
            FrameError: a color image that is not (H, W, 3) uint8 of the camera's size, or a
                pose that is not a rigid transform.
        """
        check_color_image(color, camera)
        self.frames_seen += 1
        keyframe = self.selector.offer(T_world_cam,
                                       ColorImage(color, camera, int(stamp_ns), frame_id))
        if keyframe is None:
            return None
        self.keyframes += 1
        self._pending.append(keyframe)
        if len(self._pending) <= self.config.reference_delay:
            return None
        return self._depth_frame(self._pending.popleft())

    def finish(self) -> list[Frame]:
        """The depth frames of the keyframes still waiting for newer keyframes (end of the
        stream), oldest first; they use the source views available now."""
        frames = [self._depth_frame(keyframe) for keyframe in self._pending]
        self._pending.clear()
        return [frame for frame in frames if frame is not None]

    def _depth_frame(self, ref: Keyframe[ColorImage]) -> Frame | None:
        """The plane-sweep depth of keyframe ``ref`` as a frame, or None (too few sources)."""
        c = self.config
        sources = self.selector.sources(ref.T_world_cam, c.num_sources,
                                        min_baseline_m=c.min_baseline_m,
                                        max_rotation_deg=c.max_source_rotation_deg)
        if len(sources) < c.min_consistent_views:
            self.without_sources += 1
            return None
        image = ref.data
        depth, _ = self.stereo.depth(
            image.color, image.camera, ref.T_world_cam,
            [(s.data.color, s.data.camera, s.T_world_cam) for s in sources])
        self.depth_frames += 1
        return Frame(depth=depth, camera=image.camera, T_world_cam=ref.T_world_cam,
                     color=image.color, stamp_ns=image.stamp_ns, frame_id=image.frame_id)
