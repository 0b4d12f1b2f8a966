"""Merging maps of one place made in the same map frame (sessions, robots).

TSDF fusion is a weighted running average, so two volumes merge block by block: where both
observed a voxel, ``tsdf = (w1 t1 + w2 t2) / (w1 + w2)`` and the weights add. That equals
integrating both maps' frames into one map, up to float rounding, as long as no voxel reached
the weight cap and no measurement contradicted a voxel by more than half a truncation: the
change detection (``integration.clearing_weight_factor``, and the full weight a surface
arriving in space held free gets despite ``integration.behind_surface_drop``) depends on the
order of frames, so with it the merge is a close, not an exact, equivalent.
Colors are averaged with the same weights (the integrator weighs color only near the measured
surface, so there the merge is approximate).
"""

from __future__ import annotations

import torch

from .errors import ConfigError
from .volume import BlockVolume

__all__ = ["check_mergeable", "merge_volume"]


def check_mergeable(dst: BlockVolume, src: BlockVolume) -> None:
    """Raise :class:`ConfigError` unless ``src`` has ``dst``'s voxel size, block size and
    truncation (the merge is voxel by voxel)."""
    for name, unit in (("voxel_size_m", " m"), ("block_size", ""), ("truncation_m", " m")):
        a, b = getattr(dst, name), getattr(src, name)
        if abs(a - b) > 1e-9 * max(abs(a), 1.0):
            raise ConfigError(f"cannot merge maps with different {name}: {a:g}{unit} and "
                              f"{b:g}{unit}")


def merge_volume(dst: BlockVolume, src: BlockVolume, max_weight: float,
                 batch_blocks: int = 4096) -> int:
    """Fuse every block of ``src`` into ``dst`` (allocating absent ones) by the weighted
    average above, weights capped at ``max_weight``; the merged blocks are logged as changed.
    ``src`` is read only. Returns how many of ``src``'s blocks ``dst`` did not hold.

    Raises:
        ConfigError: the volumes' geometries differ (:func:`check_mergeable`).
    """
    check_mergeable(dst, src)
    n = src.num_blocks
    new = 0
    for start in range(0, n, batch_blocks):
        keys = src.index.slot_keys[start:start + batch_blocks].to(dst.device)
        before = dst.num_blocks
        slots = dst.allocate_keys(keys)
        new += dst.num_blocks - before
        w1 = dst.weight[slots].to(torch.float32)
        w2 = src.weight[start:start + keys.numel()].to(dst.device, torch.float32)
        w = w1 + w2
        seen = w > 0
        denom = w.clamp(min=1e-12)
        t1 = dst.tsdf[slots].to(torch.float32)
        t2 = src.tsdf[start:start + keys.numel()].to(dst.device, torch.float32)
        tsdf = torch.where(seen, (w1 * t1 + w2 * t2) / denom, t1)
        c1 = dst.color[slots].to(torch.float32)
        c2 = src.color[start:start + keys.numel()].to(dst.device, torch.float32)
        color = torch.where(seen[..., None],
                            (w1[..., None] * c1 + w2[..., None] * c2) / denom[..., None], c1)
        dst.tsdf[slots] = tsdf.to(dst.dtype)
        dst.weight[slots] = w.clamp(max=max_weight).to(dst.dtype)
        dst.color[slots] = color.to(dst.dtype)
        dst.mark_changed(slots)
    return new
