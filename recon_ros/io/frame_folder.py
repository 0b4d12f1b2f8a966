"""RGB-D frame folders in the 3DMatch / 7-Scenes layout.

A folder holds ``camera-intrinsics.txt`` (3x3 K of the depth image, pixels) and, per frame
``N``:

- ``frame-NNNNNN.depth.png``: uint16 depth, ``depth_scale`` units per metre (millimetres by
  default), 0 = invalid;
- ``frame-NNNNNN.color.png`` (3DMatch) or ``frame-NNNNNN.color.jpg`` (7-Scenes): optional 8-bit
  color; the PNG is used when both exist (lossless). A color image of another size than the
  depth image is taken as the same view resized, so its K is the depth K scaled;
- ``frame-NNNNNN.pose.txt``: 4x4 camera-to-world ``T_world_cam``, optical axes (x right,
  y down, z forward).

Poses whose rotation is orthonormal only to within
:data:`~recon_ros.core.frame.ROTATION_REPAIR_TOL` (7-Scenes: about 5e-4) are projected to the
nearest rotation by :class:`~recon_ros.core.frame.Frame`; the folder counts them
(:attr:`FrameFolder.repaired_poses`) and logs one warning per folder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import FrameError, ReconError
from ..core.frame import ROTATION_EXACT_TOL, Frame, PinholeCamera, rotation_error

_log = logging.getLogger(__name__)

_DEPTH = re.compile(r"frame-(\d+)\.depth\.png$")
#: Color file suffixes, in order of preference.
COLOR_SUFFIXES = (".color.png", ".color.jpg")
#: Largest relative difference between the horizontal and vertical scale of a color image
#: against the depth image; beyond it the color is not a resize of the depth view.
_ASPECT_TOL = 1e-3


class FrameFolder:
    """Iterates the frames of a folder in index order.

    Args:
        path: the folder.
        depth_scale: depth PNG units per metre (1000 = millimetres).
        with_color: load the color images when present.

    Attributes:
        K: (3, 3) intrinsics of the depth images, pixels.
        indices: frame numbers ``N`` found (those with a depth PNG), ascending.
    """

    def __init__(self, path: str | Path, depth_scale: float = 1000.0,
                 with_color: bool = True) -> None:
        self.path = Path(path)
        k_file = self.path / "camera-intrinsics.txt"
        if not k_file.is_file():
            raise ReconError(f"{self.path} is not a frame folder: no camera-intrinsics.txt")
        self.K = np.loadtxt(k_file).reshape(3, 3)
        self.indices = sorted(int(m.group(1)) for p in self.path.iterdir()
                              if (m := _DEPTH.match(p.name)))
        if not self.indices:
            raise ReconError(f"{self.path} holds no frame-NNNNNN.depth.png files")
        self.depth_scale = float(depth_scale)
        self.with_color = with_color
        self._repaired: set[int] = set()

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def repaired_poses(self) -> int:
        """Number of distinct frames loaded so far whose pose rotation was projected to the
        nearest rotation (orthonormality error above ``ROTATION_EXACT_TOL``)."""
        return len(self._repaired)

    def load(self, index: int) -> Frame:
        """Frame ``index`` (a number of :attr:`indices`); ``stamp_ns`` is the index.

        Raises:
            FrameError: an image or pose file that is missing, unreadable or of the wrong
                shape, or a pose that is not a (repairable) rigid transform.
        """
        stem = self.path / f"frame-{index:06d}"
        raw = cv2.imread(f"{stem}.depth.png", cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
            raise FrameError(f"cannot read {stem}.depth.png as a single-channel 16-bit image")
        depth = raw.astype(np.float32) / self.depth_scale
        h, w = depth.shape
        color, color_camera = self._load_color(stem, w, h) if self.with_color else (None, None)
        pose = self._load_pose(Path(f"{stem}.pose.txt"))
        try:
            frame = Frame(depth, PinholeCamera(self.K, w, h), pose, color, color_camera,
                          stamp_ns=index, frame_id="camera")
        except FrameError as exc:
            raise FrameError(f"{stem}: {exc}") from exc
        if frame.pose_repaired:
            if not self._repaired:
                _log.warning(
                    "%s: pose rotation orthonormality error %.1e exceeds %.0e; projected to "
                    "the nearest rotation. Further repairs in %s are counted "
                    "(FrameFolder.repaired_poses), not logged.",
                    f"{stem}.pose.txt", rotation_error(pose[:3, :3]), ROTATION_EXACT_TOL,
                    self.path)
            self._repaired.add(index)
        return frame

    def _load_color(self, stem: Path, w: int, h: int
                    ) -> tuple[np.ndarray | None, PinholeCamera | None]:
        """(Hc, Wc, 3) uint8 RGB color of ``stem`` and its camera (None when of the depth
        image's size ``w`` x ``h``), or ``(None, None)`` without a color file."""
        path = next((p for s in COLOR_SUFFIXES if (p := Path(f"{stem}{s}")).is_file()), None)
        if path is None:
            return None, None
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FrameError(f"cannot decode {path} as an image")
        color = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        hc, wc = color.shape[:2]
        if (hc, wc) == (h, w):
            return color, None
        sx, sy = wc / w, hc / h
        if abs(sx - sy) > _ASPECT_TOL * max(sx, sy):
            raise FrameError(
                f"{path} is {wc}x{hc}, not a resize of the {w}x{h} depth image (aspect ratio "
                "differs); load the folder with with_color=False")
        # Pixel centres sit at integers, so a resize by s maps u to s * (u + 0.5) - 0.5.
        A = np.array([[sx, 0.0, 0.5 * (sx - 1.0)], [0.0, sy, 0.5 * (sy - 1.0)],
                      [0.0, 0.0, 1.0]])
        return color, PinholeCamera(A @ self.K, wc, hc)

    @staticmethod
    def _load_pose(path: Path) -> np.ndarray:
        """(4, 4) ``T_world_cam`` from a text file of 16 numbers."""
        try:
            values = np.loadtxt(path)
        except (OSError, ValueError) as exc:
            raise FrameError(f"cannot read {path} as a 4x4 pose: {exc}") from exc
        if values.size != 16:
            raise FrameError(f"{path} holds {values.size} numbers, a 4x4 pose needs 16")
        return values.reshape(4, 4)

    def __iter__(self) -> Iterator[Frame]:
        for i in self.indices:
            yield self.load(i)
