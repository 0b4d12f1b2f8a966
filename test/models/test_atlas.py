"""Atlas-style RGB TSDF model: shapes, back-projection by hand, the ZNCC matching cue (exact
values, sampling by hand, online == batch), online view fusion against the batch formulas,
coarse-to-fine masking, a tiny overfit, resumable training, reading v1 weight files, and the
shipped weights against an untrained network and an F-score floor on a held-out fragment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon_ros.core.errors import ConfigError, ReconError
from recon_ros.core.frame import PinholeCamera
from recon_ros.models.atlas import (LEVEL_SCALES, WEIGHTS_FORMAT_V1, AtlasConfig, AtlasModel,
                                    Fragment, MatchingFusion, ViewFusion, backproject,
                                    coarse_to_fine, default_weights, load_atlas,
                                    patch_offsets, patch_vector_image, patch_vectors,
                                    sample_vectors, save_atlas_weights, zncc)
from recon_ros.models.checkpoint import save_weights
from recon_ros.models.data import EVALUATION_SEED_BASE
from recon_ros.models.train_atlas import (AtlasTrainConfig, fragment_loss, heldout_sample,
                                          training_sample, tsdf_errors, train)

TINY = AtlasConfig(feature_channels=4, image_hidden=4, volume_channels=(4, 4, 4),
                   score_hidden=2)
TINY_GEOMETRY = AtlasTrainConfig(model=TINY, sequences=3, views=3, width=32, height=24,
                                 fragment_dims=(16, 16, 8), voxel_size_m=0.15, floor_index=-1,
                                 floor_jitter_voxels=1, validation_fragments=1,
                                 checkpoint_every=1, validate_every=100)

pytestmark = pytest.mark.usefixtures("one_thread")


def _identity_camera() -> PinholeCamera:
    # 16 x 16 image, f = 4, principal point (4, 4); feature map 4 x 4 (stride 4).
    return PinholeCamera(np.array([[4.0, 0, 4.0], [0, 4.0, 4.0], [0, 0, 1.0]]), 16, 16)


# ------------------------------------------------------------------------- geometry
def test_forward_shapes_and_streaming_equals_batch():
    torch.manual_seed(0)
    frag = Fragment((-8, -8, -1), (16, 16, 8), 0.15)
    camera = PinholeCamera(np.array([[20.0, 0, 15.5], [0, 20.0, 11.5], [0, 0, 1.0]]), 32, 24)
    poses = []
    for yaw in (0.0, 0.3, -0.3):
        T = np.eye(4)  # optical z along world +x, y down
        T[:3, :3] = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]]) @ np.array(
            [[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
        T[:3, 3] = (-2.0, 0.0, 0.6)
        poses.append(T)
    images = np.random.default_rng(0).integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)
    for fusion, stride, matching in (("average", 4, ()), ("context", 4, ()),
                                     ("average", 2, (1, 2)), ("context", 2, (1, 3))):
        model = AtlasModel(AtlasConfig(feature_channels=4, image_hidden=4,
                                       volume_channels=(4, 6, 8), score_hidden=2,
                                       view_fusion=fusion, feature_stride=stride,
                                       matching_dilations=matching)).eval()
        assert model.features(torch.zeros(2, 3, 24, 32)).shape == (2, 4, 24 // stride,
                                                                    32 // stride)
        with torch.no_grad():
            out = model(images, camera, poses, frag)
            state = model.begin(frag)
            for i in range(3):
                model.add_views(state, images[i:i + 1], camera, poses[i:i + 1])
            streamed = model.decode(state)
        assert [lv.scale for lv in out.levels] == list(LEVEL_SCALES)
        for lv in out.levels:
            shape = tuple(d // lv.scale for d in frag.dims)
            for t in (lv.tsdf, lv.occupancy_logit, lv.refined, lv.tsdf_final):
                assert t.shape == shape
            assert lv.tsdf.abs().max() <= 1.0
        assert out.seen.shape == frag.dims and 0 < int(out.seen.sum()) < frag.num_voxels
        assert int(out.view_count.max()) == 3
        for a, b in zip(out.levels, streamed.levels):
            assert torch.allclose(a.tsdf, b.tsdf, atol=1e-5)
        if matching:  # the mean pairwise ZNCC does not depend on the view order
            reverse = model.begin(frag)
            with torch.no_grad():
                model.add_views(reverse, images[::-1].copy(), camera, poses[::-1])
            assert state.matching.mean_zncc().shape == (frag.num_voxels, 2)
            assert torch.allclose(state.matching.mean_zncc(), reverse.matching.mean_zncc(),
                                  atol=1e-5)
            assert float(state.matching.mean_zncc().abs().max()) <= 1.0 + 1e-5
    with pytest.raises(ReconError):
        model.add_views(model.begin(frag), images[:, :22], camera, poses)  # not a multiple of 4


def test_fragment_centres_and_validation():
    frag = Fragment((2, -3, 0), (8, 4, 4), 0.5)
    c1 = frag.centres(1)
    assert c1.shape == (8, 4, 4, 3)
    assert torch.allclose(c1[1, 2, 3], torch.tensor([1.5, -0.5, 1.5]))
    c2 = frag.centres(2)  # coarse voxel (0, 0, 0) = block of voxels 0..1 on each axis
    assert c2.shape == (4, 2, 2, 3)
    assert torch.allclose(c2[0, 0, 0], torch.tensor([1.25, -1.25, 0.25]))
    assert torch.equal(frag.voxel_indices()[1, 2, 3], torch.tensor([3, -1, 3]))
    with pytest.raises(ConfigError):
        Fragment((0, 0, 0), (8, 6, 4), 0.1)
    with pytest.raises(ConfigError):
        AtlasConfig(view_fusion="median")
    with pytest.raises(ConfigError):
        AtlasConfig.from_dict({"hidden": 3})


def test_backprojection_by_hand():
    # Feature pixel (x=2, y=1) is centred on image pixel (8, 4): ray direction
    # ((8 - 4) / 4, (4 - 4) / 4, 1) = (1, 0, 1) in the optical frame.
    camera = _identity_camera()
    feats = torch.zeros(1, 4, 4)
    feats[0, 1, 2] = 1.0
    pts = torch.tensor([[1.0, 0.0, 1.0],    # on the ray
                        [2.0, 0.0, 2.0],    # on the ray, farther
                        [1.5, 0.0, 1.0],    # u = 10 -> x = 2.5: half-way to feature pixel 3
                        [1.0, 0.0, -1.0],   # behind the camera
                        [9.0, 0.0, 1.0]])   # u = 40: outside the image
    values, valid, z = backproject(feats, pts, camera, torch.eye(4, dtype=torch.float64))
    assert valid.tolist() == [True, True, True, False, False]
    assert torch.allclose(values[:, 0], torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(z, torch.tensor([1.0, 2.0, 1.0, -1.0, 1.0]))
    # The same ray from a rotated and translated camera: optical z along world +x, optical x
    # along world -z; the optical point (1, 0, 1) is world t + R (1, 0, 1) = t + (1, 0, -1).
    T = np.eye(4)
    T[:3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]
    T[:3, 3] = (1.0, 2.0, 3.0)
    values, valid, _ = backproject(feats, torch.tensor([[2.0, 2.0, 2.0], [3.0, 2.0, 1.0]]),
                                   camera, torch.as_tensor(T))
    assert valid.all() and torch.allclose(values[:, 0], torch.ones(2), atol=1e-6)


# ------------------------------------------------------------------------- matching cue
def test_zncc_exact_values():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(6, 1, 49, generator=g)
    assert torch.allclose(zncc(a, a), torch.ones(6), atol=1e-4)          # identical
    assert torch.allclose(zncc(a, -a), -torch.ones(6), atol=1e-4)        # negative
    assert torch.allclose(zncc(a, 0.3 * a + 0.2), torch.ones(6), atol=1e-3)  # gain, offset
    b = torch.rand(6, 1, 49, generator=g)
    za, zb = a - a.mean(2, keepdim=True), b - b.mean(2, keepdim=True)
    textbook = (za * zb).sum((1, 2)) / (za.square().sum((1, 2)) * zb.square().sum((1, 2))).sqrt()
    assert torch.allclose(zncc(a, b), textbook, atol=1e-4)
    flat = torch.zeros(1, 1, 49)                                           # no texture: 0
    assert float(zncc(flat, a[:1])) == 0.0
    assert torch.allclose(patch_vectors(a).square().sum(1), torch.full((6,), 49.0), rtol=1e-3)


def test_patch_vector_image_and_sampling_by_hand():
    g = torch.Generator().manual_seed(4)
    image = torch.rand(1, 10, 12, generator=g)
    offsets = patch_offsets(1, 2)  # 3 x 3 taps, 2 pixels apart, dv slowest
    assert offsets.tolist()[:4] == [[-2.0, -2.0], [0.0, -2.0], [2.0, -2.0], [-2.0, 0.0]]
    vec = patch_vector_image(image, 1, 2)
    assert vec.shape == (9, 10, 12)
    # interior pixel (u, v) = (5, 4): taps image[v + dv, u + du]
    patch = torch.stack([image[0, 4 + int(dv), 5 + int(du)] for du, dv in offsets])
    assert torch.allclose(vec[:, 4, 5], patch_vectors(patch[None, None])[0], atol=1e-5)
    # corner pixel (0, 0): taps outside read the border pixel (replicated)
    patch = torch.stack([image[0, max(int(dv), 0), max(int(du), 0)] for du, dv in offsets])
    assert torch.allclose(vec[:, 0, 0], patch_vectors(patch[None, None])[0], atol=1e-5)
    # bilinear reading: on a pixel centre exactly that pixel's vector, half-way the mean
    uv = torch.tensor([[5.0, 4.0], [5.5, 4.0], [11.0, 9.0]])
    got = sample_vectors(vec, uv)
    assert torch.allclose(got[0], vec[:, 4, 5], atol=1e-6)
    assert torch.allclose(got[1], 0.5 * (vec[:, 4, 5] + vec[:, 4, 6]), atol=1e-6)
    assert torch.allclose(got[2], vec[:, 9, 11], atol=1e-6)


def _brute_force_matching(vectors: torch.Tensor, valid: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean pairwise ZNCC and each view's mean ZNCC with the views before it, by loops."""
    v, n, d = vectors.shape
    mean = torch.zeros(n)
    agree = torch.zeros(v, n)
    for k in range(n):
        seen = [i for i in range(v) if valid[i, k]]
        pairs = [(i, j) for a, i in enumerate(seen) for j in seen[a + 1:]]
        if pairs:
            mean[k] = sum(float(vectors[i, k] @ vectors[j, k]) / d for i, j in pairs) / len(pairs)
        for a, i in enumerate(seen):
            if a:
                agree[i, k] = sum(float(vectors[i, k] @ vectors[j, k]) / d
                                  for j in seen[:a]) / a
    return mean, agree


def test_matching_fusion_incremental_equals_batch():
    g = torch.Generator().manual_seed(5)
    v, n, d = 5, 40, 9
    vectors = patch_vectors(torch.rand(v * n, 1, d, generator=g)).reshape(v, n, d)
    vectors[:, :4] = vectors[0, :4]                    # voxels 0-3: all views agree
    valid = torch.rand(v, n, generator=g) < 0.7
    valid[:, :4] = True
    valid[:, 4] = False                                # never seen
    valid[1:, 5] = False                               # seen once
    mean, agree = _brute_force_matching(vectors, valid)
    fusion = MatchingFusion(n, [d], "cpu")
    for i in range(v):
        index = valid[i].nonzero()[:, 0]
        got = fusion.add([vectors[i, index]], index)
        assert torch.allclose(got[:, 0], agree[i], atol=1e-5)
    out = fusion.fused()
    assert torch.allclose(out[:, 0], mean, atol=1e-5)
    assert torch.allclose(out[:4, 0], torch.ones(4), atol=1e-4)
    assert out[4, 0] == 0 and out[5, 0] == 0
    assert torch.equal(out[:, 1], (valid.sum(0) >= 2).to(torch.float32))
    assert torch.equal(fusion.count, valid.sum(0).to(torch.float32))
    backwards = MatchingFusion(n, [d], "cpu")       # any view order: the same mean
    for i in reversed(range(v)):
        index = valid[i].nonzero()[:, 0]
        backwards.add([vectors[i, index]], index)
    assert torch.allclose(backwards.mean_zncc(), fusion.mean_zncc(), atol=1e-5)


def test_matching_cue_samples_the_projections_by_hand():
    # Camera of _identity_camera (f = 4, principal point (4, 4), 16 x 16). Voxel (1, 1, 1)
    # of the fragment is global index (2, 0, 2), centre (1, 0, 1) m: it projects to pixel
    # (8, 4) from the identity pose and to (7, 4) from a camera moved 0.25 m along +x.
    camera = _identity_camera()
    frag = Fragment((1, -1, 1), (4, 4, 4), 0.5)
    T1 = np.eye(4)
    T1[0, 3] = 0.25
    g = torch.Generator().manual_seed(6)
    images = torch.randint(0, 256, (2, 16, 16, 3), generator=g, dtype=torch.uint8)
    model = AtlasModel(AtlasConfig(feature_channels=2, image_hidden=2,
                                   volume_channels=(2, 2, 2), matching_radius=2,
                                   matching_dilations=(1, 2))).eval()
    state = model.begin(frag)
    with torch.no_grad():
        model.add_views(state, images.numpy(), camera, [np.eye(4), T1])
    k = int(np.ravel_multi_index((1, 1, 1), frag.dims))
    grey = images.permute(0, 3, 1, 2).to(torch.float32).div(255.0).mean(1, keepdim=True)
    assert state.matching.count[k] == 2
    for i, dil in enumerate((1, 2)):
        a = patch_vector_image(grey[0], 2, dil)[:, 4, 8]
        b = patch_vector_image(grey[1], 2, dil)[:, 4, 7]
        assert torch.allclose(state.matching.sums[i][k], a + b, atol=1e-5)
        assert torch.allclose(state.matching.mean_zncc()[k, i], a @ b / 25, atol=1e-5)
        # the same patches taken out of the image by hand
        pa = torch.stack([grey[0, 0, 4 + dv * dil, 8 + du * dil]
                          for dv in range(-2, 3) for du in range(-2, 3)])
        assert torch.allclose(a, patch_vectors(pa[None, None])[0], atol=1e-5)


# ------------------------------------------------------------------------- view fusion
def _views(seed: int, v: int = 5, n: int = 60, c: int = 3
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(v, n, c, generator=g)
    valid = torch.rand(v, n, generator=g) < 0.6
    valid[:, :3] = False  # never seen
    scores = 3.0 * torch.randn(v, n, generator=g)
    return feats, valid, scores


def test_average_fusion_is_the_mean_over_seeing_views():
    feats, valid, _ = _views(1)
    fusion = ViewFusion(feats.shape[1], feats.shape[2], "average", "cpu")
    for f, m in zip(feats, valid):
        fusion.add(f, m)
    w = valid.to(torch.float32)[..., None]
    count = w.sum(0)
    mean = (w * feats).sum(0) / count.clamp(min=1)
    var = (w * (feats - mean).square()).sum(0) / count.clamp(min=1)
    out = fusion.fused()
    c = feats.shape[2]
    assert torch.allclose(out[:, :c], mean, atol=1e-5)
    assert torch.allclose(out[:, c:2 * c], var, atol=1e-5)
    assert torch.equal(out[:, -1], (count[:, 0] > 0).to(torch.float32))
    assert torch.equal(fusion.count, count[:, 0])


def test_online_logsumexp_fusion_equals_batch_softmax():
    feats, valid, scores = _views(2)
    feats.requires_grad_(True)
    scores.requires_grad_(True)
    w = torch.softmax(scores.masked_fill(~valid, -math.inf), dim=0)
    w = torch.nan_to_num(w, nan=0.0)[..., None]  # voxels no view saw: no weight
    mean = (w * feats).sum(0)
    var = (w * feats.square()).sum(0) - mean.square()
    c = feats.shape[2]
    for order in (range(5), reversed(range(5))):
        fusion = ViewFusion(feats.shape[1], c, "context", "cpu")
        for i in order:
            fusion.add(feats[i], valid[i], scores[i])
        out = fusion.fused()
        assert torch.allclose(out[:, :c], mean, atol=1e-5)
        assert torch.allclose(out[:, c:2 * c], var.clamp(min=0), atol=1e-5)
        expected_lse = torch.logsumexp(scores.masked_fill(~valid, -math.inf), dim=0)
        seen = valid.any(0)
        assert torch.allclose(fusion.lse[seen], expected_lse[seen], atol=1e-5)
    out.sum().backward()  # gradients finite, also for voxels no view saw
    assert torch.isfinite(scores.grad).all() and torch.isfinite(feats.grad).all()
    assert torch.equal(scores.grad[~valid], torch.zeros_like(scores.grad[~valid]))
    with pytest.raises(ReconError):
        fusion.add(feats[0].detach(), valid[0])


# ------------------------------------------------------------------------- coarse to fine
def test_coarse_to_fine_masking():
    big = 10.0  # tanh(10) = 1 - 4e-9: saturated
    coarse = torch.zeros(1, 2, 1, 1, 2)
    coarse[0, 0, 0, 0, 0] = big       # far in front of any surface: masked below
    coarse[0, 0, 0, 0, 1] = 0.1       # near a surface: refined
    mid = torch.full((1, 2, 2, 2, 4), 0.2)
    mid[0, 0, 1, 1, 3] = -big         # far inside a solid at 2x: masks its 2x2x2 children
    fine = torch.full((1, 2, 4, 4, 8), 0.3)
    levels = coarse_to_fine([coarse, mid, fine], mask_threshold=0.99)
    assert levels[0].refined.all()
    m = levels[1]
    assert not m.refined[:, :, :2].any() and m.refined[:, :, 2:].all()
    assert torch.equal(m.tsdf_final[:, :, :2], torch.ones(2, 2, 2))  # coarse sign, saturated
    assert torch.allclose(m.tsdf_final[0, 0, 2], torch.tensor(math.tanh(0.2)))
    f = levels[2]
    assert not f.refined[:, :, :4].any()                     # masked by the 4x level
    assert torch.equal(f.tsdf_final[:, :, :4], torch.ones(4, 4, 4))
    assert not f.refined[2:, 2:, 6:].any()                   # masked by the 2x level
    assert torch.equal(f.tsdf_final[2:, 2:, 6:], -torch.ones(2, 2, 2))
    assert int(f.refined.sum()) == 4 * 4 * 4 - 8
    assert torch.allclose(f.tsdf_final[0, 0, 4], torch.tensor(math.tanh(0.3)))


# ------------------------------------------------------------------------- training
def test_tiny_overfit_loss_falls():
    torch.manual_seed(0)
    sample = training_sample(TINY_GEOMETRY, 0)
    model = AtlasModel(TINY).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        terms = fragment_loss(model(sample.images, sample.camera, sample.poses, sample.fragment),
                              sample.targets, 0.5)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"].detach()))
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < 0.6 * losses[0], losses


def test_training_is_seeded_and_resumable(tmp_path):
    cfg = TINY_GEOMETRY
    whole = train(cfg, tmp_path / "whole", log=lambda s: None)
    from dataclasses import replace
    part = train(replace(cfg, time_limit_s=1e-9), tmp_path / "split", log=lambda s: None)
    assert part.sequences_done == 1 and not part.finished
    rest = train(cfg, tmp_path / "split", log=lambda s: None)
    assert rest.finished and rest.sequences_done == 3 and len(rest.history["loss"]) == 3
    assert whole.history["loss"] == rest.history["loss"]
    a, _ = load_atlas(whole.weights)
    b, meta = load_atlas(rest.weights)
    assert meta["sequences_done"] == 3
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k
    with pytest.raises(ConfigError):  # another configuration into the same folder
        train(replace(cfg, weight_bce=1.0), tmp_path / "split", log=lambda s: None)


def test_weights_round_trip(tmp_path):
    torch.manual_seed(1)
    model = AtlasModel(TINY)
    save_atlas_weights(model, tmp_path / "w.pt", {"note": "x"})
    loaded, meta = load_atlas(tmp_path / "w.pt")
    assert meta == {"note": "x"} and loaded.config == TINY
    # a file of the first format (no matching cue, stride 4; its config predates the fields)
    v1 = AtlasModel(AtlasConfig(feature_channels=4, image_hidden=4, volume_channels=(4, 4, 4),
                                score_hidden=2, matching_dilations=()))
    save_weights(v1, tmp_path / "v1.pt", {"note": "v1"}, WEIGHTS_FORMAT_V1)
    state = torch.load(tmp_path / "v1.pt", weights_only=True)
    for name in ("feature_stride", "matching_radius", "matching_dilations"):
        del state["model_config"][name]
    torch.save(state, tmp_path / "v1.pt")
    old, meta = load_atlas(tmp_path / "v1.pt")
    assert meta == {"note": "v1"} and old.config.matching_dilations == ()
    assert old.config.feature_stride == 4
    (tmp_path / "bad.pt").write_bytes(b"not a file")
    with pytest.raises(ReconError):
        load_atlas(tmp_path / "bad.pt")


# ------------------------------------------------------------------------- shipped weights
@pytest.mark.parametrize("fusion", ["average", "context"])
def test_shipped_weights_beat_an_untrained_network(fusion):
    from recon_ros.evaluation import point_metrics, sample_mesh_points
    from recon_ros.io.synthetic import visible_surface_points
    from recon_ros.models.evaluate_rgb import dense_mesh, in_box

    path = default_weights(fusion)
    assert path.is_file(), f"{path} is missing from the package"
    assert path.stat().st_size < 2_000_000
    model, meta = load_atlas("", "cpu", fusion)
    assert model.config.view_fusion == fusion and meta["sequences_done"] > 0
    geometry = AtlasTrainConfig.from_dict(meta["train_config"])
    sample = heldout_sample(geometry, EVALUATION_SEED_BASE, 5)
    torch.manual_seed(0)
    untrained = AtlasModel(model.config).eval()
    gt = in_box(visible_surface_points(sample.scene, sample.poses, sample.camera),
                sample.fragment)
    trunc = model.truncation_m(sample.fragment.voxel_size_m)
    scores = {}
    for name, net in (("trained", model), ("untrained", untrained)):
        with torch.no_grad():
            out = net(sample.images, sample.camera, sample.poses, sample.fragment)
        assert torch.isfinite(out.finest.tsdf_final).all()
        mesh = dense_mesh(out.finest.tsdf_final * trunc, out.seen, sample.fragment, trunc)
        pred = in_box(sample_mesh_points(mesh, 20_000), sample.fragment)
        scores[name] = (tsdf_errors(out, sample.targets[-1]),
                        point_metrics(pred, gt, (0.05,)).fscore[0.05])
    (err_t, f_t), (err_u, f_u) = scores["trained"], scores["untrained"]
    # The trained network must at least halve the error over the seen voxels and inside the
    # truncation band, and its mesh must clear an F-score floor on this held-out fragment:
    # 0.5 at 5 cm. The v1 weights (no matching cue) scored 0.045 / 0.048 here and the untrained
    # network about 0; the shipped v2 weights about 0.70 (docs/rgb_model.md).
    assert model.config.matching_dilations, "the shipped models use the matching cue"
    assert err_t["mae"] < 0.5 * err_u["mae"], scores
    assert err_t["mae_band"] < 0.5 * err_u["mae_band"], scores
    assert f_t > 0.5 and f_t > f_u, scores


def test_rgb_eval_benchmark_smoke(capsys):
    from test.test_benchmarks_smoke import load_script

    table = load_script("rgb_eval").main(["--fragments", "1"])
    out = capsys.readouterr().out
    for method in ("atlas-average", "atlas-context", "plane-sweep", "depth-tsdf"):
        assert method in out and 0.0 <= table[method]["fscore@5"] <= 1.0
    # the ceiling: exact depth fused at the same poses
    assert table["depth-tsdf"]["fscore@5"] > 0.8
    assert table["depth-tsdf"]["fscore@5"] >= table["plane-sweep"]["fscore@5"]
