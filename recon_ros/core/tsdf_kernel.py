"""The per-voxel TSDF update, written once as a pure tensor function.

It runs eagerly or, when asked, through ``torch.compile`` (one fused loop on CPU via Inductor's
C++ backend, Triton kernels on CUDA). Camera parameters travel as tensors so that a new pose or
camera never triggers a recompilation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def fuse_voxels(block_cam: torch.Tensor, local_cam: torch.Tensor, depth: torch.Tensor,
                intr: torch.Tensor, trunc_m: torch.Tensor, drop_start_m: torch.Tensor,
                max_weight: torch.Tensor,
                inverse_square: bool, tsdf: torch.Tensor, weight: torch.Tensor,
                color_img: torch.Tensor | None, color_intr: torch.Tensor | None,
                R_color_cam: torch.Tensor | None, t_color_cam: torch.Tensor | None,
                color: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Fuse one depth (and color) image into S blocks of V voxels.

    Args:
        block_cam: (S, 3) position of each block's voxel (0, 0, 0) in the depth optical frame.
        local_cam: (V, 3) offset of each voxel from its block's first voxel, rotated into the
            depth optical frame (so a voxel's camera position is ``block_cam + local_cam``).
        depth: (H, W) metres, 0 = invalid.
        intr: (4,) ``fx, fy, cx, cy`` of the depth image, pixels.
        trunc_m: () truncation distance, metres.
        drop_start_m: () behind the surface by more than this, a measurement's weight falls
            linearly to 0 at ``trunc_m`` (pass ``trunc_m`` for no drop).
        max_weight: () weight cap.
        inverse_square: weight measurements by ``1 / depth**2`` instead of 1.
        tsdf: (S, V) current TSDF, metres. weight: (S, V) current weight.
        color_img: (Hc, Wc, 3) RGB in [0, 255], or None (then the other color args are None).
        color_intr: (4,) intrinsics of the color image.
        R_color_cam: (3, 3), t_color_cam: (3,) depth optical frame -> color optical frame.
        color: (S, V, 3) current color.

    Returns:
        ``(tsdf, weight, color, touched)``: updated (S, V) TSDF and weight, (S, V, 3) color
        (None without a color image) and (S,) bool, whether the block got any measurement.
    """
    p = block_cam[:, None, :] + local_cam[None]  # (S, V, 3)
    d, inside = _lookup(depth[..., None], p, intr)
    d = d[..., 0]
    sdf = d - p[..., 2]
    update = inside & (d > 0) & (sdf >= -trunc_m)
    if inverse_square:
        w_new = torch.where(update, 1.0 / (d * d).clamp(min=1e-6), 0.0)
    else:
        w_new = update.to(tsdf.dtype)
    drop = ((trunc_m + sdf) / (trunc_m - drop_start_m).clamp(min=1e-6)).clamp(min=0.0)
    w_new = torch.where(sdf < -drop_start_m, w_new * drop, w_new)
    w_sum = weight + w_new
    safe = w_sum.clamp(min=1e-12)
    tsdf_out = torch.where(update, (tsdf * weight + torch.minimum(sdf, trunc_m) * w_new) / safe,
                           tsdf)
    color_out = None
    if color_img is not None:
        # Written out element-wise (not ``p @ R.T``) so the whole update fuses into one loop.
        p_col = (p[..., 0:1] * R_color_cam[:, 0] + p[..., 1:2] * R_color_cam[:, 1]
                 + p[..., 2:3] * R_color_cam[:, 2] + t_color_cam)
        rgb, seen = _lookup(color_img, p_col, color_intr)
        w_col = torch.where(seen & update, w_new, 0.0)[..., None]
        mixed = (color * weight[..., None] + rgb * w_col) / (weight[..., None] + w_col).clamp(
            min=1e-12)
        color_out = torch.where(w_col > 0, mixed, color)
    return tsdf_out, w_sum.clamp(max=max_weight), color_out, update.any(dim=1)


def _lookup(image: torch.Tensor, p: torch.Tensor, intr: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-pixel values (..., C) of camera-frame points (..., 3) in an (H, W, C) image,
    and whether each point is in front of the camera and inside the image."""
    h, w = image.shape[0], image.shape[1]
    z = p[..., 2]
    zs = torch.where(z > 0, z, 1.0)
    u = torch.round(p[..., 0] / zs * intr[0] + intr[2])
    v = torch.round(p[..., 1] / zs * intr[1] + intr[3])
    inside = (z > 0) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    flat = torch.where(inside, v * w + u, 0.0).to(torch.int64)
    return image.reshape(h * w, -1)[flat], inside


_compiled: Callable | None = None


def get_fuse_voxels(compiled: bool) -> Callable:
    """:func:`fuse_voxels`, or its ``torch.compile``-d version (built once per process)."""
    global _compiled
    if not compiled:
        return fuse_voxels
    if _compiled is None:
        _compiled = torch.compile(fuse_voxels, dynamic=True)
    return _compiled
