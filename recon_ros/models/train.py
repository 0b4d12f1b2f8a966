"""Training of the latent fusion model (``recon-ros train latent-fusion``).

One *sequence* is ``frames_per_sequence`` consecutive noisy frames of a fresh random room
(:func:`~recon_ros.models.data.training_sequence`), fused into an empty latent volume. After
every frame the translator decodes the voxels that frame updated, and the loss is

    w_l1 * L1(tsdf) + w_l2 * L2(tsdf) + w_bce * BCE(occupancy) + w_var * latent variance

against the true SDF clamped to the truncation (TSDF normalized to [-1, 1]) and its sign; the
latent-variance term is the spread of the updates mean-pooled into the same voxel. Gradients
flow through the latent state across ``tbptt_frames`` frames (truncated backpropagation): the
optimizer steps and the features are detached after every such window.

Runs are seeded (model initialisation and every sequence are pure functions of the seed and
the sequence index) and resumable: ``checkpoint.pt`` in the output folder is rewritten every
``checkpoint_every`` sequences and picked up by the next run with the same folder.
"""

from __future__ import annotations

import json
import math
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
from ..core.latent_volume import LatentVolume
from ..core.volume import BlockVolume
from ..io.synthetic import NoiseConfig, default_camera, make_random_scene
from .checkpoint import load_training_state, save_training_state, save_weights
from .data import (VALIDATION_SEED_BASE, NoiseRanges, Sequence, frame_tensors, render_sequence,
                   scan_poses, training_sequence, truncated_sdf)
from .networks import LatentFusionModel, ModelConfig
from .trained_for import TrainedFor

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "weights.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (written next to its outputs).

    Attributes:
        model: the architecture.
        sequences: number of training sequences (each a fresh random room).
        frames_per_sequence: frames fused per sequence.
        tbptt_frames: frames per truncated-backpropagation window (one optimizer step each).
        frames_per_loop: poses per loop of the room-scan path (sets the view spacing).
        resolutions: ``(width, height)`` choices, one drawn per sequence.
        voxel_size_m: voxel edge, metres.
        block_size: voxels per block edge.
        min_depth_m, max_depth_m: valid depth range, metres.
        max_count: cap of the running-average count.
        learning_rate: Adam learning rate after warm-up (cosine decay to ``final_learning_rate``).
        final_learning_rate: learning rate at the last sequence.
        warmup_sequences: linear warm-up length.
        grad_clip: gradient norm clip.
        weight_l1, weight_l2, weight_bce, weight_latent_variance: loss weights.
        noise: noise drawn per sequence.
        seed: run seed.
        threads: torch CPU threads.
        device: torch device.
        checkpoint_every: sequences between checkpoints.
        validate_every: sequences between validation passes.
        validation_sequences: held-out sequences per validation pass.
        time_limit_s: stop (after a checkpoint) once this much wall time was spent over all
            resumed runs (0 = no limit).
        init_weights: start from these latent weights instead of a random initialisation
            (``""`` = random; see :func:`warm_start`: the feature channels and samples per
            side must match, free-space samples and a 5^3 translator context may be added).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    sequences: int = 400
    frames_per_sequence: int = 16
    tbptt_frames: int = 4
    frames_per_loop: int = 60
    resolutions: tuple[tuple[int, int], ...] = ((80, 60), (120, 90), (160, 120))
    voxel_size_m: float = 0.05
    block_size: int = 8
    min_depth_m: float = 0.1
    max_depth_m: float = 5.0
    max_count: float = 64.0
    learning_rate: float = 1e-3
    final_learning_rate: float = 5e-5
    warmup_sequences: int = 10
    grad_clip: float = 1.0
    weight_l1: float = 1.0
    weight_l2: float = 1.0
    weight_bce: float = 0.5
    weight_latent_variance: float = 0.01
    noise: NoiseRanges = field(default_factory=NoiseRanges)
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    checkpoint_every: int = 10
    validate_every: int = 50
    validation_sequences: int = 2
    time_limit_s: float = 0.0
    init_weights: str = ""

    def __post_init__(self) -> None:
        positive = ("sequences", "frames_per_sequence", "tbptt_frames", "frames_per_loop",
                    "block_size", "threads", "checkpoint_every", "validate_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)!r} must be >= 1")
        if self.frames_per_sequence % self.tbptt_frames:
            raise ConfigError("train.frames_per_sequence must be a multiple of tbptt_frames")
        if not self.resolutions:
            raise ConfigError("train.resolutions must not be empty")

    @property
    def truncation_m(self) -> float:
        return self.model.truncation_voxels * self.voxel_size_m

    def trained_for(self) -> TrainedFor:
        """The geometry the weights of this run are trained for (stored with them)."""
        return TrainedFor(voxel_size_m=self.voxel_size_m,
                          truncation_voxels=self.model.truncation_voxels,
                          resolutions=self.resolutions, max_count=self.max_count,
                          min_depth_m=self.min_depth_m, max_depth_m=self.max_depth_m)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolutions"] = [list(r) for r in self.resolutions]
        d["noise"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["noise"].items()}
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        check_known_keys(cls, data, "train")
        d = dict(data)
        if "model" in d:
            d["model"] = ModelConfig.from_dict(d["model"])
        if "noise" in d:
            d["noise"] = NoiseRanges(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in d["noise"].items()})
        if "resolutions" in d:
            d["resolutions"] = tuple(tuple(r) for r in d["resolutions"])
        return cls(**d)


#: The configuration that trains on 2 (shared) CPU cores in about 36 minutes.
SMALL = TrainConfig()
#: The configuration meant for a lent GPU: wider latent, more context, larger images, longer.
FULL = TrainConfig(
    model=ModelConfig(feature_channels=16, samples_per_side=4, fusion_hidden=64,
                      translator_hidden=64),
    sequences=20_000, frames_per_sequence=32, tbptt_frames=4,
    resolutions=((160, 120), (320, 240), (640, 480)), warmup_sequences=200,
    threads=8, device="cuda", checkpoint_every=100, validate_every=250,
    validation_sequences=4)
PRESETS = {"small": SMALL, "full": FULL}


@dataclass
class FrameLoss:
    """Loss terms of one frame (scalars with grad)."""

    l1: torch.Tensor
    l2: torch.Tensor
    bce: torch.Tensor
    variance: torch.Tensor

    def total(self, cfg: TrainConfig) -> torch.Tensor:
        return (cfg.weight_l1 * self.l1 + cfg.weight_l2 * self.l2 + cfg.weight_bce * self.bce
                + cfg.weight_latent_variance * self.variance)


def new_latent_volume(cfg: TrainConfig) -> LatentVolume:
    """An empty latent volume of the training geometry (small initial capacity: the feature
    tensor is copied once per frame to keep the autograd graph)."""
    vol = BlockVolume(cfg.voxel_size_m, cfg.block_size, cfg.truncation_m, cfg.device,
                      initial_capacity_blocks=256)
    return LatentVolume(vol, cfg.model.feature_channels)


def frame_loss(model: LatentFusionModel, latent: LatentVolume, seq: Sequence, i: int,
               cfg: TrainConfig, differentiable: bool) -> FrameLoss | None:
    """Fuse frame ``i`` of ``seq`` and score the voxels it updated (None if it had none)."""
    integrator = model.integrator(cfg.max_count)
    ft = frame_tensors(seq.depths[i], seq.camera, seq.poses[i], cfg.min_depth_m,
                       cfg.max_depth_m, cfg.device)
    update = integrator.integrate(latent, ft, differentiable=differentiable)
    if update.voxels.numel() == 0:
        return None
    tsdf, occ_logit = integrator.decode_voxels(latent, update.voxels)
    centres = latent.flat_to_voxels(update.voxels).to(torch.float32) * cfg.voxel_size_m
    target = truncated_sdf(seq.scene, centres, cfg.truncation_m)
    err = tsdf - target
    return FrameLoss(l1=err.abs().mean(), l2=err.square().mean(),
                     bce=nnf.binary_cross_entropy_with_logits(occ_logit,
                                                              (target < 0).to(torch.float32)),
                     variance=update.update_variance)


def learning_rate(cfg: TrainConfig, index: int) -> float:
    """Linear warm-up, then cosine decay to ``final_learning_rate`` at the last sequence."""
    if index < cfg.warmup_sequences:
        return cfg.learning_rate * (index + 1) / cfg.warmup_sequences
    t = (index - cfg.warmup_sequences) / max(1, cfg.sequences - cfg.warmup_sequences)
    return cfg.final_learning_rate + 0.5 * (cfg.learning_rate - cfg.final_learning_rate) * (
        1.0 + math.cos(math.pi * min(t, 1.0)))


def train_sequence(model: LatentFusionModel, optimizer: torch.optim.Optimizer,
                   seq: Sequence, cfg: TrainConfig) -> dict[str, float]:
    """One sequence with truncated backpropagation; returns the mean loss terms."""
    latent = new_latent_volume(cfg)
    sums = {"loss": 0.0, "l1": 0.0, "l2": 0.0, "bce": 0.0, "variance": 0.0}
    n = 0
    for start in range(0, cfg.frames_per_sequence, cfg.tbptt_frames):
        losses = [fl for i in range(start, start + cfg.tbptt_frames)
                  if (fl := frame_loss(model, latent, seq, i, cfg, differentiable=True))]
        if losses:
            total = torch.stack([fl.total(cfg) for fl in losses]).mean()
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            for fl in losses:
                sums["loss"] += float(fl.total(cfg).detach())
                for k in ("l1", "l2", "bce", "variance"):
                    sums[k] += float(getattr(fl, k).detach())
                n += 1
        latent.detach()
    return {k: v / max(n, 1) for k, v in sums.items()}


def validation_sequences(cfg: TrainConfig) -> list[Sequence]:
    """Fixed held-out sequences (scene seeds >= VALIDATION_SEED_BASE, 5 % outliers, sigma
    0.01) at the largest training resolution."""
    w, h = max(cfg.resolutions)
    out = []
    for j in range(cfg.validation_sequences):
        rng = np.random.default_rng([VALIDATION_SEED_BASE, j])
        scene = make_random_scene(VALIDATION_SEED_BASE + j)
        poses = scan_poses(scene, rng, cfg.frames_per_sequence, cfg.frames_per_loop)
        noise = NoiseConfig(multiplicative_sigma=0.01, outlier_fraction=0.05)
        out.append(render_sequence(scene, default_camera(w, h), poses, noise, j))
    return out


@torch.no_grad()
def validate(model: LatentFusionModel, sequences: list[Sequence], cfg: TrainConfig
             ) -> dict[str, float]:
    """Mean loss terms over held-out sequences (no gradient)."""
    model.eval()
    terms: dict[str, list[float]] = {"l1": [], "bce": []}
    for seq in sequences:
        latent = new_latent_volume(cfg)
        for i in range(len(seq.depths)):
            fl = frame_loss(model, latent, seq, i, cfg, differentiable=False)
            if fl is not None:
                terms["l1"].append(float(fl.l1))
                terms["bce"].append(float(fl.bce))
    model.train()
    return {k: float(np.mean(v)) if v else float("nan") for k, v in terms.items()}


@dataclass
class TrainResult:
    """Outcome of :func:`train`."""

    out_dir: Path
    weights: Path | None
    sequences_done: int
    wall_s: float
    history: dict[str, list[float]]
    finished: bool


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume) into ``out_dir``: checkpoint.pt, weights.pt (when finished),
    history.json, loss.png, train_config.json.

    Args:
        cfg: the configuration (a resumed run must use the same one).
        out_dir: output folder.
        resume: continue from ``out_dir/checkpoint.pt`` when present.
        log: receives one line per progress report.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = LatentFusionModel(cfg.model).to(cfg.device).train()
    if cfg.init_weights:
        warm_start(model, cfg.init_weights)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    history: dict[str, list[float]] = {k: [] for k in (
        "loss", "l1", "l2", "bce", "variance", "lr", "seconds", "val_sequence", "val_l1",
        "val_bce")}
    done = 0
    ckpt = out / CHECKPOINT_NAME
    if resume and ckpt.is_file():
        state = load_training_state(ckpt)
        if _identity(state["train_config"]) != _identity(cfg.to_dict()):
            raise ConfigError(f"{ckpt} was written with another training configuration; "
                              "use a new output folder or --no-resume")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        history, done = state["history"], int(state["sequences_done"])
        log(f"resumed from {ckpt} after {done} sequences")
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    params = model.num_parameters()
    log(f"model: {params['total']} parameters (fusion {params['fusion']}, translator "
        f"{params['translator']}); {cfg.sequences} sequences of {cfg.frames_per_sequence} "
        f"frames, device {cfg.device}, {cfg.threads} threads")
    val_seqs = validation_sequences(cfg)
    spent = float(sum(history["seconds"]))
    while done < cfg.sequences:
        if cfg.time_limit_s and spent >= cfg.time_limit_s:
            log(f"time limit {cfg.time_limit_s:.0f} s reached after {done} sequences")
            break
        t0 = time.perf_counter()
        lr = learning_rate(cfg, done)
        for g in optimizer.param_groups:
            g["lr"] = lr
        seq = training_sequence(cfg.seed, done, cfg.frames_per_sequence, cfg.frames_per_loop,
                                cfg.resolutions, cfg.noise)
        terms = train_sequence(model, optimizer, seq, cfg)
        done += 1
        for k, v in terms.items():
            history[k].append(v)
        history["lr"].append(lr)
        if done % cfg.validate_every == 0 or done == cfg.sequences:
            val = validate(model, val_seqs, cfg)
            history["val_sequence"].append(float(done))
            history["val_l1"].append(val["l1"])
            history["val_bce"].append(val["bce"])
            log(f"  validation after {done}: L1 {val['l1']:.4f} (x trunc), BCE {val['bce']:.4f}")
        dt = time.perf_counter() - t0
        history["seconds"].append(dt)
        spent += dt
        log(f"seq {done}/{cfg.sequences} {seq.camera.width}x{seq.camera.height} "
            f"sigma {seq.noise.multiplicative_sigma:.3f} out {seq.noise.outlier_fraction:.2f} "
            f"loss {terms['loss']:.4f} l1 {terms['l1']:.4f} bce {terms['bce']:.4f} "
            f"var {terms['variance']:.4f} lr {lr:.2e} {dt:.1f}s total {spent / 60:.1f} min")
        if done % cfg.checkpoint_every == 0 or done == cfg.sequences:
            save_training_state(ckpt, model, optimizer, done, history, cfg.to_dict())
            (out / "history.json").write_text(json.dumps(history))
            plot_history(history, out / "loss.png")
    save_training_state(ckpt, model, optimizer, done, history, cfg.to_dict())
    (out / "history.json").write_text(json.dumps(history))
    plot_history(history, out / "loss.png")
    finished = done >= cfg.sequences
    weights = None
    if done:
        weights = out / WEIGHTS_NAME
        save_weights(model, weights, training_meta(cfg, history, done),
                     trained_for=cfg.trained_for())
    return TrainResult(out, weights, done, spent, history, finished)


def warm_start(model: LatentFusionModel, path: str | Path) -> None:
    """Initialise ``model`` from the weights at ``path`` so that it computes what they compute
    on the band samples, whatever new options ``model`` adds:

    - free-space samples (``model.config.free_space_samples > 0``, none in the weights): the
      fusion network's input weights of the new per-sample channels start at zero (the band
      updates are unchanged), and each free-space sample's output rows copy those of band
      sample ``0`` (the one a truncation in front of the measurement), so a free-space voxel
      first gets the update of a voxel observed a truncation in front of a surface;
    - a 5^3 translator context over a 3^3 one: the 3^3 kernel in the centre of a zero 5^3 one
      (the same output).

    Raises:
        ConfigError: feature channels, samples per side or hidden widths differ, or the
            weights already have free-space samples of another count.
    """
    from .checkpoint import load_weights

    old, _ = load_weights(path, "cpu")
    oc, nc = old.config, model.config
    for name in ("feature_channels", "samples_per_side", "fusion_hidden", "translator_hidden",
                 "truncation_voxels"):
        if getattr(oc, name) != getattr(nc, name):
            raise ConfigError(f"init_weights {path}: model.{name} is {getattr(oc, name)} there, "
                              f"{getattr(nc, name)} here")
    if oc.free_space_samples not in (0, nc.free_space_samples):
        raise ConfigError(f"init_weights {path}: {oc.free_space_samples} free-space samples "
                          f"there, {nc.free_space_samples} here")
    F, K, S = nc.feature_channels, 2 * nc.samples_per_side + 1, nc.free_space_samples
    src = old.state_dict()
    dst = model.state_dict()
    with torch.no_grad():
        for name, value in src.items():
            target = dst[name]
            if target.shape == value.shape:
                target.copy_(value)
            elif name == "fusion.encode.0.weight":  # (hidden, C_in, 1, 1)
                band = K * (F + 1)
                target.zero_()
                target[:, :band] = value[:, :band]
                target[:, -(value.shape[1] - band):] = value[:, band:]  # depth, ray, valid
            elif name.startswith("fusion.decode.2."):  # (K F [+ S F], ...) outputs
                target[:K * F] = value[:K * F]
                for j in range(S):
                    target[(K + j) * F:(K + j + 1) * F] = value[:F]  # band sample 0
            elif name == "translator.net.0.weight":  # 3^3 kernel -> centre of 5^3
                pad = (target.shape[-1] - value.shape[-1]) // 2
                target.zero_()
                target[..., pad:pad + value.shape[-1], pad:pad + value.shape[-1],
                       pad:pad + value.shape[-1]] = value
            else:
                raise ConfigError(f"init_weights {path}: {name} {tuple(value.shape)} does not "
                                  f"fit {tuple(target.shape)}")


#: Settings that may change when a run is resumed (they do not change what is learned).
OPERATIONAL_FIELDS = ("time_limit_s", "threads", "checkpoint_every")


def _identity(train_config: dict[str, Any]) -> dict[str, Any]:
    """A training configuration without its :data:`OPERATIONAL_FIELDS`."""
    return {k: v for k, v in train_config.items() if k not in OPERATIONAL_FIELDS}


def training_meta(cfg: Any, history: dict[str, list[float]], done: int,
                  losses: tuple[str, ...] = ("loss", "l1", "l2", "bce", "variance"),
                  validation: dict[str, str] | None = None) -> dict[str, Any]:
    """Metadata stored with the weights (JSON-able): the training config (``cfg.to_dict()``,
    ``cfg.device``), sequences done, wall time, the mean of each of the ``losses`` histories
    over the last 50 steps, and the last value of each ``validation`` history (name in the
    metadata -> history key; default ``l1`` and ``bce``)."""
    from ..bench import hardware_line

    k = max(1, min(50, done))
    validation = validation or {"l1": "val_l1", "bce": "val_bce"}
    return {"train_config": cfg.to_dict(), "sequences_done": done,
            "wall_s": float(sum(history["seconds"])),
            "final_loss_mean_last": {n: float(np.nanmean(history[n][-k:])) for n in losses},
            "final_validation": {name: history[key][-1] if history[key] else None
                                 for name, key in validation.items()},
            "hardware": hardware_line(cfg.device)}


def plot_history(history: dict[str, list[float]], path: str | Path) -> None:
    """Loss curves (training terms as trailing means over 10 sequences, validation L1 as
    dots) on a log scale, drawn with OpenCV."""
    import cv2

    width, height, margin = 900, 520, 60
    img = np.full((height, width, 3), 255, np.uint8)
    series = {"loss": (0, 0, 0), "l1": (200, 60, 0), "bce": (0, 140, 0),
              "variance": (160, 0, 160)}
    curves = {}
    for name in series:
        v = np.asarray(history.get(name, []), np.float64)
        if len(v) == 0:
            continue
        c = np.concatenate(([0.0], np.cumsum(v)))
        i = np.arange(1, len(v) + 1)
        lo_i = np.maximum(i - 10, 0)
        curves[name] = (i, (c[i] - c[lo_i]) / (i - lo_i))  # trailing mean of <= 10
    val = (np.asarray(history.get("val_sequence", [])), np.asarray(history.get("val_l1", [])))
    values = [c[1] for c in curves.values()] + ([val[1]] if len(val[1]) else [])
    if not values:
        cv2.imwrite(str(path), img)
        return
    allv = np.concatenate(values)
    allv = allv[np.isfinite(allv) & (allv > 0)]
    lo, hi = np.log10(allv.min()), np.log10(allv.max())
    hi = hi if hi > lo else lo + 1.0
    n = max(len(history.get("loss", [])), 1)

    def xy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        px = margin + (x - 1) / max(n - 1, 1) * (width - 2 * margin)
        py = height - margin - (np.log10(np.maximum(y, 1e-12)) - lo) / (hi - lo) * (
            height - 2 * margin)
        return np.stack((px, py), 1).astype(np.int32)

    cv2.rectangle(img, (margin, margin), (width - margin, height - margin), (0, 0, 0), 1)
    for e in range(int(np.floor(lo)), int(np.ceil(hi)) + 1):
        for m in (1, 2, 5):
            val_y = m * 10.0 ** e
            if 10 ** lo <= val_y <= 10 ** hi:
                y = int(xy(np.array([1.0]), np.array([val_y]))[0, 1])
                cv2.line(img, (margin, y), (width - margin, y), (225, 225, 225), 1)
                cv2.putText(img, f"{val_y:g}", (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                            (80, 80, 80), 1)
    for i, (name, (x, y)) in enumerate(curves.items()):
        cv2.polylines(img, [xy(x, y)], False, series[name], 2)
        cv2.putText(img, name, (margin + 10 + 110 * i, margin - 20), cv2.FONT_HERSHEY_SIMPLEX,
                    0.55, series[name], 2)
    if len(val[1]):
        for p in xy(val[0], val[1]):
            cv2.circle(img, (int(p[0]), int(p[1])), 4, (0, 0, 220), -1)
        cv2.putText(img, "val l1", (margin + 10 + 110 * len(curves), margin - 20),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 220), 2)
    cv2.putText(img, f"training sequences (1..{n}); log scale", (width // 2 - 150, height - 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A preset (``small`` or ``full``) with some fields replaced (None values are ignored)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
