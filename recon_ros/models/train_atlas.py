"""Training of the Atlas-style RGB model (:mod:`recon_ros.models.atlas`).

    python -m recon_ros.models.train_atlas --preset small --view-fusion average --out DIR

One training *fragment* (one optimizer step) is ``views`` consecutive colour renders of a fresh
random textured room (:func:`~recon_ros.io.synthetic.make_random_scene`, scene seeds below
:data:`~recon_ros.models.data.TRAIN_SEED_LIMIT`) along a random room-scan path
(:func:`~recon_ros.models.data.scan_poses`) and the box of voxels in front of those cameras
(:meth:`~recon_ros.models.atlas.Fragment.in_front_of`, jittered), with the exact truncated
SDF of every level (:func:`~recon_ros.models.data.truncated_sdf` of the scene's analytic SDF at
the level's voxel centres, clamped to ``truncation_voxels`` voxels of that level).

Loss, summed over the three levels: Atlas's log-transformed L1 of the TSDF
(:func:`~recon_ros.models.atlas.log_l1`) plus ``weight_bce`` times the binary cross-entropy of
the occupancy logit (truth: SDF < 0), both averaged over the *supervised* voxels of the level:
voxels seen by at least one view, and, below the coarsest level, either refined by the
prediction (the coarser level did not mask them) or within the coarser level's truncation band
in the ground truth. Targets outside the band are +-1, so the network learns to call far
voxels far, which is what the masking relies on. Plus (``weight_band`` > 0; 1 for the shipped
v2 models) the log-L1 averaged over the supervised voxels inside the true band only, so the
surface region is not drowned by free space. Optionally (``render_loss_weight`` > 0, off by
default) plus a rendering loss: the finest level's final TSDF rendered at every view
(:func:`fragment_render_loss`, the renderer and loss shared with the test-time refiner,
:mod:`recon_ros.core.render_loss`) against that view's depth, metres.

Runs are seeded and resumable exactly like :mod:`recon_ros.models.train`: the model
initialisation and every fragment are pure functions of the seed and the fragment index;
``checkpoint.pt`` in the output folder is rewritten every ``checkpoint_every`` fragments and
picked up by the next run with the same folder (and the same configuration, up to
:data:`~recon_ros.models.train.OPERATIONAL_FIELDS` and ``sequences``: a resumed run with
another total follows the learning-rate schedule of the new total from then on); the result is a
:class:`~recon_ros.models.train.TrainResult`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from ..core.config import check_known_keys
from ..core.errors import ConfigError
from ..core.frame import PinholeCamera
from ..core.render_loss import (dense_grid_volume, free_space_loss, free_space_samples,
                                render_loss)
from ..io.synthetic import Scene, default_camera, make_random_scene, render
from .atlas import (LEVEL_SCALES, WEIGHTS_FORMAT, AtlasConfig, AtlasModel, AtlasOutput,
                    Fragment, log_l1, save_atlas_weights, upsample_nearest)
from .checkpoint import read_state, save_training_state
from .data import TRAIN_SEED_LIMIT, VALIDATION_SEED_BASE, scan_poses, truncated_sdf
from .train import TrainResult, _identity, learning_rate, plot_history
from .train import training_meta as shared_training_meta

TRAINING_FORMAT = "recon_ros.atlas.training.v1"
CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "weights.pt"


@dataclass(frozen=True)
class AtlasTrainConfig:
    """Everything an Atlas training run depends on (written next to its outputs).

    Attributes:
        model: the architecture (including the view fusion).
        sequences: training fragments, one optimizer step each (named as in
            :class:`~recon_ros.models.train.TrainConfig`, whose learning-rate schedule
            :func:`~recon_ros.models.train.learning_rate` this run uses).
        views: colour views per fragment.
        frames_per_loop: poses per loop of the room-scan path (sets the view spacing).
        width, height: image size (multiples of 4).
        fragment_dims: fragment voxels ``(X, Y, Z)`` (multiples of 4).
        voxel_size_m: finest voxel edge, metres.
        floor_index: global z index of the fragment's lowest voxel layer (the floor is z = 0);
            training fragments draw it uniformly from ``floor_index - floor_jitter_voxels ...
            floor_index`` (so the floor is not always in the same layer), held-out ones use
            ``floor_index``.
        ahead_range_m: the fragment is centred this far (uniform in the range) in front of the
            cameras; jitter_m: plus a uniform x, y offset in ``+-jitter_m``.
        learning_rate, final_learning_rate, warmup_sequences: Adam schedule (linear warm-up,
            cosine decay).
        grad_clip: gradient norm clip.
        weight_bce: weight of the occupancy BCE (the TSDF terms have weight 1 per level).
        weight_band: weight of an extra log-L1 term per level averaged over the supervised
            voxels inside the true truncation band only (where the surface is placed; the
            all-voxel mean is dominated by free space); 0 = off (the first version).
        render_loss_weight: weight of :func:`fragment_render_loss` (depth L1 in metres of the
            finest level rendered at the views); 0 = off.
        render_stride: that loss renders every ``render_stride``-th pixel of each view.
        init_weights: an Atlas weight file whose parameters (those of the same name and
            shape) initialise the model instead of the seeded random ones, e.g. the average
            model for a context run (its score head then starts from the seeded init);
            ``""`` = from scratch.
        seed: run seed; threads: torch CPU threads; device: torch device.
        checkpoint_every, validate_every: fragments between checkpoints / validations.
        validation_fragments: fixed held-out fragments per validation.
        time_limit_s: stop (after a checkpoint) once this much wall time was spent over all
            resumed runs (0 = no limit).
    """

    model: AtlasConfig = field(default_factory=AtlasConfig)
    sequences: int = 1100
    views: int = 8
    frames_per_loop: int = 48
    width: int = 128
    height: int = 96
    fragment_dims: tuple[int, int, int] = (40, 40, 24)
    voxel_size_m: float = 0.08
    floor_index: int = -2
    floor_jitter_voxels: int = 4
    ahead_range_m: tuple[float, float] = (1.4, 2.2)
    jitter_m: float = 0.4
    learning_rate: float = 1e-3
    final_learning_rate: float = 5e-5
    warmup_sequences: int = 30
    grad_clip: float = 1.0
    weight_bce: float = 0.5
    weight_band: float = 0.0
    render_loss_weight: float = 0.0
    render_stride: int = 2
    init_weights: str = ""
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    checkpoint_every: int = 50
    validate_every: int = 250
    validation_fragments: int = 4
    time_limit_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sequences", "views", "frames_per_loop", "threads", "checkpoint_every",
                     "validate_every", "render_stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)!r} must be >= 1")
        if self.width % 4 or self.height % 4:
            raise ConfigError(f"train image size {self.width}x{self.height} must be a "
                              "multiple of 4")
        if not self.render_loss_weight >= 0:
            raise ConfigError(f"train.render_loss_weight={self.render_loss_weight!r} must be "
                              ">= 0")
        Fragment((0, 0, 0), self.fragment_dims, self.voxel_size_m)  # validates the geometry

    @property
    def camera(self) -> PinholeCamera:
        return default_camera(self.width, self.height)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["fragment_dims"] = list(self.fragment_dims)
        d["ahead_range_m"] = list(self.ahead_range_m)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AtlasTrainConfig":
        check_known_keys(cls, data, "train")
        d = dict(data)
        if "model" in d:
            d["model"] = AtlasConfig.from_dict(d["model"])
        for name in ("fragment_dims", "ahead_range_m"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)


#: The shipped v2 models: 2D features at stride 2, the ZNCC matching cue at patch dilations 1
#: and 2, the in-band loss term; trains on one thread of a shared 2-core CPU VM in about 26
#: minutes per view fusion (docs/rgb_model.md).
SMALL = AtlasTrainConfig(model=AtlasConfig(feature_stride=2, matching_dilations=(1, 2)),
                         sequences=900, weight_band=1.0, validate_every=150,
                         time_limit_s=26 * 60)
#: Meant for a lent GPU: finer voxels, more and larger views, wider networks, longer.
FULL = AtlasTrainConfig(
    model=AtlasConfig(feature_channels=32, image_hidden=32, volume_channels=(32, 64, 96),
                      score_hidden=16),
    sequences=50_000, views=16, frames_per_loop=96, width=320, height=240,
    fragment_dims=(96, 96, 48), voxel_size_m=0.04, floor_index=-4, floor_jitter_voxels=8,
    warmup_sequences=500,
    threads=8, device="cuda", checkpoint_every=500, validate_every=2500,
    validation_fragments=16)
PRESETS = {"small": SMALL, "full": FULL}


@dataclass
class FragmentSample:
    """Posed colour views of one scene and the truth of the fragment in front of them.

    Attributes:
        scene: the scene (its ``sdf`` is the ground truth).
        camera: intrinsics of every view.
        poses: V (4, 4) ``T_world_cam``.
        images: (V, H, W, 3) uint8 RGB renders.
        depths: (V, H, W) float32 exact z-depth of the same renders, metres (0 = no surface).
        fragment: the voxel box.
        targets: per level of :data:`~recon_ros.models.atlas.LEVEL_SCALES` (coarsest first),
            (X / s, Y / s, Z / s) float32 true SDF at the level's voxel centres, clamped to
            the level's truncation and divided by it.
    """

    scene: Scene
    camera: PinholeCamera
    poses: list[np.ndarray]
    images: np.ndarray
    depths: np.ndarray
    fragment: Fragment
    targets: list[torch.Tensor]


def fragment_targets(scene: Scene, fragment: Fragment, truncation_voxels: float,
                     device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """The per-level targets of :class:`FragmentSample` (on ``device``)."""
    out = []
    for s in LEVEL_SCALES:
        centres = fragment.centres(s, device)
        trunc = truncation_voxels * s * fragment.voxel_size_m
        out.append(truncated_sdf(scene, centres.reshape(-1, 3), trunc).reshape(
            centres.shape[:3]))
    return out


def make_sample(scene: Scene, rng: np.random.Generator, cfg: AtlasTrainConfig,
                jitter: bool) -> FragmentSample:
    """Views of ``scene`` from a random scan path and the fragment in front of them (its
    distance and, with ``jitter``, its x, y offset and floor layer drawn from ``rng``)."""
    camera = cfg.camera
    poses = scan_poses(scene, rng, cfg.views, cfg.frames_per_loop)
    ahead = float(rng.uniform(*cfg.ahead_range_m))
    offset = tuple(rng.uniform(-cfg.jitter_m, cfg.jitter_m, 2)) if jitter else (0.0, 0.0)
    floor = cfg.floor_index - (int(rng.integers(0, cfg.floor_jitter_voxels + 1)) if jitter
                               else 0)
    fragment = Fragment.in_front_of(poses, cfg.fragment_dims, cfg.voxel_size_m, ahead, floor,
                                    offset)  # type: ignore[arg-type]
    views = [render(scene, camera, T) for T in poses]
    images = np.stack([r.color for r in views])
    depths = np.stack([r.depth for r in views]).astype(np.float32)
    return FragmentSample(scene, camera, poses, images, depths, fragment,
                          fragment_targets(scene, fragment, cfg.model.truncation_voxels,
                                           cfg.device))


def training_sample(cfg: AtlasTrainConfig, index: int) -> FragmentSample:
    """Fragment ``index`` of a run (a pure function of ``cfg.seed`` and ``index``)."""
    rng = np.random.default_rng([int(cfg.seed), int(index), 0xA71A5])
    return make_sample(make_random_scene(int(rng.integers(0, TRAIN_SEED_LIMIT))), rng, cfg,
                       jitter=True)


def heldout_sample(cfg: AtlasTrainConfig, seed_base: int, j: int) -> FragmentSample:
    """Held-out fragment ``j`` of scene ``seed_base + j`` (seed bases >= TRAIN_SEED_LIMIT:
    never a training room), fragment at the middle of ``ahead_range_m``, no jitter."""
    rng = np.random.default_rng([int(seed_base), int(j), 0xA71A5])
    mid = 0.5 * (cfg.ahead_range_m[0] + cfg.ahead_range_m[1])
    return make_sample(make_random_scene(seed_base + j), rng,
                       replace(cfg, ahead_range_m=(mid, mid)), jitter=False)


def seen_at(seen: torch.Tensor, scale: int) -> torch.Tensor:
    """(X, Y, Z) bool -> (X / s, Y / s, Z / s): a coarse voxel is seen if any of its
    ``s**3`` voxels is."""
    if scale == 1:
        return seen
    x, y, z = seen.shape
    return seen.reshape(x // scale, scale, y // scale, scale, z // scale, scale).any(
        dim=5).any(dim=3).any(dim=1)


def supervised_masks(out: AtlasOutput, targets: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per level, the voxels the loss covers (see the module docstring)."""
    masks = []
    for i, (level, target) in enumerate(zip(out.levels, targets)):
        mask = seen_at(out.seen, level.scale)
        if i:
            factor = out.levels[i - 1].scale // level.scale
            near_truth = upsample_nearest(targets[i - 1].abs() < 1.0, factor)
            mask = mask & (level.refined | near_truth)
        masks.append(mask)
    return masks


def fragment_loss(out: AtlasOutput, targets: list[torch.Tensor], weight_bce: float,
                  weight_band: float = 0.0) -> dict[str, torch.Tensor]:
    """Loss terms (with grad): ``loss`` (total), ``l1_<s>`` and ``bce_<s>`` per level scale
    ``s`` (log-L1 of the TSDF and occupancy BCE, means over the supervised voxels) and, with
    ``weight_band > 0``, ``band_<s>`` (the log-L1 mean over the supervised voxels inside the
    true band, added with that weight)."""
    terms: dict[str, torch.Tensor] = {}
    total = out.levels[0].tsdf.new_zeros(())
    for level, target, mask in zip(out.levels, targets, supervised_masks(out, targets)):
        if not bool(mask.any()):
            continue
        l1 = log_l1(level.tsdf[mask], target[mask]).mean()
        bce = nnf.binary_cross_entropy_with_logits(level.occupancy_logit[mask],
                                                   (target[mask] < 0).to(torch.float32))
        terms[f"l1_{level.scale}"], terms[f"bce_{level.scale}"] = l1, bce
        total = total + l1 + weight_bce * bce
        band = mask & (target.abs() < 1.0)
        if weight_band > 0 and bool(band.any()):
            terms[f"band_{level.scale}"] = log_l1(level.tsdf[band], target[band]).mean()
            total = total + weight_band * terms[f"band_{level.scale}"]
    terms["loss"] = total
    return terms


def fragment_render_loss(out: AtlasOutput, sample: FragmentSample, truncation_m: float,
                         stride: int) -> torch.Tensor:
    """() mean over the views of the rendering loss of the finest level's final TSDF
    (the fragment viewed as blocks, its seen voxels observed), differentiable in the
    prediction, metres: the depth L1 of the TSDF rendered at the view against the view's depth
    (:func:`~recon_ros.core.render_loss.render_loss`) plus the free-space hinge
    (:func:`~recon_ros.core.render_loss.free_space_loss`) of 4 samples per pixel within the
    truncation in front of the measured depth, which must be free (TSDF >= 0: the target is a
    Euclidean distance, at most the projective one in front of the surface). The hinge gives
    a gradient where the render has none (no zero crossing, or a spurious one in front: the
    depth L1 alone, on hits only, does not fall in training). Only pixels whose true surface
    point lies in the fragment's box are compared (elsewhere the box cannot hold it).

    Args:
        out: the prediction.
        sample: its fragment, views and depths.
        truncation_m: metres of TSDF 1.0 at the finest level.
        stride: render every ``stride``-th pixel.
    """
    frag = sample.fragment
    grid = dense_grid_volume(frag.origin_index, out.seen, frag.voxel_size_m, truncation_m)
    tsdf = grid.scatter(out.finest.tsdf_final * truncation_m, truncation_m)
    lo, hi = frag.bounds_m()
    half = 0.5 * frag.voxel_size_m
    cam = sample.camera
    v, u = np.mgrid[0:cam.height, 0:cam.width]
    rays = np.stack(((u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones(u.shape)), -1)
    corners = np.array(np.meshgrid(*zip(lo - half, hi + half))).reshape(3, -1).T
    losses = []
    for T, depth in zip(sample.poses, sample.depths):
        T = np.asarray(T, np.float64)
        points = depth[..., None] * rays @ T[:3, :3].T + T[:3, 3]
        inside = ((points >= lo - half) & (points <= hi + half)).all(-1) & (depth > 0)
        far = float(np.linalg.norm(corners - T[:3, 3], axis=1).max())
        target = torch.as_tensor(np.where(inside, depth, 0.0), dtype=torch.float32)
        depth_l1 = render_loss(grid.volume, tsdf, cam, T, target, min_depth_m=0.05,
                               max_depth_m=far, stride=stride).depth_l1
        points, delta = free_space_samples(cam, torch.as_tensor(T, dtype=torch.float32),
                                           target, truncation_m=truncation_m, samples=4,
                                           stride=stride, min_depth_m=0.05, max_depth_m=far)
        free = free_space_loss(grid.volume, tsdf, points.to(tsdf.device),
                               torch.zeros_like(delta).to(tsdf.device))
        losses.append(depth_l1 + free)
    return torch.stack(losses).mean()


@torch.no_grad()
def tsdf_errors(out: AtlasOutput, target: torch.Tensor) -> dict[str, float]:
    """Finest-level errors of the final (masked) TSDF, truncation units: mean absolute error
    over the seen voxels (``mae``) and over the seen voxels in the true band (``mae_band``)."""
    err = (out.finest.tsdf_final - target).abs()
    band = out.seen & (target.abs() < 1.0)
    return {"mae": float(err[out.seen].mean()) if bool(out.seen.any()) else float("nan"),
            "mae_band": float(err[band].mean()) if bool(band.any()) else float("nan")}


@torch.no_grad()
def validate(model: AtlasModel, samples: list[FragmentSample]) -> dict[str, float]:
    """Mean :func:`tsdf_errors` over held-out fragments."""
    model.eval()
    errs = [tsdf_errors(model(s.images, s.camera, s.poses, s.fragment), s.targets[-1])
            for s in samples]
    model.train()
    return {k: float(np.mean([e[k] for e in errs])) for k in ("mae", "mae_band")}


HISTORY_KEYS = ("loss", "l1", "bce", "l1_4", "l1_2", "lr", "seconds", "val_sequence", "val_l1",
                "val_l1_band")


def _record_validation(model: AtlasModel, val: list[FragmentSample], done: int,
                       history: dict[str, list[float]],
                       log: Callable[[str], None], label: str) -> None:
    """Validate after ``done`` fragments, append to ``history`` and log it."""
    v = validate(model, val)
    history["val_sequence"].append(float(done))
    history["val_l1"].append(v["mae"])
    history["val_l1_band"].append(v["mae_band"])
    log(f"  {label} after {done}: TSDF MAE {v['mae']:.4f}, in band "
        f"{v['mae_band']:.4f} (x trunc)")


def train(cfg: AtlasTrainConfig, out_dir: str | Path, resume: bool = True,
          log: Callable[[str], None] = print, stop_after: int = 0) -> TrainResult:
    """Train (or resume) into ``out_dir``: checkpoint.pt, weights.pt, history.json, loss.png,
    train_config.json. History ``l1`` / ``bce`` are the finest level's terms, ``val_l1`` the
    held-out finest-level TSDF MAE (truncation units, seen voxels). ``stop_after`` > 0: stop
    (with a checkpoint) once that many fragments are done, like a time limit but
    deterministic."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = AtlasModel(cfg.model).to(cfg.device).train()
    if cfg.init_weights:
        init = read_state(Path(cfg.init_weights), WEIGHTS_FORMAT)["state_dict"]
        own = model.state_dict()
        taken = {k: v for k, v in init.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict({**own, **taken})
        log(f"initialised {len(taken)} of {len(own)} tensors from {cfg.init_weights}")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
    done = 0
    ckpt = out / CHECKPOINT_NAME
    if resume and ckpt.is_file():
        state = read_state(ckpt, TRAINING_FORMAT)
        if _run_identity(state["train_config"]) != _run_identity(cfg.to_dict()):
            raise ConfigError(f"{ckpt} was written with another training configuration; "
                              "use a new output folder or --no-resume")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        history, done = state["history"], int(state["sequences_done"])
        log(f"resumed from {ckpt} after {done} fragments")
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log(f"atlas ({cfg.model.view_fusion}): {model.num_parameters()} parameters; "
        f"{cfg.sequences} fragments {cfg.fragment_dims} at {100 * cfg.voxel_size_m:g} cm, "
        f"{cfg.views} views {cfg.width}x{cfg.height}, device {cfg.device}, {cfg.threads} threads")
    val = [heldout_sample(cfg, VALIDATION_SEED_BASE, j) for j in range(cfg.validation_fragments)]
    spent = float(sum(history["seconds"]))
    while done < cfg.sequences:
        if stop_after and done >= stop_after:
            log(f"stopping after {done} fragments (stop_after)")
            break
        if cfg.time_limit_s and spent >= cfg.time_limit_s:
            log(f"time limit {cfg.time_limit_s:.0f} s reached after {done} fragments")
            break
        t0 = time.perf_counter()
        lr = learning_rate(cfg, done)  # type: ignore[arg-type]  # same schedule fields
        for g in optimizer.param_groups:
            g["lr"] = lr
        sample = training_sample(cfg, done)
        pred = model(sample.images, sample.camera, sample.poses, sample.fragment)
        terms = fragment_loss(pred, sample.targets, cfg.weight_bce, cfg.weight_band)
        if cfg.render_loss_weight > 0:
            terms["render"] = fragment_render_loss(pred, sample,
                                                   model.truncation_m(cfg.voxel_size_m),
                                                   cfg.render_stride)
            terms["loss"] = terms["loss"] + cfg.render_loss_weight * terms["render"]
            history.setdefault("render", []).append(float(terms["render"].detach()))
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        done += 1
        for key, term in (("loss", "loss"), ("l1", "l1_1"), ("bce", "bce_1"), ("l1_4", "l1_4"),
                          ("l1_2", "l1_2")):
            history[key].append(float(terms[term].detach()) if term in terms else float("nan"))
        history["lr"].append(lr)
        if done % cfg.validate_every == 0 or done == cfg.sequences:
            _record_validation(model, val, done, history, log, "validation")
        dt = time.perf_counter() - t0
        history["seconds"].append(dt)
        spent += dt
        if done % 10 == 0:
            k = slice(-10, None)
            log(f"frag {done}/{cfg.sequences} loss {np.mean(history['loss'][k]):.4f} "
                f"l1 4x {np.nanmean(history['l1_4'][k]):.4f} 2x "
                f"{np.nanmean(history['l1_2'][k]):.4f} 1x {np.nanmean(history['l1'][k]):.4f} "
                f"bce {np.nanmean(history['bce'][k]):.4f} lr {lr:.2e} total {spent / 60:.1f} min")
        if done % cfg.checkpoint_every == 0 or done == cfg.sequences:
            _write_progress(out, model, optimizer, done, history, cfg)
    if not history["val_sequence"] or history["val_sequence"][-1] != done:
        _record_validation(model, val, done, history, log, "final validation")
    _write_progress(out, model, optimizer, done, history, cfg)
    weights = None
    if done:
        weights = out / WEIGHTS_NAME
        save_atlas_weights(model, weights, training_meta(cfg, history, done))
    return TrainResult(out, weights, done, spent, history, done >= cfg.sequences)


def _run_identity(train_config: dict[str, Any]) -> dict[str, Any]:
    """What must match to resume a run: the configuration without the operational fields of
    :func:`~recon_ros.models.train._identity` and without ``sequences`` (a run may be resumed
    with another total; the learning-rate schedule from then on is that of the new total,
    e.g. to anneal a run that a time limit stopped early). Deterministic given the same
    sequence of commands."""
    return {k: v for k, v in _identity(train_config).items() if k != "sequences"}


def _write_progress(out: Path, model: AtlasModel, optimizer: torch.optim.Optimizer, done: int,
                    history: dict[str, list[float]], cfg: AtlasTrainConfig) -> None:
    save_training_state(out / CHECKPOINT_NAME, model, optimizer, done, history, cfg.to_dict(),
                        TRAINING_FORMAT)
    (out / "history.json").write_text(json.dumps(history))
    plot_history(history, out / "loss.png")


def training_meta(cfg: AtlasTrainConfig, history: dict[str, list[float]], done: int
                  ) -> dict[str, Any]:
    """Metadata stored with the weights (JSON-able; see ``train.training_meta``)."""
    return shared_training_meta(cfg, history, done, ("loss", "l1", "bce", "l1_4", "l1_2"),
                                {"mae": "val_l1", "mae_band": "val_l1_band"})


def preset(name: str, **overrides: Any) -> AtlasTrainConfig:
    """A preset (``small`` or ``full``) with some fields replaced (None values are ignored);
    ``view_fusion`` replaces the model's."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    base = PRESETS[name]
    fusion = overrides.pop("view_fusion", None)
    if fusion is not None:
        base = replace(base, model=replace(base.model, view_fusion=fusion))
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> TrainResult:
    parser = argparse.ArgumentParser(description="Train the Atlas-style RGB TSDF model.")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--view-fusion", default="average", choices=("average", "context"))
    parser.add_argument("--out", required=True, help="output folder (resumed when present)")
    parser.add_argument("--sequences", type=int, help="training fragments")
    parser.add_argument("--time-limit-s", type=float)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--init-weights", help="initialise from this Atlas weight file")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate")
    parser.add_argument("--warmup-sequences", type=int)
    parser.add_argument("--render-loss-weight", type=float,
                        help="weight of the rendering loss (depth L1, metres; 0 = off)")
    parser.add_argument("--stop-after", type=int, default=0,
                        help="stop (with a checkpoint) after this many fragments in all")
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    cfg = preset(args.preset, view_fusion=args.view_fusion, sequences=args.sequences,
                 time_limit_s=args.time_limit_s, threads=args.threads, device=args.device,
                 seed=args.seed, render_loss_weight=args.render_loss_weight,
                 init_weights=args.init_weights, learning_rate=args.learning_rate,
                 warmup_sequences=args.warmup_sequences)
    result = train(cfg, args.out, resume=not args.no_resume, log=lambda s: print(s, flush=True),
                   stop_after=args.stop_after)
    print(f"{result.sequences_done} fragments in {result.wall_s / 60:.1f} min; weights "
          f"{result.weights}", flush=True)
    return result


if __name__ == "__main__":
    main()
