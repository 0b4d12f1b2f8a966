"""Horizontal slice of the distance field (ROS-free container, grid layout of nav_msgs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DistanceSlice:
    """Distances to the nearest obstacle on a horizontal plane of the map frame (z up).

    Attributes:
        distance: (H, W) float32 metres, row-major with row 0 at the lowest y (as
            ``nav_msgs/OccupancyGrid``); NaN where the voxel is unknown (never observed),
            ``max_distance_m`` where free space has no obstacle within that distance, and
            negative (down to minus the truncation) just inside obstacles.
        resolution_m: cell edge length (the voxel size), metres.
        origin_xy: (x, y) map-frame position of the outer corner of cell (0, 0), metres.
        height_m: map-frame z of the slice (the centre of the voxel layer it samples), metres.
        max_distance_m: the ESDF's propagation limit, metres.
    """

    distance: np.ndarray
    resolution_m: float
    origin_xy: tuple[float, float]
    height_m: float
    max_distance_m: float

    @property
    def width(self) -> int:
        return int(self.distance.shape[1])

    @property
    def height(self) -> int:
        return int(self.distance.shape[0])

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) map-frame x and y of every cell centre, metres."""
        cols = self.origin_xy[0] + (np.arange(self.width) + 0.5) * self.resolution_m
        rows = self.origin_xy[1] + (np.arange(self.height) + 0.5) * self.resolution_m
        x, y = np.meshgrid(cols, rows)
        return x, y

    def value_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Distances at map-frame points (the cell holding each point); NaN outside."""
        col = np.floor((np.asarray(x) - self.origin_xy[0]) / self.resolution_m).astype(np.int64)
        row = np.floor((np.asarray(y) - self.origin_xy[1]) / self.resolution_m).astype(np.int64)
        inside = (row >= 0) & (row < self.height) & (col >= 0) & (col < self.width)
        out = np.full(row.shape, np.nan, dtype=np.float32)
        out[inside] = self.distance[row[inside], col[inside]]
        return out
