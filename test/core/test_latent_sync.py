"""The latent fusion path with few host synchronisations (issue 10, item 5): the lazy decode
of the updated voxels dilated by one equals decoding every voxel, the translator's matmul form
equals its convolutions, and per-frame syncs and sorts are held as a ratchet."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from recon_ros.core import Mapper, MapperConfig
from recon_ros.core.block_hash import fixed_probing
from recon_ros.core.latent_integrator import LatentIntegrator
from recon_ros.core.latent_volume import LatentVolume, cube_offsets
from recon_ros.core.sync_audit import SyncOpCounter
from recon_ros.core.volume import neighbour_offsets
from recon_ros.models.checkpoint import save_weights
from recon_ros.models.networks import LatentFusionModel, ModelConfig, Translator

#: Host syncs per steady-state frame of the latent path on the scene below, measured when the
#: path was rebuilt (before: 7 in integrate, 4 in decode). Integrate: one compaction of the
#: grouped samples, two in the block hash's insert. Decode: one compaction of the dirty blocks,
#: one of the voxels to decode. Lower these when a change removes syncs.
INTEGRATE_SYNCS = 3
DECODE_SYNCS = 2
#: The same with free-space samples (``ModelConfig.free_space_samples``, issue 13 item 3):
#: the grouping's compaction, one to find the blocks holding band samples that need
#: allocating, the hash map's two when some do, one to compact the voxels of present blocks.
#: The 5^3 translator context decodes with the same two.
INTEGRATE_SYNCS_FREE_SPACE = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def _frames(count: int) -> list:
    from recon_ros.io.synthetic import (default_camera, iter_frames, make_random_scene,
                                        room_scan_trajectory)

    scene = make_random_scene(3_000_011)  # the latent mapper test's held-out room
    return list(iter_frames(scene, default_camera(64, 48), room_scan_trajectory(scene, 40),
                            color=False))[:count]


@pytest.fixture(scope="module")
def context5_weights(tmp_path_factory) -> str:
    """Untrained (seeded) weights with the 5^3 translator context and free-space samples."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "context5_free_space.pt"
    save_weights(LatentFusionModel(ModelConfig(free_space_samples=8, translator_context=5)),
                 path, {})
    return str(path)


@pytest.fixture(scope="module")
def plain_weights(tmp_path_factory) -> str:
    """Untrained (seeded) weights of the default architecture: no free-space samples, 3^3
    context (the path the first ratchet counts, whatever the shipped weights use)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "plain.pt"
    save_weights(LatentFusionModel(ModelConfig()), path, {})
    return str(path)


def _latent_mapper(device: str, weights: str = "") -> Mapper:
    return Mapper(MapperConfig.from_dict({"volume": {"voxel_size_m": 0.05, "device": device},
                                          "fusion": {"method": "latent",
                                                     "weights": weights}}))


def _full_decode(latent: LatentVolume, integ: LatentIntegrator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The definition: every voxel of every allocated block decoded from its neighbourhood by
    the translator's convolutions. Returns (n, V) TSDF (metres), weight, occupancy."""
    vol = latent.volume
    n = vol.num_blocks
    flat = torch.arange(n * vol.voxels_per_block, device=vol.device)
    out = torch.cat([integ.translator.net(latent.voxel_neighbourhoods(
        chunk, integ.context_radius).contiguous()).reshape(-1, 2)
        for chunk in torch.split(flat, 8192)]).reshape(n, -1, 2)
    count = latent.count[:n]
    seen = count > 0
    tsdf = (torch.tanh(out[..., 0]) * integ.truncation_voxels * vol.voxel_size_m).clamp(
        -vol.truncation_m, vol.truncation_m)
    return (torch.where(seen, tsdf, vol.truncation_m), count,
            torch.where(seen, torch.sigmoid(out[..., 1]), 0.0))


def _dilated(latent: LatentVolume, flat: torch.Tensor, radius: int) -> torch.Tensor:
    """(n, V) bool: voxels within ``radius`` voxels (a cube) of the voxels ``flat``."""
    vol = latent.volume
    nbr = latent.voxel_flat_index(latent.flat_to_voxels(flat)[:, None, :]
                                  + cube_offsets(radius, vol.device)[None], allocate=False)
    mask = torch.zeros(vol.num_blocks * vol.voxels_per_block, dtype=torch.bool,
                       device=vol.device)
    mask[nbr[nbr >= 0]] = True
    return mask.reshape(vol.num_blocks, -1)


@pytest.mark.parametrize("model, batch_blocks, batch_voxels", [
    ("shipped", 2048, 65536), ("shipped", 16, 1000), ("context5", 16, 1000)])
def test_lazy_decode_equals_decoding_every_voxel(device, batch_blocks, batch_voxels, model,
                                                 context5_weights):
    """For the 5^3 context (with free-space samples) a decode covers the updated voxels
    dilated by two; it must still equal decoding every voxel."""
    mapper = _latent_mapper(device, context5_weights if model == "context5" else "")
    latent, integ, vol = mapper.latent, mapper.latent_integrator, mapper.volume
    integ.decode_batch_blocks, integ.decode_batch_voxels = batch_blocks, batch_voxels
    updated = []
    decodes = 0
    for i, frame in enumerate(_frames(8)):
        with torch.no_grad():
            updated.append(integ.integrate(latent, mapper._to_device(frame)).voxels)
        if i in (1, 4):  # several frames between some decodes
            continue
        n = vol.num_blocks
        before = vol.tsdf[:n].clone(), vol.weight[:n].clone(), latent.occupancy[:n].clone()
        integ.decode_dirty(latent)
        decodes += 1
        after = vol.tsdf[:n], vol.weight[:n], latent.occupancy[:n]
        with torch.no_grad():
            tsdf, weight, occupancy = _full_decode(latent, integ)
        assert torch.allclose(after[0], tsdf, rtol=0, atol=1e-5)
        assert torch.equal(after[1], weight)
        assert torch.allclose(after[2], occupancy, rtol=0, atol=1e-5)
        # nothing outside the updated voxels dilated by one was written
        outside = ~_dilated(latent, torch.cat(updated), integ.context_radius)
        for old, new in zip(before, after):
            assert torch.equal(old[outside], new[outside])
        assert not latent.pending.any() and not latent.dirty.any()
        updated.clear()
    assert decodes == 6 and vol.num_blocks > 20


def test_pending_voxels_follow_released_blocks(device):
    mapper = _latent_mapper(device)
    latent, integ, vol = mapper.latent, mapper.latent_integrator, mapper.volume
    frames = _frames(5)
    for frame in frames[:3]:
        with torch.no_grad():
            integ.integrate(latent, mapper._to_device(frame))
    integ.decode_dirty(latent)
    with torch.no_grad():
        integ.integrate(latent, mapper._to_device(frames[3]))
    # release some blocks holding pending voxels: the last blocks move into their slots
    holding = torch.nonzero(latent.pending[:vol.num_blocks].any(1)).squeeze(1)
    gone = holding[torch.tensor([0, holding.numel() // 2, holding.numel() - 1])]
    released = vol.slot_coords(gone)
    vol.release(gone)
    integ.decode_dirty(latent)
    assert not latent.pending.any() and not latent.dirty.any()
    # Decoding never revisits the neighbours of a released block (their halo lost its
    # features); everywhere else the map is what decoding every voxel gives.
    near = vol.find((released[:, None, :] + neighbour_offsets(device)[None]).reshape(-1, 3))
    keep = torch.ones(vol.num_blocks, dtype=torch.bool, device=device)
    keep[near[near >= 0]] = False
    n = vol.num_blocks
    with torch.no_grad():
        tsdf, weight, occupancy = _full_decode(latent, integ)
    assert int(keep.sum()) > n // 2, (int(keep.sum()), n)
    assert torch.allclose(vol.tsdf[:n][keep], tsdf[keep], rtol=0, atol=1e-5)
    assert torch.equal(vol.weight[:n][keep], weight[keep])
    assert torch.allclose(latent.occupancy[:n][keep], occupancy[keep], rtol=0, atol=1e-5)


def test_translator_neighbourhood_matmuls_equal_its_convolutions():
    torch.manual_seed(0)
    translator = Translator(feature_channels=4, hidden=8)
    grid = torch.randn(2, 5, 6, 6, 6)
    with torch.no_grad():
        dense = translator(grid)  # (2, 2, 4, 4, 4) by the convolutions
        # every 3x3x3 window of the grid, as single-voxel neighbourhoods
        patches = grid.unfold(2, 3, 1).unfold(3, 3, 1).unfold(4, 3, 1)  # (2, 5, 4, 4, 4, 3,3,3)
        patches = patches.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(-1, 5, 3, 3, 3)
        single = translator(patches)  # (128, 2, 1, 1, 1) by the matmuls
    assert single.shape == (128, 2, 1, 1, 1)
    expected = dense.permute(0, 2, 3, 4, 1).reshape(-1, 2)
    assert torch.allclose(single.reshape(-1, 2), expected, rtol=0, atol=1e-6)
    # a channels-last view (what LatentVolume hands over) gives the same
    view = patches.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        assert torch.equal(translator(view), single)


class _SortCounter(TorchDispatchMode):
    """Counts the sorting ops (``sort``, ``argsort`` and every ``unique``) run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        name = func._schema.name.split("::")[-1]
        if name in ("sort", "argsort") or "unique" in name:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("model", ["plain", "context5"])
def test_latent_syncs_and_sorts_per_frame_stay_within_the_ratchet(model, context5_weights,
                                                                  plain_weights):
    mapper = _latent_mapper("cpu", context5_weights if model == "context5" else plain_weights)
    limit = INTEGRATE_SYNCS_FREE_SPACE if model == "context5" else INTEGRATE_SYNCS
    latent, integ = mapper.latent, mapper.latent_integrator
    for i, frame in enumerate(_frames(6)):
        ft = mapper._to_device(frame)
        with fixed_probing():  # the hash map probes as on an accelerator
            with torch.no_grad(), SyncOpCounter("cuda", sites=True) as syncs, \
                    _SortCounter() as sorts:
                integ.integrate(latent, ft)
            with SyncOpCounter("cuda", sites=True) as decode_syncs:
                integ.decode_dirty(latent)
        if i == 0:
            continue  # the first frame allocates the storage
        assert syncs.total <= limit, (i, syncs.ops, syncs.sites)
        assert decode_syncs.total <= DECODE_SYNCS, (i, decode_syncs.ops, decode_syncs.sites)
        assert sum(sorts.ops.values()) == 1, sorts.ops


def test_cuda_precision_is_validated():
    with pytest.raises(ValueError):
        LatentIntegrator(torch.nn.Identity(), torch.nn.Identity(), 1, 4.0, 8.0,
                         cuda_precision="bf16")
