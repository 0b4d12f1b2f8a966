"""Rendering loss: L1 of the map rendered at a sensor frame's pose against the frame's depth
(and color), differentiable in the TSDF and color tensors (issue 12, 3(d)).

One implementation shared by the test-time refiner (:mod:`recon_ros.core.refine`) and the
training of the learned models (:mod:`recon_ros.models.train_atlas`, whose dense grids are
viewed as blocks by :func:`dense_grid_volume`). Rendering is
:func:`~recon_ros.core.render.render_differentiable` (DVR implicit gradients through the hit;
nothing is back-propagated through the march) on every ``stride``-th pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .block_hash import pack_coords
from .frame import PinholeCamera
from .render import RayStatus, RenderOptions, render_differentiable, sample_field
from .volume import BlockVolume

__all__ = ["DenseGridBlocks", "RenderLoss", "dense_grid_volume", "free_space_loss",
           "free_space_samples", "render_loss"]


@dataclass
class RenderLoss:
    """Rendered view against one sensor frame (strided pixels; tensors on the volume's device).

    Attributes:
        depth_l1: () mean ``|rendered - measured|`` z-depth, metres, over the pixels where
            both have a depth (0 when there are none); differentiable in the TSDF.
        color_l1: () mean absolute RGB error / 255 over the same pixels, differentiable in
            the TSDF and color; None when no color was compared.
        pixels: () int64 pixels compared.
        status: (h, w) int8 :class:`~recon_ros.core.render.RayStatus` of the strided render.
    """

    depth_l1: torch.Tensor
    color_l1: torch.Tensor | None
    pixels: torch.Tensor
    status: torch.Tensor


def render_loss(volume: BlockVolume, tsdf: torch.Tensor, camera: PinholeCamera,
                T_world_cam: Any, depth: torch.Tensor, *, min_depth_m: float,
                max_depth_m: float, stride: int = 1, color: torch.Tensor | None = None,
                rgb: torch.Tensor | None = None, options: RenderOptions | None = None
                ) -> RenderLoss:
    """Depth (and color) L1 of ``volume`` rendered with ``tsdf`` (and ``color``) at a frame.

    Args:
        volume: the map's block structure and weights (its own TSDF and color are not read).
        tsdf: (N, V) TSDF, metres, laid out as ``volume.tsdf``.
        camera: intrinsics of the frame (H = ``camera.height``, W = ``camera.width``).
        T_world_cam: (4, 4) pose of the frame's optical frame in the map frame, metres.
        depth: (H, W) measured z-depth, metres; readings outside ``[min_depth_m,
            max_depth_m]`` (and NaN, Inf) are not compared.
        min_depth_m, max_depth_m: valid reading range; also the render's ray range.
        stride: compare every ``stride``-th pixel in both directions.
        color: (N, V, 3) colors laid out as ``volume.color`` (RGB, 0-255); with ``rgb``.
        rgb: (H, W, 3) measured RGB (0-255) pixel-aligned with ``depth``; with ``color``.
        options: marcher options (default: :class:`RenderOptions` over the depth range).
    """
    opt = options or RenderOptions(max_depth_m=max_depth_m, min_depth_m=min_depth_m)
    use_color = color is not None and rgb is not None
    out = render_differentiable(volume, camera.strided(stride), T_world_cam, tsdf,
                                color if use_color else None, opt)
    measured = depth[::stride, ::stride].to(volume.device, out.depth.dtype)
    both = ((measured >= min_depth_m) & (measured <= max_depth_m)
            & (out.status == int(RayStatus.HIT)))
    pixels = both.sum()
    n = pixels.clamp(min=1).to(out.depth.dtype)
    depth_l1 = torch.where(both, (out.depth - measured).abs(), 0.0).sum() / n
    color_l1 = None
    if use_color and out.color is not None:
        target = rgb[::stride, ::stride].to(volume.device, out.color.dtype)
        err = (out.color - target).abs().mean(dim=-1) / 255.0
        color_l1 = torch.where(both, err, 0.0).sum() / n
    return RenderLoss(depth_l1, color_l1, pixels, out.status)


def free_space_samples(camera: PinholeCamera, T_world_cam: torch.Tensor, depth: torch.Tensor,
                       *, truncation_m: float, samples: int, stride: int, min_depth_m: float,
                       max_depth_m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in front of the measured surface, on the rays of every ``stride``-th pixel.

    Args:
        camera: intrinsics of ``depth``.
        T_world_cam: (4, 4) float pose of its optical frame in the map frame, on ``depth``'s
            device.
        depth: (H, W) measured z-depth, metres (outside ``[min_depth_m, max_depth_m]`` = none).
        truncation_m: the samples lie within this z-distance in front of the measurement.
        samples: ``K`` samples per pixel at ``d - delta``, ``delta = truncation_m * k / K``
            for ``k = 1 .. K`` (those closer than ``min_depth_m`` are dropped).

    Returns:
        ``(points, delta)``: (M, 3) map-frame points, metres, and their (M,) ``delta``: the
        z-distance (projective distance) in front of the measured surface, metres.
    """
    dev = depth.device
    d = depth[::stride, ::stride]
    valid = (d >= min_depth_m) & (d <= max_depth_m)
    uv = camera.pixel_grid(dev, stride=stride)[valid]  # (P, 2)
    d = d[valid].to(torch.float32)
    delta = truncation_m * torch.arange(1, samples + 1, device=dev, dtype=d.dtype) / samples
    z = d[:, None] - delta[None, :]  # (P, K)
    keep = z > min_depth_m
    ray = camera.backproject(uv, torch.ones_like(d))  # (P, 3), z = 1
    T = T_world_cam.to(dev, torch.float32)
    points = z[..., None] * (ray @ T[:3, :3].T)[:, None, :] + T[:3, 3]  # (P, K, 3)
    return points[keep], delta.expand_as(z)[keep]


def free_space_loss(volume: BlockVolume, tsdf: torch.Tensor, points: torch.Tensor,
                    target: torch.Tensor) -> torch.Tensor:
    """() mean hinge ``max(0, target - f)``, metres, of the TSDF ``f`` read from ``tsdf``
    ((N, V) laid out as ``volume.tsdf``, differentiably) at (M, 3) map-frame ``points`` in
    free space, over the points whose 8 corners are observed (0 when none): ``target`` (M,)
    is the least TSDF each point should hold, metres."""
    f, ok = sample_field(volume, tsdf, points)
    hinge = torch.where(ok, (target - f).clamp(min=0), 0.0)
    return hinge.sum() / ok.sum().clamp(min=1)


@dataclass
class DenseGridBlocks:
    """A dense voxel box viewed as blocks of a :class:`BlockVolume` (see
    :func:`dense_grid_volume`).

    Attributes:
        volume: the blocks covering the box (weights 1 on the box's observed voxels, 0
            elsewhere; its TSDF is the truncation everywhere and is not used).
        flat: (X * Y * Z,) int64 flat index ``slot * V + local`` of each box voxel (``[i, j,
            k]`` order) in tensors laid out as ``volume.tsdf``.
    """

    volume: BlockVolume
    flat: torch.Tensor

    def scatter(self, dense: torch.Tensor, fill: float) -> torch.Tensor:
        """(X, Y, Z) values of the box -> (N, V) tensor laid out as ``volume.tsdf`` (``fill``
        outside the box), differentiable in ``dense``."""
        vol = self.volume
        out = dense.new_full((vol.capacity * vol.voxels_per_block,), fill)
        return out.index_put((self.flat,), dense.reshape(-1)).reshape(vol.capacity, -1)


def dense_grid_volume(origin_index: tuple[int, int, int], observed: torch.Tensor,
                      voxel_size_m: float, truncation_m: float, block_size: int = 8
                      ) -> DenseGridBlocks:
    """View a dense box of voxels as a block volume, so dense predictions can be rendered
    (and trained through :func:`render_loss`) with the block renderer.

    Args:
        origin_index: global voxel index of the box's voxel ``(0, 0, 0)``; voxel ``g`` has
            its centre at ``g * voxel_size_m`` (the convention of :class:`BlockVolume`).
        observed: (X, Y, Z) bool, voxels the renderer may read (e.g. seen by a view).
        voxel_size_m: voxel edge, metres.
        truncation_m: truncation of the TSDF that will be rendered, metres.
        block_size: voxels per block edge.
    """
    dev = observed.device
    axes = [torch.arange(d, device=dev) + o for d, o in zip(observed.shape, origin_index)]
    index = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    block = torch.div(index, block_size, rounding_mode="floor")
    keys = torch.unique(pack_coords(block))
    volume = BlockVolume(voxel_size_m, block_size, truncation_m, dev,
                         initial_capacity_blocks=int(keys.numel()))
    volume.allocate_keys(keys)
    slot = volume.index.lookup(pack_coords(block))
    local = index - block * block_size
    flat = slot * volume.voxels_per_block + (local[:, 0] * block_size + local[:, 1]) \
        * block_size + local[:, 2]
    volume.weight.view(-1)[flat] = observed.reshape(-1).to(volume.dtype)
    return DenseGridBlocks(volume, flat)
