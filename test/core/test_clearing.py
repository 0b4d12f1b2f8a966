"""A changing world: free-space clearing, block release, decay, map bounds (exact scenes).

Scene: planes x = const seen by a camera at (0, y, 0.5) looking along +x. A wall at x = 3 m and,
when present, an obstacle: the patch x = 1.5 m, |y| <= 0.3 m, 0.1 <= z <= 0.9 m. Depths are
exact ray/plane intersections, so the expected map is known.
"""

import numpy as np
import pytest
import torch

from recon_ros.core import Frame, Mapper, MapperConfig, PinholeCamera
from recon_ros.core.occupancy_grid import FREE, OCCUPIED
from test.conftest import look_at

K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
CAM = PinholeCamera(K, 320, 240)
OBSTACLE_X, WALL_X = 1.5, 3.0
VOXEL = 0.05


def pose(i: int) -> np.ndarray:
    """Camera i of a sideways sweep (y in [-0.4, 0.4] m), looking along +x."""
    y = 0.4 * np.sin(0.7 * i)
    return look_at(np.array([0.0, y, 0.5]), np.array([3.0, y, 0.5]))


def scene_depth(T: np.ndarray, obstacle: bool, wall_x: float = WALL_X) -> np.ndarray:
    """(H, W) exact z-depth of the wall (and the obstacle patch in front of it)."""
    u, v = np.meshgrid(np.arange(CAM.width), np.arange(CAM.height))
    rays = np.stack(((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)), -1)
    d = rays @ T[:3, :3].T  # world direction per unit z-depth
    depth = (wall_x - T[0, 3]) / d[..., 0]
    if obstacle:
        s = (OBSTACLE_X - T[0, 3]) / d[..., 0]
        hit = T[:3, 3] + s[..., None] * d
        inside = (np.abs(hit[..., 1]) <= 0.3) & (hit[..., 2] >= 0.1) & (hit[..., 2] <= 0.9)
        depth = np.where(inside, s, depth)
    return depth.astype(np.float32)


def mapper_for(device: str, **integration) -> Mapper:
    return Mapper(MapperConfig.from_dict({
        "volume": {"voxel_size_m": VOXEL, "device": device},
        "integration": integration,
        "occupancy": {"min_height_m": 0.05, "max_height_m": 1.5, "free_below_m": 1.5,
                      "free_space_stride_px": 4}}))


def obstacle_vertices(mapper: Mapper) -> int:
    """Mesh vertices within 5 cm of the obstacle patch."""
    v = mapper.mesh().vertices
    near = ((np.abs(v[:, 0] - OBSTACLE_X) < 0.05) & (np.abs(v[:, 1]) < 0.3)
            & (v[:, 2] > 0.15) & (v[:, 2] < 0.85))
    return int(near.sum())


def obstacle_cells(mapper: Mapper) -> np.ndarray:
    """Grid values on the obstacle's footprint line (x = 1.5..1.6, y = -0.2..0.2)."""
    grid = mapper.occupancy_grid()
    x, y = np.meshgrid([1.5, 1.55, 1.6], np.linspace(-0.2, 0.2, 9))
    return grid.value_at(x.ravel(), y.ravel())


def run(mapper: Mapper, frames: range, obstacle: bool) -> None:
    for i in frames:
        T = pose(i)
        mapper.integrate(Frame(scene_depth(T, obstacle), CAM, T, stamp_ns=i * 10**8))


def test_removed_obstacle_is_cleared_within_a_few_frames(device):
    mapper = mapper_for(device)
    run(mapper, range(110), obstacle=True)  # the obstacle's weights reach max_weight (100)
    assert obstacle_vertices(mapper) > 50
    assert (obstacle_cells(mapper) == OCCUPIED).all()
    blocks_with_obstacle = mapper.volume.num_blocks
    run(mapper, range(110, 120), obstacle=False)
    assert obstacle_vertices(mapper) == 0
    assert (obstacle_cells(mapper) == FREE).all()
    stats = mapper.stats()
    assert stats["blocks_released_free_space"] > 0
    assert stats["blocks"] < blocks_with_obstacle
    assert stats["grid_cells_cleared"] >= 9
    # The wall stays: every vertex near the wall plane is on it.
    v = mapper.mesh().vertices
    assert (np.abs(v[:, 0] - WALL_X) < 0.01).mean() > 0.95


def test_plain_average_forgets_slowly(device):
    """With clearing_weight_factor 1 (nvblox's plain average) the same 10 frames do not clear
    an obstacle seen 110 times: the factor is what makes clearing fast."""
    mapper = mapper_for(device, clearing_weight_factor=1.0)
    run(mapper, range(110), obstacle=True)
    run(mapper, range(110, 120), obstacle=False)
    assert obstacle_vertices(mapper) > 50


def test_without_clearing_the_obstacle_stays(device):
    mapper = mapper_for(device, clear_free_space=False)
    run(mapper, range(20), obstacle=True)
    run(mapper, range(20, 70), obstacle=False)
    assert obstacle_vertices(mapper) > 50
    assert (obstacle_cells(mapper) == OCCUPIED).all()


def test_object_that_appears_is_added(device):
    mapper = mapper_for(device)
    run(mapper, range(30), obstacle=False)
    assert obstacle_vertices(mapper) == 0
    assert (obstacle_cells(mapper) == FREE).all()
    run(mapper, range(30, 33), obstacle=True)
    assert obstacle_vertices(mapper) > 50
    assert (obstacle_cells(mapper) == OCCUPIED).all()


def test_one_stray_far_frame_keeps_a_well_observed_wall(device):
    mapper = mapper_for(device)
    run(mapper, range(30), obstacle=False)
    T = pose(30)
    depth = scene_depth(T, obstacle=False)
    depth[80:160, 120:200] = 4.5  # a block of far readings through the wall
    mapper.integrate(Frame(depth, CAM, T, stamp_ns=30 * 10**8))
    # The wall's front surface where the stray readings passed through it is still there, at
    # most a third of a voxel off. (The readings also make a surface of their own at 4.5 m,
    # and flip weakly observed voxels behind the wall, which the next frames restore.)
    v = mapper.mesh().vertices
    patch = ((np.abs(v[:, 1] - T[1, 3]) < 0.3) & (np.abs(v[:, 2] - 0.5) < 0.2)
             & (v[:, 0] < WALL_X + 0.1))
    assert patch.sum() > 50
    assert np.abs(v[patch, 0] - WALL_X).max() < VOXEL / 3


def test_weight_decay_forgets_what_is_no_longer_seen(device):
    mapper = mapper_for(device, decay_per_s=2.0)
    run(mapper, range(10), obstacle=False)
    assert mapper.volume.num_blocks > 0
    # 10 s later, seen from a pose looking away (+z up, nothing measured).
    T = look_at(np.array([0.0, 0.0, 0.5]), np.array([0.0, 0.0, 3.0]))
    mapper.integrate(Frame(np.zeros((240, 320), np.float32), CAM, T, stamp_ns=11 * 10**9))
    assert mapper.volume.num_blocks == 0
    assert mapper.stats()["blocks_released_decay"] > 0
    assert mapper.mesh().num_faces == 0


def test_clearing_radius_drops_far_blocks(device):
    mapper = Mapper(MapperConfig.from_dict({
        "volume": {"voxel_size_m": VOXEL, "device": device},
        "map": {"clearing_radius_m": 2.0}}))
    T = pose(0)
    mapper.integrate(Frame(scene_depth(T, obstacle=True), CAM, T))
    centre = torch.as_tensor(T[:3, 3], dtype=torch.float32, device=mapper.device)
    d = mapper._block_distances(centre)
    assert d.numel() > 0 and bool((d <= 2.0).all())  # the wall (3 m) is never allocated
    grid = mapper.occupancy_grid()  # and no 2D cell beyond the radius is carved either
    rows, cols = np.nonzero(grid.data != -1)
    x = grid.origin_xy[0] + (cols + 0.5) * grid.resolution_m
    y = grid.origin_xy[1] + (rows + 0.5) * grid.resolution_m
    assert len(x) > 100 and np.hypot(x - T[0, 3], y - T[1, 3]).max() <= 2.0 + VOXEL
    assert obstacle_vertices(mapper) > 100  # the obstacle (1.5 m away) is kept
    assert (np.abs(mapper.mesh().vertices[:, 0] - WALL_X) < 0.1).sum() == 0
    # Centred on a robot elsewhere: everything within 2 m of it survives, the rest goes.
    mapper.integrate(Frame(scene_depth(T, obstacle=True), CAM, T),
                     robot_position_m=np.array([4.0, 0.0, 0.5]))
    robot = torch.tensor([4.0, 0.0, 0.5], device=mapper.device)
    assert bool((mapper._block_distances(robot) <= 2.0).all())
    assert mapper.stats()["blocks_released_radius"] > 0
    assert obstacle_vertices(mapper) == 0  # 2.5 m from the robot: dropped
    assert (np.abs(mapper.mesh().vertices[:, 0] - WALL_X) < 0.01).sum() > 100  # now kept


def test_memory_budget_evicts_farthest_blocks(device):
    budget_mb = 1.0  # 101 blocks; the scene needs about 150
    mapper = Mapper(MapperConfig.from_dict({
        "volume": {"voxel_size_m": VOXEL, "device": device, "initial_capacity_blocks": 16},
        "map": {"max_memory_mb": budget_mb}}))
    limit = mapper.max_blocks()
    for i in range(12):
        T = pose(i)
        mapper.integrate(Frame(scene_depth(T, obstacle=True), CAM, T))
        stats = mapper.stats()
        assert stats["memory_mb"] <= budget_mb
        assert stats["blocks"] <= limit
    assert mapper.stats()["blocks_released_memory"] > 0
    # What is kept is what is nearest the camera: the obstacle, not the wall.
    assert obstacle_vertices(mapper) > 50


def test_released_blocks_read_as_unobserved_and_survive_save_load(device, tmp_path):
    mapper = mapper_for(device)
    run(mapper, range(20), obstacle=True)
    run(mapper, range(20, 30), obstacle=False)
    path = tmp_path / "map.pt"
    mapper.save(path)
    loaded = Mapper.load(path, device=device)
    assert loaded.volume.num_blocks == mapper.volume.num_blocks
    assert loaded.mesh().num_faces == mapper.mesh().num_faces
    np.testing.assert_array_equal(loaded.occupancy_grid().data, mapper.occupancy_grid().data)
    # Storage beyond the live blocks is back to "never observed".
    n = mapper.volume.num_blocks
    assert float(mapper.volume.weight[n:].abs().sum()) == 0.0


def test_occupancy_layers_incremental_equal_recomputed(device):
    """After clearing and releases, the incrementally kept grid and occupied voxels equal
    those computed from scratch from the same volume."""
    mapper = mapper_for(device)
    run(mapper, range(15), obstacle=True)
    mapper.occupancy_grid()  # consume the changes so far
    run(mapper, range(15, 25), obstacle=False)
    grid = mapper.occupancy_grid()
    points = mapper.occupied_voxels()
    fresh = mapper_for(device)
    fresh.volume = mapper.volume
    fresh._attach_outputs()
    fresh.occupancy.load_state_dict(mapper.occupancy.state_dict())
    np.testing.assert_array_equal(fresh.occupancy_grid().data, grid.data)
    assert sorted(map(tuple, fresh.occupied_voxels().tolist())) == sorted(
        map(tuple, points.tolist()))


@pytest.mark.parametrize("resolution_m", [0.05, 0.1, 0.12])
def test_grid_cells_larger_than_voxels_follow_changes(device, resolution_m):
    mapper = Mapper(MapperConfig.from_dict({
        "volume": {"voxel_size_m": VOXEL, "device": device},
        "occupancy": {"resolution_m": resolution_m, "free_below_m": 1.5,
                      "free_space_stride_px": 4}}))
    run(mapper, range(15), obstacle=True)
    assert (obstacle_cells(mapper) == OCCUPIED).any()
    run(mapper, range(15, 30), obstacle=False)
    grid = mapper.occupancy_grid()
    fresh = Mapper(mapper.config)
    fresh.volume = mapper.volume
    fresh._attach_outputs()
    fresh.occupancy.load_state_dict(mapper.occupancy.state_dict())
    np.testing.assert_array_equal(fresh.occupancy_grid().data, grid.data)
    assert not (obstacle_cells(mapper) == OCCUPIED).any()


def test_released_free_space_stays_free_in_the_grid(device):
    """With carving rays too sparse to cover the obstacle's footprint (stride 64 px), the cells
    are free only through the TSDF's free voxels; when those blocks are released, their free
    space is handed to the 2D layer, so the cells stay free instead of turning unknown."""
    mapper = Mapper(MapperConfig.from_dict({
        "volume": {"voxel_size_m": VOXEL, "device": device},
        "occupancy": {"free_below_m": 1.5, "free_space_stride_px": 64}}))
    run(mapper, range(20), obstacle=True)
    assert (obstacle_cells(mapper) == OCCUPIED).all()
    run(mapper, range(20, 40), obstacle=False)
    assert mapper.stats()["blocks_released_free_space"] > 0
    assert (obstacle_cells(mapper) == FREE).all()
    mapper.volume.release_hooks.clear()  # without the hand-over, the same run loses them
    fresh = Mapper(mapper.config)
    fresh.volume.release_hooks.clear()
    run(fresh, range(20), obstacle=True)
    run(fresh, range(20, 40), obstacle=False)
    assert not (obstacle_cells(fresh) == FREE).all()


def back_view_frame() -> Frame:
    """A camera behind the scene (x = 4.5 m, looking along -x) seeing a wall at x = 3.6 m:
    seen from the front afterwards, its blocks lie 0.6 m behind the wall at 3 m (hidden)."""
    T_back = look_at(np.array([4.5, 0.0, 0.5]), np.array([0.0, 0.0, 0.5]))
    u, v = np.meshgrid(np.arange(CAM.width), np.arange(CAM.height))
    rays = np.stack(((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)), -1)
    d = rays @ T_back[:3, :3].T
    return Frame(((WALL_X + 0.6 - T_back[0, 3]) / d[..., 0]).astype(np.float32), CAM, T_back)


def test_skipping_hidden_blocks_changes_nothing(device, monkeypatch):
    """Blocks entirely behind the measured surface are skipped by a tile max-depth test; the
    map must be exactly what updating every block in view gives."""
    import recon_ros.core.tsdf_integrator as integrator

    def mapped(skip: bool) -> tuple[Mapper, int]:
        if not skip:  # the reference: nothing is ever taken for hidden
            monkeypatch.setattr(integrator, "_behind_surface",
                                lambda frame, u, *rest: torch.zeros_like(u, dtype=torch.bool))
        mapper = mapper_for(device)
        mapper.integrate(back_view_frame())
        updated = 0
        for i in range(25):
            run(mapper, range(i, i + 1), obstacle=not 10 <= i < 18)
            updated += mapper.last_integration.blocks_updated
        return mapper, updated

    (skipping, n_skipping), (every, n_every) = mapped(True), mapped(False)
    assert n_skipping < n_every  # not vacuous: blocks of the hidden wall were skipped
    a, b = skipping.volume, every.volume
    assert a.num_blocks == b.num_blocks
    order_a = torch.argsort(a.index.slot_keys)
    order_b = torch.argsort(b.index.slot_keys)
    assert torch.equal(a.index.slot_keys[order_a], b.index.slot_keys[order_b])
    n = a.num_blocks
    assert torch.equal(a.tsdf[:n][order_a], b.tsdf[:n][order_b])
    assert torch.equal(a.weight[:n][order_a], b.weight[:n][order_b])
    assert torch.equal(a.color[:n][order_a], b.color[:n][order_b])


def test_a_free_block_next_to_a_surface_is_not_released(device):
    """A block whose own voxels are all free can still own the cubes that cross into a
    neighbour's negative voxels (a surface right at the block face, common at grazing angles):
    releasing it would cut a strip out of the mesh. Exact cases on hand-made voxels."""
    from recon_ros.core.tsdf_integrator import _no_surface_across_faces
    from recon_ros.core.volume import BlockVolume

    vol = BlockVolume(0.05, 8, 0.2, device)
    a, bx, diag = vol.allocate(torch.tensor([[0, 0, 0], [1, 0, 0], [-1, -1, -1]]))
    vol.tsdf[:3] = 0.2
    vol.weight[:3] = 1.0
    slot = torch.stack((a,))
    assert _no_surface_across_faces(vol, slot).tolist() == [True]
    vol.tsdf[bx, 5] = -0.05  # voxel (0, 0, 5) of block (1, 0, 0): on the face of block a
    assert _no_surface_across_faces(vol, slot).tolist() == [False]
    vol.tsdf[bx, 5] = 0.2
    vol.tsdf[bx, (1 * 8 + 0) * 8 + 0] = -0.05  # voxel (1, 0, 0): not adjacent to block a
    assert _no_surface_across_faces(vol, slot).tolist() == [True]
    vol.tsdf[diag, (7 * 8 + 7) * 8 + 7] = -0.05  # the corner voxel diagonal to a's voxel 0
    assert _no_surface_across_faces(vol, slot).tolist() == [False]
    vol.weight[diag, (7 * 8 + 7) * 8 + 7] = 0.0  # unobserved: no surface
    assert _no_surface_across_faces(vol, slot).tolist() == [True]
