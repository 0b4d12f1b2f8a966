"""Latent fusion: extraction and integration index math by hand, decoding consistency,
determinism, checkpoints, a tiny overfit run, what weights were trained for and the mapper's
check of it, and the shipped weights against TSDF fusion."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from recon_ros.core import Mapper, MapperConfig
from recon_ros.core.errors import ConfigError, ReconError
from recon_ros.core.frame import PinholeCamera
from recon_ros.core.latent_integrator import (LatentIntegrator, free_space_sample_voxels,
                                              group_samples, ray_sample_voxels,
                                              segment_mean)
from recon_ros.core.latent_volume import LatentVolume
from recon_ros.core.volume import BlockVolume
from recon_ros.models.checkpoint import (DEFAULT_WEIGHTS, load_training_state, load_weights,
                                         save_weights)
from recon_ros.models.data import NoiseRanges, frame_tensors, training_sequence
from recon_ros.models.evaluate_fusion import FusionEvalConfig, MethodResult, evaluate_fusion
from recon_ros.models.networks import LatentFusionModel, ModelConfig
from recon_ros.models.train import SMALL, TrainConfig, train, train_sequence
from recon_ros.models.trained_for import TrainedFor

TINY_MODEL = ModelConfig(feature_channels=4, samples_per_side=2, fusion_hidden=8,
                         translator_hidden=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def _camera(width: int, height: int, f: float, cx: float, cy: float) -> PinholeCamera:
    return PinholeCamera(np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]]), width, height)


# ------------------------------------------------------------------------- extraction
def test_ray_samples_one_pixel_by_hand(device):
    # Pixel (0, 0) on the optical axis, identity pose, depth 1.0 m, voxel 0.1 m, n = 2:
    # samples at z = 0.8, 0.9, 1.0, 1.1, 1.2 -> voxels (0, 0, 8..12).
    depth = torch.tensor([[1.0]], device=device)
    voxels, ray = ray_sample_voxels(depth, (1.0, 1.0, 0.0, 0.0), torch.eye(4, device=device),
                                    0.1, 2)
    assert voxels.shape == (1, 1, 5, 3) and ray.shape == (1, 1, 3)
    assert voxels[0, 0].tolist() == [[0, 0, 8], [0, 0, 9], [0, 0, 10], [0, 0, 11], [0, 0, 12]]
    assert torch.allclose(ray[0, 0], torch.tensor([0.0, 0.0, 1.0], device=device))


def test_ray_samples_oblique_pixel_and_pose_by_hand(device):
    # Pixel (1, 0) with fx = 1, cx = 0: ray (1, 0, 1), |ray| = sqrt(2). Depth 1 m means the
    # point (1, 0, 1); samples are one voxel (0.1 m) apart along the unit ray, i.e.
    # (1 + k * 0.1 / sqrt(2)) * (1, 0, 1). The camera sits at (0, 0, 5) in the map, with
    # optical x = map x, optical z = map -z (turned upside down about x).
    depth = torch.tensor([[0.0, 1.0]], device=device)
    T = torch.tensor([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 5], [0, 0, 0, 1]],
                     device=device)
    voxels, _ = ray_sample_voxels(depth, (1.0, 1.0, 0.0, 0.0), T, 0.1, 1)
    s = [1 + k * 0.1 / math.sqrt(2) for k in (-1, 0, 1)]  # 0.929, 1.0, 1.071
    expected = [[round(10 * v), 0, round(10 * (5 - v))] for v in s]
    assert expected == [[9, 0, 41], [10, 0, 40], [11, 0, 39]]
    assert voxels[0, 1].tolist() == expected


def test_samples_are_grouped_by_block_and_voxel_and_mean_pooled(device):
    # B = 2: voxels (0, 0, 1) and (1, 1, 1) share block (0, 0, 0); (-1, 0, 0) is in block
    # (-1, 0, 0); the invalid sample is dropped whatever its voxel.
    voxels = torch.tensor([[1, 1, 1], [0, 0, 1], [-1, 0, 0], [0, 0, 1], [9, 9, 9], [1, 1, 1]],
                          device=device)
    valid = torch.tensor([True, True, True, True, False, True], device=device)
    g = group_samples(voxels, valid, 2)
    assert g.block_coords.tolist() == [[-1, 0, 0], [0, 0, 0]]
    assert g.voxel_block.tolist() == [0, 1, 1]
    assert g.voxel_local.tolist() == [4, 1, 7]  # local (1, 0, 0), (0, 0, 1), (1, 1, 1)
    assert g.voxel_samples.tolist() == [1.0, 2.0, 2.0]
    assert g.sample_voxel.tolist() == [2, 1, 0, 1, 3, 2]
    updates = torch.tensor([[4.0, 4.0], [1.0, 0.0], [3.0, 2.0], [0.0, 1.0], [9.0, 9.0],
                            [2.0, 1.0]], device=device)
    mean = segment_mean(g.sample_voxel, updates, g.voxel_samples)
    assert mean.tolist() == [[3.0, 2.0], [0.5, 0.5], [3.0, 2.5]]


def test_grouping_nothing_valid(device):
    g = group_samples(torch.zeros((4, 3), dtype=torch.int64, device=device),
                      torch.zeros(4, dtype=torch.bool, device=device), 8)
    assert g.block_coords.shape == (0, 3) and g.voxel_local.numel() == 0
    assert g.sample_voxel.tolist() == [0, 0, 0, 0]


def test_grouping_rejects_samples_beyond_the_index_range(device):
    voxels = torch.tensor([[0, 0, 0], [8 << 20, 0, 0]], device=device)
    with pytest.raises(ReconError):
        group_samples(voxels, torch.ones(2, dtype=torch.bool, device=device), 8)
    # invalid samples may lie anywhere
    g = group_samples(voxels, torch.tensor([True, False], device=device), 8)
    assert g.voxel_local.tolist() == [0]


class _FixedUpdates(nn.Module):
    """A stand-in fusion network returning a given (1, K * F, H, W) tensor."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2:] == self.out.shape[2:]
        return self.out


def test_integration_by_hand(device):
    # Two pixels whose rays (x = -+0.5 mm at 1 m) hit the same voxels: every sample collides.
    F, n = 2, 1
    K = 2 * n + 1
    cam = _camera(2, 1, 1000.0, 0.5, 0.0)
    vol = BlockVolume(0.1, 4, 0.4, device, initial_capacity_blocks=1)
    latent = LatentVolume(vol, F)
    ft = frame_tensors(np.array([[1.0, 1.0]], np.float32), cam, np.eye(4), 0.1, 5.0, device)
    out = torch.zeros(1, K * F, 1, 2, device=device)
    out[0, :, 0, 0], out[0, :, 0, 1] = 1.0, -0.5  # pooled mean 0.25
    integ = LatentIntegrator(_FixedUpdates(out), nn.Identity(), n, 4.0, max_count=2.0)
    update = integ.integrate(latent, ft)
    assert latent.flat_to_voxels(update.voxels).tolist() == [[0, 0, 9], [0, 0, 10], [0, 0, 11]]
    feats = latent.features.reshape(-1, F)[update.voxels]
    assert torch.allclose(feats, torch.full((K, F), 0.25, device=device))
    assert latent.count.reshape(-1)[update.voxels].tolist() == [1.0] * K
    assert float(update.update_variance) == pytest.approx(2 * 0.75 ** 2)  # F * 0.75^2
    assert int(latent.count.sum()) == K  # nothing else was touched
    assert latent.dirty[:vol.num_blocks].all()
    # Second frame: updates 1.0 -> running average (1 * 0.25 + 1.0) / 2 = 0.625, count 2.
    out.fill_(1.0)
    integ.integrate(latent, ft)
    assert torch.allclose(latent.features.reshape(-1, F)[update.voxels],
                          torch.full((K, F), 0.625, device=device))
    # Third frame: the count is capped at max_count = 2: (2 * 0.625 + 1) / 3 = 0.75.
    integ.integrate(latent, ft)
    assert torch.allclose(latent.features.reshape(-1, F)[update.voxels],
                          torch.full((K, F), 0.75, device=device))
    assert latent.count.reshape(-1)[update.voxels].tolist() == [2.0] * K


def test_invalid_pixels_are_skipped(device):
    cam = _camera(3, 1, 100.0, 1.0, 0.0)
    vol = BlockVolume(0.1, 4, 0.4, device)
    latent = LatentVolume(vol, 2)
    out = torch.ones(1, 3 * 2, 1, 3, device=device)
    integ = LatentIntegrator(_FixedUpdates(out), nn.Identity(), 1, 4.0, max_count=10.0)
    ft = frame_tensors(np.array([[0.0, np.nan, 9.0]], np.float32), cam, np.eye(4), 0.1, 5.0,
                       device)
    assert integ.integrate(latent, ft).voxels.numel() == 0 and vol.num_blocks == 0


# ------------------------------------------------- free-space samples (issue 13, item 3)
def test_free_space_samples_land_where_computed_by_hand(device):
    # 3 x 1 image, fx = 1000, cx = 2: pixel 2 looks along the optical axis. Voxel 0.1 m,
    # n = 2, S = 4, range 8 voxels. Pixel phase phi = frac(R2_U * u + R2_V * v).
    depth = torch.tensor([[0.5, 0.35, 2.0]], device=device)
    voxels, inside, ahead = free_space_sample_voxels(
        depth, (1000.0, 1000.0, 2.0, 0.0), torch.eye(4, device=device), 0.1, 2, 4, 8.0)
    assert voxels.shape == (1, 3, 4, 3) and inside.shape == ahead.shape == (1, 3, 4)
    # pixel 2, depth 2 m: t_hi = 2 - 3 * 0.1 = 1.7, t_lo = max(0.1, 1.7 - 0.8) = 0.9,
    # phi = frac(2 * 0.75487766) = 0.50975533, t_j = 1.7 - (j + phi) * 0.2
    phi = (2 * 0.7548776662466927) % 1.0
    t = [1.7 - (j + phi) * 0.2 for j in range(4)]  # 1.598, 1.398, 1.198, 0.998
    assert [round(10 * v) for v in t] == [16, 14, 12, 10]
    assert voxels[0, 2].tolist() == [[0, 0, 16], [0, 0, 14], [0, 0, 12], [0, 0, 10]]
    assert inside[0, 2].all()
    assert torch.allclose(ahead[0, 2], torch.tensor([2.0 - v for v in t], device=device),
                          atol=1e-5)
    # pixel 0 (phi = 0), depth 0.5 m: t_hi = 0.2, t_lo = 0.1 (clamped): 0.2, 0.175, 0.15, 0.125
    assert inside[0, 0].all()
    r = math.sqrt(1 + 0.002 ** 2)  # |ray| of pixel 0
    assert torch.allclose(ahead[0, 0], torch.tensor(
        [0.5 * r - v for v in (0.2, 0.175, 0.15, 0.125)], device=device), atol=1e-5)
    # pixel 1, depth 0.35 m: t_hi = 0.05 < t_lo = 0.1: no free-space stretch
    assert not inside[0, 1].any()


class _BandAndFreeSpace(nn.Module):
    """A hand-set fusion network (F = 1): band sample ``k`` of ``2n + 1`` gets the observed
    normalized SDF ``-(k - n) / n``, every free-space sample ``+1`` (free): the latent code is
    then the running average of classical TSDF observations."""

    def __init__(self, n: int, free_samples: int) -> None:
        super().__init__()
        band = [-(k - n) / n for k in range(2 * n + 1)]
        self.values = torch.tensor(band + [1.0] * free_samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        return self.values.to(x.device)[None, :, None, None].expand(1, -1, h, w)


class _CentreFeature(nn.Module):
    """A hand-set translator: normalized TSDF = the centre voxel's feature (channel 0),
    occupancy logit = -10 x it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[2] // 2
        f = x[:, 0, c, c, c]
        return torch.stack((f, -10.0 * f), 1)[:, :, None, None, None]


def _floater_run(device: str, free_samples: int) -> tuple[list[float], LatentVolume, int]:
    """A 5 x 5 camera on the map's z axis sees a 'floater' at 1 m in frame 1, then the true
    wall at 3 m in frames 2-6. Returns the decoded TSDF (metres) of voxel (0, 0, 11), one
    voxel behind the floater's surface, after each frame, the latent map and its blocks after
    frame 1."""
    n, voxel = 1, 0.1
    cam = _camera(5, 5, 100.0, 2.0, 2.0)
    vol = BlockVolume(voxel, 8, n * voxel, device)
    latent = LatentVolume(vol, 1)
    # S = 32 samples over 32 voxels: at most one voxel apart, every voxel on the axis is hit
    integ = LatentIntegrator(_BandAndFreeSpace(n, free_samples), _CentreFeature(), n, float(n),
                             max_count=64.0, free_space_samples=free_samples,
                             free_space_range_voxels=32.0)
    target = latent.voxel_flat_index(torch.tensor([[0, 0, 11]], device=device), allocate=True)
    out, blocks_after_floater = [], 0
    for i, d in enumerate([1.0] + [3.0] * 5):
        ft = frame_tensors(np.full((5, 5), d, np.float32), cam, np.eye(4), 0.1, 5.0, device)
        integ.integrate(latent, ft)
        integ.decode_dirty(latent)
        out.append(float(vol.tsdf.reshape(-1)[target]))
        if i == 0:
            blocks_after_floater = vol.num_blocks
    return out, latent, blocks_after_floater


def test_free_space_observations_overwrite_a_floater(device):
    # Frame 1 writes the floater: voxel (0, 0, 11) is one voxel behind its surface, -1
    # normalized = -0.1 m. Each wall frame's free-space samples pass it (+1): the running
    # average after k wall frames is (-1 + k) / (1 + k), e.g. 4 / 6 after five.
    tsdf, latent, blocks = _floater_run(device, free_samples=32)
    expected = [0.1 * (-1 + k) / (1 + k) for k in range(6)]
    assert tsdf == pytest.approx(expected, abs=1e-6)
    # Without free-space samples the floater stays as it was written.
    kept, _, _ = _floater_run(device, free_samples=0)
    assert kept == pytest.approx([-0.1] * 6, abs=1e-6)
    # Free-space samples never allocate: the wall frames' blocks come from their band only
    # (the floater's blocks, plus the wall's), and the floater's blocks got no new block.
    vol = latent.volume
    z = vol.slot_coords(torch.arange(vol.num_blocks, device=device))[:, 2].tolist()
    assert sorted(set(z)) == [1, 3] and blocks > 0  # z blocks of 0.8 m: 1 m and 3 m walls


def test_free_space_samples_update_only_allocated_blocks(device):
    # One frame into an empty map allocates exactly what the band alone allocates, and every
    # updated voxel lies in those blocks; the update count of the frame covers both kinds.
    cam = _camera(6, 4, 50.0, 3.0, 2.0)
    ft = frame_tensors(np.full((4, 6), 2.0, np.float32), cam, np.eye(4), 0.1, 5.0, device)
    vols = []
    for s in (0, 8):
        vol = BlockVolume(0.05, 8, 0.1, device)
        latent = LatentVolume(vol, 1)
        integ = LatentIntegrator(_BandAndFreeSpace(2, s), _CentreFeature(), 2, 2.0, 64.0,
                                 free_space_samples=s, free_space_range_voxels=16.0)
        update = integ.integrate(latent, ft)
        vols.append((vol.num_blocks, update.voxels.numel(), update.blocks))
    (b0, u0, k0), (b1, u1, k1) = vols
    assert b0 == b1 and k0 == k1 == b0  # no block allocated for free-space samples
    assert u1 > u0  # free-space samples in the band's blocks update further voxels


def test_model_config_new_fields_default_off_for_old_weights(tmp_path):
    # a file written before the fields existed: its model_config lacks them
    torch.manual_seed(0)
    save_weights(LatentFusionModel(TINY_MODEL), tmp_path / "old.pt", {})
    state = torch.load(tmp_path / "old.pt", weights_only=True)
    for key in ("free_space_samples", "free_space_range_voxels", "translator_context"):
        del state["model_config"][key]
    torch.save(state, tmp_path / "old.pt")
    model, _ = load_weights(tmp_path / "old.pt")
    assert model.config.free_space_samples == 0 and model.config.translator_context == 3
    integ = model.integrator(64.0)
    assert integ.free_space_samples == 0 and integ.translator_context == 3
    # the shipped weights (2026-11-29) use free-space samples with a 3^3 context
    shipped, meta = load_weights()
    assert shipped.config.free_space_samples == 8 and shipped.config.translator_context == 3
    # lineage: 225 sequences from scratch, +12, +400 with free-space samples
    assert meta["sequences_done"] == 400
    assert meta["warm_start_from"]["sequences_done"] == 12
    assert meta["warm_start_from"]["warm_start_from"]["sequences_done"] == 225
    with pytest.raises(ConfigError):
        ModelConfig(translator_context=4)
    with pytest.raises(ConfigError):
        ModelConfig(free_space_samples=-1)
    cfg = ModelConfig(feature_channels=2, samples_per_side=1, fusion_hidden=4,
                      translator_hidden=4, free_space_samples=3, translator_context=5)
    torch.manual_seed(0)
    save_weights(LatentFusionModel(cfg), tmp_path / "w.pt", {})
    again, _ = load_weights(tmp_path / "w.pt")
    assert again.config == cfg
    assert again.translator.net[0].kernel_size == (5, 5, 5)


# --------------------------------------------------------------------------- decoding
def test_block_decoding_equals_single_voxel_decoding(device):
    torch.manual_seed(0)
    model = LatentFusionModel(TINY_MODEL).to(device)
    vol = BlockVolume(0.05, 4, 0.2, device)
    latent = LatentVolume(vol, TINY_MODEL.feature_channels)
    # random features in a 2 x 2 x 1 patch of blocks, some voxels unobserved
    flat = latent.voxel_flat_index(torch.tensor([[x, y, z] for x in range(8) for y in range(8)
                                                 for z in range(4)], device=device),
                                   allocate=True)
    latent.features.reshape(-1, 4)[flat] = torch.randn(flat.numel(), 4, device=device)
    latent.count.reshape(-1)[flat] = torch.randint(0, 3, (flat.numel(),), device=device).float()
    latent.mark_updated(flat, torch.arange(vol.num_blocks, device=device))
    integ = model.integrator(64.0)
    slots = integ.decode_dirty(latent)
    assert slots.numel() == vol.num_blocks == 4
    with torch.no_grad():
        tsdf, occ = integ.decode_voxels(latent, flat)
    seen = latent.count.reshape(-1)[flat] > 0
    expect = (tsdf * 4.0 * 0.05).clamp(-0.2, 0.2)
    assert torch.allclose(vol.tsdf.reshape(-1)[flat][seen], expect[seen], atol=1e-5)
    assert torch.all(vol.tsdf.reshape(-1)[flat][~seen] == 0.2)
    assert torch.allclose(latent.occupancy.reshape(-1)[flat][seen], torch.sigmoid(occ)[seen],
                          atol=1e-5)
    assert torch.equal(vol.weight.reshape(-1)[flat], latent.count.reshape(-1)[flat])
    assert integ.decode_dirty(latent).numel() == 0  # nothing changed since


# ------------------------------------------------------------- training and checkpoints
def _tiny_train_config(**kw) -> TrainConfig:
    base = dict(model=TINY_MODEL, sequences=2, frames_per_sequence=2, tbptt_frames=1,
                resolutions=((32, 24),), warmup_sequences=1, checkpoint_every=1,
                validate_every=100, validation_sequences=1, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_training_is_deterministic_and_resumable(tmp_path):
    cfg = _tiny_train_config(sequences=3)
    a = train(cfg, tmp_path / "a", log=lambda _: None)
    # stopped by its time limit after one sequence, then resumed without the limit
    b_partial = train(_tiny_train_config(sequences=3, time_limit_s=1e-9), tmp_path / "b",
                      log=lambda _: None)
    assert b_partial.sequences_done == 1 and not b_partial.finished
    assert load_training_state(tmp_path / "b" / "checkpoint.pt")["sequences_done"] == 1
    b = train(cfg, tmp_path / "b", log=lambda _: None)
    assert a.finished and b.finished and b.sequences_done == 3
    with pytest.raises(ConfigError):  # another configuration cannot resume this run
        train(_tiny_train_config(sequences=3, learning_rate=0.1), tmp_path / "b",
              log=lambda _: None)
    wa, meta_a = load_weights(a.weights)
    wb, _ = load_weights(b.weights)
    assert TrainedFor.from_meta(meta_a) == cfg.trained_for() == TrainedFor(
        voxel_size_m=0.05, truncation_voxels=4.0, resolutions=((32, 24),), max_count=64.0,
        min_depth_m=0.1, max_depth_m=5.0)
    assert meta_a["trained_for"]["truncation_m"] == pytest.approx(0.2)
    for (k, va), (_, vb) in zip(wa.state_dict().items(), wb.state_dict().items()):
        assert torch.equal(va, vb), k
    assert (tmp_path / "a" / "loss.png").stat().st_size > 1000
    other = train(_tiny_train_config(sequences=1, seed=1), tmp_path / "c", log=lambda _: None)
    wc, _ = load_weights(other.weights)
    assert not torch.equal(wc.fusion.decode[-1].weight, wa.fusion.decode[-1].weight)


def test_weights_round_trip(tmp_path):
    torch.manual_seed(3)
    model = LatentFusionModel(TINY_MODEL)
    save_weights(model, tmp_path / "w.pt", {"note": "test"})
    loaded, meta = load_weights(tmp_path / "w.pt")
    assert meta == {"note": "test"} and loaded.config == TINY_MODEL
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.randn(1, 5, 3, 3, 3)
    assert torch.equal(model.translator(x), loaded.translator(x))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ReconError):
        load_weights(tmp_path / "bad.pt")


def test_tiny_overfit_loss_falls():
    model_cfg = ModelConfig(feature_channels=4, samples_per_side=2, fusion_hidden=16,
                            translator_hidden=16)
    cfg = _tiny_train_config(model=model_cfg, frames_per_sequence=2, tbptt_frames=2)
    clean = NoiseRanges(clean_fraction=1.0, outlier_fractions=(0.0,), hole_fractions=(0.0,))
    seq = training_sequence(0, 0, 2, 60, ((32, 24),), clean)
    torch.manual_seed(0)
    model = LatentFusionModel(model_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = [train_sequence(model, opt, seq, cfg)["loss"] for _ in range(40)]
    assert np.mean(losses[-5:]) < 0.4 * np.mean(losses[:3]), losses


# ---------------------------------------------------------------- mapper and shipped weights
def test_fusion_config_is_validated():
    with pytest.raises(ConfigError):
        MapperConfig.from_dict({"fusion": {"method": "magic"}})
    with pytest.raises(ConfigError):
        MapperConfig.from_dict({"fusion": {"max_count": 0.5}})
    with pytest.raises(ConfigError, match="allow_weights_mismatch"):
        MapperConfig.from_dict({"fusion": {"allow_weights_mismatch": "yes"}})


def test_shipped_weights_are_in_the_package():
    """The default weights are a shipped artifact: missing is a failure, not a skip."""
    assert DEFAULT_WEIGHTS.is_file(), f"{DEFAULT_WEIGHTS} is missing from the package"


def test_shipped_weights_record_their_training_geometry():
    _, meta = load_weights()
    trained = TrainedFor.from_meta(meta)
    # the shipped run used the small preset's geometry, recorded in full in its train_config
    assert trained == SMALL.trained_for() == TrainConfig.from_dict(
        meta["train_config"]).trained_for()
    assert (trained.voxel_size_m, trained.truncation_m) == (0.05, pytest.approx(0.2))
    assert trained.size_range == ((80, 60), (160, 120))


def _latent_config(**sections) -> MapperConfig:
    d = {k: dict(v) for k, v in sections.items()}
    d.setdefault("fusion", {})["method"] = "latent"
    return MapperConfig.from_dict(d)


def test_shipped_weights_load_with_the_default_config(caplog):
    with caplog.at_level(logging.WARNING):
        mapper = Mapper(_latent_config())
    assert caplog.records == []
    assert mapper.latent_integrator.trained_size_range == ((80, 60), (160, 120))
    # within the tolerance (1 %): the same geometry
    Mapper(_latent_config(volume={"voxel_size_m": 0.0502}))


@pytest.mark.parametrize("sections, ours, theirs", [
    ({"volume": {"voxel_size_m": 0.04}}, "volume.voxel_size_m=0.04 m",
     "weights trained for 0.05 m"),
    ({"integration": {"truncation_voxels": 3.0}}, "integration.truncation_voxels=3 (= 0.15 m",
     "weights trained for 4 voxels = 0.2 m"),
])
def test_weights_mismatch_is_refused_unless_allowed(caplog, sections, ours, theirs):
    with pytest.raises(ConfigError) as err:
        Mapper(_latent_config(**sections))
    for needle in (ours, theirs, "fusion.allow_weights_mismatch: true", DEFAULT_WEIGHTS.name):
        assert needle in str(err.value), needle
    with caplog.at_level(logging.WARNING):
        mapper = Mapper(_latent_config(**sections, fusion={"allow_weights_mismatch": True}))
    assert mapper.latent is not None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and ours in warnings[0] and theirs in warnings[0]
    assert "running them anyway" in warnings[0]


def test_other_max_count_and_frame_sizes_warn_once(caplog):
    from recon_ros.io.synthetic import (default_camera, iter_frames, make_demo_scene,
                                        room_scan_trajectory)

    scene = make_demo_scene()
    pose = room_scan_trajectory(scene, 4).poses[0]
    with caplog.at_level(logging.WARNING):
        mapper = Mapper(_latent_config(fusion={"max_count": 32.0}))
        assert [r.getMessage() for r in caplog.records] == [
            f"fusion.max_count=32 differs from the 64 the latent weights {DEFAULT_WEIGHTS} "
            "were trained with"]
        caplog.clear()
        for size in ((64, 48), (120, 90), (64, 48), (320, 240)):
            frame = next(iter_frames(scene, default_camera(*size), [pose], color=False))
            mapper.integrate(frame)
    assert [r.getMessage() for r in caplog.records] == [
        f"latent fusion of {w}x{h} frames: the weights were trained on 80x60 .. 160x120, "
        "results may be worse than on those sizes" for w, h in ((64, 48), (320, 240))]


def test_weights_without_training_geometry_warn(tmp_path, caplog):
    torch.manual_seed(0)
    save_weights(LatentFusionModel(TINY_MODEL), tmp_path / "old.pt", {"note": "before v2"})
    with caplog.at_level(logging.WARNING):
        mapper = Mapper(_latent_config(fusion={"weights": str(tmp_path / "old.pt")}))
    assert mapper.latent_integrator.trained_size_range is None
    assert len(caplog.records) == 1
    assert "do not record what they were trained for" in caplog.records[0].getMessage()


def test_missing_weights_are_a_config_error(tmp_path, monkeypatch):
    from recon_ros.models import trained_for

    with pytest.raises(ConfigError, match=r"fusion.weights='.*nope.pt': no weight file at"):
        Mapper(_latent_config(fusion={"weights": str(tmp_path / "nope.pt")}))
    monkeypatch.setattr(trained_for, "DEFAULT_WEIGHTS", tmp_path / "gone.pt")
    with pytest.raises(ConfigError, match="shipped latent weights .*gone.pt are missing"):
        Mapper(_latent_config())


#: Issue 13's goal for the outlier-caused error: at least 25 % below the classical baseline's.
OUTLIER_GOAL = 0.75


@pytest.fixture(scope="module")
def outlier_run() -> dict[str, MethodResult]:
    """Every method of ``recon-ros eval-fusion-unbiased`` on one held-out room (12 frames of
    96x72, sigma 0.01, 10 % outlier blobs), scored over the voxels observed from free space.
    ``mad_outlier_m`` is the outlier-caused error: mean |TSDF - the same method's TSDF of the
    same depth without the outliers| over the same voxels."""
    cfg = FusionEvalConfig(scenes=1, frames=12, width=96, height=72, sigmas=(0.01,),
                           outliers=(0.10,), conditions=("indist",), mesh_samples=5000)
    (run,) = [r for r in evaluate_fusion(cfg, log=lambda _: None)
              if r.condition == "sigma 0.01, 10% outliers"]
    return run.methods


def _outlier_ratio(methods: dict[str, MethodResult], name: str) -> float:
    """Outlier-caused error of ``name`` over that of plain TSDF fusion."""
    return methods[name].mad_outlier_m / methods["tsdf"].mad_outlier_m


def test_outlier_metric_is_met_only_with_outlier_handling(outlier_run):
    # plain TSDF fusion (no outlier handling) fails the goal; TSDF fusion of speckle-filtered
    # depth (classical outlier handling) meets it: the metric sees outlier handling
    assert outlier_run["tsdf"].mad_outlier_m > 0.005
    assert _outlier_ratio(outlier_run, "tsdf") == 1.0 > OUTLIER_GOAL
    assert _outlier_ratio(outlier_run, "tsdf+speckle") <= OUTLIER_GOAL


def test_shipped_weights_against_tsdf_fusion_with_outliers(outlier_run):
    """What is true of the shipped small model (docs/latent_fusion.md; free-space updates
    since 2026-11-29): its outlier-caused error is below plain TSDF fusion's (measured 0.79
    vs 0.89 cm here, ratio 0.89; the weights before free-space updates had 1.5x) but not
    the goal's 0.75x, and far above speckle-filtered TSDF fusion's; its mesh F-score at 5 cm
    is higher than plain TSDF fusion's (0.777 vs 0.604)."""
    ratio = _outlier_ratio(outlier_run, "latent")
    assert 0.75 < ratio < 1.0, (
        f"the latent model's outlier-caused error is now {ratio:.2f}x plain TSDF fusion's: "
        f"update docs/latent_fusion.md and this test (goal <= {OUTLIER_GOAL}x)")
    assert ratio > _outlier_ratio(outlier_run, "tsdf+speckle")
    lat, tsdf = outlier_run["latent"], outlier_run["tsdf"]
    assert lat.fscore[0.05] > tsdf.fscore[0.05], (lat.fscore, tsdf.fscore)


def test_mapper_latent_path_meshes_saves_and_loads(tmp_path, device):
    from recon_ros.io.synthetic import (default_camera, iter_frames, make_random_scene,
                                        room_scan_trajectory)

    scene = make_random_scene(3_000_011)  # a held-out room
    frames = list(iter_frames(scene, default_camera(64, 48), room_scan_trajectory(scene, 40),
                              color=True))[:4]
    cfg = MapperConfig.from_dict({"volume": {"device": device}, "fusion": {"method": "latent"}})
    mapper = Mapper(cfg)
    for f in frames:
        assert mapper.integrate(f) > 0
    mesh = mapper.mesh()
    assert mesh.num_faces > 500 and mesh.colors is None  # latent fusion is geometry only
    assert mapper.occupied_voxels().shape[0] > 100
    mapper.save(tmp_path / "map.pt")
    again = Mapper.load(tmp_path / "map.pt")
    assert again.latent is not None
    n = mapper.volume.num_blocks
    assert torch.equal(again.latent.features[:n].cpu(), mapper.latent.features[:n].cpu())
    assert again.mesh().num_faces == mesh.num_faces
    mapper.reset()
    assert mapper.volume.num_blocks == 0 and float(mapper.latent.count.sum()) == 0.0



# ------------------------------------------------ occupancy from the head (issue 13, item 5)
@pytest.fixture(scope="module")
def latent_room_map() -> tuple[Mapper, object]:
    from recon_ros.io.synthetic import (default_camera, iter_frames, make_random_scene,
                                        room_scan_trajectory)

    scene = make_random_scene(3_000_011)  # a held-out room
    frames = list(iter_frames(scene, default_camera(64, 48), room_scan_trajectory(scene, 40),
                              color=False))[:8]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mapper = Mapper(_latent_config(volume={"voxel_size_m": 0.05}))
    for f in frames:
        mapper.integrate(f)
    mapper.decode()
    torch.set_num_threads(threads)
    return mapper, scene


def test_latent_occupied_voxels_come_from_the_occupancy_head(latent_room_map, tmp_path):
    mapper, scene = latent_room_map
    points, prob = mapper.occupied_voxels_with_probability()
    vol, n = mapper.volume, mapper.volume.num_blocks
    observed = vol.weight[:n] >= mapper.config.occupancy.min_weight
    threshold = mapper.config.fusion.occupancy_threshold
    assert threshold == 0.1  # the default
    head = observed & (mapper.latent.occupancy[:n] >= threshold)
    sign = observed & (vol.tsdf[:n] < mapper.occupancy.occupied_threshold_m)
    # exactly the head's voxels, with their probabilities as confidence, in the same order
    expected = vol.voxel_centers(torch.arange(n))[head].numpy()
    assert points.shape == expected.shape and prob.shape == (len(points),)
    assert np.array_equal(np.unique(points, axis=0), np.unique(expected, axis=0))
    assert prob.min() >= threshold and prob.max() <= 1.0
    assert np.array_equal(mapper.occupied_voxels(), points)
    # the head and the TSDF sign rule disagree on this map (measured: 6,326 voxels; the
    # head marks 32,947 occupied, the sign rule 36,857)
    assert int((head ^ sign).sum()) > 1000
    # against ground truth: occupied voxels lie on or inside a surface (true SDF < one voxel);
    # measured 95.7 % for the head at p >= 0.1, 98.1 % for the TSDF sign rule on the same map
    # (a low threshold trades some of this for fewer obstacle cells marked free)
    sdf = scene.sdf(torch.as_tensor(points, dtype=torch.float64)).numpy()
    assert (sdf < 0.05).mean() >= 0.95
    # saved maps carry the probabilities
    mapper.save(tmp_path / "map.pt")
    again = Mapper.load(tmp_path / "map.pt")
    p2, prob2 = again.occupied_voxels_with_probability()
    assert np.array_equal(np.unique(p2, axis=0), np.unique(points, axis=0))
    assert prob2.sum() == pytest.approx(prob.sum(), rel=1e-6)


def test_latent_grid_obstacles_come_from_the_head(latent_room_map):
    from recon_ros.evaluation import grid_metrics
    from recon_ros.io.synthetic import gt_occupancy_grid

    mapper, scene = latent_room_map
    oc = mapper.config.occupancy
    gt = gt_occupancy_grid(scene, 0.05, oc.min_height_m, oc.max_height_m)
    head_grid = mapper.occupancy_grid()
    # measured 0.010 of the true obstacle cells marked free at p >= 0.1
    assert grid_metrics(head_grid, gt).obstacles_marked_free < 0.02
    # a stricter threshold marks fewer voxels and cells occupied; the sign rule differs
    n_head = len(mapper.occupied_voxels())
    try:
        mapper.occupancy.use_probability(mapper._latent_occupancy, 0.95)
        strict = len(mapper.occupied_voxels())
        strict_cells = int((mapper.occupancy_grid().data == 100).sum())
        mapper.occupancy.use_probability(lambda: None, 0.5)  # the TSDF sign rule
        sign_grid = mapper.occupancy_grid()
    finally:
        mapper.occupancy.use_probability(mapper._latent_occupancy, 0.1)
    assert strict < n_head
    assert strict_cells < int((head_grid.data == 100).sum())
    assert sign_grid.data.shape != head_grid.data.shape or not np.array_equal(
        sign_grid.data, head_grid.data)


def test_occupancy_threshold_config_and_tsdf_maps():
    with pytest.raises(ConfigError, match="occupancy_threshold"):
        MapperConfig.from_dict({"fusion": {"occupancy_threshold": 1.0}})
    assert MapperConfig.from_dict({"fusion": {"occupancy_threshold": 0.7}}
                                  ).fusion.occupancy_threshold == 0.7
    with pytest.raises(ConfigError, match="fusion.method: latent"):
        Mapper(MapperConfig()).occupied_voxels_with_probability()
