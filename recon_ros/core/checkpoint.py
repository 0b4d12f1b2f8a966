"""Reading checkpoints safely: plain tensors and containers only (``weights_only=True``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .errors import VolumeError


def read_checkpoint(path: str | Path, expected_format: str, kind: str) -> dict:
    """Load a checkpoint dict whose ``format`` entry must equal ``expected_format``.

    Raises:
        VolumeError: unreadable file, not a dict, or another format (message names ``kind``).
    """
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise VolumeError(f"cannot read {kind} checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != expected_format:
        raise VolumeError(f"{path} is not a recon_ros {kind} checkpoint "
                          f"(expected format {expected_format})")
    return state
