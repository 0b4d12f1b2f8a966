"""Learned depth fusion in latent space (NeuralFusion, Weder et al. 2021): extraction,
integration and lazy decoding over a :class:`~recon_ros.core.latent_volume.LatentVolume`.

Per frame (all batched tensor code, any device):

1. **Extraction.** Every valid pixel's ray (unit direction ``r``, through the optical centre
   ``o``) is sampled at ``K = 2n + 1`` points one voxel apart around the measured surface:
   ``p_k = o + (d * |ray| + k * voxel_size) * r`` for ``k = -n .. n``, where ``ray`` is the
   optical-frame vector ``((u - cx)/fx, (v - cy)/fy, 1)`` and ``d`` the measured z-depth, so
   ``k = 0`` is the measured point. Each sample reads the latent code and update count of its
   nearest voxel (``round(p / voxel_size)``); blocks are allocated on the way. Optionally
   (``free_space_samples = S > 0``, issue 13) ``S`` more samples per ray lie in front of the
   band (:func:`free_space_sample_voxels`) and update only voxels of allocated blocks: free
   space seen later can overwrite what an outlier wrote there.
2. **Fusion network.** The samples are laid out view-aligned over the image grid:
   ``(1, C, H, W)`` with, per sample ``k``, ``F`` features and the confidence
   :func:`~recon_ros.core.latent_volume.encode_count`; then the measured depth
   (``/ DEPTH_SCALE_M``), the unit ray direction in the optical frame (3) and a validity mask.
   ``C = K * (F + 1) + 5`` (with free-space samples ``+ S * (F + 2)``: features, confidence
   and the distance in front of the measured point). The network returns ``(1, K * F, H, W)``
   (``(K + S) * F``) feature updates in ``[-1, 1]``.
3. **Integration.** Updates landing in the same voxel are mean-pooled, then fused with a
   count-weighted running average ``f <- (c f + u) / (c + 1)``, ``c <- min(c + 1, max_count)``.
4. **Translation (lazy).** A translator network decodes normalized TSDF and occupancy logits
   from each voxel's 3x3x3 (``translator_context = 5``: 5x5x5) feature neighbourhood;
   :meth:`LatentIntegrator.decode_dirty` does it only for the voxels updated since the last
   decode dilated by one (two) voxels (the voxels whose neighbourhood changed) and writes
   TSDF (metres) and weight (the update count) into the shared block volume.

Host synchronisations (see ``recon_ros.core.sync_audit``): the samples of a frame are grouped
by block and voxel with one sort over a static ``H * W * K`` layout (invalid samples sort last)
and compacted with one synchronisation; allocating the frame's blocks costs the hash map's two
(free-space samples add one to find the blocks to allocate and one to drop the voxels of
absent blocks).
A decode costs one to find the dirty blocks and, per ``decode_batch_blocks`` of them, one to
compact the voxels to decode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .block_hash import COORD_OFFSET, pack_coords
from .compaction import compact
from .errors import VolumeError
from .latent_volume import LatentVolume, encode_count
from .tsdf_integrator import FrameTensors

#: Depth input of the fusion network is ``depth_m / DEPTH_SCALE_M``.
DEPTH_SCALE_M = 4.0
#: Channels of the fusion network's input besides the per-sample ones: depth, ray (3), valid.
EXTRA_INPUT_CHANNELS = 5
#: ``LatentIntegrator(cuda_precision=...)`` values.
CUDA_PRECISIONS = ("default", "tf32", "fp16")
_INT64_MAX = torch.iinfo(torch.int64).max
#: ``((min width, min height), (max width, max height))`` of frames, pixels.
SizeRange = tuple[tuple[int, int], tuple[int, int]]
_log = logging.getLogger(__name__)


#: Weights of the per-pixel phase of the free-space samples (the R2 low-discrepancy
#: sequence: ``frac(R2_U * u + R2_V * v)`` spreads the sample depths of neighbouring pixels).
R2_U, R2_V = 0.7548776662466927, 0.5698402909980532


def fusion_input_channels(feature_channels: int, samples_per_side: int,
                          free_space_samples: int = 0) -> int:
    """``C = (2n + 1) * (F + 1) + S * (F + 2) + 5``, the fusion network's input channels
    (a free-space sample also carries its distance in front of the measured point)."""
    return ((2 * samples_per_side + 1) * (feature_channels + 1)
            + free_space_samples * (feature_channels + 2) + EXTRA_INPUT_CHANNELS)


def free_space_sample_voxels(depth: torch.Tensor, intrinsics: tuple[float, float, float, float],
                             T_world_cam: torch.Tensor, voxel_size_m: float,
                             samples_per_side: int, free_space_samples: int,
                             range_voxels: float
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest voxels of ``S`` free-space samples per pixel, in front of the band.

    Along the pixel's ray (distance ``t`` from the optical centre; the measured point at
    ``t_d = d * |ray|``), the samples cover ``[t_lo, t_hi]`` with ``t_hi = t_d - (n + 1) *
    voxel`` (one voxel in front of the band's first sample) and ``t_lo = max(voxel, t_hi -
    range_voxels * voxel)``, stratified with a per-pixel phase ``phi = frac(R2_U * u + R2_V *
    v)``: ``t_j = t_hi - (j + phi) * (t_hi - t_lo) / S`` for ``j = 0 .. S - 1``.

    Args:
        depth: (H, W) z-depth, metres (0 = invalid).
        intrinsics: ``(fx, fy, cx, cy)`` pixels.
        T_world_cam: (4, 4) float32 pose of the optical frame in the map frame.
        voxel_size_m: voxel edge, metres.
        samples_per_side: ``n`` of the band.
        free_space_samples: ``S``.
        range_voxels: length of the sampled stretch, voxels.

    Returns:
        ``(voxels, inside, ahead)``: (H, W, S, 3) int64 global voxel index of each sample;
        (H, W, S) bool, the stretch exists (``t_hi > t_lo``); (H, W, S) float32 distance of
        the sample in front of the measured point, ``t_d - t_j``, metres.
    """
    fx, fy, cx, cy = intrinsics
    h, w = depth.shape
    dev = depth.device
    v, u = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float64),
                          torch.arange(w, device=dev, dtype=torch.float64), indexing="ij")
    phase = torch.frac(R2_U * u + R2_V * v).to(torch.float32)  # (H, W)
    u, v = u.to(torch.float32), v.to(torch.float32)
    ray = torch.stack(((u - cx) / fx, (v - cy) / fy, torch.ones_like(u)), dim=-1)
    norm = ray.norm(dim=-1, keepdim=True)
    ray_dir = ray / norm
    t_d = depth.to(torch.float32) * norm[..., 0]  # (H, W)
    t_hi = t_d - (samples_per_side + 1) * voxel_size_m
    t_lo = torch.clamp(t_hi - range_voxels * voxel_size_m, min=voxel_size_m)
    j = torch.arange(free_space_samples, device=dev, dtype=torch.float32)
    t = t_hi[..., None] - (j + phase[..., None]) * ((t_hi - t_lo) / free_space_samples)[..., None]
    inside = (t_hi > t_lo)[..., None].expand(h, w, free_space_samples)
    R, origin = T_world_cam[:3, :3], T_world_cam[:3, 3]
    points = t[..., None] * (ray_dir @ R.T)[:, :, None, :] + origin  # (H, W, S, 3)
    return (torch.round(points / voxel_size_m).to(torch.int64), inside,
            t_d[..., None] - t)


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


@dataclass
class SampleGroups:
    """The samples of a frame grouped by block and by voxel (see :func:`group_samples`).

    Attributes:
        block_coords: (S, 3) int64 coordinates of the distinct blocks.
        voxel_block: (U,) int64 index into ``block_coords`` of each distinct voxel's block.
        voxel_local: (U,) int64 linear index of each distinct voxel within its block.
        voxel_samples: (U,) float32 number of samples in each distinct voxel.
        sample_voxel: (M,) int64 index of each sample's distinct voxel; ``U`` for invalid
            samples.
    """

    block_coords: torch.Tensor
    voxel_block: torch.Tensor
    voxel_local: torch.Tensor
    voxel_samples: torch.Tensor
    sample_voxel: torch.Tensor


def group_samples(voxels: torch.Tensor, valid: torch.Tensor, block_size: int) -> SampleGroups:
    """Distinct blocks and voxels of samples with one sort and one host synchronisation.

    Each valid sample gets the key ``(block - origin, local)`` packed into 62 bits (``origin``
    = the smallest block coordinates of the valid samples, ``local`` = the voxel's linear
    index in its block), invalid ones the largest int64; sorting the keys groups the samples
    by block, and within a block by voxel.

    Args:
        voxels: (M, 3) int64 global voxel index of each sample.
        valid: (M,) bool, samples to group.
        block_size: ``B``.

    Returns:
        the groups.

    Raises:
        VolumeError: a valid sample's block lies outside the hash map's coordinate range less
            a margin of one block (``block_hash.pack_coords``), or the samples span more than
            ``2 ** ((62 - bits(B**3 - 1)) // 3)`` blocks along an axis (2**17 for B = 8).
    """
    B = block_size
    local_bits = (B ** 3 - 1).bit_length()
    block_bits = (62 - local_bits) // 3
    block = torch.div(voxels, B, rounding_mode="floor")
    offset = voxels - block * B
    local = (offset[:, 0] * B + offset[:, 1]) * B + offset[:, 2]
    origin = torch.where(valid[:, None], block, _INT64_MAX).amin(0)
    rel = block - origin
    bad = valid & ((rel >= (1 << block_bits)) | (block < 1 - COORD_OFFSET)
                   | (block >= COORD_OFFSET - 1)).any(1)
    key = ((rel[:, 0] << block_bits | rel[:, 1]) << block_bits | rel[:, 2]) << local_bits | local
    key, order = torch.sort(torch.where(valid, key, _INT64_MAX))  # the one sort
    kept = key != _INT64_MAX
    new_voxel = kept.clone()
    new_voxel[1:] &= key[1:] != key[:-1]
    new_block = kept.clone()
    new_block[1:] &= (key[1:] >> local_bits) != (key[:-1] >> local_bits)
    block_start, voxel_start, bad_samples = compact(new_block, new_voxel, bad.any().reshape(1))
    if bad_samples.numel():
        raise VolumeError("a frame's samples reach blocks beyond what the volume can index "
                          f"(or span more than 2**{block_bits} blocks): a bad pose or depth?")
    u = voxel_start.numel()
    voxel_of_sorted = torch.where(kept, torch.cumsum(new_voxel, 0) - 1, u)
    block_of_sorted = torch.cumsum(new_block, 0) - 1
    mask = (1 << block_bits) - 1
    block_key = key.index_select(0, block_start) >> local_bits
    block_coords = torch.stack((block_key >> 2 * block_bits, (block_key >> block_bits) & mask,
                                block_key & mask), dim=1) + origin
    ends = torch.cat((voxel_start[1:], kept.sum().reshape(1)))
    return SampleGroups(
        block_coords=block_coords,
        voxel_block=block_of_sorted.index_select(0, voxel_start),
        voxel_local=key.index_select(0, voxel_start) & ((1 << local_bits) - 1),
        voxel_samples=(ends - voxel_start).to(torch.float32),
        sample_voxel=torch.empty_like(order).scatter_(0, order, voxel_of_sorted))


def segment_mean(segment: torch.Tensor, values: torch.Tensor, counts: torch.Tensor
                 ) -> torch.Tensor:
    """Mean of the values of each segment (differentiable with respect to ``values``).

    Args:
        segment: (M,) int64 segment of each value in ``0 .. S``; ``S`` drops the value.
        values: (M, F) values.
        counts: (S,) number of values of each segment (> 0).

    Returns:
        (S, F) mean of each segment.
    """
    total = torch.zeros((counts.numel() + 1, values.shape[1]), dtype=values.dtype,
                        device=values.device).index_add(0, segment, values)
    return total[:-1] / counts[:, None].to(values.dtype)


@contextmanager
def network_precision(device: torch.device, precision: str) -> Iterator[None]:
    """Arithmetic of the networks run under it on a CUDA ``device`` (elsewhere float32):
    ``"default"`` torch's global settings (cuDNN convolutions may use TF32, matmuls do not,
    unless the application changed ``torch.backends``), ``"tf32"`` TF32 for matmuls and
    convolutions, ``"fp16"`` float16 autocast."""
    if device.type != "cuda" or precision == "default":
        yield
    elif precision == "fp16":
        with torch.autocast("cuda", dtype=torch.float16):
            yield
    else:
        flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@dataclass
class LatentUpdate:
    """What one frame changed.

    Attributes:
        voxels: (U,) int64 flat indices of the updated voxels (distinct, grouped by block).
        updates: (M, F) the fusion network's update of each sample (invalid samples too).
        mean: (U, F) the mean update pooled into each voxel.
        sample_voxel: (M,) index of each sample's voxel in ``voxels``; ``U`` for invalid
            samples.
        blocks: how many distinct blocks ``voxels`` lie in (known on the host).
    """

    voxels: torch.Tensor
    updates: torch.Tensor
    mean: torch.Tensor
    sample_voxel: torch.Tensor
    blocks: int

    @property
    def update_variance(self) -> torch.Tensor:
        """() mean squared distance of each valid sample's update from the mean of the updates
        pooled into the same voxel (the latent-variance regulariser of training; computed on
        request, as mapping does not need it)."""
        u = self.voxels.numel()
        if u == 0:
            return torch.zeros((), device=self.updates.device)
        pooled = nn.functional.pad(self.mean, (0, 0, 0, 1)).index_select(0, self.sample_voxel)
        spread = (self.updates - pooled).square().sum(1)
        kept = self.sample_voxel < u
        return torch.where(kept, spread, 0.0).sum() / kept.sum()


class LatentIntegrator:
    """Fuses frames into a :class:`LatentVolume` and decodes it into the block volume.

    Args:
        fusion_net: ``(1, C, H, W) -> (1, (2n + 1) * F, H, W)`` updates in [-1, 1]
            (see :func:`fusion_input_channels`).
        translator: ``(N, F + 1, D, D, D) -> (N, 2, 1, 1, 1)`` for ``D = translator_context``:
            normalized TSDF in [-1, 1] (units of ``truncation_voxels`` voxels) and occupancy
            logits.
        samples_per_side: ``n``.
        truncation_voxels: the translator's TSDF scale, voxels.
        max_count: cap of the running-average count.
        decode_batch_blocks: blocks whose voxels are selected and whose halos are gathered
            together in a decode (memory: about 50 KB per block; each batch costs one host
            sync).
        decode_batch_voxels: voxels per translator call (memory: about 1 KB per voxel).
        cuda_precision: arithmetic of both networks on CUDA, one of :data:`CUDA_PRECISIONS`
            (see :func:`network_precision`); float32 on other devices. The default leaves
            torch's settings alone: ``"tf32"`` and ``"fp16"`` are unmeasured (no GPU was
            available to check their accuracy against float32).
        trained_size_range: the frame sizes the networks were trained on; a frame outside
            this range is fused with a warning, once per frame size (None = no check).
        free_space_samples: ``S`` free-space samples per ray in front of the band (0 = none;
            see :func:`free_space_sample_voxels`). They update only voxels of blocks that are
            allocated (or allocated by the band samples of the same frame); the fusion network
            then returns ``(2n + 1 + S) * F`` updates.
        free_space_range_voxels: length of the free-space stretch, voxels.
        translator_context: ``D`` in {3, 5}: the translator decodes each voxel from its
            ``D x D x D`` neighbourhood (a decode then covers the updated voxels dilated by
            ``(D - 1) / 2``).
    """

    def __init__(self, fusion_net: nn.Module, translator: nn.Module, samples_per_side: int,
                 truncation_voxels: float, max_count: float, decode_batch_blocks: int = 2048,
                 decode_batch_voxels: int = 65536, cuda_precision: str = "default",
                 trained_size_range: SizeRange | None = None, free_space_samples: int = 0,
                 free_space_range_voxels: float = 32.0, translator_context: int = 3) -> None:
        if cuda_precision not in CUDA_PRECISIONS:
            raise ValueError(f"cuda_precision={cuda_precision!r}: one of {CUDA_PRECISIONS}")
        if translator_context not in (3, 5):
            raise ValueError(f"translator_context={translator_context!r}: 3 or 5")
        self.free_space_samples = int(free_space_samples)
        self.free_space_range_voxels = float(free_space_range_voxels)
        self.translator_context = int(translator_context)
        self.fusion_net = fusion_net
        self.translator = translator
        self.samples_per_side = int(samples_per_side)
        self.truncation_voxels = float(truncation_voxels)
        self.max_count = float(max_count)
        self.decode_batch_blocks = int(decode_batch_blocks)
        self.decode_batch_voxels = int(decode_batch_voxels)
        self.cuda_precision = cuda_precision
        self.trained_size_range = trained_size_range
        self._sizes_seen: set[tuple[int, int]] = set()

    @property
    def samples(self) -> int:
        return 2 * self.samples_per_side + 1

    @property
    def context_radius(self) -> int:
        """``(D - 1) / 2`` of the translator's ``D^3`` context."""
        return (self.translator_context - 1) // 2

    def to(self, device: torch.device | str) -> "LatentIntegrator":
        """Move both networks to ``device``; returns self."""
        self.fusion_net.to(device)
        self.translator.to(device)
        return self

    def _check_size(self, width: int, height: int) -> None:
        """Warn (once per size) about a frame size outside :attr:`trained_size_range`."""
        if self.trained_size_range is None or (width, height) in self._sizes_seen:
            return
        self._sizes_seen.add((width, height))
        (w0, h0), (w1, h1) = self.trained_size_range
        if not (w0 <= width <= w1 and h0 <= height <= h1):
            _log.warning("latent fusion of %dx%d frames: the weights were trained on %dx%d .. "
                         "%dx%d, results may be worse than on those sizes", width, height,
                         w0, h0, w1, h1)

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
            what the frame changed.

        Raises:
            VolumeError: see :func:`group_samples`.
        """
        if self.free_space_samples:
            return self._integrate_with_free_space(latent, frame, differentiable)
        valid = frame.valid(frame.depth)
        depth = torch.where(valid, frame.depth, 0.0)
        h, w = depth.shape
        self._check_size(w, h)
        F, K, V = latent.feature_channels, self.samples, latent.volume.voxels_per_block
        cam = frame.camera
        voxels, ray_dir = ray_sample_voxels(depth, (cam.fx, cam.fy, cam.cx, cam.cy),
                                            frame.T_world_cam, latent.volume.voxel_size_m,
                                            self.samples_per_side)
        groups = group_samples(voxels.reshape(-1, 3),
                               valid[:, :, None].expand(h, w, K).reshape(-1),
                               latent.volume.block_size)
        if groups.voxel_local.numel() == 0:
            nothing = torch.zeros((0, F), device=depth.device)
            return LatentUpdate(groups.voxel_local, nothing, nothing, groups.sample_voxel, 0)
        slots = latent.allocate_keys(pack_coords(groups.block_coords, check=False))  # in range
        voxel_ids = slots.index_select(0, groups.voxel_block) * V + groups.voxel_local  # (U,)
        # per distinct voxel, plus a zero row read by the invalid samples
        feats = latent.features.reshape(-1, F).index_select(0, voxel_ids)
        conf = encode_count(latent.count.reshape(-1).index_select(0, voxel_ids))
        table = nn.functional.pad(torch.cat((feats, conf[:, None]), dim=1), (0, 0, 0, 1))
        per_sample = table.index_select(0, groups.sample_voxel).reshape(h * w, K * (F + 1))
        x = torch.cat((per_sample.T.reshape(1, K * (F + 1), h, w),
                       (depth / DEPTH_SCALE_M)[None, None],
                       ray_dir.permute(2, 0, 1)[None],
                       valid.to(torch.float32)[None, None]), dim=1)
        with network_precision(depth.device, self.cuda_precision):
            out = self.fusion_net(x)
        updates = out.to(torch.float32).reshape(K * F, h * w).T.reshape(-1, F)  # (H W K, F)
        mean = segment_mean(groups.sample_voxel, updates, groups.voxel_samples)  # (U, F)
        self._running_average(latent, voxel_ids, mean, differentiable)
        latent.mark_updated(voxel_ids, slots)
        return LatentUpdate(voxel_ids, updates, mean, groups.sample_voxel,
                            int(groups.block_coords.shape[0]))

    def _integrate_with_free_space(self, latent: LatentVolume, frame: FrameTensors,
                                   differentiable: bool) -> LatentUpdate:
        """:meth:`integrate` with ``S`` free-space samples per ray after the ``K`` band samples.

        All ``K + S`` samples are grouped with the one sort; blocks holding a band sample are
        allocated, the others are looked up, and voxels of absent blocks are dropped (their
        samples read zeros). The fusion network sees per free-space sample its features, its
        confidence and its distance in front of the measured point (``/ DEPTH_SCALE_M``).
        Host syncs: the grouping's one, one to find the blocks to allocate (plus the hash
        map's two when there are any), one to compact the voxels of present blocks."""
        valid = frame.valid(frame.depth)
        depth = torch.where(valid, frame.depth, 0.0)
        h, w = depth.shape
        self._check_size(w, h)
        F, K, S = latent.feature_channels, self.samples, self.free_space_samples
        vol, V = latent.volume, latent.volume.voxels_per_block
        cam = frame.camera
        intr = (cam.fx, cam.fy, cam.cx, cam.cy)
        band, ray_dir = ray_sample_voxels(depth, intr, frame.T_world_cam, vol.voxel_size_m,
                                          self.samples_per_side)
        free, inside, ahead = free_space_sample_voxels(
            depth, intr, frame.T_world_cam, vol.voxel_size_m, self.samples_per_side, S,
            self.free_space_range_voxels)
        free_valid = valid[:, :, None] & inside  # (H, W, S)
        sample_valid = torch.cat((valid[:, :, None].expand(h, w, K), free_valid), dim=2)
        groups = group_samples(torch.cat((band, free), dim=2).reshape(-1, 3),
                               sample_valid.reshape(-1), vol.block_size)
        u = groups.voxel_local.numel()
        nothing = torch.zeros((0, F), device=depth.device)
        if u == 0:
            return LatentUpdate(groups.voxel_local, nothing, nothing, groups.sample_voxel, 0)
        # blocks holding a band sample are allocated; free-space samples update present ones
        is_band = (torch.arange(K + S, device=depth.device) < K).to(torch.float32)
        voxel_band = torch.zeros(u + 1, device=depth.device).scatter_reduce_(
            0, groups.sample_voxel, is_band.repeat(h * w), reduce="amax")[:u]
        block_band = torch.zeros(groups.block_coords.shape[0], device=depth.device
                                 ).scatter_reduce_(0, groups.voxel_block, voxel_band,
                                                   reduce="amax") > 0
        keys = pack_coords(groups.block_coords, check=False)  # in range (group_samples)
        slots = vol.index.lookup(keys)
        (new_at,) = compact(block_band & (slots < 0))
        if new_at.numel():
            slots[new_at] = latent.allocate_keys(keys[new_at])
        voxel_slot = slots.index_select(0, groups.voxel_block)
        voxel_ids = torch.where(voxel_slot >= 0, voxel_slot * V + groups.voxel_local, -1)
        present = voxel_ids >= 0
        safe = voxel_ids.clamp(min=0)
        feats = latent.features.reshape(-1, F).index_select(0, safe)
        conf = encode_count(latent.count.reshape(-1).index_select(0, safe))
        table = torch.cat((feats, conf[:, None]), dim=1) * present[:, None]
        table = nn.functional.pad(table, (0, 0, 0, 1))  # a zero row for invalid samples
        per_sample = table.index_select(0, groups.sample_voxel).reshape(h * w, K + S, F + 1)
        band_in = per_sample[:, :K].reshape(h * w, K * (F + 1))
        dist = torch.where(free_valid, ahead / DEPTH_SCALE_M, 0.0).reshape(h * w, S, 1)
        free_in = torch.cat((per_sample[:, K:], dist), dim=2).reshape(h * w, S * (F + 2))
        x = torch.cat((band_in.T.reshape(1, K * (F + 1), h, w),
                       free_in.T.reshape(1, S * (F + 2), h, w),
                       (depth / DEPTH_SCALE_M)[None, None],
                       ray_dir.permute(2, 0, 1)[None],
                       valid.to(torch.float32)[None, None]), dim=1)
        with network_precision(depth.device, self.cuda_precision):
            out = self.fusion_net(x)
        updates = out.to(torch.float32).reshape((K + S) * F, h * w).T.reshape(-1, F)
        mean = segment_mean(groups.sample_voxel, updates, groups.voxel_samples)  # (U, F)
        keep, kept_slots = compact(present, slots >= 0)  # one host sync
        n_kept = keep.numel()
        if n_kept == 0:
            return LatentUpdate(keep, updates, nothing, torch.full_like(
                groups.sample_voxel, 0), 0)
        voxel_ids, mean = voxel_ids.index_select(0, keep), mean.index_select(0, keep)
        remap = torch.full((u + 1,), n_kept, dtype=torch.int64, device=depth.device)
        remap[keep] = torch.arange(n_kept, device=depth.device)
        self._running_average(latent, voxel_ids, mean, differentiable)
        block_slots = slots.index_select(0, kept_slots)
        latent.mark_updated(voxel_ids, block_slots)
        return LatentUpdate(voxel_ids, updates, mean, remap.index_select(0, groups.sample_voxel),
                            int(block_slots.numel()))

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
        # neighbourhoods read from the halos of the voxels' blocks (hash lookups per block,
        # not per neighbour); differentiable with respect to the features
        r, V = self.context_radius, latent.volume.voxels_per_block
        slots, rows = torch.unique(torch.div(flat, V, rounding_mode="floor"),
                                   return_inverse=True)
        channels = latent.halo_channels(latent.halo_flat_index(slots, r))
        x = latent.halo_neighbourhoods(channels, rows, flat % V, r)
        with network_precision(latent.device, self.cuda_precision):
            out = self.translator(x)
        out = out.to(torch.float32).reshape(-1, 2)
        return out[:, 0], out[:, 1]

    @torch.no_grad()
    def decode_dirty(self, latent: LatentVolume) -> torch.Tensor:
        """Decode the voxels updated since the last call, dilated by ``(D - 1) / 2`` voxels
        (those whose ``D^3`` neighbourhood changed; ``D`` = ``translator_context``), into the
        shared volume: ``tsdf`` (metres, clamped to the volume's truncation; the volume's
        truncation where unobserved), ``weight`` (update count) and ``latent.occupancy``
        (probability). Other voxels keep what an earlier call
        wrote, which is what decoding them again would give. Marks the dirty blocks (those
        holding such voxels) changed in the volume for the mesher.

        Returns:
            (S,) slots of the dirty blocks.
        """
        vol = latent.volume
        (slots,) = compact(latent.dirty[:vol.num_blocks])
        for start in range(0, slots.numel(), self.decode_batch_blocks):
            self._decode_blocks(latent, slots[start:start + self.decode_batch_blocks])
        latent.dirty[slots] = False
        latent.pending[slots] = False  # every pending voxel's block is dirty
        if slots.numel():
            vol.mark_changed(slots)
        return slots

    def _decode_blocks(self, latent: LatentVolume, slots: torch.Tensor) -> None:
        """Decode the observed voxels of the (S,) ``slots`` whose neighbourhood holds a pending
        voxel (see :meth:`decode_dirty`). Unobserved voxels (count 0) are skipped: they hold
        the volume's initial TSDF and weight and occupancy 0, which is what decoding writes
        for them."""
        vol = latent.volume
        V = vol.voxels_per_block
        r = self.context_radius
        halo = latent.halo_flat_index(slots, r)  # (S, (B + 2r)^3)
        todo = latent.dilated_pending(halo, r) & (latent.count.index_select(0, slots) > 0)
        (selected,) = compact(todo.reshape(-1))  # (M,) indices into (S, V)
        channels = latent.halo_channels(halo)
        scale_m = self.truncation_voxels * vol.voxel_size_m
        # the same memory per batch as 3x3x3 neighbourhoods of decode_batch_voxels voxels
        batch = max(1, self.decode_batch_voxels * 27 // self.translator_context ** 3)
        for start in range(0, selected.numel(), batch):
            sel = selected[start:start + batch]
            rows, local = torch.div(sel, V, rounding_mode="floor"), sel % V
            with network_precision(vol.device, self.cuda_precision):
                out = self.translator(latent.halo_neighbourhoods(channels, rows, local, r))
            out = out.to(torch.float32).reshape(-1, 2)
            flat = slots.index_select(0, rows) * V + local
            tsdf = (out[:, 0] * scale_m).clamp(-vol.truncation_m, vol.truncation_m)
            vol.tsdf.view(-1).index_copy_(0, flat, tsdf.to(vol.dtype))
            vol.weight.view(-1).index_copy_(
                0, flat, latent.count.view(-1).index_select(0, flat).to(vol.dtype))
            latent.occupancy.view(-1).index_copy_(0, flat, torch.sigmoid(out[:, 1]))
