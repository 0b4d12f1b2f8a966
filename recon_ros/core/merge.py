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

Maps made in different map frames merge under a rigid transform ``T_dst_src`` (4x4, maps a
point of the source map's frame into the destination's): the source is first resampled into
the destination's voxel grid (:func:`resample_volume`) by trilinear interpolation of the
source at every destination voxel centre. Where the transform maps voxel centres onto voxel
centres (whole-voxel translations, rotations by multiples of 90 degrees about the axes, and
their compositions) the resampling is exact: each destination voxel is one source voxel,
bit for bit. Otherwise it is an approximation: the TSDF is interpolated among the observed of
the 8 source voxels around the point, each weighted by its trilinear coefficient times its
weight; that is exact for a planar surface with all 8 observed and rounds edges and corners
within about one voxel. Weights are interpolated (unobserved voxels count as 0), so a voxel
at the border of the observed space gets a fraction of its neighbours' weight; colors are
averaged like the TSDF. The carved 2D free space follows rotations about the vertical axis
(with any translation) by nearest-cell resampling (exact for whole-cell translations and
multiples of 90 degrees); under a tilting transform it is not carried over (the 2D grid
still follows the merged volume).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transforms3d.quaternions import quat2mat

from .block_hash import pack_coords, unpack_keys
from .errors import ConfigError
from .volume import BlockVolume

__all__ = ["check_mergeable", "is_identity", "merge_volume", "parse_transform",
           "resample_free_cells", "resample_volume", "rigid_transform"]

#: A transformed voxel coordinate this close (in voxels) to a whole number is taken as it, so
#: transforms that map the grid onto itself resample exactly despite float rounding.
SNAP_VOXELS = 1e-6
#: Tolerance on the rotation part of a transform: orthonormal with determinant +1.
ROTATION_TOLERANCE = 1e-6


def rigid_transform(T: np.ndarray | torch.Tensor) -> np.ndarray:
    """``T`` as a (4, 4) float64 array, checked to be a rigid transform (rotation with
    determinant +1, bottom row ``0 0 0 1``, finite).

    Raises:
        ConfigError: it is not.
    """
    T = np.asarray(T.detach().cpu() if isinstance(T, torch.Tensor) else T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ConfigError(f"a transform must be a finite 4x4 matrix, got shape {T.shape}")
    R = T[:3, :3]
    if (not np.allclose(T[3], (0, 0, 0, 1), atol=ROTATION_TOLERANCE)
            or not np.allclose(R @ R.T, np.eye(3), atol=ROTATION_TOLERANCE)
            or np.linalg.det(R) < 0):
        raise ConfigError("a transform must be rigid: its 3x3 part a rotation (orthonormal, "
                          "determinant +1) and its last row 0 0 0 1")
    return T


def is_identity(T: np.ndarray | torch.Tensor | None) -> bool:
    """Whether ``T`` is None or exactly the 4x4 identity."""
    return T is None or bool(np.array_equal(rigid_transform(T), np.eye(4)))


def parse_transform(spec: str) -> np.ndarray:
    """A rigid transform from text: ``identity``; ``x,y,z,qx,qy,qz,qw`` (metres and a unit
    quaternion, ROS order; normalised if within 1e-2 of unit length); or the path of a text
    file holding a 4x4 matrix (whitespace- or comma-separated rows).

    Raises:
        ConfigError: the spec is none of these, the file cannot be read, or the matrix is not
            rigid.
    """
    text = spec.strip()
    if text.lower() == "identity":
        return np.eye(4)
    parts = text.split(",")
    if len(parts) == 7:
        try:
            x, y, z, qx, qy, qz, qw = (float(p) for p in parts)
        except ValueError:
            raise ConfigError(f"transform {spec!r}: x,y,z,qx,qy,qz,qw must be numbers") from None
        q = np.array([qw, qx, qy, qz])
        norm = float(np.linalg.norm(q))
        if not np.isfinite(norm) or abs(norm - 1.0) > 1e-2:
            raise ConfigError(f"transform {spec!r}: the quaternion has length {norm:g}, not 1")
        T = np.eye(4)
        T[:3, :3] = quat2mat(q / norm)
        T[:3, 3] = (x, y, z)
        return rigid_transform(T)
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"transform {spec!r} is not 'identity', not x,y,z,qx,qy,qz,qw and "
                          "not a file holding a 4x4 matrix")
    try:
        T = np.loadtxt(path, delimiter="," if "," in path.read_text() else None, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read a 4x4 matrix from {path}: {exc}") from exc
    return rigid_transform(T)


def check_mergeable(dst: BlockVolume, src: BlockVolume) -> None:
    """Raise :class:`ConfigError` unless ``src`` has ``dst``'s voxel size, block size and
    truncation (the merge is voxel by voxel)."""
    for name, unit in (("voxel_size_m", " m"), ("block_size", ""), ("truncation_m", " m")):
        a, b = getattr(dst, name), getattr(src, name)
        if abs(a - b) > 1e-9 * max(abs(a), 1.0):
            raise ConfigError(f"cannot merge maps with different {name}: {a:g}{unit} and "
                              f"{b:g}{unit}")


def merge_volume(dst: BlockVolume, src: BlockVolume, max_weight: float,
                 T_dst_src: np.ndarray | torch.Tensor | None = None,
                 batch_blocks: int = 4096) -> int:
    """Fuse every block of ``src`` into ``dst`` (allocating absent ones) by the weighted
    average above, weights capped at ``max_weight``; the merged blocks are logged as changed.
    ``src`` is read only. With ``T_dst_src`` (not the identity), ``src`` is first resampled
    into ``dst``'s frame (:func:`resample_volume`). Returns how many of the (resampled)
    source's blocks ``dst`` did not hold.

    Raises:
        ConfigError: the volumes' geometries differ (:func:`check_mergeable`), or
            ``T_dst_src`` is not rigid.
    """
    check_mergeable(dst, src)
    if not is_identity(T_dst_src):
        src = resample_volume(src, T_dst_src)
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
        a1, a2 = w1 / denom, w2 / denom  # (normalised first: a voxel one side lacks is copied)
        tsdf = torch.where(seen, a1 * t1 + a2 * t2, t1)
        c1 = dst.color[slots].to(torch.float32)
        c2 = src.color[start:start + keys.numel()].to(dst.device, torch.float32)
        color = torch.where(seen[..., None], a1[..., None] * c1 + a2[..., None] * c2, c1)
        dst.tsdf[slots] = tsdf.to(dst.dtype)
        dst.weight[slots] = w.clamp(max=max_weight).to(dst.dtype)
        dst.color[slots] = color.to(dst.dtype)
        dst.mark_changed(slots)
    return new


def resample_volume(src: BlockVolume, T_dst_src: np.ndarray | torch.Tensor,
                    batch_blocks: int = 256) -> BlockVolume:
    """``src`` seen from another frame: a new volume of ``src``'s geometry whose voxel at
    destination centre ``p`` holds ``src`` interpolated at ``T_dst_src^-1 p`` (see the module
    docstring: exact where the transform maps the grid onto itself). Only blocks with an
    observed voxel are kept. ``src`` is read only.

    Raises:
        ConfigError: ``T_dst_src`` is not rigid.
    """
    T = rigid_transform(T_dst_src)
    dev, B = src.device, src.block_size
    f64 = dict(dtype=torch.float64, device=dev)
    R = torch.as_tensor(T[:3, :3], **f64)
    t_vox = torch.as_tensor(T[:3, 3] / src.voxel_size_m, **f64)
    out = BlockVolume(src.voxel_size_m, B, src.truncation_m, device=dev, dtype=src.dtype,
                      initial_capacity_blocks=max(src.num_blocks, 1))
    if src.num_blocks == 0:
        return out
    dst_blocks = _covered_blocks(src, R, t_vox)
    corners = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)],
                           device=dev)  # (8, 3)
    for start in range(0, dst_blocks.shape[0], batch_blocks):
        blocks = dst_blocks[start:start + batch_blocks]
        idx = (blocks[:, None, :] * B + src.local_offsets[None]).to(torch.float64)  # (S,V,3)
        q = (idx - t_vox) @ R  # source voxel coordinates: R^T (p - t), row vectors
        r = torch.round(q)
        q = torch.where((q - r).abs() < SNAP_VOXELS, r, q)
        base = torch.floor(q)
        frac = q - base
        g = base.to(torch.int64)[:, :, None, :] + corners  # (S, V, 8, 3)
        a = torch.where(corners.bool(), frac[:, :, None, :], 1 - frac[:, :, None, :]).prod(-1)
        tsdf, weight, color = _gather_voxels(src, g.reshape(-1, 3))
        shape = g.shape[:3]
        aw = a * weight.reshape(shape)  # (S, V, 8)
        w = aw.sum(-1)
        c = aw / w.clamp(min=1e-300)[..., None]
        seen = w > 0
        keep = seen.any(1)
        if not bool(keep.any()):
            continue
        slots = out.allocate(blocks[keep])
        seen = seen[keep]
        c = c[keep]
        t = (c * tsdf.reshape(shape)[keep]).sum(-1)
        col = (c[..., None] * color.reshape(*shape, 3)[keep]).sum(-2)
        out.tsdf[slots] = torch.where(seen, t, src.truncation_m).to(src.dtype)
        out.weight[slots] = w[keep].to(src.dtype)
        out.color[slots] = torch.where(seen[..., None], col, 0.0).to(src.dtype)
    return out


def _covered_blocks(src: BlockVolume, R: torch.Tensor, t_vox: torch.Tensor) -> torch.Tensor:
    """(M, 3) int64 destination blocks that may hold a voxel interpolated from ``src``: those
    meeting the transformed box of each source block grown by one voxel."""
    B = src.block_size
    coords = src.block_coords.to(torch.float64)  # (N, 3)
    box = torch.tensor([[i, j, k] for i in (-1, B) for j in (-1, B) for k in (-1, B)],
                       dtype=torch.float64, device=src.device)  # (8, 3) voxel offsets
    p = (coords[:, None, :] * B + box[None]) @ R.T + t_vox  # (N, 8, 3) destination voxels
    lo = torch.div(torch.floor(p.amin(1)).to(torch.int64), B, rounding_mode="floor")
    hi = torch.div(torch.ceil(p.amax(1)).to(torch.int64), B, rounding_mode="floor")
    span = int((hi - lo).max()) + 1
    r = torch.arange(span, device=src.device)
    offsets = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    cand = lo[:, None, :] + offsets[None]  # (N, span^3, 3)
    cand = cand[(cand <= hi[:, None, :]).all(-1)]
    return unpack_keys(torch.unique(pack_coords(cand)))


def _gather_voxels(src: BlockVolume, g: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TSDF (K,), weight (K,) and color (K, 3), float64, of ``src`` at (K, 3) global voxel
    indices; voxels of absent blocks read as unobserved (truncation, weight 0, black)."""
    B, V = src.block_size, src.voxels_per_block
    block = torch.div(g, B, rounding_mode="floor")
    local = g - block * B
    slot = src.index.lookup(pack_coords(block))
    found = slot >= 0
    flat = torch.where(found, slot * V + (local[:, 0] * B + local[:, 1]) * B + local[:, 2], 0)
    tsdf = torch.where(found, src.tsdf.reshape(-1)[flat].to(torch.float64), src.truncation_m)
    weight = torch.where(found, src.weight.reshape(-1)[flat].to(torch.float64), 0.0)
    color = torch.where(found[:, None], src.color.reshape(-1, 3)[flat].to(torch.float64), 0.0)
    return tsdf, weight, color


def resample_free_cells(cells: torch.Tensor, free_z: torch.Tensor, resolution_m: float,
                        T_dst_src: np.ndarray | torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """2D free space seen from another frame: (N, 2) int64 source cells (centred on multiples
    of ``resolution_m``) with (N,) lowest free height ``free_z`` -> the destination cells and
    their heights (shifted by the transform's z), each destination cell taking the nearest
    source cell at its inverse-transformed centre. Only rotations about the vertical axis
    keep heights meaningful: for a tilting transform nothing is returned.

    Raises:
        ConfigError: ``T_dst_src`` is not rigid.
    """
    T = rigid_transform(T_dst_src)
    empty = (cells[:0], free_z[:0])
    if abs(T[2, 2] - 1.0) > ROTATION_TOLERANCE or cells.numel() == 0:
        return empty
    dev = cells.device
    R = torch.as_tensor(T[:2, :2], dtype=torch.float64, device=dev)
    t = torch.as_tensor(T[:2, 3] / resolution_m, dtype=torch.float64, device=dev)
    p = cells.to(torch.float64) @ R.T + t  # source centres in destination cells
    r = torch.arange(2, device=dev)
    offsets = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
    cand = (torch.floor(p).to(torch.int64)[:, None, :] + offsets[None]).reshape(-1, 2)
    cand = unpack_keys(torch.unique(_pack2(cand)))[:, :2]
    back = (cand.to(torch.float64) - t) @ R  # R^T (d - t)
    nearest = torch.round(back).to(torch.int64)
    src_keys, order = torch.sort(_pack2(cells))
    want = _pack2(nearest)
    at = torch.searchsorted(src_keys, want).clamp(max=src_keys.numel() - 1)
    hit = src_keys[at] == want
    return cand[hit], free_z[order[at[hit]]] + float(T[2, 3])


def _pack2(cells: torch.Tensor) -> torch.Tensor:
    """(N, 2) int64 cells -> (N,) keys (``pack_coords`` with z = 0)."""
    return pack_coords(torch.nn.functional.pad(cells, (0, 1)))
