"""Keyframe selection by camera motion, and the choice of stereo source views among keyframes.

A posed frame becomes a keyframe when its camera has translated or rotated enough since the
last keyframe; the selector keeps the last ``window`` keyframes. For multi-view stereo
(:mod:`recon_ros.core.plane_sweep`) a reference view takes as sources the keyframes nearest to
it that still give a useful baseline and look roughly the same way.

Poses are ``T_world_cam`` (4, 4): the camera's optical frame in the world, metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from .errors import ConfigError
from .frame import check_pose

P = TypeVar("P")


def relative_motion(T_world_a: np.ndarray, T_world_b: np.ndarray) -> tuple[float, float]:
    """Distance and rotation angle between two camera poses.

    Args:
        T_world_a, T_world_b: (4, 4) poses of two optical frames in the same world frame.

    Returns:
        ``(translation_m, rotation_deg)``: the distance between the optical centres, metres,
        and the angle of the relative rotation ``R_a^T R_b``, degrees in [0, 180].
    """
    translation = float(np.linalg.norm(T_world_b[:3, 3] - T_world_a[:3, 3]))
    R = T_world_a[:3, :3].T @ T_world_b[:3, :3]
    # atan2 of sin and cos of the angle: accurate near 0 and 180 degrees, unlike acos(cos)
    sin = 0.5 * math.hypot(R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1])
    cos = 0.5 * (float(np.trace(R)) - 1.0)
    return translation, math.degrees(math.atan2(sin, cos))


@dataclass(frozen=True)
class Keyframe(Generic[P]):
    """A frame kept as a keyframe.

    Attributes:
        index: position of the frame among all frames offered to the selector (0-based).
        T_world_cam: (4, 4) float64 pose of its optical frame in the world.
        data: the caller's payload (e.g. the image and camera model).
    """

    index: int
    T_world_cam: np.ndarray
    data: P


class KeyframeSelector(Generic[P]):
    """Keeps the last ``window`` keyframes of a stream of posed frames.

    Args:
        min_translation_m: a frame whose optical centre moved at least this far from the last
            keyframe's becomes a keyframe, metres (>= 0).
        min_rotation_deg: so does a frame rotated at least this much relative to the last
            keyframe, degrees (>= 0).
        window: number of most recent keyframes kept (>= 1).

    The first frame offered always becomes a keyframe.
    """

    def __init__(self, min_translation_m: float, min_rotation_deg: float, window: int) -> None:
        if not (math.isfinite(min_translation_m) and min_translation_m >= 0):
            raise ConfigError(f"keyframes.min_translation_m={min_translation_m!r} is invalid: "
                              "must be a finite number >= 0 m")
        if not (math.isfinite(min_rotation_deg) and 0 <= min_rotation_deg <= 180):
            raise ConfigError(f"keyframes.min_rotation_deg={min_rotation_deg!r} is invalid: "
                              "must be in [0, 180] degrees")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"keyframes.window={window!r} is invalid: must be an integer >= 1")
        self.min_translation_m = float(min_translation_m)
        self.min_rotation_deg = float(min_rotation_deg)
        self.window = window
        self._keyframes: list[Keyframe[P]] = []
        self._offered = 0

    @property
    def keyframes(self) -> tuple[Keyframe[P], ...]:
        """The kept keyframes, oldest first."""
        return tuple(self._keyframes)

    def is_keyframe(self, T_world_cam: np.ndarray) -> bool:
        """Whether a frame at this pose would become a keyframe (nothing is stored).

        Raises:
            FrameError: ``T_world_cam`` is not a valid rigid transform.
        """
        T, _ = check_pose("T_world_cam", T_world_cam)
        if not self._keyframes:
            return True
        translation, rotation = relative_motion(self._keyframes[-1].T_world_cam, T)
        return translation >= self.min_translation_m or rotation >= self.min_rotation_deg

    def offer(self, T_world_cam: np.ndarray, data: P) -> Keyframe[P] | None:
        """Consider the next frame of the stream; keep it if it is a keyframe.

        Returns:
            The new keyframe, or None when the camera has not moved enough. When the window
            is full the oldest keyframe is dropped.
        """
        index = self._offered
        self._offered += 1
        if not self.is_keyframe(T_world_cam):
            return None
        T, _ = check_pose("T_world_cam", T_world_cam)
        keyframe = Keyframe(index, T, data)
        self._keyframes.append(keyframe)
        del self._keyframes[:-self.window]
        return keyframe

    def sources(self, T_world_ref: np.ndarray, count: int, *, min_baseline_m: float = 0.1,
                max_rotation_deg: float = 30.0) -> list[Keyframe[P]]:
        """Stereo source views for a reference view among the kept keyframes.

        Candidates are the keyframes whose optical centre lies at least ``min_baseline_m`` from
        the reference's (which excludes the reference itself when it is a kept keyframe) and
        whose rotation relative to it is at most ``max_rotation_deg``; the ``count`` with the
        smallest baseline are returned, nearest first (ties: most recent first).

        Args:
            T_world_ref: (4, 4) pose of the reference optical frame.
            count: the most source views wanted (>= 1).
            min_baseline_m: smallest useful baseline, metres (> 0).
            max_rotation_deg: largest rotation from the reference, degrees (views turned
                further away share little of the image).

        Raises:
            ConfigError: a bad ``count``, ``min_baseline_m`` or ``max_rotation_deg``.
            FrameError: ``T_world_ref`` is not a valid rigid transform.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"sources: count={count!r} is invalid: must be an integer >= 1")
        if not (math.isfinite(min_baseline_m) and min_baseline_m > 0):
            raise ConfigError(f"sources: min_baseline_m={min_baseline_m!r} is invalid: must be "
                              "a finite number > 0 m")
        if not 0 <= max_rotation_deg <= 180:
            raise ConfigError(f"sources: max_rotation_deg={max_rotation_deg!r} is invalid: "
                              "must be in [0, 180] degrees")
        T, _ = check_pose("T_world_ref", T_world_ref)
        ranked = []
        for keyframe in reversed(self._keyframes):
            baseline, rotation = relative_motion(T, keyframe.T_world_cam)
            if baseline >= min_baseline_m and rotation <= max_rotation_deg:
                ranked.append((baseline, keyframe))
        ranked.sort(key=lambda item: item[0])  # stable: equal baselines stay most recent first
        return [keyframe for _, keyframe in ranked[:count]]
