"""Occupancy: occupied voxels and the 2D grid against a scene with known obstacles."""

import numpy as np

from recon_ros.core import Frame, Mapper, MapperConfig, PinholeCamera
from recon_ros.core.occupancy_grid import FREE, OCCUPIED, UNKNOWN
from test.conftest import look_at

K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
CAM = PinholeCamera(K, 320, 240)


def wall_depth(T_world_cam, wall_x):
    """z-depth of the plane x = wall_x seen by a camera (exact ray/plane intersection)."""
    u, v = np.meshgrid(np.arange(320), np.arange(240))
    rays = np.stack(((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)), -1)
    d = rays @ T_world_cam[:3, :3].T
    s = (wall_x - T_world_cam[0, 3]) / d[..., 0]
    return np.where(s > 0, s, 0.0).astype(np.float32)


def test_wall_is_occupied_space_before_it_free_behind_it_unknown(device):
    voxel = 0.05
    mapper = Mapper(MapperConfig.from_dict({
        "volume": {"voxel_size_m": voxel, "device": device},
        "integration": {"max_depth_m": 5.0},
        "occupancy": {"min_height_m": 0.2, "max_height_m": 1.5, "free_space_stride_px": 4}}))
    T = look_at(np.array([0.0, 0.0, 1.0]), np.array([3.0, 0.0, 1.0]))
    mapper.integrate(Frame(wall_depth(T, 3.0), CAM, T))
    occ = mapper.occupied_voxels()
    assert len(occ) > 100
    # Occupied voxels lie on or behind the wall (x >= 3 - half a voxel) within truncation.
    assert (occ[:, 0] >= 3.0 - voxel / 2 - 1e-5).all()
    assert (occ[:, 0] <= 3.0 + mapper.volume.truncation_m + 1e-5).all()

    grid = mapper.occupancy_grid()
    assert grid.resolution_m == voxel
    ys = np.array([-0.3, 0.0, 0.3])
    assert (grid.value_at(np.full(3, 3.0), ys) == OCCUPIED).all()
    # Rays descend 0.4 m per metre from the 1 m high camera: they pass below free_below_m
    # (0.4 m) only beyond x = 1.5 m. Closer, a low obstacle could hide under them: unknown.
    assert (grid.value_at(np.array([1.8, 2.2, 2.5]), np.zeros(3)) == FREE).all()
    assert (grid.value_at(np.array([0.5, 1.0, 1.3]), np.zeros(3)) == UNKNOWN).all()
    # Behind the wall (beyond truncation) nothing is known.
    assert grid.value_at(np.array([3.6]), np.array([0.0]))[0] == UNKNOWN
    # No occupied cell anywhere in front of the wall.
    r, c = np.nonzero(grid.data == OCCUPIED)
    x = grid.origin_xy[0] + (c + 0.5) * grid.resolution_m
    assert (x >= 3.0 - voxel).all()


def test_obstacle_outside_the_height_band_is_not_projected(device):
    voxel = 0.05
    cfg = {"volume": {"voxel_size_m": voxel, "device": device},
           "occupancy": {"min_height_m": 2.0, "max_height_m": 2.5, "free_below_m": 2.5}}
    mapper = Mapper(MapperConfig.from_dict(cfg))
    # Camera at 1 m height looks down at the floor plane z = 0 (2D band is 2.0-2.5 m).
    T = look_at(np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
    u, v = np.meshgrid(np.arange(320), np.arange(240))
    rays = np.stack(((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)), -1)
    d = rays @ T[:3, :3].T
    s = -T[2, 3] / d[..., 2]
    depth = np.where(s > 0, s, 0.0).astype(np.float32)
    mapper.integrate(Frame(np.where(depth < 4, depth, 0).astype(np.float32), CAM, T))
    assert len(mapper.occupied_voxels()) > 0
    assert not (mapper.occupancy_grid().data == OCCUPIED).any()


def test_free_space_layer_grows_past_its_initial_tiles_in_one_frame(device):
    """2 mm cells: one frame's rays reach far more than the 256 tiles allocated up front (the
    layer must grow inside carve without indexing a stale tensor)."""
    mapper = Mapper(MapperConfig.from_dict({
        "volume": {"voxel_size_m": 0.05, "device": device},
        "occupancy": {"resolution_m": 0.002, "free_below_m": 1.5, "free_space_stride_px": 2}}))
    T = look_at(np.array([0.0, 0.0, 1.0]), np.array([3.0, 0.0, 1.0]))
    mapper.integrate(Frame(wall_depth(T, 3.0), CAM, T))
    assert len(mapper.occupancy._tiles) > 256
    grid = mapper.occupancy_grid()
    assert (grid.data == FREE).sum() > 10_000
