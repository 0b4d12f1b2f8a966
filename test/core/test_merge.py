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


def _sorted(mapper: Mapper) -> list[torch.Tensor]:
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
    keys_w, tsdf_w, weight_w = _sorted(whole)
    keys_m, tsdf_m, weight_m = _sorted(first)
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
