"""Safe weight files and resumable training checkpoints of the learned models (latent fusion;
the Atlas-style model passes its own format tags and model builder).

Both are written with ``torch.save`` and read with ``torch.load(weights_only=True)``: they hold
only plain containers (dicts, lists, str, int, float, bool) and tensors, so loading never runs
arbitrary pickled code.

- Weights (shipped in ``recon_ros/models/weights/``): ``{"format": WEIGHTS_FORMAT,
  "model_config": ModelConfig dict, "state_dict": {name: tensor}, "meta": {...}}``; a latent
  model's ``meta["trained_for"]`` is a :class:`~recon_ros.models.trained_for.TrainedFor`
  dict (voxel size, truncation, image sizes, count cap, depth range of its training).
- Training checkpoints add the optimizer state, the number of finished sequences, the loss
  history and the training configuration.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..core.errors import ReconError
from .networks import LatentFusionModel, ModelConfig

if TYPE_CHECKING:
    from .trained_for import TrainedFor

WEIGHTS_FORMAT = "recon_ros.latent_fusion.weights.v1"
TRAINING_FORMAT = "recon_ros.latent_fusion.training.v1"
#: The weights ``fusion.weights: ""`` refers to (trained by ``recon-ros train latent-fusion``).
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "latent_fusion_small.pt"


def read_state(path: Path, expected_format: str) -> dict[str, Any]:
    """The dict of a weight file or training checkpoint of ``expected_format`` (CPU tensors).

    Raises:
        ReconError: unreadable, or of another format.
    """
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ReconError(f"cannot read {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != expected_format:
        raise ReconError(f"{path} is not a recon_ros file of format {expected_format}")
    return state


def save_weights(model: nn.Module, path: str | Path, meta: dict[str, Any],
                 fmt: str = WEIGHTS_FORMAT, trained_for: TrainedFor | None = None) -> None:
    """Write an inference-only weight file (CPU tensors, ``model.config``, metadata; with
    ``trained_for``, its dict as ``meta["trained_for"]``)."""
    if trained_for is not None:
        meta = {**meta, "trained_for": trained_for.to_dict()}
    state = {"format": fmt, "model_config": model.config.to_dict(),
             "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
             "meta": meta}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, str(path))


def load_model(path: Path, fmt: str, build: Callable[[dict[str, Any]], nn.Module],
               device: torch.device | str) -> tuple[nn.Module, dict[str, Any]]:
    """A model built by ``build(model_config dict)`` from the weight file ``path`` of format
    ``fmt``, in eval mode on ``device``, and its metadata.

    Raises:
        ReconError: unreadable, another format, or weights that do not fit the config.
    """
    state = read_state(path, fmt)
    model = build(state["model_config"])
    try:
        model.load_state_dict(state["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ReconError(f"{path}: weights do not match the model config: {exc}") from exc
    return model.to(device).eval(), dict(state.get("meta", {}))


def load_weights(path: str | Path = "", device: torch.device | str = "cpu"
                 ) -> tuple[LatentFusionModel, dict[str, Any]]:
    """A model in eval mode on ``device`` and its metadata; ``""`` = the shipped weights."""
    p = Path(path) if str(path) else DEFAULT_WEIGHTS
    return load_model(p, WEIGHTS_FORMAT, lambda c: LatentFusionModel(ModelConfig.from_dict(c)),
                      device)


def save_training_state(path: str | Path, model: nn.Module,
                        optimizer: torch.optim.Optimizer, sequences_done: int,
                        history: dict[str, list[float]], train_config: dict[str, Any],
                        fmt: str = TRAINING_FORMAT) -> None:
    """Write a resumable checkpoint (atomically: temp file, then rename)."""
    state = {"format": fmt, "model_config": model.config.to_dict(),
             "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
             "optimizer": optimizer.state_dict(), "sequences_done": int(sequences_done),
             "history": history, "train_config": train_config}
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    torch.save(state, str(tmp))
    tmp.replace(p)


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The dict written by :func:`save_training_state` (tensors on CPU)."""
    return read_state(Path(path), TRAINING_FORMAT)
