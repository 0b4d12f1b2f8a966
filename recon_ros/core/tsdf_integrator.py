"""Projective TSDF integration of depth (and optional color) into a :class:`BlockVolume`.

For one frame: (1) the blocks within the truncation band of the measured surface are found by
back-projecting a strided subset of pixels and allocated; (2) with free-space clearing on, every
other allocated block in the camera's view joins them (as nvblox's projective integrator
updates every block in view); (3) every voxel of those blocks is projected into the depth image
(nearest pixel), its projective signed distance ``sdf = depth(u, v) - z_cam`` is truncated to
``[-trunc, trunc]`` and fused with a weighted running average; voxels further than ``trunc``
behind the surface are left untouched. Color is fused with the same weights by projecting the
voxel into the color camera.

Clearing: a voxel more than ``trunc`` in front of the measured surface gets a free update
towards ``+trunc``. When a measurement contradicts the stored value by more than half the
truncation through a pixel whose 3x3 neighbourhood is smooth (free space through a surface
that left; a new surface where the map held free space; not a depth edge), the old weight is first scaled by ``clearing_weight_factor``, so an object that left is
forgotten, and one that arrived is mapped, within a few frames, while one stray reading barely
moves a well-observed voxel. Blocks in view but outside the band whose voxels all end up free
(``tsdf >= trunc / 2``) or unobserved are released.

Everything is batched tensor code on the volume's device: no Python loop over voxels or pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np
import torch

from .block_hash import COORD_OFFSET, pack_coords
from .compaction import compact
from .errors import VolumeError
from .frame import PinholeCamera
from .tsdf_kernel import get_kernel, graph_rows, pad_rows, smooth_pixels
from .upload import HostStaging
from .volume import BlockVolume


@dataclass
class FrameTensors:
    """A frame moved to the volume's device (see :class:`~recon_ros.core.frame.Frame`); build
    it with :meth:`from_host`.

    Attributes:
        depth: (H, W) float32 metres as measured (0, NaN, Inf or out-of-range = invalid; see
            :meth:`valid`).
        camera: depth intrinsics.
        T_world_cam: (4, 4) float32 pose of the depth optical frame.
        T_cam_world: (4, 4) float32 its inverse.
        color: (Hc, Wc, 3) uint8 RGB, or None.
        color_camera: intrinsics of ``color``.
        T_color_cam: (4, 4) float32 transform from the depth optical frame to the color one.
        registered: the color image is pixel-aligned with the depth image (same intrinsics
            and size, identity ``T_color_cam``).
        params: (10,) float32 ``fx, fy, cx, cy`` of the depth camera, the same of the color
            camera (pixels), ``min_depth_m, max_depth_m`` (the kernels' camera arguments).
        min_depth_m, max_depth_m: readings outside this range are invalid, metres.
        reach_m: every point the frame can update lies within this distance of the map
            origin, metres (camera distance plus the depth range and a truncation margin;
            bounds block coordinates on the host, see :meth:`check_extent`).
    """

    depth: torch.Tensor
    camera: PinholeCamera
    T_world_cam: torch.Tensor
    T_cam_world: torch.Tensor
    color: torch.Tensor | None
    color_camera: PinholeCamera
    T_color_cam: torch.Tensor
    registered: bool
    params: torch.Tensor
    min_depth_m: float
    max_depth_m: float
    reach_m: float

    @classmethod
    def from_host(cls, depth: np.ndarray | torch.Tensor, camera: PinholeCamera,
                  T_world_cam: np.ndarray, color: np.ndarray | torch.Tensor | None,
                  color_camera: PinholeCamera,
                  T_cam_color: np.ndarray, min_depth_m: float, max_depth_m: float,
                  staging: HostStaging) -> "FrameTensors":
        """Upload a frame: (H, W) depth in metres, optional (Hc, Wc, 3) uint8 RGB, (4, 4)
        rigid poses as in :class:`~recon_ros.core.frame.Frame`. The inverses and the
        registration test are computed on the host (float64); the three matrices and
        :attr:`params` travel in one transfer."""
        T_world_cam = np.asarray(T_world_cam, dtype=np.float64)
        T_cam_color = np.asarray(T_cam_color, dtype=np.float64)
        poses = np.stack((T_world_cam, _rigid_inverse(T_world_cam), _rigid_inverse(T_cam_color)))
        params = [*_intrinsics(camera), *_intrinsics(color_camera), min_depth_m, max_depth_m]
        registered = ((camera.width, camera.height) == (color_camera.width, color_camera.height)
                      and bool(np.array_equal(camera.K, color_camera.K))
                      and bool(np.array_equal(T_cam_color, np.eye(4))))
        corner = np.array([max(camera.cx, camera.width - camera.cx) / camera.fx,
                           max(camera.cy, camera.height - camera.cy) / camera.fy, 1.0])
        reach = float(np.abs(T_world_cam[:3, 3]).max() + 2 * max_depth_m * np.linalg.norm(corner))
        small = staging.upload("poses", np.concatenate((poses.reshape(-1), params)),
                               torch.float32)
        matrices = small[:48].view(3, 4, 4)
        return cls(depth=staging.upload("depth", depth, torch.float32), camera=camera,
                   T_world_cam=matrices[0], T_cam_world=matrices[1],
                   color=None if color is None else staging.upload("color", color, torch.uint8),
                   color_camera=color_camera, T_color_cam=matrices[2], registered=registered,
                   params=small[48:], min_depth_m=min_depth_m, max_depth_m=max_depth_m,
                   reach_m=reach)

    def valid(self, depth: torch.Tensor) -> torch.Tensor:
        """Bool mask of usable readings (NaN and Inf fail both comparisons)."""
        return (depth >= self.min_depth_m) & (depth <= self.max_depth_m)

    @cached_property
    def valid_depth(self) -> torch.Tensor:
        """(H, W) bool, :meth:`valid` of the whole depth image (computed once)."""
        return self.valid(self.depth)

    def check_extent(self, block_m: float) -> None:
        """Raise :class:`VolumeError` if the frame can reach blocks of edge ``block_m`` metres
        beyond what block keys index (see ``block_hash.pack_coords``), so that the blocks it
        touches, and their neighbours, can be packed without a device-side check."""
        if self.reach_m / block_m + 2 >= COORD_OFFSET:
            raise VolumeError(
                f"block coordinates out of the supported range [-{COORD_OFFSET}, "
                f"{COORD_OFFSET}): the camera is {self.reach_m:.3g} m from the map origin "
                "(the map extent, or a bad pose, exceeds what the volume can index)")


def _intrinsics(camera: PinholeCamera) -> tuple[float, float, float, float]:
    return camera.fx, camera.fy, camera.cx, camera.cy


def _rigid_inverse(T: np.ndarray) -> np.ndarray:
    """(4, 4) inverse of a rigid transform (rotation transposed)."""
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


@dataclass
class IntegrationResult:
    """What one frame did to the volume.

    Attributes:
        blocks_updated: blocks the frame's voxels were fused into (band + in view).
        blocks_changed: blocks whose TSDF changed (see :func:`~.tsdf_kernel.fuse_depth`).
        blocks_released: in-view blocks released because they held free space only.
    """

    blocks_updated: int
    blocks_changed: int
    blocks_released: int


class TsdfIntegrator:
    """Fuses frames into a volume.

    Args:
        truncation_m: truncation distance, metres.
        weighting: ``"constant"`` or ``"inverse_square"`` (weight ``1 / depth**2``).
        max_weight: cap of the accumulated weight.
        alloc_stride_px: pixel stride used when finding the blocks a frame touches
            (0 = :meth:`auto_stride`).
        drop_start_m: measurements more than this behind the surface get a weight falling
            linearly to 0 at the truncation distance (None: no drop).
        compile: run the per-voxel update through ``torch.compile`` (fused; the first frame
            pays a one-off compilation of tens of seconds, cached on disk afterwards).
        clear_free_space: also update every allocated block in view (free-space clearing) and
            release in-view blocks that hold only free space.
        clearing_weight_factor: in (0, 1]; see the module doc.
        cuda_graphs: pad the kernels' block rows to a few static sizes and, when compiled,
            replay them as CUDA graphs (see ``tsdf_kernel.graph_rows``). None = when compiled
            on a CUDA device. Padding never changes results.
    """

    def __init__(self, truncation_m: float, weighting: str, max_weight: float, alloc_stride_px: int,
                 drop_start_m: float | None = None, compile: bool = False,
                 clear_free_space: bool = True, clearing_weight_factor: float = 0.5,
                 cuda_graphs: bool | None = None) -> None:
        self.truncation_m = float(truncation_m)
        self.drop_start_m = self.truncation_m if drop_start_m is None else float(drop_start_m)
        self.weighting = weighting
        self.max_weight = float(max_weight)
        self.alloc_stride_px = int(alloc_stride_px)
        self._compile = compile
        self.clear_free_space = bool(clear_free_space)
        self.clearing_weight_factor = float(clearing_weight_factor)
        self.cuda_graphs = cuda_graphs
        self._scalars_on: torch.Tensor | None = None
        self._corners: tuple[tuple[float, torch.device], torch.Tensor] | None = None

    @staticmethod
    def auto_stride(volume: BlockVolume, camera: PinholeCamera, max_depth_m: float) -> int:
        """Pixel stride whose footprint at the maximum depth is a quarter block at most."""
        block_m = volume.block_size * volume.voxel_size_m
        return int(min(16, max(1, camera.fx * block_m / (4 * max_depth_m))))

    def touched_blocks(self, volume: BlockVolume, frame: FrameTensors,
                       within: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
        """(N,) distinct keys, ascending, of the blocks within the truncation band of the
        frame (and with a centre within ``within = (centre (3,), radius_m)``, if given).

        Each strided pixel's ray segment ``z in [d - trunc, d + trunc]`` is sampled at most
        half a block apart (3 samples for the usual truncation of half a block or less), and
        the blocks holding the samples are taken. Where two neighbouring strided pixels see
        one continuous surface more than half a block apart (a floor at a grazing angle), the
        pixels between them are sampled too (see :func:`_fill_gaps`). A segment that only
        grazes the corner of a block between two samples can miss it for this frame.

        Raises:
            VolumeError: the frame reaches beyond what block keys index.
        """
        s = self.alloc_stride_px or self.auto_stride(volume, frame.camera,
                                                                   frame.max_depth_m)
        depth = frame.depth[::s, ::s]
        uv = frame.camera.pixel_grid(depth.device, stride=s)
        valid = frame.valid(depth)
        block_m = volume.block_size * volume.voxel_size_m
        frame.check_extent(block_m)
        uv, d = _fill_gaps(uv, depth, valid, frame.camera, s, 0.5 * block_m)
        ray = frame.camera.backproject(uv, torch.ones_like(d))  # (P, 3), z = 1
        n = int(math.ceil(2 * self.truncation_m / (0.5 * block_m)))
        offsets = torch.linspace(-self.truncation_m, self.truncation_m, n + 1, device=d.device)
        z = (d[:, None] + offsets[None]).clamp(min=1e-3)  # (P, n + 1)
        R, t = frame.T_world_cam[:3, :3], frame.T_world_cam[:3, 3]
        points = (z[..., None] * (ray @ R.T)[:, None, :] + t).reshape(-1, 3)
        blocks = volume.block_of_points(points)
        keys = pack_coords(blocks, check=False)  # bounded by check_extent
        if within is not None:
            centre, radius = within
            near = volume.block_centers(blocks).sub(centre).norm(dim=1) <= radius
            keys = torch.where(near, keys, _NO_KEY)
        # One _NO_KEY always goes in, so it always comes out first: dropping it needs no
        # host check of whether any sample was excluded.
        return torch.unique(torch.cat((keys.new_full((1,), _NO_KEY), keys)))[1:]

    def blocks_in_view(self, volume: BlockVolume, frame: FrameTensors) -> torch.Tensor:
        """(N,) bool over the allocated blocks' slots: the block may hold a voxel this frame
        updates: inside the
        depth camera's frustum between ``min_depth_m`` and ``max_depth_m + trunc`` and not
        entirely more than a truncation behind the measured surface. Each block is bounded by
        the box of its voxel centres, projected exactly (its 8 corners): conservative, every
        block with a voxel the frame updates is included."""
        cam = frame.camera
        R, t = frame.T_cam_world[:3, :3], frame.T_cam_world[:3, 3]
        corners = (volume.block_centers(volume.block_coords)[:, None, :]
                   + self._corner_offsets(volume)[None]) @ R.T + t  # (N, 8, 3)
        z = corners[..., 2]
        near, far = z.amin(dim=1), z.amax(dim=1)
        straddles = near <= 1e-3  # a corner at or behind the camera: keep, never skip
        zs = z.clamp(min=1e-3)
        u = corners[..., 0] / zs * cam.fx + cam.cx  # (N, 8) pixels
        v = corners[..., 1] / zs * cam.fy + cam.cy
        # Voxels go to their nearest pixel: widen the box by half a pixel (and a margin).
        u0, u1 = u.amin(dim=1) - 1.0, u.amax(dim=1) + 1.0
        v0, v1 = v.amin(dim=1) - 1.0, v.amax(dim=1) + 1.0
        in_xy = (u1 >= 0) & (u0 <= cam.width - 1) & (v1 >= 0) & (v0 <= cam.height - 1)
        in_z = (far >= frame.min_depth_m) & (near <= frame.max_depth_m + self.truncation_m)
        hidden = ~straddles & _behind_surface(frame, u0, u1, v0, v1, near, self.truncation_m)
        return in_z & (in_xy | straddles) & ~hidden

    def _corner_offsets(self, volume: BlockVolume) -> torch.Tensor:
        """(8, 3) offsets from a block's centre to the corners of its voxel-centre box (built
        once per block geometry and device)."""
        half = 0.5 * (volume.block_size - 1) * volume.voxel_size_m
        if self._corners is None or self._corners[0] != (half, volume.device):
            s = torch.tensor([-half, half], device=volume.device)
            self._corners = ((half, volume.device),
                             torch.stack(torch.meshgrid(s, s, s, indexing="ij"), -1).reshape(8, 3))
        return self._corners[1]

    def integrate(self, volume: BlockVolume, frame: FrameTensors,
                  within: tuple[torch.Tensor, float] | None = None) -> IntegrationResult:
        """Fuse one frame (and clear free space in view, when enabled).

        Args:
            volume: the map.
            frame: the frame on the volume's device.
            within: ``(centre (3,), radius_m)``: allocate no block whose centre is farther
                than ``radius_m`` from ``centre`` (a map bounded around the robot would only
                drop it again); blocks already allocated are updated regardless.
        """
        keys = self.touched_blocks(volume, frame, within)
        band = volume.allocate_keys(keys)
        slots = band
        if self.clear_free_space:
            view = self.blocks_in_view(volume, frame)
            view[band] = False
            (others,) = compact(view)
            slots = torch.cat((band, others))
        if slots.numel() == 0:
            return IntegrationResult(0, 0, 0)
        tsdf, weight, changed = self._fuse(volume, frame, slots, band.numel())
        if self.clear_free_space:
            # Only blocks outside the band: one inside it is re-allocated by the next frame.
            outside = torch.arange(slots.numel(), device=slots.device) >= band.numel()
            free = outside & ((weight <= 0) | (tsdf >= 0.5 * volume.truncation_m)).all(dim=1)
            (candidates,) = compact(free)
            if candidates.numel():
                free[candidates] = _no_surface_across_faces(volume, slots[candidates])
            changed &= ~free
            released_at, changed_at = compact(free, changed)
        else:
            released_at, (changed_at,) = slots[:0], compact(changed)
        if changed_at.numel():
            volume.mark_changed(slots[changed_at])
        volume.release(slots[released_at])
        return IntegrationResult(int(slots.numel()), int(changed_at.numel()),
                                 int(released_at.numel()))

    def _fuse(self, volume: BlockVolume, frame: FrameTensors, slots: torch.Tensor,
              n_band: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fuse the frame into the (S,) blocks ``slots`` and write them back; color only into
        the first ``n_band`` (the band around the measured surface: the other blocks in view
        get free-space updates, whose color would be that of the surface behind them).

        Returns:
            ``(tsdf, weight, changed)``: the blocks' new (S, V) float32 TSDF and weight and the
            (S,) bool "TSDF changed" flag of :func:`~.tsdf_kernel.fuse_depth`.
        """
        R, t = frame.T_cam_world[:3, :3], frame.T_cam_world[:3, 3]
        v = volume.voxel_size_m
        block_origin = (volume.slot_coords(slots) * volume.block_size).to(torch.float32) * v
        local_cam = (volume.local_offsets.to(torch.float32) * v) @ R.T  # (V, 3)
        block_cam = block_origin @ R.T + t  # (S, 3)
        trunc, drop_start, max_weight, clear_factor = self._scalars(volume.device)
        w_old = volume.weight.index_select(0, slots).to(torch.float32)
        smooth = smooth_pixels(frame.depth, frame.valid_depth, self.truncation_m)
        graphs = self._graphs(volume.device)
        if graphs and self._compile:
            torch.compiler.cudagraph_mark_step_begin()  # the previous frame's outputs are dead
        n = slots.numel()
        pad = partial(pad_rows, rows=graph_rows(n) if graphs else n)
        tsdf, weight, w_new, pixel, changed = (out[:n] for out in self._kernel("depth", graphs)(
            pad(block_cam), local_cam, frame.depth, smooth, frame.params[0:4],
            frame.params[8:10], trunc, drop_start, max_weight, self.weighting == "inverse_square",
            pad(volume.tsdf.index_select(0, slots).to(torch.float32)), pad(w_old), clear_factor))
        if frame.color is not None and n_band:
            ccam, band = frame.color_camera, slots[:n_band]
            pad = partial(pad_rows, rows=graph_rows(n_band) if graphs else n_band)
            pixel = pixel[:n_band]
            if frame.registered:  # same pixels as the depth image
                seen = torch.ones_like(pixel, dtype=torch.bool)
            else:
                pixel, seen = (out[:n_band] for out in self._kernel("color_pixels", graphs)(
                    pad(block_cam[:n_band]), local_cam, frame.T_color_cam[:3, :3],
                    frame.T_color_cam[:3, 3], frame.params[4:8], ccam.height, ccam.width))
            color = self._kernel("color", graphs)(
                pad(volume.color.index_select(0, band).to(torch.float32)), pad(w_old[:n_band]),
                pad(w_new[:n_band]), pad(pixel), pad(seen), frame.color)[:n_band]
            volume.color.index_copy_(0, band, color.to(volume.dtype))
        volume.tsdf.index_copy_(0, slots, tsdf.to(volume.dtype))
        volume.weight.index_copy_(0, slots, weight.to(volume.dtype))
        return tsdf, weight, changed

    def _kernel(self, name: str, graphs: bool) -> Callable:
        return get_kernel(name, self._compile, graphs and self._compile)

    def _graphs(self, device: torch.device) -> bool:
        """Whether the kernels get static (padded) row counts on ``device``."""
        if self.cuda_graphs is None:
            return self._compile and device.type == "cuda"
        return self.cuda_graphs

    def _scalars(self, device: torch.device) -> torch.Tensor:
        """(4,) float32 ``truncation_m, drop_start_m, max_weight, clearing_weight_factor`` on
        ``device`` (uploaded once per device; the kernels take them as tensors)."""
        if self._scalars_on is None or self._scalars_on.device != device:
            self._scalars_on = torch.tensor(
                [self.truncation_m, self.drop_start_m, self.max_weight,
                 self.clearing_weight_factor], dtype=torch.float32, device=device)
        return self._scalars_on


#: Stands for "no block" among packed keys (which are never negative).
_NO_KEY = -1

#: Neighbouring pixels whose depths differ by more than this fraction are taken to see two
#: surfaces (an occlusion edge), not one surface to fill between.
CONTINUITY_RATIO = 0.25


def _fill_gaps(uv: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, camera: PinholeCamera,
               stride: int, max_gap_m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Valid strided samples plus interpolated samples between neighbours too far apart.

    Args:
        uv: (H', W', 2) pixel coordinates of the strided grid.
        depth: (H', W') depths there, metres; valid: (H', W') bool.
        camera: intrinsics.
        stride: pixels between neighbouring samples.
        max_gap_m: neighbours (along rows and columns) whose back-projected points are farther
            apart than this, on one continuous surface (depths within
            :data:`CONTINUITY_RATIO`), get ``stride - 1`` samples between them, linear in pixel
            position and depth.

    Returns:
        ``(uv (P, 2), depth (P,))`` of every sample to allocate blocks around.
    """
    if stride == 1:
        (at,) = compact(valid.reshape(-1))
        return uv.reshape(-1, 2)[at], depth.reshape(-1)[at]
    point = camera.backproject(uv, depth)  # (H', W', 3)
    pairs = []  # (uv, depth) of both ends and the fill mask of row and column neighbours
    for a, b in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                 ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
        da, db = depth[a], depth[b]
        gap = (point[a] - point[b]).norm(dim=-1)
        fill = (valid[a] & valid[b] & (gap > max_gap_m)
                & ((da - db).abs() <= CONTINUITY_RATIO * torch.minimum(da, db)))
        pairs.append((uv[a].reshape(-1, 2), uv[b].reshape(-1, 2), da.reshape(-1),
                      db.reshape(-1), fill.reshape(-1)))
    at, *fill_at = compact(valid.reshape(-1), *(p[4] for p in pairs))
    out_uv, out_d = [uv.reshape(-1, 2)[at]], [depth.reshape(-1)[at]]
    frac = torch.arange(1, stride, device=uv.device, dtype=uv.dtype) / stride  # (F,)
    for (ua, ub, da, db, _), i in zip(pairs, fill_at):
        ua, ub, da, db = ua[i], ub[i], da[i], db[i]
        out_uv.append((ua[:, None] + frac[None, :, None] * (ub - ua)[:, None]).reshape(-1, 2))
        out_d.append((da[:, None] + frac[None] * (db - da)[:, None]).reshape(-1))
    return torch.cat(out_uv), torch.cat(out_d)


#: Tile edge (pixels) of the maximum-depth map used to skip blocks hidden behind the surface,
#: and the widest footprint (in tiles per axis) tested; wider (near) blocks are never skipped.
HIDDEN_TILE_PX = 16
HIDDEN_MAX_TILES = 8


def _behind_surface(frame: FrameTensors, u0: torch.Tensor, u1: torch.Tensor, v0: torch.Tensor,
                    v1: torch.Tensor, near: torch.Tensor, trunc_m: float) -> torch.Tensor:
    """(N,) bool: every pixel of a block's footprint reads a surface more than ``trunc_m`` in
    front of the block's nearest voxel, or no valid depth, so the frame updates none of its
    voxels.

    Args:
        frame: the frame.
        u0, u1, v0, v1: (N,) footprint box of each block, pixels.
        near: (N,) nearest depth of the block's voxels, metres.
        trunc_m: truncation distance, metres.
    """
    T, K = HIDDEN_TILE_PX, HIDDEN_MAX_TILES
    depth = torch.where(frame.valid_depth, frame.depth, 0.0)
    tiles = torch.nn.functional.max_pool2d(depth[None, None], T, T, ceil_mode=True)[0, 0]
    th, tw = tiles.shape
    tu0 = torch.floor(u0 / T).clamp(0, tw - 1).to(torch.int64)
    tu1 = torch.floor(u1 / T).clamp(0, tw - 1).to(torch.int64)
    tv0 = torch.floor(v0 / T).clamp(0, th - 1).to(torch.int64)
    tv1 = torch.floor(v1 / T).clamp(0, th - 1).to(torch.int64)
    small = (tu1 - tu0 < K) & (tv1 - tv0 < K)
    k = torch.arange(K, device=u0.device)
    tu = tu0[:, None, None] + k[None, None, :]  # (N, 1, K)
    tv = tv0[:, None, None] + k[None, :, None]  # (N, K, 1)
    inside = (tu <= tu1[:, None, None]) & (tv <= tv1[:, None, None])
    deepest = torch.where(inside, tiles[tv.clamp(max=th - 1), tu.clamp(max=tw - 1)], 0.0)
    return small & (near > deepest.amax(dim=(1, 2)) + trunc_m)


def _no_surface_across_faces(volume: BlockVolume, slots: torch.Tensor) -> torch.Tensor:
    """(R,) bool: no observed voxel of the (R,) blocks grown by their one-voxel halo is
    negative, so no marching cube touching their voxels has a sign change: releasing them
    removes no triangle, not even across a block face."""
    flat = volume.halo_flat_index(slots)
    safe = flat.clamp(min=0)
    negative = ((flat >= 0) & (volume.weight.reshape(-1)[safe] > 0)
                & (volume.tsdf.reshape(-1)[safe] < 0))
    return ~negative.any(dim=1)
