"""One RGB-D observation and the pinhole camera model.

Conventions (REP-103 optical frame): x right, y down, z forward. Depth is the z coordinate of
the observed point in the depth camera frame, in metres; 0, NaN or Inf means "no measurement".
Transforms are named ``T_target_source``: a (4, 4) matrix mapping a point from ``source`` into
``target``.

Pose rotations are checked by their orthonormality error ``max |R R^T - I|`` (largest absolute
entry, dimensionless). Real datasets store rotations rounded or drifted away from orthonormal
(7-Scenes: about 5e-4), so a :class:`Frame` accepts three bands:

- error <= :data:`ROTATION_EXACT_TOL`: used unchanged (float and text round-off);
- error <= :data:`ROTATION_REPAIR_TOL`: replaced by the nearest proper rotation
  (:func:`nearest_rotation`), reported by :attr:`Frame.pose_repaired`;
- larger error, or ``det R < 0`` (a reflection): refused with :class:`FrameError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import FrameError

ArrayLike = np.ndarray | torch.Tensor

_log = logging.getLogger(__name__)

#: Largest orthonormality error ``max |R R^T - I|`` of a pose rotation used as given.
ROTATION_EXACT_TOL = 1e-4
#: Largest orthonormality error that is repaired by projecting onto the nearest rotation;
#: beyond it the pose is broken (wrong file, scale or shear), not merely rounded, and refused.
ROTATION_REPAIR_TOL = 1e-2


@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole intrinsics of one image.

    Attributes:
        K: (3, 3) intrinsic matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``, pixels.
        width: image width in pixels.
        height: image height in pixels.
    """

    K: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)):
            raise FrameError(f"K must be a finite (3, 3) matrix, got shape {K.shape}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise FrameError(f"focal lengths must be positive, got fx={K[0, 0]} fy={K[1, 1]}")
        if self.width <= 0 or self.height <= 0:
            raise FrameError(f"image size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "K", K)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    def strided(self, stride: int) -> "PinholeCamera":
        """Intrinsics of ``image[::stride, ::stride]`` (pixel ``(u, v)`` of the result is pixel
        ``(stride u, stride v)`` of this image)."""
        s = int(stride)
        if s < 1:
            raise FrameError(f"stride must be >= 1, got {stride}")
        K = np.array([[self.fx / s, 0.0, self.cx / s], [0.0, self.fy / s, self.cy / s],
                      [0.0, 0.0, 1.0]])
        return PinholeCamera(K, -(-self.width // s), -(-self.height // s))

    def project(self, points_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project camera-frame points to continuous pixel coordinates.

        Args:
            points_cam: (..., 3) points in this camera's optical frame, metres.

        Returns:
            ``(uv, z)``: (..., 2) pixel coordinates (u right, v down; pixel centres at integers)
            and (...,) depths. Points with ``z <= 0`` get non-finite or meaningless ``uv``;
            callers mask them with ``z``.
        """
        z = points_cam[..., 2]
        safe_z = torch.where(z > 0, z, torch.ones_like(z))
        u = points_cam[..., 0] / safe_z * self.fx + self.cx
        v = points_cam[..., 1] / safe_z * self.fy + self.cy
        return torch.stack((u, v), dim=-1), z

    def backproject(self, uv: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`project`: (..., 2) pixels and (...,) depths -> (..., 3) points."""
        x = (uv[..., 0] - self.cx) / self.fx * depth
        y = (uv[..., 1] - self.cy) / self.fy * depth
        return torch.stack((x, y, depth), dim=-1)

    def pixel_grid(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   stride: int = 1) -> torch.Tensor:
        """(H', W', 2) pixel coordinates (u, v) of every ``stride``-th pixel centre in both
        directions, i.e. of ``image[::stride, ::stride]``."""
        v, u = torch.meshgrid(
            torch.arange(0, self.height, stride, device=device, dtype=dtype),
            torch.arange(0, self.width, stride, device=device, dtype=dtype),
            indexing="ij",
        )
        return torch.stack((u, v), dim=-1)


def rotation_error(R: np.ndarray) -> float:
    """Orthonormality error ``max |R R^T - I|`` (largest absolute entry) of a (3, 3) matrix."""
    R = np.asarray(R, dtype=np.float64)
    return float(np.abs(R @ R.T - np.eye(3)).max())


def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """The proper rotation closest to ``R`` in the Frobenius norm.

    Args:
        R: (3, 3) matrix.

    Returns:
        (3, 3) float64 rotation (``det = +1``): ``U V^T`` from the SVD ``R = U S V^T`` (the
        orthogonal polar factor of ``R`` when ``det R > 0``); when ``det R < 0``, the column of
        ``U`` of the smallest singular value is negated first (as in the Kabsch algorithm).
    """
    U, _, Vt = np.linalg.svd(np.asarray(R, dtype=np.float64))
    if np.linalg.det(U @ Vt) < 0:
        U[:, -1] = -U[:, -1]
    return U @ Vt


def check_pose(name: str, T: np.ndarray) -> tuple[np.ndarray, bool]:
    """Validate a rigid transform, repairing a nearly orthonormal rotation.

    Args:
        name: the transform's name, for error messages (e.g. ``"T_world_cam"``).
        T: (4, 4) homogeneous transform; translation in metres.

    Returns:
        ``(T, repaired)``: the (4, 4) float64 transform, with its rotation replaced by
        :func:`nearest_rotation` (translation kept) when its orthonormality error lies in
        ``(ROTATION_EXACT_TOL, ROTATION_REPAIR_TOL]``; ``repaired`` tells whether that happened.

    Raises:
        FrameError: not a finite (4, 4) matrix, last row not ``[0, 0, 0, 1]``, a reflection
            (``det R < 0``) or an orthonormality error above ``ROTATION_REPAIR_TOL``.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise FrameError(f"{name} must be a finite (4, 4) matrix, got shape {T.shape}")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0]):
        raise FrameError(f"{name} last row must be [0, 0, 0, 1]")
    R = T[:3, :3]
    det = float(np.linalg.det(R))
    if det < 0:
        raise FrameError(f"{name} rotation part is not a proper rotation: det = {det:.3g} < 0 "
                         "(a reflection; wrong handedness or axis convention)")
    err = rotation_error(R)
    if err <= ROTATION_EXACT_TOL:
        return T, False
    if err > ROTATION_REPAIR_TOL:
        raise FrameError(f"{name} rotation part is not a proper rotation: orthonormality error "
                         f"max|R R^T - I| = {err:.2e} exceeds the repairable "
                         f"{ROTATION_REPAIR_TOL:.0e}")
    repaired = T.copy()
    repaired[:3, :3] = nearest_rotation(R)
    _log.debug("%s: rotation orthonormality error %.2e projected to the nearest rotation",
               name, err)
    return repaired, True


@dataclass
class Frame:
    """A posed depth image with optional color.

    Attributes:
        depth: (H, W) float32 depth in metres along the optical axis; 0/NaN/Inf = invalid.
        camera: intrinsics of the depth image (size must match ``depth``).
        T_world_cam: (4, 4) pose of the depth camera's optical frame in the map/world frame.
        color: optional (Hc, Wc, 3) uint8 RGB image.
        color_camera: intrinsics of ``color``; defaults to ``camera`` (registered RGB-D).
        T_cam_color: (4, 4) pose of the color optical frame in the depth optical frame;
            identity for registered RGB-D.
        stamp_ns: acquisition time, nanoseconds.
        frame_id: the depth camera's optical frame name.
        pose_repaired: set by the constructor: True when ``T_world_cam`` or ``T_cam_color``
            had a rotation orthonormality error in ``(ROTATION_EXACT_TOL, ROTATION_REPAIR_TOL]``
            and was replaced by the nearest rotation (see :func:`check_pose`).
    """

    depth: ArrayLike
    camera: PinholeCamera
    T_world_cam: np.ndarray
    color: ArrayLike | None = None
    color_camera: PinholeCamera | None = None
    T_cam_color: np.ndarray = field(default_factory=lambda: np.eye(4))
    stamp_ns: int = 0
    frame_id: str = "camera"
    pose_repaired: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.depth.ndim != 2:
            raise FrameError(f"depth must be (H, W), got shape {tuple(self.depth.shape)}")
        h, w = self.depth.shape
        if (h, w) != (self.camera.height, self.camera.width):
            raise FrameError(
                f"depth image is {w}x{h} but its camera model is "
                f"{self.camera.width}x{self.camera.height}"
            )
        self.T_world_cam, world_repaired = check_pose("T_world_cam", self.T_world_cam)
        self.T_cam_color, color_repaired = check_pose("T_cam_color", self.T_cam_color)
        self.pose_repaired = world_repaired or color_repaired
        if self.color is None:
            return
        if self.color.ndim != 3 or self.color.shape[2] != 3:
            raise FrameError(f"color must be (H, W, 3), got shape {tuple(self.color.shape)}")
        if self.color.dtype not in (np.uint8, torch.uint8):
            raise FrameError(f"color must be uint8 RGB, got dtype {self.color.dtype}")
        cam = self.color_camera or self.camera
        if tuple(self.color.shape[:2]) != (cam.height, cam.width):
            raise FrameError(
                f"color image is {self.color.shape[1]}x{self.color.shape[0]} but its camera "
                f"model is {cam.width}x{cam.height}"
            )

    @property
    def color_cam(self) -> PinholeCamera:
        """Intrinsics of the color image (the depth camera's when registered)."""
        return self.color_camera or self.camera
