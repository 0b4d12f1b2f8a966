"""2D occupancy grid container (the Nav2 / nav_msgs convention, ROS-free)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNKNOWN = -1
FREE = 0
OCCUPIED = 100


@dataclass
class OccupancyGrid2D:
    """A 2D grid over a height band of the map, in the map frame (z up).

    Attributes:
        data: (H, W) int8 cells, row-major with row 0 at the lowest y (as in
            ``nav_msgs/OccupancyGrid``): -1 unknown, 0 free, 100 occupied.
        resolution_m: cell edge length, metres.
        origin_xy: (x, y) map-frame position of the outer corner of cell (0, 0), metres.
        min_height_m, max_height_m: the map-frame z band that was projected.
    """

    data: np.ndarray
    resolution_m: float
    origin_xy: tuple[float, float]
    min_height_m: float
    max_height_m: float

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) integer indices of map-frame points; may fall outside the grid."""
        col = np.floor((np.asarray(x) - self.origin_xy[0]) / self.resolution_m).astype(np.int64)
        row = np.floor((np.asarray(y) - self.origin_xy[1]) / self.resolution_m).astype(np.int64)
        return row, col

    def value_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cell values at map-frame points; UNKNOWN outside the grid."""
        row, col = self.cell_of(x, y)
        inside = (row >= 0) & (row < self.height) & (col >= 0) & (col < self.width)
        out = np.full(row.shape, UNKNOWN, dtype=np.int8)
        out[inside] = self.data[row[inside], col[inside]]
        return out
