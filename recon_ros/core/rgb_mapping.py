"""Color-only mapping with a learned fragment model (``fusion.method: rgb``, issue 11).

:class:`RgbFragments` takes posed color images one at a time. Each image is resized to the
model's training resolution (``cv2.INTER_AREA``; the intrinsics follow by
:func:`~recon_ros.core.plane_sweep.scale_camera`). A resized image becomes a keyframe when the
camera moved ``rgb.keyframe_translation_m`` or turned ``rgb.keyframe_rotation_deg`` since the
last keyframe (:class:`~recon_ros.core.keyframes.KeyframeSelector`, which keeps the last
``views`` keyframes). Once ``views`` keyframes exist, and then every ``views -
rgb.fragment_overlap`` new keyframes, the kept keyframes form a *fragment*: the
:class:`FragmentModel` (an Atlas network, :mod:`recon_ros.models.atlas_mapping`) predicts the
TSDF of a voxel box in front of them. :func:`fuse_fragment` merges that TSDF over the voxels
the views saw into the map by the weighted average of :func:`~recon_ros.core.merge.merge_volume`,
each voxel with weight ``rgb.fragment_weight``. :meth:`RgbFragments.finish` predicts a last
fragment from the kept keyframes when some arrived after the last fragment.

The map's 2D grid and occupied voxels follow the merged TSDF like any other map's
(:mod:`recon_ros.core.occupancy`: cells with an occupied voxel in the band are occupied, cells
with an observed free voxel at or below ``occupancy.free_below_m`` free); there are no depth
rays, so nothing is carved beyond what the predicted TSDF says.

Conventions as in :mod:`recon_ros.core.frame`: ``T_world_cam`` (4, 4) is the pose of the color
camera's optical frame in the map (z up), metres; a voxel with global index ``g`` has its
centre at ``g * voxel_size_m`` (:class:`~recon_ros.core.volume.BlockVolume`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import torch

from .config import RgbConfig
from .errors import ConfigError
from .frame import ArrayLike, PinholeCamera
from .keyframes import Keyframe, KeyframeSelector
from .merge import merge_volume
from .plane_sweep import scale_camera
from .render_loss import dense_grid_volume
from .stereo_mapping import ColorImage, check_color_image
from .volume import BlockVolume

__all__ = ["FragmentGeometry", "FragmentModel", "FragmentTsdf", "RgbFragments",
           "fragment_volume", "fuse_fragment", "keyframe_colors"]


@dataclass(frozen=True)
class FragmentGeometry:
    """What a fragment model was trained for (read from its weights' metadata).

    Attributes:
        views: keyframes per training fragment.
        width, height: training image size, pixels.
        voxel_size_m: voxel edge of the training fragments, metres.
    """

    views: int
    width: int
    height: int
    voxel_size_m: float


@dataclass
class FragmentTsdf:
    """A fragment's predicted TSDF on a dense voxel box.

    Attributes:
        origin_index: global voxel index (3 ints) of the box's voxel ``(0, 0, 0)``.
        tsdf_m: (X, Y, Z) TSDF, metres, within the map's truncation, indexed ``[i, j, k]``.
        observed: (X, Y, Z) bool, voxels inside at least one view's frustum (the only ones
            fused).
        color: (X, Y, Z, 3) float RGB (0-255) of the observed voxels, or None (uncolored).
        keyframes: the keyframes of the fragment, oldest first (their images are resized to
            the training resolution).
        new_keyframes: how many of them no earlier fragment held.
    """

    origin_index: tuple[int, int, int]
    tsdf_m: torch.Tensor
    observed: torch.Tensor
    color: torch.Tensor | None = None
    keyframes: tuple[Keyframe[ColorImage], ...] = ()
    new_keyframes: int = 0

    @property
    def stamp_ns(self) -> int:
        """Stamp of the newest keyframe, nanoseconds."""
        return self.keyframes[-1].data.stamp_ns


class FragmentModel(Protocol):
    """A network that predicts a fragment's TSDF from its posed keyframes (the model boundary:
    :class:`~recon_ros.models.atlas_mapping.AtlasFragmentModel`)."""

    geometry: FragmentGeometry

    def predict(self, images: list[np.ndarray], cameras: list[PinholeCamera],
                poses: list[np.ndarray], floor_height_m: float, truncation_m: float
                ) -> FragmentTsdf:
        """The TSDF (metres, within ``+-truncation_m``) and observed voxels of the box the
        model places in front of the views: (H, W, 3) uint8 images of the training size,
        their intrinsics and (4, 4) ``T_world_cam``; the floor at map height
        ``floor_height_m``."""

    def to(self, device: torch.device | str) -> object:
        """Move the network to ``device``."""


def keyframe_colors(origin_index: tuple[int, int, int], dims: tuple[int, int, int],
                    voxel_size_m: float, keyframes: tuple[Keyframe[ColorImage], ...],
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean color of the keyframe pixels each voxel centre of a box projects to (nearest
    pixel, in front of the camera; occlusion is ignored).

    Args:
        origin_index: global voxel index of the box's voxel ``(0, 0, 0)``.
        dims: ``(X, Y, Z)`` voxels.
        voxel_size_m: voxel edge, metres.
        keyframes: views with (H, W, 3) uint8 images, their cameras and poses.
        device: torch device of the results.

    Returns:
        ``(color, count)``: (X, Y, Z, 3) float32 RGB (0 where no view), (X, Y, Z) float32
        number of views that colored each voxel.
    """
    axes = [(torch.arange(d, device=device, dtype=torch.float64) + o) * voxel_size_m
            for d, o in zip(dims, origin_index)]
    centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    total = torch.zeros(centres.shape[0], 3, dtype=torch.float32, device=device)
    count = torch.zeros(centres.shape[0], dtype=torch.float32, device=device)
    for kf in keyframes:
        cam = kf.data.camera
        T = torch.as_tensor(kf.T_world_cam, dtype=torch.float64, device=device)
        uv, z = cam.project(((centres - T[:3, 3]) @ T[:3, :3]).to(torch.float32))
        px = torch.round(uv).to(torch.int64)
        ok = ((z > 0.05) & (px[:, 0] >= 0) & (px[:, 0] < cam.width) & (px[:, 1] >= 0)
              & (px[:, 1] < cam.height))
        image = torch.as_tensor(np.asarray(kf.data.color), device=device).to(torch.float32)
        rgb = image[px[:, 1].clamp(0, cam.height - 1), px[:, 0].clamp(0, cam.width - 1)]
        total += torch.where(ok[:, None], rgb, 0.0)
        count += ok.to(torch.float32)
    color = total / count.clamp(min=1.0)[:, None]
    return color.reshape(*dims, 3), count.reshape(dims)


def fragment_volume(fragment: FragmentTsdf, voxel_size_m: float, truncation_m: float,
                    block_size: int, weight: float) -> BlockVolume:
    """The fragment as a block volume of the map's geometry: its observed voxels hold the
    TSDF (clamped to ``+-truncation_m``), weight ``weight`` and color (black if none); the
    others are unobserved, and blocks without an observed voxel are not kept.

    Args:
        fragment: the prediction (tensors on the map's device).
        voxel_size_m, truncation_m, block_size: the map's geometry.
        weight: per-voxel weight of the fragment (> 0).
    """
    observed = fragment.observed
    grid = dense_grid_volume(fragment.origin_index, observed, voxel_size_m, truncation_m,
                             block_size)
    vol = grid.volume
    seen = observed.reshape(-1)
    tsdf = fragment.tsdf_m.reshape(-1).to(vol.dtype).clamp(-truncation_m, truncation_m)
    vol.tsdf.view(-1)[grid.flat] = torch.where(seen, tsdf, truncation_m)
    vol.weight.view(-1)[grid.flat] = seen.to(vol.dtype) * weight
    if fragment.color is not None:
        color = fragment.color.reshape(-1, 3).to(vol.dtype)
        vol.color.view(-1, 3)[grid.flat] = torch.where(seen[:, None], color, 0.0)
    empty = torch.nonzero((vol.weight[:vol.num_blocks] == 0).all(dim=1)).squeeze(1)
    vol.release(empty)
    return vol


def fuse_fragment(volume: BlockVolume, fragment: FragmentTsdf, weight: float,
                  max_weight: float) -> int:
    """Merge a fragment into the map ``volume`` (:func:`fragment_volume`, then the weighted
    average of :func:`~recon_ros.core.merge.merge_volume`, weights capped at ``max_weight``;
    the merged blocks are logged as changed). Returns the number of blocks merged."""
    src = fragment_volume(fragment, volume.voxel_size_m, volume.truncation_m,
                          volume.block_size, weight)
    merge_volume(volume, src, max_weight)
    return src.num_blocks


class RgbFragments:
    """Fragments of keyframes from a stream of posed color images, their TSDF predicted by a
    :class:`FragmentModel` (see the module docstring).

    Args:
        config: the ``rgb`` config section.
        model: the fragment model; its :attr:`FragmentModel.geometry` sets the image size and
            (with ``rgb.views_per_fragment: 0``) the keyframes per fragment.
        truncation_m: the map's truncation, metres (predictions are clamped to it).
        device: torch device of the predictions' tensors.

    Attributes:
        views: keyframes per fragment.
        frames_seen: images offered to :meth:`add`.
        keyframes: images kept as keyframes.
        fragments: fragments predicted.

    Raises:
        ConfigError: ``rgb.fragment_overlap`` is not below the keyframes per fragment.
    """

    def __init__(self, config: RgbConfig, model: FragmentModel, truncation_m: float,
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.model = model
        self.truncation_m = float(truncation_m)
        self.device = torch.device(device)
        self.views = config.views_per_fragment or model.geometry.views
        if config.fragment_overlap >= self.views:
            raise ConfigError(f"rgb.fragment_overlap={config.fragment_overlap} must be below "
                              f"the {self.views} keyframes per fragment")
        self.reset()

    @property
    def stride(self) -> int:
        """New keyframes between two fragments."""
        return self.views - self.config.fragment_overlap

    def reset(self) -> None:
        """Forget every keyframe and count (the configuration and model are kept)."""
        c = self.config
        self.selector: KeyframeSelector[ColorImage] = KeyframeSelector(
            c.keyframe_translation_m, c.keyframe_rotation_deg, self.views)
        self._new = 0
        self.frames_seen = self.keyframes = self.fragments = 0

    def to(self, device: torch.device | str) -> None:
        """Predict on ``device`` from now on."""
        self.device = torch.device(device)
        self.model.to(self.device)

    def add(self, color: ArrayLike, camera: PinholeCamera, T_world_cam: np.ndarray,
            stamp_ns: int, frame_id: str = "camera") -> FragmentTsdf | None:
        """Offer the next posed color image.

        Args:
            color: (H, W, 3) uint8 RGB image (numpy or torch).
            camera: its intrinsics (size must match).
            T_world_cam: (4, 4) pose of its optical frame in the map, metres.
            stamp_ns: acquisition time, nanoseconds.
            frame_id: its optical frame's name.

        Returns:
            The fragment this keyframe completed, or None (not a keyframe, or not yet
            ``views - fragment_overlap`` new keyframes).

        Raises:
            FrameError: a color image that is not (H, W, 3) uint8 of the camera's size, or a
                pose that is not a rigid transform.
        """
        check_color_image(color, camera)
        self.frames_seen += 1
        if not self.selector.is_keyframe(T_world_cam):
            return None
        g = self.model.geometry
        image = np.asarray(color.cpu() if isinstance(color, torch.Tensor) else color)
        if (camera.width, camera.height) != (g.width, g.height):
            image = cv2.resize(image, (g.width, g.height), interpolation=cv2.INTER_AREA)
            camera = scale_camera(camera, g.width, g.height)
        self.selector.offer(T_world_cam, ColorImage(image, camera, int(stamp_ns), frame_id))
        self.keyframes += 1
        self._new += 1
        if len(self.selector.keyframes) < self.views or self._new < self.stride:
            return None
        return self._predict()

    def finish(self) -> list[FragmentTsdf]:
        """The fragment of the kept keyframes when some arrived after the last fragment (end
        of the stream; it may have fewer than ``views`` keyframes), else nothing."""
        return [self._predict()] if self._new else []

    def _predict(self) -> FragmentTsdf:
        kept = self.selector.keyframes
        out = self.model.predict([k.data.color for k in kept], [k.data.camera for k in kept],
                                 [k.T_world_cam for k in kept], self.config.floor_height_m,
                                 self.truncation_m)
        out.keyframes, out.new_keyframes = kept, self._new
        if self.config.color:
            out.color, _ = keyframe_colors(out.origin_index, tuple(out.observed.shape),
                                           self.model.geometry.voxel_size_m, kept,
                                           out.observed.device)
        self._new = 0
        self.fragments += 1
        return out
