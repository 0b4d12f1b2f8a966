"""Nav2-style costmaps from the 2D occupancy grid (ROS-free: numpy + OpenCV).

The costs are those a Nav2 costmap with a ``StaticLayer`` on the grid and an
``InflationLayer`` (``inflate_unknown: false``, ``inflate_around_unknown: false``) publishes as
``nav_msgs/OccupancyGrid`` (``costmap_2d`` publisher translation table):

- occupied cell: :data:`LETHAL` (100; Nav2 char cost 254);
- any cell whose centre is within ``robot_radius_m`` of an occupied cell centre:
  :data:`INSCRIBED` (99; char 253), unknown cells included (Nav2 overwrites an unknown cell with
  a cost >= 253);
- any other unknown cell: :data:`UNKNOWN` (-1; char 255);
- a free cell at distance ``d`` with ``robot_radius_m < d`` and ``d`` at most Nav2's
  ``cell_inflation_radius`` (``ceil(inflation_radius_m / resolution)`` cells): the char cost
  ``c = int(252 * exp(-cost_scaling_factor * (d - robot_radius_m)))`` translated to
  ``0`` if ``c == 0`` else ``1 + (97 * (c - 1)) // 251`` (at most 97: ``c`` reaches 252
  only at ``d == robot_radius_m``, which is inscribed);
- every other free cell: 0.

Distances are exact Euclidean distances between cell centres (Nav2's wavefront approximates
them; the two agree except in rare configurations where the wavefront keeps a slightly farther
obstacle). Radii are compared in cells with a tolerance of 1e-6 cell, so a cell exactly at a
radius counts as inside it whatever the floating-point rounding of ``radius / resolution``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .errors import ConfigError
from .occupancy_grid import OCCUPIED, OccupancyGrid2D

__all__ = ["INSCRIBED", "LETHAL", "UNKNOWN", "costmap", "obstacle_distance"]

#: ``nav_msgs/OccupancyGrid`` values of Nav2's costmap publisher: an occupied cell, a cell
#: within the robot's inscribed radius of one, and a cell without information.
LETHAL = 100
INSCRIBED = 99
UNKNOWN = -1

#: Nav2's largest inflated char cost (``INSCRIBED_INFLATED_OBSTACLE - 1``).
_MAX_INFLATED_CHAR = 252
#: Tolerance of the radius comparisons, cells.
_EPS_CELLS = 1e-6


def _distance_cells(data: np.ndarray) -> np.ndarray:
    """(H, W) float32 distance, in cells, from every cell centre to the nearest occupied cell
    centre of ``data`` (exact Euclidean); inf everywhere when no cell is occupied."""
    occupied = data == OCCUPIED
    if data.size == 0 or not occupied.any():
        return np.full(data.shape, np.inf, dtype=np.float32)
    # OpenCV measures the distance of every non-zero pixel to the nearest zero pixel.
    src = np.where(occupied, 0, 1).astype(np.uint8)
    return cv2.distanceTransform(src, cv2.DIST_L2, cv2.DIST_MASK_PRECISE, dstType=cv2.CV_32F)


def obstacle_distance(grid: OccupancyGrid2D) -> np.ndarray:
    """Distance from every cell centre to the nearest occupied cell centre.

    Args:
        grid: the 2D grid (-1 unknown, 0 free, 100 occupied); only occupied cells are
            obstacles, unknown cells are not.

    Returns:
        (H, W) float32 metres, in the grid's layout (row 0 = lowest map y); 0 on occupied
        cells; inf everywhere when the grid has no occupied cell.
    """
    return _distance_cells(grid.data) * np.float32(grid.resolution_m)


def _costs(data: np.ndarray, resolution_m: float, robot_radius_m: float,
           inflation_radius_m: float, cost_scaling_factor: float) -> np.ndarray:
    """(H, W) int8 costmap values of grid cells ``data`` (see the module docstring)."""
    dist = _distance_cells(data)
    inscribed = dist <= robot_radius_m / resolution_m + _EPS_CELLS
    cell_inflation_radius = math.ceil(inflation_radius_m / resolution_m - _EPS_CELLS)
    inflated = ~inscribed & (dist <= cell_inflation_radius + _EPS_CELLS)
    char = np.zeros(data.shape, dtype=np.int64)
    excess_m = dist[inflated].astype(np.float64) * resolution_m - robot_radius_m
    # static_cast<unsigned char> truncates, as int() of a positive float does
    char[inflated] = (_MAX_INFLATED_CHAR * np.exp(-cost_scaling_factor * excess_m)).astype(
        np.int64)
    costs = np.where(char == 0, 0, 1 + (97 * (char - 1)) // 251)
    costs[data == UNKNOWN] = UNKNOWN
    costs[inscribed] = INSCRIBED
    costs[data == OCCUPIED] = LETHAL
    return costs.astype(np.int8)


def _crop(data: np.ndarray, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
    """``data[row0:row0 + rows, col0:col0 + cols]`` with UNKNOWN where it leaves the grid."""
    out = np.full((rows, cols), UNKNOWN, dtype=np.int8)
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + rows, data.shape[0]), min(col0 + cols, data.shape[1])
    if r0 < r1 and c0 < c1:
        out[r0 - row0:r1 - row0, c0 - col0:c1 - col0] = data[r0:r1, c0:c1]
    return out


def costmap(grid: OccupancyGrid2D, robot_radius_m: float, inflation_radius_m: float,
            cost_scaling_factor: float, center_xy: tuple[float, float] | None = None,
            size_m: float | None = None) -> OccupancyGrid2D:
    """The Nav2 costmap of a 2D grid: global, or a square rolling window.

    Args:
        grid: the 2D occupancy grid (-1 unknown, 0 free, 100 occupied), map frame.
        robot_radius_m: inscribed radius of the robot, metres (>= 0).
        inflation_radius_m: Nav2 ``inflation_radius``, metres (>= ``robot_radius_m``).
        cost_scaling_factor: Nav2 ``cost_scaling_factor``, 1/m (> 0).
        center_xy: map-frame (x, y) centre of a rolling window, metres; None (with
            ``size_m`` None) = the whole grid.
        size_m: edge of the rolling window, metres: ``round(size_m / resolution)`` cells.
            The window's cells are cells of ``grid``'s lattice: its origin is the lattice
            point nearest to ``center_xy - size_m / 2``. Cells outside the grid are unknown
            (-1, unless inscribed); obstacles outside the window inflate into it.

    Returns:
        The costmap (int8 values -1, 0..98, 99, 100; see the module docstring) with the
        resolution and height band of ``grid``.

    Raises:
        ConfigError: a radius, the scaling factor or the window is invalid.
    """
    if not (math.isfinite(robot_radius_m) and robot_radius_m >= 0.0):
        raise ConfigError(f"robot_radius_m={robot_radius_m!r} is invalid: must be >= 0")
    if not (math.isfinite(inflation_radius_m) and inflation_radius_m >= robot_radius_m):
        raise ConfigError(f"inflation_radius_m={inflation_radius_m!r} is invalid: must be >= "
                          f"robot_radius_m ({robot_radius_m})")
    if not (math.isfinite(cost_scaling_factor) and cost_scaling_factor > 0.0):
        raise ConfigError(f"cost_scaling_factor={cost_scaling_factor!r} is invalid: must be > 0")
    res = grid.resolution_m
    args = (res, robot_radius_m, inflation_radius_m, cost_scaling_factor)
    if center_xy is None and size_m is None:
        return OccupancyGrid2D(_costs(grid.data, *args), res, grid.origin_xy,
                               grid.min_height_m, grid.max_height_m)
    if center_xy is None or size_m is None:
        raise ConfigError("a rolling window needs both center_xy and size_m "
                          f"(got center_xy={center_xy!r}, size_m={size_m!r})")
    if not (math.isfinite(size_m) and round(size_m / res) >= 1):
        raise ConfigError(f"size_m={size_m!r} is invalid: must be at least one cell ({res} m)")
    cells = round(size_m / res)
    # lower-left window cell in grid indices: the lattice point nearest to centre - size / 2
    col0 = math.floor((center_xy[0] - grid.origin_xy[0]) / res - cells / 2 + 0.5)
    row0 = math.floor((center_xy[1] - grid.origin_xy[1]) / res - cells / 2 + 0.5)
    pad = math.ceil(inflation_radius_m / res) + 1  # obstacles this far out can reach it
    padded = _crop(grid.data, row0 - pad, col0 - pad, cells + 2 * pad, cells + 2 * pad)
    window = _costs(padded, *args)[pad:pad + cells, pad:pad + cells]
    origin = (grid.origin_xy[0] + col0 * res, grid.origin_xy[1] + row0 * res)
    return OccupancyGrid2D(np.ascontiguousarray(window), res, origin, grid.min_height_m,
                           grid.max_height_m)
