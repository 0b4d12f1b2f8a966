"""Nav2-style costmaps of the 2D grid: exact distances, hand-computed costs (Nav2's
InflationLayer formula and costmap_2d's translation table), unknown cells, rolling windows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recon_ros.core.costmap import INSCRIBED, LETHAL, UNKNOWN, costmap, obstacle_distance
from recon_ros.core.errors import ConfigError
from recon_ros.core.occupancy_grid import FREE, OCCUPIED, OccupancyGrid2D

RES = 0.1
ROBOT_M, INFLATION_M, SCALING = 0.2, 0.5, 3.0
BAND = (0.05, 1.5)


def _grid(data: np.ndarray, origin: tuple[float, float] = (0.0, 0.0), res: float = RES
          ) -> OccupancyGrid2D:
    return OccupancyGrid2D(np.asarray(data, np.int8), res, origin, *BAND)


def _free(rows: int, cols: int) -> np.ndarray:
    return np.full((rows, cols), FREE, np.int8)


def _costs(grid: OccupancyGrid2D, **window: object) -> OccupancyGrid2D:
    return costmap(grid, ROBOT_M, INFLATION_M, SCALING, **window)


def test_obstacle_distance_is_exact_euclidean() -> None:
    rng = np.random.default_rng(0)
    data = rng.choice(np.array([FREE, OCCUPIED, UNKNOWN], np.int8), (37, 53),
                      p=[0.93, 0.02, 0.05])
    dist = obstacle_distance(_grid(data, res=0.05))
    assert dist.dtype == np.float32 and dist.shape == data.shape
    rows, cols = np.nonzero(data == OCCUPIED)
    r, c = np.mgrid[:37, :53]
    brute = np.min(np.hypot(r[..., None] - rows, c[..., None] - cols), axis=-1) * 0.05
    np.testing.assert_allclose(dist, brute, rtol=1e-6, atol=1e-7)
    assert np.all(dist[data == OCCUPIED] == 0)


def test_obstacle_distance_without_obstacles_is_inf() -> None:
    data = _free(4, 5)
    data[1, 1] = UNKNOWN  # unknown cells are no obstacles
    assert np.all(np.isinf(obstacle_distance(_grid(data))))


def test_single_obstacle_costs_by_hand() -> None:
    data = _free(21, 21)
    data[10, 10] = OCCUPIED
    data[0, 0] = UNKNOWN
    cost = _costs(_grid(data, origin=(-1.0, 2.0)))
    assert cost.data.dtype == np.int8 and cost.data.shape == (21, 21)
    assert cost.resolution_m == RES and cost.origin_xy == (-1.0, 2.0)
    assert (cost.min_height_m, cost.max_height_m) == BAND
    # (row offset, col offset) from the obstacle -> cost. Nav2 char cost
    # c = int(252 * exp(-3 * (d - 0.2))), published as 1 + 97 * (c - 1) // 251.
    expected = {
        (0, 0): LETHAL,
        (0, 1): INSCRIBED, (1, 1): INSCRIBED, (0, 2): INSCRIBED,  # d <= 0.2 m (0.2 exactly)
        (1, 2): 91,  # d = 0.2236: c = 234
        (2, 2): 76,  # d = 0.2828: c = 196
        (0, 3): 72,  # d = 0.3: c = 186
        (1, 3): 69,  # d = 0.3162: c = 177
        (2, 3): 60,  # d = 0.3606: c = 155
        (0, 4): 53,  # d = 0.4: c = 138
        (1, 4): 52,  # d = 0.4123: c = 133
        (3, 3): 50,  # d = 0.4243: c = 128
        (2, 4): 46,  # d = 0.4472: c = 120
        (0, 5): 40, (3, 4): 40,  # d = 0.5 = inflation radius: c = 102
        (1, 5): 0,  # d = 0.5099 > 0.5
        (0, 6): 0, (7, 7): 0,
    }
    for (dr, dc), value in expected.items():
        for r, c in {(10 + dr, 10 + dc), (10 - dc, 10 + dr), (10 - dr, 10 - dc)}:
            assert cost.data[r, c] == value, ((dr, dc), (r, c), cost.data[r, c], value)
    assert cost.data[0, 0] == UNKNOWN  # unknown far from obstacles stays unknown
    assert set(np.unique(cost.data)) == {UNKNOWN, 0, 40, 46, 50, 52, 53, 60, 69, 72, 76, 91,
                                         INSCRIBED, LETHAL}


def test_radii_that_are_whole_cells_despite_rounding() -> None:
    """0.3 / 0.05 = 5.999999999999999 and 0.55 / 0.05 = 11.000000000000002 in floating point:
    a cell 6 cells away is still inscribed, one 11 cells away still inflated (Nav2's
    defaults at 5 cm)."""
    data = _free(1, 14)
    data[0, 0] = OCCUPIED
    cost = costmap(_grid(data, res=0.05), 0.3, 0.55, 3.0)
    # d = 0.35, 0.4, ..., 0.55: c = int(252 exp(-3 (d - 0.3))) = 216, 186, 160, 138, 119
    assert cost.data[0].tolist() == [LETHAL, *[INSCRIBED] * 6, 84, 72, 62, 53, 46, 0, 0]


def test_unknown_cells_are_kept_unless_inscribed() -> None:
    """Nav2 (inflate_unknown: false) gives an unknown cell the inflated cost only when it is
    inscribed or lethal: within the robot radius unknown space is not drivable."""
    data = np.full((1, 8), UNKNOWN, np.int8)
    data[0, 0] = OCCUPIED
    data[0, 5] = FREE
    cost = _costs(_grid(data))
    assert cost.data[0].tolist() == [LETHAL, INSCRIBED, INSCRIBED, UNKNOWN, UNKNOWN, 40,
                                     UNKNOWN, UNKNOWN]


def test_no_obstacles_is_free_and_unknown() -> None:
    data = _free(3, 3)
    data[2] = UNKNOWN
    np.testing.assert_array_equal(_costs(_grid(data)).data, data)


def test_window_equals_the_cut_of_the_global_costmap() -> None:
    """Also where the window leaves the map: outside cells are unknown (inscribed near an
    obstacle on the map's edge, like every unknown cell), as in the global costmap of the map
    padded with unknown cells."""
    rng = np.random.default_rng(1)
    data = rng.choice(np.array([FREE, OCCUPIED, UNKNOWN], np.int8), (40, 50),
                      p=[0.9, 0.03, 0.07])
    data[39, 30] = OCCUPIED  # an obstacle on the top edge, under the third window
    grid = _grid(data, origin=(-2.0, -1.0))
    pad = 20
    padded = _grid(np.pad(data, pad, constant_values=UNKNOWN),
                   origin=(-2.0 - pad * RES, -1.0 - pad * RES))
    full = _costs(padded).data
    for cx, cy in [(0.5, 1.0), (-1.8, -0.9), (1.05, 2.95)]:
        window = _costs(grid, center_xy=(cx, cy), size_m=1.2)
        assert window.data.shape == (12, 12)
        col0 = round((window.origin_xy[0] - padded.origin_xy[0]) / RES)
        row0 = round((window.origin_xy[1] - padded.origin_xy[1]) / RES)
        np.testing.assert_array_equal(window.data, full[row0:row0 + 12, col0:col0 + 12])
    # above the edge obstacle: inscribed, then unknown
    edge = _costs(grid, center_xy=(1.05, 2.95), size_m=1.2)
    assert [int(edge.data[r, 6]) for r in range(5, 9)] == [LETHAL, INSCRIBED, INSCRIBED,
                                                           UNKNOWN]


def test_window_near_the_map_edge_is_unknown_outside() -> None:
    grid = _grid(_free(20, 20))
    window = _costs(grid, center_xy=(0.1, 0.5), size_m=1.0)
    # lower-left cell: the lattice point nearest (0.1 - 0.5, 0.5 - 0.5)
    assert window.origin_xy == pytest.approx((-0.4, 0.0))
    expected = np.zeros((10, 10), np.int8)
    expected[:, :4] = UNKNOWN  # x < 0 is outside the map
    np.testing.assert_array_equal(window.data, expected)
    beyond = _costs(grid, center_xy=(10.0, 10.0), size_m=0.5)
    assert np.all(beyond.data == UNKNOWN) and beyond.data.shape == (5, 5)


def test_obstacle_just_outside_the_window_inflates_into_it() -> None:
    data = _free(30, 30)
    data[15, 20] = OCCUPIED
    # window columns 10..19, rows 10..19: the obstacle is one column to its right
    window = _costs(_grid(data), center_xy=(1.5, 1.5), size_m=1.0)
    assert window.origin_xy == pytest.approx((1.0, 1.0))
    assert not np.any(window.data == LETHAL)
    row = window.data[5]  # grid row 15
    assert row.tolist() == [0, 0, 0, 0, 0, 40, 53, 72, INSCRIBED, INSCRIBED]
    assert window.data[4, 9] == INSCRIBED and window.data[3, 8] == 76  # d = 0.1414, 0.2828


@pytest.mark.parametrize("origin, snapped", [((0.0, 0.0), (0.8, 0.7)),
                                             ((-0.025, 0.013), (0.775, 0.713))])
def test_window_at_a_non_aligned_centre_snaps_to_the_lattice(
        origin: tuple[float, float], snapped: tuple[float, float]) -> None:
    grid = _grid(_free(40, 40), origin=origin)
    # 5 cells around (1.03, 0.97): the lower-left corner nearest (0.78, 0.72) on the lattice
    assert _costs(grid, center_xy=(1.03, 0.97), size_m=0.5).origin_xy == pytest.approx(snapped)
    for size_m, cells in [(0.6, 6), (0.5, 5), (0.54, 5), (0.56, 6)]:
        for cx, cy in [(1.03, 0.97), (1.0, 1.0), (1.449, 2.551)]:
            window = _costs(grid, center_xy=(cx, cy), size_m=size_m)
            assert window.data.shape == (cells, cells)
            assert window.resolution_m == RES
            assert (window.min_height_m, window.max_height_m) == BAND
            for axis, centre in enumerate((cx, cy)):
                steps = (window.origin_xy[axis] - origin[axis]) / RES
                assert steps == pytest.approx(round(steps), abs=1e-9)  # on the grid's lattice
                # the window is centred as well as the lattice allows
                assert abs(window.origin_xy[axis] + cells * RES / 2 - centre) <= RES / 2 + 1e-9


@pytest.mark.parametrize("args, window, message", [
    ((-0.1, 0.5, 3.0), {}, "robot_radius_m=-0.1 is invalid"),
    ((0.3, 0.2, 3.0), {}, "inflation_radius_m=0.2 is invalid"),
    ((0.2, 0.5, 0.0), {}, "cost_scaling_factor=0.0 is invalid"),
    ((0.2, 0.5, 3.0), {"center_xy": (0.0, 0.0)}, "needs both center_xy and size_m"),
    ((0.2, 0.5, 3.0), {"size_m": 1.0}, "needs both center_xy and size_m"),
    ((0.2, 0.5, 3.0), {"center_xy": (0.0, 0.0), "size_m": 0.04}, "size_m=0.04 is invalid"),
    ((0.2, 0.5, 3.0), {"center_xy": (0.0, 0.0), "size_m": math.nan}, "size_m=nan is invalid"),
])
def test_invalid_arguments_raise(args: tuple[float, float, float], window: dict,
                                 message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        costmap(_grid(_free(3, 3)), *args, **window)
