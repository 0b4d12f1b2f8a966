"""Test-time refinement of a TSDF map after a depth frame is fused (issue 12, 3(c)).

After :class:`~recon_ros.core.tsdf_integrator.TsdfIntegrator` fused a frame, a few Adam steps
change the TSDF (metres) and color of the blocks that frame changed, so that the map rendered
at the frame's pose (:func:`~recon_ros.core.render_loss.render_loss`, every ``stride``-th
pixel) matches the frame. Every other block is a constant; weights are never changed, nor are
voxels with weight 0. The loss, summed with its weights:

- **depth**: L1 of rendered vs measured z-depth, metres (DVR implicit gradient at the hit);
- **color**: L1 of rendered vs measured RGB / 255 (registered color only: a color camera
  with other intrinsics or pose is not compared);
- **free space**: for each compared pixel with measured depth ``d``, samples at z-depth
  ``d - delta`` on its ray (``delta`` evenly spaced in ``(0, truncation]``) should hold a TSDF
  of at least ``delta``, the projective distance to the measured surface that the integrator
  itself stores (:mod:`recon_ros.core.tsdf_kernel`: ``sdf = d - z``); hinge
  ``max(0, delta - f)``, metres, over the samples whose 8 corners are observed;
- **eikonal**: ``(|grad f| - 1)^2`` over observed voxels of the refined blocks within half a
  truncation of the surface (the TSDF is stored in metres, so a distance field has gradient
  norm 1; forward differences inside each block).

After each step the TSDF is clamped to ``+-truncation`` and the color to ``[0, 255]``, as the
integrator keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .render import RenderOptions
from .render_loss import free_space_loss, free_space_samples, render_loss
from .tsdf_integrator import FrameTensors
from .volume import BlockVolume

__all__ = ["RefineResult", "TsdfRefiner"]


@dataclass
class RefineResult:
    """What one refinement did (detached tensors on the volume's device; read them on the
    host only when needed: each read synchronises).

    Attributes:
        blocks: blocks refined.
        loss_first: () weighted loss before the first step.
        loss_last: () weighted loss before the last step.
    """

    blocks: int
    loss_first: torch.Tensor
    loss_last: torch.Tensor


class TsdfRefiner:
    """Gradient steps on the TSDF and color of changed blocks against the frame just fused.

    Args:
        truncation_m: the map's truncation distance, metres (TSDF clamp and free-space range).
        steps: Adam steps per frame.
        learning_rate_m: Adam step size of the TSDF, metres.
        color_learning_rate: Adam step size of the color, RGB units (0-255).
        stride_px: render and compare every ``stride_px``-th pixel in both directions.
        depth_weight: weight of the depth L1 (metres).
        color_weight: weight of the color L1 (RGB / 255).
        free_space_weight: weight of the free-space hinge (metres).
        free_space_samples: free-space samples per compared pixel (0 = no free-space term).
        eikonal_weight: weight of the eikonal term (dimensionless).
    """

    def __init__(self, truncation_m: float, steps: int, learning_rate_m: float,
                 color_learning_rate: float, stride_px: int, depth_weight: float,
                 color_weight: float, free_space_weight: float, free_space_samples: int,
                 eikonal_weight: float) -> None:
        self.truncation_m = float(truncation_m)
        self.steps = int(steps)
        self.learning_rate_m = float(learning_rate_m)
        self.color_learning_rate = float(color_learning_rate)
        self.stride_px = int(stride_px)
        self.depth_weight = float(depth_weight)
        self.color_weight = float(color_weight)
        self.free_space_weight = float(free_space_weight)
        self.free_space_samples = int(free_space_samples)
        self.eikonal_weight = float(eikonal_weight)

    def refine(self, volume: BlockVolume, slots: torch.Tensor, frame: FrameTensors
               ) -> RefineResult:
        """Refine the blocks at (S,) ``slots`` (those the frame changed) in place and log them
        as changed (:meth:`BlockVolume.mark_changed`).

        Args:
            volume: the map, with ``frame`` already fused.
            slots: (S,) int64 distinct slots to optimise; every other block is a constant.
            frame: the frame on the volume's device.
        """
        zero = torch.zeros((), device=volume.device)
        if slots.numel() == 0:
            return RefineResult(0, zero, zero)
        observed = volume.weight[slots] > 0  # (S, V)
        tsdf = volume.tsdf[slots].to(torch.float32).clone().requires_grad_(True)
        params = [{"params": [tsdf], "lr": self.learning_rate_m}]
        use_color = (self.color_weight > 0 and frame.color is not None and frame.registered)
        color = None
        if use_color:
            color = volume.color[slots].to(torch.float32).clone().requires_grad_(True)
            params.append({"params": [color], "lr": self.color_learning_rate})
        optimizer = torch.optim.Adam(params)
        base_tsdf = volume.tsdf.to(torch.float32)
        base_color = volume.color.to(torch.float32) if use_color else None
        free_points, free_target = free_space_samples(
            frame.camera, frame.T_world_cam, frame.depth, truncation_m=self.truncation_m,
            samples=self.free_space_samples, stride=self.stride_px,
            min_depth_m=frame.min_depth_m, max_depth_m=frame.max_depth_m)
        opt = RenderOptions(max_depth_m=frame.max_depth_m, min_depth_m=frame.min_depth_m)
        losses = []
        for _ in range(self.steps):
            full = base_tsdf.index_put((slots,), tsdf)
            full_color = None if color is None else base_color.index_put((slots,), color)
            loss = self._loss(volume, frame, full, full_color, tsdf, observed, free_points,
                              free_target, opt)
            losses.append(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                tsdf.clamp_(-self.truncation_m, self.truncation_m)
                if color is not None:
                    color.clamp_(0.0, 255.0)
        with torch.no_grad():
            volume.tsdf[slots] = torch.where(observed, tsdf, volume.tsdf[slots]).to(volume.dtype)
            if color is not None:
                volume.color[slots] = torch.where(observed[..., None], color,
                                                  volume.color[slots]).to(volume.dtype)
        volume.mark_changed(slots)
        return RefineResult(int(slots.numel()), losses[0], losses[-1])

    def _loss(self, volume: BlockVolume, frame: FrameTensors, full: torch.Tensor,
              full_color: torch.Tensor | None, tsdf: torch.Tensor, observed: torch.Tensor,
              free_points: torch.Tensor, free_target: torch.Tensor, opt: RenderOptions
              ) -> torch.Tensor:
        """Weighted loss of one step (see the module docstring)."""
        total = full.new_zeros(())
        if self.depth_weight > 0 or full_color is not None:
            r = render_loss(volume, full, frame.camera, frame.T_world_cam, frame.depth,
                            min_depth_m=frame.min_depth_m, max_depth_m=frame.max_depth_m,
                            stride=self.stride_px, color=full_color,
                            rgb=frame.color if full_color is not None else None, options=opt)
            total = total + self.depth_weight * r.depth_l1
            if r.color_l1 is not None:
                total = total + self.color_weight * r.color_l1
        if self.free_space_weight > 0 and free_points.shape[0]:
            total = total + self.free_space_weight * free_space_loss(volume, full, free_points,
                                                                     free_target)
        if self.eikonal_weight > 0:
            total = total + self.eikonal_weight * self._eikonal(volume, tsdf, observed)
        return total

    def _eikonal(self, volume: BlockVolume, tsdf: torch.Tensor, observed: torch.Tensor
                 ) -> torch.Tensor:
        """Mean ``(|grad f| - 1)^2`` of the (S, V) blocks ``tsdf`` by forward differences
        inside each block, over cells whose 4 voxels are observed and within half a
        truncation of the surface."""
        B = volume.block_size
        f = tsdf.reshape(-1, B, B, B)
        ok = observed.reshape(-1, B, B, B) & (f.detach().abs() < 0.5 * self.truncation_m)
        base, base_ok = f[:, :-1, :-1, :-1], ok[:, :-1, :-1, :-1]
        nx, ny, nz = f[:, 1:, :-1, :-1], f[:, :-1, 1:, :-1], f[:, :-1, :-1, 1:]
        cells = (base_ok & ok[:, 1:, :-1, :-1] & ok[:, :-1, 1:, :-1] & ok[:, :-1, :-1, 1:])
        grad = torch.stack((nx - base, ny - base, nz - base), dim=-1) / volume.voxel_size_m
        norm = (grad.square().sum(dim=-1) + 1e-12).sqrt()
        err = torch.where(cells, (norm - 1.0).square(), 0.0)
        return err.sum() / cells.sum().clamp(min=1)
