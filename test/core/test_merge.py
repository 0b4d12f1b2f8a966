"""Merging maps: two halves of a scan merge into the map of the whole scan."""

import numpy as np
import pytest
import torch

from recon_ros.core import ConfigError, Mapper, MapperConfig
from recon_ros.io.synthetic import (default_camera, iter_frames, make_demo_scene,
                                    room_scan_trajectory)

#: Plain weighted averaging: no weight cap reached, no change detection and no behind-surface
#: weight drop (its exception for voxels the map held free depends on the order of frames).
PLAIN = {"integration": {"max_weight": 1e6, "clearing_weight_factor": 1.0,
                         "behind_surface_drop": False}}


def _frames(n: int = 16) -> list:
    scene = make_demo_scene()
    return list(iter_frames(scene, default_camera(96, 72), room_scan_trajectory(scene, n)))


def _mapper(device: str, **sections) -> Mapper:
    cfg = {"volume": {"voxel_size_m": 0.08, "device": device}, **PLAIN}
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    return Mapper(MapperConfig.from_dict(cfg))


def sorted_blocks(mapper: Mapper) -> list[torch.Tensor]:
    """Block keys (sorted) and their TSDF and weight (float32), in that order."""
    vol = mapper.volume
    order = torch.argsort(vol.index.slot_keys)
    n = vol.num_blocks
    return [vol.index.slot_keys[order]] + [t[:n][order].float() for t in (vol.tsdf,
                                                                          vol.weight)]


@pytest.mark.parametrize("clear", [False, True])
def test_two_halves_merge_into_the_whole(device, clear):
    """Without free-space clearing the merge equals one map of all frames (same blocks, TSDF
    and weights to float rounding); with clearing, blocks a half released differ, but every
    block both hold agrees."""
    frames = _frames()
    integration = {"clear_free_space": clear}
    whole = _mapper(device, integration=integration)
    first, second = _mapper(device, integration=integration), _mapper(device,
                                                                     integration=integration)
    for i, f in enumerate(frames):
        whole.integrate(f)
        (first if i < len(frames) // 2 else second).integrate(f)
    before = second.volume.num_blocks
    added = first.merge(second)
    assert added > 0 and second.volume.num_blocks == before  # the source is unchanged
    assert first.frames_integrated == len(frames)
    keys_w, tsdf_w, weight_w = sorted_blocks(whole)
    keys_m, tsdf_m, weight_m = sorted_blocks(first)
    if not clear:
        assert torch.equal(keys_w, keys_m)
        assert torch.allclose(weight_w, weight_m, atol=1e-4)
        seen = weight_w > 0
        assert torch.allclose(tsdf_w[seen], tsdf_m[seen], atol=1e-5)
        mesh_w, mesh_m = whole.mesh(), first.mesh()
        assert abs(mesh_w.num_faces - mesh_m.num_faces) <= 0.01 * mesh_w.num_faces
    common = np.intersect1d(keys_w.cpu().numpy(), keys_m.cpu().numpy())
    assert common.size > 0.8 * keys_w.numel()
    grid_w, grid_m = whole.occupancy_grid(), first.occupancy_grid()
    assert grid_m.data.shape == grid_w.data.shape
    assert (grid_m.data == grid_w.data).mean() > 0.97


def test_mismatched_maps_are_refused_and_left_unchanged(device):
    frames = _frames(4)
    a, b = _mapper(device), _mapper(device, volume={"voxel_size_m": 0.05})
    for f in frames:
        a.integrate(f)
        b.integrate(f)
    blocks = a.volume.num_blocks
    with pytest.raises(ConfigError, match="different voxel_size_m: 0.08 m and 0.05 m"):
        a.merge(b)
    c = _mapper(device, occupancy={"max_height_m": 1.0})
    c.integrate(frames[0])
    with pytest.raises(ConfigError, match="different max_height_m"):
        a.merge(c)
    assert a.volume.num_blocks == blocks


# ------------------------------------------------------------------ merging under a transform
VOXEL = 0.08


def _observed(mapper: Mapper) -> dict[tuple[int, int, int], tuple[float, float, tuple]]:
    """Global voxel index -> (tsdf, weight, color) of every observed voxel."""
    vol = mapper.volume
    n = vol.num_blocks
    idx = vol.voxel_indices(torch.arange(n, device=vol.device)).reshape(-1, 3)
    w = vol.weight[:n].reshape(-1)
    seen = w > 0
    return {tuple(i): (t, ww, tuple(c)) for i, t, ww, c in zip(
        idx[seen].tolist(), vol.tsdf[:n].reshape(-1)[seen].tolist(), w[seen].tolist(),
        vol.color[:n].reshape(-1, 3)[seen].tolist())}


def _rigid(deg: float, axis: tuple[float, float, float], t_m: tuple[float, float, float]
           ) -> np.ndarray:
    from transforms3d.axangles import axangle2mat

    T = np.eye(4)
    T[:3, :3] = axangle2mat(axis, np.deg2rad(deg))
    T[:3, 3] = t_m
    return T


def _map_of(frames: list, device: str, T_new_old: np.ndarray | None = None) -> Mapper:
    """A map of ``frames``, made in a frame ``T_new_old`` away from theirs."""
    import dataclasses

    mapper = _mapper(device)
    for f in frames:
        if T_new_old is not None:
            f = dataclasses.replace(f, T_world_cam=T_new_old @ f.T_world_cam)
        mapper.integrate(f)
    return mapper


def test_identity_transform_is_the_plain_merge_bit_for_bit(device):
    frames = _frames(8)
    a1, a2 = _map_of(frames[:4], device), _map_of(frames[:4], device)
    b = _map_of(frames[4:], device)
    a1.merge(b)
    a2.merge(b, np.eye(4))
    for x, y in zip(sorted_blocks(a1), sorted_blocks(a2)):
        assert torch.equal(x, y)
    assert np.array_equal(a1.occupancy_grid().data, a2.occupancy_grid().data)


def test_whole_voxel_translation_moves_every_voxel_exactly(device):
    m = _map_of(_frames(6), device)
    shift = np.array([3, -2, 1])
    moved = _mapper(device)
    moved.merge(m, _rigid(0, (0, 0, 1), tuple(shift * VOXEL)))
    expected = {(i + shift[0], j + shift[1], k + shift[2]): v
                for (i, j, k), v in _observed(m).items()}
    assert _observed(moved) == expected
    flat = _mapper(device)  # horizontal: the 2D grid (volume and carved free space) moves too
    flat.merge(m, _rigid(0, (0, 0, 1), (3 * VOXEL, -2 * VOXEL, 0.0)))
    grid, shifted = m.occupancy_grid(), flat.occupancy_grid()
    assert np.array_equal(grid.data, shifted.data)
    np.testing.assert_allclose(np.subtract(shifted.origin_xy, grid.origin_xy),
                               (3 * VOXEL, -2 * VOXEL), atol=1e-9)


def test_quarter_turn_is_exact_on_the_grid_and_a_rotated_map_merges_back(device):
    """A map rotated by 90 degrees about z (and a whole-voxel shift) and back is the same map
    bit for bit; a map made in the rotated frame, merged back, has the mesh of the map made
    directly (vertices within 0.1 mm at the median: only integration's rounding and block
    allocation differ)."""
    frames = _frames(6)
    m = _map_of(frames, device)
    T = _rigid(90, (0, 0, 1), (4 * VOXEL, -VOXEL, 0))
    there, back = _mapper(device), _mapper(device)
    there.merge(m, T)
    back.merge(there, np.linalg.inv(T))
    assert _observed(back) == _observed(m)
    assert np.array_equal(back.occupancy_grid().data, m.occupancy_grid().data)
    merged = _mapper(device)
    merged.merge(_map_of(frames, device, T), np.linalg.inv(T))
    _assert_same_surface(merged, m, max_median_gap_m=1e-4, sdf_slack_m=0.001)


def test_general_rotation_keeps_the_surface(device):
    """Under a rotation off the grid (25 degrees about a tilted axis, sub-voxel shift), the
    map made in the rotated frame and merged back (trilinear resampling) is as close to the
    analytic surface as the map made directly: mean |SDF| of its mesh vertices at most 5 mm
    and 90th percentile at most 1 cm above the direct map's, and the two meshes' vertices
    within a quarter voxel (2 cm) of each other at the median."""
    frames = _frames(6)
    m = _map_of(frames, device)
    T = _rigid(25, (0.2, -0.3, 1.0), (0.31, -0.17, 0.05))
    merged = _mapper(device)
    merged.merge(_map_of(frames, device, T), np.linalg.inv(T))
    _assert_same_surface(merged, m, max_median_gap_m=VOXEL / 4, sdf_slack_m=0.005)


def _assert_same_surface(pred: Mapper, ref: Mapper, max_median_gap_m: float,
                         sdf_slack_m: float) -> None:
    """``pred``'s mesh is about ``ref``'s: vertex counts within 5 %, the median distance from
    each mesh's vertices to the other's below ``max_median_gap_m``, and the distance of its
    vertices to the analytic demo scene (mean; 90th percentile: twice the slack) no more than
    ``sdf_slack_m`` above ``ref``'s."""
    from recon_ros.evaluation import nearest_distances

    scene = make_demo_scene()
    p, r = (np.asarray(x.mesh().vertices, dtype=np.float64) for x in (pred, ref))
    assert abs(len(p) - len(r)) <= 0.05 * len(r)
    assert np.median(nearest_distances(p, r)) < max_median_gap_m
    assert np.median(nearest_distances(r, p)) < max_median_gap_m
    sp, sr = np.abs(scene.sdf_np(p)), np.abs(scene.sdf_np(r))
    assert sp.mean() <= sr.mean() + sdf_slack_m
    assert np.quantile(sp, 0.9) <= np.quantile(sr, 0.9) + 2 * sdf_slack_m


@pytest.mark.parametrize("T, message", [
    (np.diag([1.0, 1.0, -1.0, 1.0]), "must be rigid"),
    (np.eye(3), "4x4"),
    (np.full((4, 4), np.nan), "finite"),
])
def test_bad_transforms_are_refused_before_anything_changes(device, T, message):
    frames = _frames(4)
    a, b = _map_of(frames[:2], device), _map_of(frames[2:], device)
    before = sorted_blocks(a)
    with pytest.raises(ConfigError, match=message):
        a.merge(b, T)
    for x, y in zip(before, sorted_blocks(a)):
        assert torch.equal(x, y)


def test_parse_transform_specs(tmp_path):
    from recon_ros.core.merge import parse_transform

    assert np.array_equal(parse_transform("identity"), np.eye(4))
    T = parse_transform("1,2,3,0,0,0.7071068,0.7071068")
    np.testing.assert_allclose(T, _rigid(90, (0, 0, 1), (1, 2, 3)), atol=1e-6)
    path = tmp_path / "T.txt"
    np.savetxt(path, T)
    assert np.array_equal(parse_transform(str(path)), T)
    for bad, message in (("1,2,3,0,0,0,2", "length 2"), ("1,2,3,a,0,0,1", "must be numbers"),
                         ("nowhere.txt", "not 'identity'")):
        with pytest.raises(ConfigError, match=message):
            parse_transform(bad)
