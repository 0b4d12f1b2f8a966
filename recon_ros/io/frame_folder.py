"""RGB-D frame folders in the 3DMatch / 7-Scenes layout.

A folder holds ``camera-intrinsics.txt`` (3x3 K) and, per frame ``N``,
``frame-NNNNNN.depth.png`` (uint16 millimetres, 0 = invalid), ``frame-NNNNNN.color.png``
(8-bit, optional) and ``frame-NNNNNN.pose.txt`` (4x4 camera-to-world, optical axes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import FrameError, ReconError
from ..core.frame import Frame, PinholeCamera

_DEPTH = re.compile(r"frame-(\d+)\.depth\.png$")


class FrameFolder:
    """Iterates the frames of a folder in index order.

    Args:
        path: the folder.
        depth_scale: depth PNG units per metre (1000 = millimetres).
        with_color: load the color images when present.
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

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Frame:
        stem = self.path / f"frame-{index:06d}"
        raw = cv2.imread(f"{stem}.depth.png", cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2:
            raise FrameError(f"cannot read {stem}.depth.png as a single-channel image")
        depth = raw.astype(np.float32) / self.depth_scale
        color = None
        if self.with_color and Path(f"{stem}.color.png").is_file():
            bgr = cv2.imread(f"{stem}.color.png", cv2.IMREAD_COLOR)
            color = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        pose = np.loadtxt(f"{stem}.pose.txt").reshape(4, 4)
        h, w = depth.shape
        color_camera = None
        if color is not None and color.shape[:2] != (h, w):
            sx, sy = color.shape[1] / w, color.shape[0] / h
            color_camera = PinholeCamera(np.diag([sx, sy, 1.0]) @ self.K, color.shape[1],
                                         color.shape[0])
        return Frame(depth, PinholeCamera(self.K, w, h), pose, color, color_camera,
                     stamp_ns=index, frame_id="camera")

    def __iter__(self) -> Iterator[Frame]:
        for i in self.indices:
            yield self.load(i)
