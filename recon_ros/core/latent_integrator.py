"""Learned depth fusion in latent space (NeuralFusion, Weder et al. 2021): extraction,
integration and lazy decoding over a :class:`~recon_ros.core.latent_volume.LatentVolume`.

Per frame (all batched tensor code, any device):

1. **Extraction.** Every valid pixel's ray (unit direction ``r``, through the optical centre
   ``o``) is sampled at ``K = 2n + 1`` points one voxel apart around the measured surface:
   ``p_k = o + (d * |ray| + k * voxel_size) * r`` for ``k = -n .. n``, where ``ray`` is the
   optical-frame vector ``((u - cx)/fx, (v - cy)/fy, 1)`` and ``d`` the measured z-depth, so
   ``k = 0`` is the measured point. Each sample reads the latent code and update count of its
   nearest voxel (``round(p / voxel_size)``); blocks are allocated on the way.
2. **Fusion network.** The samples are laid out view-aligned over the image grid:
   ``(1, C, H, W)`` with, per sample ``k``, ``F`` features and the confidence
   :func:`~recon_ros.core.latent_volume.encode_count`; then the measured depth
   (``/ DEPTH_SCALE_M``), the unit ray direction in the optical frame (3) and a validity mask.
   ``C = K * (F + 1) + 5``. The network returns ``(1, K * F, H, W)`` feature updates in
   ``[-1, 1]``.
3. **Integration.** Updates landing in the same voxel are mean-pooled, then fused with a
   count-weighted running average ``f <- (c f + u) / (c + 1)``, ``c <- min(c + 1, max_count)``.
4. **Translation (lazy).** A translator network decodes normalized TSDF and occupancy logits
   from each voxel's 3x3x3 feature neighbourhood; :meth:`LatentIntegrator.decode_dirty` does it
   only for blocks changed since the last decode (and their neighbours, whose halo changed)
   and writes TSDF (metres) and weight (the update count) into the shared block volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .latent_volume import LatentVolume, encode_count
from .tsdf_integrator import FrameTensors
from .volume import neighbour_offsets

#: Depth input of the fusion network is ``depth_m / DEPTH_SCALE_M``.
DEPTH_SCALE_M = 4.0
#: Channels of the fusion network's input besides the per-sample ones: depth, ray (3), valid.
EXTRA_INPUT_CHANNELS = 5


def fusion_input_channels(feature_channels: int, samples_per_side: int) -> int:
    """``C = (2n + 1) * (F + 1) + 5``, the fusion network's input channels."""
    return (2 * samples_per_side + 1) * (feature_channels + 1) + EXTRA_INPUT_CHANNELS


def ray_sample_voxels(depth: torch.Tensor, intrinsics: tuple[float, float, float, float],
                      T_world_cam: torch.Tensor, voxel_size_m: float, samples_per_side: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest voxels of ``2n + 1`` samples, one voxel apart, along every pixel's ray.

    Args:
        depth: (H, W) z-depth, metres (0 = invalid; samples are computed anyway).
        intrinsics: ``(fx, fy, cx, cy)`` pixels.
        T_world_cam: (4, 4) float32 pose of the optical frame in the map frame.
        voxel_size_m: voxel edge (also the sample spacing), metres.
        samples_per_side: ``n``.

    Returns:
        ``(voxels, ray_dir)``: (H, W, 2n + 1, 3) int64 global voxel index of each sample,
        sample ``n`` being the measured point and ``k`` steps of one voxel along the ray
        (away from the camera for ``k > n``); and (H, W, 3) float32 unit ray directions in
        the optical frame.
    """
    fx, fy, cx, cy = intrinsics
    h, w = depth.shape
    dev = depth.device
    v, u = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                          torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
    ray = torch.stack(((u - cx) / fx, (v - cy) / fy, torch.ones_like(u)), dim=-1)  # (H, W, 3)
    norm = ray.norm(dim=-1, keepdim=True)
    ray_dir = ray / norm
    k = torch.arange(-samples_per_side, samples_per_side + 1, device=dev, dtype=torch.float32)
    t = depth[..., None].to(torch.float32) * norm + k * voxel_size_m  # (H, W, K) metres
    R, origin = T_world_cam[:3, :3], T_world_cam[:3, 3]
    points = t[..., None] * (ray_dir @ R.T)[:, :, None, :] + origin  # (H, W, K, 3)
    return torch.round(points / voxel_size_m).to(torch.int64), ray_dir


def pool_updates(flat: torch.Tensor, updates: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean of the updates that land in the same voxel.

    Args:
        flat: (M,) int64 flat voxel index of each update.
        updates: (M, F) updates.

    Returns:
        ``(voxels, mean, inverse)``: (U,) distinct flat indices (sorted), (U, F) mean update of
        each (differentiable with respect to ``updates``) and (M,) index of each update's voxel
        in ``voxels``.
    """
    voxels, inverse = torch.unique(flat, return_inverse=True)
    total = torch.zeros((voxels.numel(), updates.shape[1]), dtype=updates.dtype,
                        device=updates.device).index_add(0, inverse, updates)
    n = torch.bincount(inverse, minlength=voxels.numel()).to(updates.dtype)
    return voxels, total / n[:, None], inverse


@dataclass
class LatentUpdate:
    """What one frame changed.

    Attributes:
        voxels: (U,) int64 flat indices of the updated voxels (sorted).
        update_variance: () mean squared distance of each update from the mean of the updates
            pooled into the same voxel (the latent-variance regulariser of training).
    """

    voxels: torch.Tensor
    update_variance: torch.Tensor


class LatentIntegrator:
    """Fuses frames into a :class:`LatentVolume` and decodes it into the block volume.

    Args:
        fusion_net: ``(1, C, H, W) -> (1, (2n + 1) * F, H, W)`` updates in [-1, 1]
            (see :func:`fusion_input_channels`).
        translator: ``(N, F + 1, D, D, D) -> (N, 2, D - 2, D - 2, D - 2)``: normalized TSDF in
            [-1, 1] (units of ``truncation_voxels`` voxels) and occupancy logits.
        samples_per_side: ``n``.
        truncation_voxels: the translator's TSDF scale, voxels.
        max_count: cap of the running-average count.
        decode_batch_blocks: blocks decoded per translator call.
    """

    def __init__(self, fusion_net: nn.Module, translator: nn.Module, samples_per_side: int,
                 truncation_voxels: float, max_count: float,
                 decode_batch_blocks: int = 256) -> None:
        self.fusion_net = fusion_net
        self.translator = translator
        self.samples_per_side = int(samples_per_side)
        self.truncation_voxels = float(truncation_voxels)
        self.max_count = float(max_count)
        self.decode_batch_blocks = int(decode_batch_blocks)

    @property
    def samples(self) -> int:
        return 2 * self.samples_per_side + 1

    def to(self, device: torch.device | str) -> "LatentIntegrator":
        """Move both networks to ``device``; returns self."""
        self.fusion_net.to(device)
        self.translator.to(device)
        return self

    # ------------------------------------------------------------------ fusion
    def integrate(self, latent: LatentVolume, frame: FrameTensors,
                  differentiable: bool = False) -> LatentUpdate:
        """Fuse one frame (readings outside the frame's depth range are skipped).

        Args:
            latent: the latent map.
            frame: the frame on the map's device.
            differentiable: keep the autograd graph (training): the feature tensor is replaced
                out of place instead of updated in place.

        Returns:
            the updated voxels and the spread of the pooled updates.
        """
        valid = frame.valid(frame.depth)
        depth = torch.where(valid, frame.depth, 0.0)
        h, w = depth.shape
        F, K = latent.feature_channels, self.samples
        pix = torch.nonzero(valid.reshape(-1)).squeeze(1)  # (P,)
        if pix.numel() == 0:
            return LatentUpdate(pix, torch.zeros((), device=depth.device))
        cam = frame.camera
        voxels, ray_dir = ray_sample_voxels(depth, (cam.fx, cam.fy, cam.cx, cam.cy),
                                            frame.T_world_cam, latent.volume.voxel_size_m,
                                            self.samples_per_side)
        flat = latent.voxel_flat_index(voxels.reshape(-1, K, 3)[pix], allocate=True)  # (P, K)
        feats = latent.features.reshape(-1, F).index_select(0, flat.reshape(-1))
        conf = encode_count(latent.count.reshape(-1).index_select(0, flat.reshape(-1)))
        per_sample = torch.cat((feats, conf[:, None]), dim=1).reshape(-1, K * (F + 1))
        grid = torch.zeros((h * w, K * (F + 1)), device=depth.device).index_copy(
            0, pix, per_sample)
        x = torch.cat((grid.T.reshape(1, K * (F + 1), h, w),
                       (depth / DEPTH_SCALE_M)[None, None],
                       ray_dir.permute(2, 0, 1)[None],
                       valid.to(torch.float32)[None, None]), dim=1)
        updates = self.fusion_net(x).reshape(K * F, h * w).T.index_select(0, pix)  # (P, K*F)
        updates = updates.reshape(-1, F)
        voxel_ids, mean, inverse = pool_updates(flat.reshape(-1), updates)
        self._running_average(latent, voxel_ids, mean, differentiable)
        latent.dirty[torch.div(voxel_ids, latent.volume.voxels_per_block,
                               rounding_mode="floor")] = True
        variance = (updates - mean.index_select(0, inverse)).square().sum(1).mean()
        return LatentUpdate(voxel_ids, variance)

    def _running_average(self, latent: LatentVolume, voxel_ids: torch.Tensor,
                         mean: torch.Tensor, differentiable: bool) -> None:
        """Count-weighted running average of the (U, F) pooled updates into their voxels."""
        F = latent.feature_channels
        feats = latent.features.reshape(-1, F)
        count = latent.count.reshape(-1)
        c = count.index_select(0, voxel_ids)
        old = feats.index_select(0, voxel_ids)
        new = (old * c[:, None] + mean) / (c + 1.0)[:, None]
        new_count = (c + 1.0).clamp(max=self.max_count)
        if differentiable:
            latent.features = feats.index_copy(0, voxel_ids, new).reshape(latent.features.shape)
        else:
            feats.index_copy_(0, voxel_ids, new.detach())
        count.index_copy_(0, voxel_ids, new_count)

    # ------------------------------------------------------------------ translation
    def decode_voxels(self, latent: LatentVolume, flat: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Translator output at single voxels (training and evaluation).

        Args:
            flat: (M,) flat voxel indices.

        Returns:
            ``(tsdf, occupancy_logit)``: (M,) normalized TSDF in [-1, 1] (1 = the translator's
            truncation) and (M,) occupancy logits (> 0: inside a solid).
        """
        out = self.translator(latent.voxel_neighbourhoods(flat)).reshape(-1, 2)
        return out[:, 0], out[:, 1]

    @torch.no_grad()
    def decode_dirty(self, latent: LatentVolume) -> torch.Tensor:
        """Decode the blocks changed since the last call (plus their neighbour blocks) into
        the shared volume: ``tsdf`` (metres, clamped to the volume's truncation; the volume's
        truncation where unobserved), ``weight`` (update count) and ``latent.occupancy``
        (probability). Marks them changed in the volume for the mesher.

        Returns:
            (S,) slots that were decoded.
        """
        vol = latent.volume
        n = vol.num_blocks
        dirty = torch.nonzero(latent.dirty[:n]).squeeze(1)
        if dirty.numel() == 0:
            return dirty
        latent.dirty[:n] = False
        offsets = neighbour_offsets(vol.device)
        near = vol.find((vol.slot_coords(dirty)[:, None, :] + offsets[None]).reshape(-1, 3))
        slots = torch.unique(near[near >= 0])
        scale_m = self.truncation_voxels * vol.voxel_size_m
        for start in range(0, slots.numel(), self.decode_batch_blocks):
            s = slots[start:start + self.decode_batch_blocks]
            out = self.translator(latent.block_neighbourhoods(s)).reshape(s.numel(), 2, -1)
            count = latent.count.index_select(0, s)
            seen = count > 0
            tsdf = (out[:, 0] * scale_m).clamp(-vol.truncation_m, vol.truncation_m)
            vol.tsdf.index_copy_(0, s, torch.where(seen, tsdf, vol.truncation_m).to(vol.dtype))
            vol.weight.index_copy_(0, s, count.to(vol.dtype))
            latent.occupancy.index_copy_(0, s, torch.where(seen, torch.sigmoid(out[:, 1]), 0.0))
        vol.mark_changed(slots)
        return slots
