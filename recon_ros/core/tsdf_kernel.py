"""The per-voxel TSDF update, written once as a pure tensor function.

It runs eagerly or, when asked, through ``torch.compile`` (one fused loop on CPU via Inductor's
C++ backend, Triton kernels on CUDA, replayed as CUDA graphs). Camera parameters travel as
tensors so that a new pose or camera never triggers a recompilation. CUDA graphs need static
shapes: callers pad the block rows to :func:`graph_rows` (a few power-of-two sizes serve every
frame) and drop the padding rows' outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def fuse_depth(block_cam: torch.Tensor, local_cam: torch.Tensor, depth: torch.Tensor,
               smooth: torch.Tensor, intr: torch.Tensor, depth_range: torch.Tensor,
               trunc_m: torch.Tensor, drop_start_m: torch.Tensor, max_weight: torch.Tensor,
               inverse_square: bool, tsdf: torch.Tensor, weight: torch.Tensor,
               clear_factor: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fuse one depth image into S blocks of V voxels.

    Args:
        block_cam: (S, 3) position of each block's voxel (0, 0, 0) in the depth optical frame.
        local_cam: (V, 3) offset of each voxel from its block's first voxel, rotated into the
            depth optical frame (so a voxel's camera position is ``block_cam + local_cam``).
        depth: (H, W) metres as measured.
        smooth: (H, W) bool, the pixel's 3x3 neighbourhood is valid and spans at most a
            truncation in depth (see :func:`smooth_pixels`).
        intr: (4,) ``fx, fy, cx, cy`` of the depth image, pixels.
        depth_range: (2,) valid ``min, max`` depth, metres (NaN/Inf fail the comparisons).
        trunc_m: () truncation distance, metres.
        drop_start_m: () behind the surface by more than this, a measurement's weight falls
            linearly to 0 at ``trunc_m`` (pass ``trunc_m`` for no drop).
        max_weight: () weight cap.
        inverse_square: weight measurements by ``1 / depth**2`` instead of 1.
        tsdf: (S, V) current TSDF, metres. weight: (S, V) current weight.
        clear_factor: () change detection: a voxel whose stored TSDF differs by more than
            half a truncation from the new truncated distance, seen through a ``smooth`` pixel
            (free space seen through a surface that left, or a surface where the map held
            free space) has its weight multiplied by this before the update (1 = plain
            weighted average). Asking for a smooth neighbourhood keeps depth edges (a voxel
            next to a silhouette) from counting as change.

    Every voxel in front of the measured surface (``sdf > trunc``) gets a free update towards
    ``+trunc``, so surfaces that left the scene lose their zero crossing.

    Returns:
        ``(tsdf, weight, w_new, pixel, changed)``: updated (S, V) TSDF and capped weight, the
        (S, V) weight of this frame's measurement (0 = not updated), the (S, V) int64 flat
        depth pixel each voxel projects to, and (S,) bool, whether a block's TSDF changed by
        more than ``1e-3 * trunc`` somewhere or a voxel was observed for the first time (a
        free update of voxels already at ``+trunc`` is no change).
    """
    p = block_cam[:, None, :] + local_cam[None]  # (S, V, 3)
    pixel, inside = _pixel_index(p, intr, depth.shape[0], depth.shape[1])
    d = depth.reshape(-1).index_select(0, pixel.reshape(-1)).reshape(pixel.shape)
    sdf = d - p[..., 2]
    update = inside & (d >= depth_range[0]) & (d <= depth_range[1]) & (sdf >= -trunc_m)
    if inverse_square:
        w_new = torch.where(update, 1.0 / (d * d).clamp(min=1e-6), 0.0)
    else:
        w_new = update.to(tsdf.dtype)
    sdf_t = torch.minimum(sdf, trunc_m)
    calm = smooth.reshape(-1).index_select(0, pixel.reshape(-1)).reshape(pixel.shape)
    arrived = (tsdf - sdf_t) > 0.5 * trunc_m
    contradicted = update & calm & (weight > 0) & (arrived | ((sdf_t - tsdf) > 0.5 * trunc_m))
    # The drop behind the surface protects established surfaces from silhouettes; a voxel the
    # map holds as free space that is now behind a surface (an object arrived) gets the full
    # weight, or a surface seen at a grazing angle could never overturn its free history.
    drop = ((trunc_m + sdf) / (trunc_m - drop_start_m).clamp(min=1e-6)).clamp(min=0.0)
    w_new = torch.where((sdf < -drop_start_m) & ~(contradicted & arrived), w_new * drop, w_new)
    w_old = torch.where(contradicted, weight * clear_factor, weight)
    w_sum = w_old + w_new
    tsdf_out = torch.where(update, (tsdf * w_old + sdf_t * w_new) / w_sum.clamp(min=1e-12), tsdf)
    changed = update & (((tsdf_out - tsdf).abs() > 1e-3 * trunc_m) | (weight <= 0))
    w_out = torch.where(update, w_sum.clamp(max=max_weight), weight)
    return tsdf_out, w_out, w_new, pixel, changed.any(dim=1)


def smooth_pixels(depth: torch.Tensor, valid: torch.Tensor, max_step_m: float) -> torch.Tensor:
    """(H, W) bool: every pixel of the 3x3 neighbourhood is valid and their depths span at
    most ``max_step_m`` (no depth edge), from (H, W) depths and their (H, W) validity; False
    on the image border. Separable: 1x3 then 3x1 elementwise min / max over shifted slices."""
    inf = float("inf")
    lo = torch.where(valid, depth, -inf)  # an invalid neighbour spans everything
    hi = torch.where(valid, depth, inf)
    lo = torch.minimum(torch.minimum(lo[:, :-2], lo[:, 1:-1]), lo[:, 2:])
    hi = torch.maximum(torch.maximum(hi[:, :-2], hi[:, 1:-1]), hi[:, 2:])
    lo = torch.minimum(torch.minimum(lo[:-2], lo[1:-1]), lo[2:])
    hi = torch.maximum(torch.maximum(hi[:-2], hi[1:-1]), hi[2:])
    out = torch.zeros_like(valid)
    out[1:-1, 1:-1] = (hi - lo) <= max_step_m
    return out


def fuse_color(color: torch.Tensor, weight: torch.Tensor, w_new: torch.Tensor,
               pixel: torch.Tensor, seen: torch.Tensor, color_img: torch.Tensor
               ) -> torch.Tensor:
    """Weighted running average of color.

    Args:
        color: (S, V, 3) current RGB. weight: (S, V) weight before this frame.
        w_new: (S, V) this frame's measurement weight (from :func:`fuse_depth`).
        pixel: (S, V) int64 flat index into the color image; seen: (S, V) bool, valid pixel.
        color_img: (Hc, Wc, 3) uint8 RGB.

    Returns:
        (S, V, 3) updated color.
    """
    w_col = torch.where(seen, w_new, 0.0)[..., None]
    w_old = weight[..., None]
    rgb = color_img.reshape(-1, 3).index_select(0, pixel.reshape(-1)).reshape(color.shape)
    mixed = (color * w_old + rgb.to(torch.float32) * w_col) / (w_old + w_col).clamp(min=1e-12)
    return torch.where(w_col > 0, mixed, color)


def color_pixels(block_cam: torch.Tensor, local_cam: torch.Tensor, R_color_cam: torch.Tensor,
                 t_color_cam: torch.Tensor, color_intr: torch.Tensor, height: int, width: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, V) flat color-image pixel of each voxel and whether it is inside the image, for a
    color camera with its own intrinsics and extrinsics (depth optical -> color optical)."""
    p = block_cam[:, None, :] + local_cam[None]
    # Written out element-wise (not ``p @ R.T``) so it fuses into one loop.
    p_col = (p[..., 0:1] * R_color_cam[:, 0] + p[..., 1:2] * R_color_cam[:, 1]
             + p[..., 2:3] * R_color_cam[:, 2] + t_color_cam)
    return _pixel_index(p_col, color_intr, height, width)


def _pixel_index(p: torch.Tensor, intr: torch.Tensor, height: int, width: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat index of the nearest pixel of camera-frame points (..., 3), and whether each point
    is in front of the camera and inside the ``height x width`` image (index 0 where not)."""
    z = p[..., 2]
    zs = torch.where(z > 0, z, 1.0)
    u = torch.round(p[..., 0] / zs * intr[0] + intr[2])
    v = torch.round(p[..., 1] / zs * intr[1] + intr[3])
    inside = (z > 0) & (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
    return torch.where(inside, v * width + u, 0.0).to(torch.int64), inside


KERNELS = {"depth": fuse_depth, "color": fuse_color, "color_pixels": color_pixels}
_compiled: dict[tuple[str, bool], Callable] = {}
#: Fewest block rows of a CUDA-graph call (see :func:`graph_rows`).
GRAPH_MIN_ROWS = 1024


def get_kernel(name: str, compiled: bool, graphs: bool = False) -> Callable:
    """A kernel of :data:`KERNELS`, or its ``torch.compile``-d version (built once): with
    dynamic shapes, or, with ``graphs``, static shapes replayed as CUDA graphs (``mode=
    "reduce-overhead"``; inputs padded to :func:`graph_rows`)."""
    if not compiled:
        return KERNELS[name]
    if (name, graphs) not in _compiled:
        options = dict(mode="reduce-overhead", dynamic=False) if graphs else dict(dynamic=True)
        _compiled[name, graphs] = torch.compile(KERNELS[name], **options)
    return _compiled[name, graphs]


def graph_rows(n: int) -> int:
    """Rows to pad ``n`` block rows to for a CUDA-graph call: the power of two at or above
    ``n``, at least :data:`GRAPH_MIN_ROWS` (7 sizes up to 65,536 blocks a frame, within
    ``torch.compile``'s default limit of 8 recompilations)."""
    return max(GRAPH_MIN_ROWS, 1 << max(n - 1, 0).bit_length())


def pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` with zero rows appended along dim 0 up to ``rows`` (``t`` itself if it has as
    many)."""
    extra = rows - t.shape[0]
    return t if extra <= 0 else torch.cat((t, t.new_zeros((extra, *t.shape[1:]))))
