"""IncrementalMesher on a changing map: edits, block releases, a lost change log, and the cost
of an update (counted in blocks meshed, not timed)."""

from collections.abc import Callable

import numpy as np
import torch

from recon_ros.core.block_hash import pack_coords, unpack_keys
from recon_ros.core.marching_cubes import IncrementalMesher
from recon_ros.core.volume import CHANGE_LOG_LENGTH

from .test_marching_cubes import VOXEL, sdf_volume

TRUNC = 4 * VOXEL
MIN_WEIGHT = 1e-3


def sphere(radius: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """SDF (metres) of a sphere of ``radius`` metres at the origin, on (..., 3) points."""
    return lambda p: p.norm(dim=-1) - radius


def readers(keys: torch.Tensor) -> set[int]:
    """(K,) block keys -> the keys of those blocks and of their -x/-y/-z neighbours (the
    blocks whose cubes read their voxels), allocated or not."""
    below = torch.tensor([[-(c & 1), -((c >> 1) & 1), -((c >> 2) & 1)] for c in range(8)],
                         device=keys.device)
    coords = unpack_keys(keys)[:, None, :] + below[None]
    return set(pack_coords(coords.reshape(-1, 3)).tolist())


def triangles_by_block(mesher: IncrementalMesher) -> list[tuple[float, ...]]:
    """Every held triangle as ``(block key, 9 corner coordinates, 9 colors)``, sorted."""
    keys, counts, pos, rgb = mesher.block_triangles()
    block = np.repeat(keys, counts).astype(np.float64)[:, None]
    rows = np.concatenate((block, pos.reshape(-1, 9), rgb.reshape(-1, 9)), axis=1)
    return sorted(map(tuple, rows.tolist()))


def assert_matches_full_remesh(mesher: IncrementalMesher) -> None:
    """The incrementally kept triangles equal those of a new mesher meshing the whole volume:
    same blocks, same triangles per block (bitwise), same welded mesh."""
    fresh = IncrementalMesher(mesher.volume, mesher.min_weight)
    fresh.update()
    assert mesher.num_triangles == fresh.num_triangles
    assert triangles_by_block(mesher) == triangles_by_block(fresh)
    a, b = mesher.mesh(), fresh.mesh()
    # Vertices are welded by grid edge and sorted by edge key: equal arrays = equal edge keys.
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.colors, b.colors)
    assert sorted(map(tuple, a.faces.tolist())) == sorted(map(tuple, b.faces.tolist()))


def held_count(mesher: IncrementalMesher, key: int) -> int:
    """Number of triangles the mesher holds for block ``key``."""
    return int(mesher.block_triangles(torch.tensor([key]))[1][0])


def test_incremental_equals_full_after_random_edits_and_releases(device: str) -> None:
    vol = sdf_volume(device, sphere(0.6))  # 216 blocks
    mesher = IncrementalMesher(vol, MIN_WEIGHT, batch_blocks=16)
    mesher.update()
    assert_matches_full_remesh(mesher)
    gen = torch.Generator().manual_seed(7)
    released: list[int] = []
    for step in range(16):
        stamp = vol.stamp
        op = step % 4
        if op in (0, 1):  # new measurements in 24 blocks: another sphere, holes, spikes
            slots = torch.randperm(vol.num_blocks, generator=gen)[:24].to(vol.device)
            p = vol.voxel_centers(slots)
            centre = (torch.rand(3, generator=gen) * 1.2 - 0.6).to(vol.device)
            tsdf = ((p - centre).norm(dim=-1) - 0.3).clamp(-TRUNC, TRUNC)
            spikes = (torch.rand(tsdf.shape, generator=gen) < 0.05).to(vol.device)
            tsdf = torch.where(spikes, TRUNC * torch.sign(tsdf + 1e-6), tsdf)
            unseen = (torch.rand(tsdf.shape, generator=gen) < 0.1).to(vol.device)
            vol.tsdf[slots] = tsdf
            vol.weight[slots] = torch.where(unseen, 0.0, 1.0).to(vol.device)
            vol.color[slots] = (torch.rand(3, generator=gen) * 255).to(vol.device)
            vol.mark_changed(slots)
        elif op == 2:  # blocks forgotten (swap-remove: other blocks move to their slots)
            slots = torch.randperm(vol.num_blocks, generator=gen)[:4].to(vol.device)
            keys = vol.release(slots)
            released += keys.tolist()
        else:  # released blocks observed again, and the map growing beyond its first extent
            again = torch.tensor(released[-3:], dtype=torch.int64, device=vol.device)
            grown = pack_coords(torch.tensor([[3, 0, step % 3 - 1]], device=vol.device))
            keys = torch.cat((again, grown[~torch.isin(grown, vol.index.slot_keys)]))
            slots = vol.allocate_keys(keys)
            vol.tsdf[slots] = sphere(0.6)(vol.voxel_centers(slots)).clamp(-TRUNC, TRUNC)
            vol.weight[slots] = 1.0
            vol.mark_changed(slots)
        changes = vol.changes(stamp)
        updated = mesher.update()
        assert set(changes.released_keys.tolist()) <= set(updated.tolist())
        assert set(vol.index.slot_keys[changes.slots].tolist()) <= set(updated.tolist())
        assert torch.equal(updated, mesher.updated_block_keys)
        assert_matches_full_remesh(mesher)
    assert mesher.num_triangles > 1000
    # Most of the map forgotten at once (the triangle store shrinks).
    vol.release(torch.randperm(vol.num_blocks, generator=gen)[:-40].to(vol.device))
    mesher.update()
    assert mesher.num_triangles > 0
    assert_matches_full_remesh(mesher)


def test_repeated_re_meshing_keeps_memory_bounded(device: str) -> None:
    vol = sdf_volume(device, sphere(0.6))
    mesher = IncrementalMesher(vol, MIN_WEIGHT)
    mesher.update()
    first = mesher.memory_bytes()
    # Half the blocks changed: with their -x/-y/-z neighbours, nearly the whole surface is
    # re-meshed each time; 30 surfaces' worth of abandoned rows must not pile up.
    for i in range(30):
        vol.mark_changed(torch.arange(i % 2, vol.num_blocks, 2, device=vol.device))
        mesher.update()
        assert mesher.memory_bytes() <= 2 * first
    assert_matches_full_remesh(mesher)


def test_released_block_loses_its_triangles(device: str) -> None:
    vol = sdf_volume(device, sphere(0.6))
    mesher = IncrementalMesher(vol, MIN_WEIGHT)
    mesher.update()
    before = mesher.num_triangles
    keys, counts, _, _ = mesher.block_triangles()
    key = int(keys[np.argmax(counts)])
    vol.release(vol.index.lookup(torch.tensor([key], device=vol.device)))
    updated = mesher.update()
    assert key in updated.tolist() and key in mesher.updated_block_keys.tolist()
    assert held_count(mesher, key) == 0
    # Only the released block and the blocks reading it were touched; their cubes that read
    # the released voxels lost their faces too.
    assert set(updated.tolist()) <= readers(torch.tensor([key], device=vol.device))
    assert mesher.num_triangles < before - int(counts.max())
    assert_matches_full_remesh(mesher)
    # Nothing changed since: nothing to do.
    assert mesher.update().numel() == 0


def test_update_cost_is_proportional_to_the_change(device: str) -> None:
    vol = sdf_volume(device, lambda p: p[..., 2] - 0.013, block_range=(-5, 5))  # plane
    assert vol.num_blocks == 1000
    mesher = IncrementalMesher(vol, MIN_WEIGHT)
    mesher.update()
    assert mesher.blocks_meshed == 1000
    # A measurement in one block on the plane (interior: all its neighbours exist).
    key = pack_coords(torch.tensor([[1, -2, 0]], device=vol.device))
    slot = vol.index.lookup(key)
    vol.tsdf[slot, :8] -= 0.01
    vol.mark_changed(slot)
    updated = mesher.update()
    assert set(updated.tolist()) == readers(key)  # 8 blocks
    assert mesher.blocks_meshed == 1000 + 8
    assert mesher.update().numel() == 0 and mesher.blocks_meshed == 1008
    # Releasing one block re-meshes the 7 blocks reading it, and reports it.
    key = pack_coords(torch.tensor([[-1, 3, 0]], device=vol.device))
    vol.release(vol.index.lookup(key))
    updated = mesher.update()
    assert set(updated.tolist()) == readers(key)
    assert mesher.blocks_meshed == 1008 + 7
    assert_matches_full_remesh(mesher)


def test_lost_change_log_rebuilds_and_reports_vanished_blocks(device: str) -> None:
    vol = sdf_volume(device, sphere(0.6))
    mesher = IncrementalMesher(vol, MIN_WEIGHT)
    mesher.update()
    stamp = vol.stamp
    keys, counts, _, _ = mesher.block_triangles()
    gone = int(keys[np.argmax(counts)])
    vol.release(vol.index.lookup(torch.tensor([gone], device=vol.device)))
    for _ in range(CHANGE_LOG_LENGTH):  # the release scrolls out of the log
        vol.mark_changed(torch.tensor([0], device=vol.device))
    assert not vol.changes(stamp).complete
    updated = mesher.update()
    assert set(updated.tolist()) == set(vol.index.slot_keys.tolist()) | {gone}
    assert held_count(mesher, gone) == 0
    assert_matches_full_remesh(mesher)
    # A reset volume: every block that had triangles is reported, none are left.
    held = set(mesher.block_triangles()[0].tolist())
    vol.reset()
    assert set(mesher.update().tolist()) == held
    assert mesher.num_triangles == 0 and mesher.mesh().num_faces == 0
