"""Compacting boolean masks into index lists with one host synchronisation for all of them.

``x[mask]`` and ``torch.nonzero(mask)`` size their result from the data, so on CUDA each one
makes Python wait until the device has caught up. Code that compacts several masks in a row
reads all their counts in one transfer instead and then compacts each with
``torch.nonzero_static``, whose size is given (see ``recon_ros.core.sync_audit``).
"""

from __future__ import annotations

import torch

__all__ = ["compact"]


def compact(*masks: torch.Tensor) -> list[torch.Tensor]:
    """(K,) int64 ascending indices of the True entries of each 1-D bool mask, the same as
    ``torch.nonzero(mask).squeeze(1)`` for each, at one host synchronisation in total."""
    if not masks:
        return []
    counts = torch.stack([m.sum() for m in masks]).tolist()  # the one sync
    return [torch.nonzero_static(m, size=n).squeeze(1) for m, n in zip(masks, counts)]
