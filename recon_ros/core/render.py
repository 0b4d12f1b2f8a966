"""Differentiable volumetric rendering (DVR) of a block-sparse TSDF map.

Every pixel casts one ray from the optical centre through its pixel centre, with the map-frame
direction ``d = R_world_cam ((u - cx) / fx, (v - cy) / fy, 1)``: the ray parameter ``t`` of the
point ``o + t d`` *is* the z-depth in the camera, metres.

The TSDF ``f(p)`` at a map-frame point is the trilinear interpolation of the 8 surrounding voxel
centres (voxel ``(i, j, k)`` has its centre at ``(i, j, k) * voxel_size_m``), read through the
block hash (no dense grid); a sample is *observed* only when all 8 corners are (weight above
:attr:`RenderOptions.min_weight`).

Marching (batched over the rays of a chunk; one Python iteration per march step):

- each ray starts at ``min_depth_m`` and advances by ``step_voxels`` voxels of path length,
  more ahead of an observed positive TSDF (``distance_step``, :class:`RenderOptions`);
- where the block holding the sample's lower corner voxel is not allocated, every sample inside
  that block's cube ``[b B v, (b + 1) B v)`` is unobserved, so the ray jumps to the cube's exit
  in one step (empty space is skipped block by block, never voxel by voxel);
- a hit is the first sign change from + to - between two *consecutive observed* samples (a jump
  or an unobserved sample in between breaks the pair, so unknown space never yields a hit); the
  bracket is refined by ``secant_steps`` Illinois (bracketed secant) steps and the observed
  iterate with the smallest ``|f|`` is the hit;
- a ray without a hit is ``FREE`` when its last sample before ``max_depth_m`` was observed and
  positive (it ends in observed free space), otherwise ``UNKNOWN``. The integrator releases
  blocks that hold free space only, so most rays of a real map that miss every surface end in
  unallocated space and read ``UNKNOWN``.

Gradients (:func:`render_differentiable`) follow DVR's implicit differentiation: at the hit
``f(t*, s) = 0`` for the TSDF values ``s``, so ``d t* / d s_c = -w_c(p*) / (d f / d t)`` with
``w_c`` the trilinear weight of corner ``c`` and ``d f / d t = grad f(p*) . d``; nothing is
back-propagated through the march (:class:`ImplicitDepth`). Color at the hit is the trilinear
interpolation at ``o + t* d`` and is differentiable both in the color values and, through
``t*``, in the TSDF.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .block_hash import COORD_OFFSET, pack_coords
from .errors import ConfigError, VolumeError
from .frame import PinholeCamera, check_pose
from .volume import BlockVolume

#: Corner offsets of a trilinear cell, x-major: corner ``c`` is ``((c >> 2) & 1, (c >> 1) & 1,
#: c & 1)``.
_CORNERS = [[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
#: Smallest ``|d f / d t|`` used by the implicit gradient (bounds ``d t / d s`` at grazing hits).
MIN_SLOPE = 1e-3


class RayStatus(enum.IntEnum):
    """Outcome of one ray (values of :attr:`RenderResult.status`)."""

    UNKNOWN = 0  #: no hit, and the ray does not end in observed free space
    HIT = 1  #: a + to - zero crossing between two consecutive observed samples
    FREE = 2  #: no hit, and the last sample before ``max_depth_m`` is observed and positive


@dataclass(frozen=True)
class RenderOptions:
    """Options of the ray marcher.

    Attributes:
        max_depth_m: rays end at this z-depth, metres.
        min_depth_m: rays start at this z-depth, metres.
        step_voxels: march step along the ray, in voxels of path length (not z-depth).
        distance_step: after an observed sample with TSDF ``f > 0`` the next step is
            ``max(step_voxels * voxel, distance_step * f)`` of path length (sphere tracing on
            the TSDF, kept below 1 because a projective TSDF can overestimate the distance);
            0 = fixed steps. The longest step is ``distance_step`` truncations, too short to
            cross the negative band behind a surface, so no crossing is lost; surfaces
            thinner than the truncation may be.
        secant_steps: Illinois secant refinements of each hit bracket.
        min_weight: a voxel is observed when its weight is above this.
        chunk_rays: rays marched together (bounds memory: a few hundred bytes per ray).
        ambient: share of the shaded image's brightness that does not depend on the normal
            (headlight Lambert shading: ``ambient + (1 - ambient) max(0, -n . d / |d|)``).
    """

    max_depth_m: float = 5.0
    min_depth_m: float = 0.1
    step_voxels: float = 0.5
    distance_step: float = 0.5
    secant_steps: int = 4
    min_weight: float = 0.0
    chunk_rays: int = 1 << 16
    ambient: float = 0.2

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("min_depth_m", 0.0 <= self.min_depth_m, "must be >= 0"),
            ("max_depth_m", self.max_depth_m > self.min_depth_m, "must exceed min_depth_m"),
            ("step_voxels", 0.0 < self.step_voxels <= 2.0, "must be in (0, 2]"),
            ("distance_step", 0.0 <= self.distance_step < 1.0, "must be in [0, 1)"),
            ("secant_steps", 0 <= self.secant_steps <= 64, "must be in [0, 64]"),
            ("min_weight", self.min_weight >= 0.0, "must be >= 0"),
            ("chunk_rays", self.chunk_rays >= 1, "must be >= 1"),
            ("ambient", 0.0 <= self.ambient <= 1.0, "must be in [0, 1]"),
        ]
        for name, ok, reason in checks:
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"render.{name}={value!r} is invalid: {reason}")


@dataclass
class RenderResult:
    """A rendered view; every tensor is on the volume's device, pixel ``(v, u)`` = row, column.

    Attributes:
        depth: (H, W) z-depth of the hit in the camera, metres; 0 where there is no hit.
        normal: (H, W, 3) unit surface normal at the hit in the map frame (the normalised TSDF
            gradient, pointing into free space); 0 where there is no hit.
        color: (H, W, 3) uint8 RGB interpolated at the hit (black where there is no hit).
        shaded: (H, W) uint8 grey image, headlight Lambert shading of ``normal`` (0 = no hit).
        status: (H, W) int8 :class:`RayStatus` of each pixel.
        samples: trilinear TSDF samples taken (march and refinement), all rays together.
        block_skips: march steps that jumped over an unallocated block.
        march_steps: iterations of the march loop, summed over the chunks.
    """

    depth: torch.Tensor
    normal: torch.Tensor
    color: torch.Tensor
    shaded: torch.Tensor
    status: torch.Tensor
    samples: int
    block_skips: int
    march_steps: int


@dataclass
class DifferentiableRender:
    """Output of :func:`render_differentiable`.

    Attributes:
        depth: (H, W) z-depth, metres, 0 where there is no hit; differentiable in the TSDF
            values by implicit differentiation at the hit.
        color: (H, W, 3) float color interpolated at the hit (0 where there is no hit),
            differentiable in the color values and the TSDF values; None when no color was
            given.
        status: (H, W) int8 :class:`RayStatus`.
    """

    depth: torch.Tensor
    color: torch.Tensor | None
    status: torch.Tensor


class _Samples(NamedTuple):
    """Trilinear samples at M points."""

    f: torch.Tensor  # (M,) interpolated TSDF, metres
    valid: torch.Tensor  # (M,) bool: all 8 corners observed
    flat: torch.Tensor  # (M, 8) flat voxel index ``slot * V + local`` of the corners (>= 0)
    frac: torch.Tensor  # (M, 3) position in the cell, in [0, 1)
    values: torch.Tensor  # (M, 8) TSDF of the corners


def _outer(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(M, 2) factors per axis -> (M, 8) products, corners in ``_CORNERS`` order."""
    return (x[:, :, None, None] * y[:, None, :, None] * z[:, None, None, :]).reshape(-1, 8)


def _trilinear(frac: torch.Tensor) -> torch.Tensor:
    """(M, 3) positions in the cell -> (M, 8) trilinear weights of the corners."""
    f = torch.stack((1 - frac, frac), dim=2)  # (M, 3, 2)
    return _outer(f[:, 0], f[:, 1], f[:, 2])


class _Grid:
    """Trilinear access to a volume's voxels through its block hash, with a given TSDF tensor.

    Holds an (N, 27) table of the allocated blocks' neighbour slots (27 hash lookups per block,
    built once), so a sample costs one hash lookup (its lower corner's block) whatever block
    its 8 corners fall in.
    """

    def __init__(self, volume: BlockVolume, tsdf: torch.Tensor, min_weight: float) -> None:
        if tsdf.shape != volume.tsdf.shape:
            raise VolumeError(f"tsdf must have the volume's shape {tuple(volume.tsdf.shape)}, "
                              f"got {tuple(tsdf.shape)}")
        self.volume = volume
        self.tsdf = tsdf.reshape(-1)
        self.observed = volume.weight.reshape(-1) > min_weight
        self.B = B = volume.block_size
        self.V = volume.voxels_per_block
        self.voxel_m = volume.voxel_size_m
        dev = volume.device
        # Per local voxel L of the lower corner and corner c: which of the 27 neighbour blocks
        # holds the corner, and its linear index there; both (V, 8).
        corner = torch.tensor(_CORNERS, device=dev)
        lc = volume.local_offsets[:, None, :] + corner[None]  # (V, 8, 3) in 0 .. B
        over = (lc >= B).to(torch.int64)
        self.corner_block = ((over[..., 0] + 1) * 3 + over[..., 1] + 1) * 3 + over[..., 2] + 1
        lc = lc - over * B
        self.corner_local = (lc[..., 0] * B + lc[..., 1]) * B + lc[..., 2]
        self.neighbours = volume.neighbour_slots(torch.arange(volume.num_blocks, device=dev))

    def locate(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(M, 3) map-frame points -> (M, 3) int64 lower corner voxel, (M, 3) fraction in the
        cell, (M,) slot of the lower corner's block (-1 where not allocated)."""
        g = points / self.voxel_m
        lower = torch.floor(g)
        vox = lower.to(torch.int64)
        block = torch.div(vox, self.B, rounding_mode="floor")
        inside = (block.abs() < COORD_OFFSET - 1).all(dim=1)  # beyond: never allocated
        slot = self.volume.index.lookup(pack_coords(torch.where(inside[:, None], block, 0),
                                                    check=False))
        return vox, g - lower, torch.where(inside, slot, -1)

    def sample(self, vox: torch.Tensor, frac: torch.Tensor, slot: torch.Tensor) -> _Samples:
        """Trilinear samples of cells given by :meth:`locate` (any slot; -1 = invalid)."""
        B = self.B
        local = vox - torch.div(vox, B, rounding_mode="floor") * B  # (M, 3) in 0 .. B-1
        linear = (local[:, 0] * B + local[:, 1]) * B + local[:, 2]
        nslot = self.neighbours[slot.clamp(min=0)].gather(1, self.corner_block[linear])
        flat = nslot * self.V + self.corner_local[linear]
        safe = flat.clamp(min=0)
        valid = (slot >= 0) & ((nslot >= 0) & self.observed[safe]).all(dim=1)
        values = self.tsdf[safe]
        return _Samples((_trilinear(frac) * values).sum(dim=1), valid, safe, frac, values)

    def sample_points(self, points: torch.Tensor) -> _Samples:
        """Trilinear samples at (M, 3) map-frame points."""
        vox, frac, slot = self.locate(points)
        return self.sample(vox, frac, slot)

    def gradient(self, s: _Samples) -> torch.Tensor:
        """(M, 3) gradient of the interpolated TSDF, metres per metre (map frame)."""
        f = torch.stack((1 - s.frac, s.frac), dim=2)  # (M, 3, 2)
        df = torch.tensor([-1.0, 1.0], dtype=f.dtype, device=f.device).expand_as(f[:, 0])
        x, y, z = f[:, 0], f[:, 1], f[:, 2]
        return torch.stack([(_outer(*w) * s.values).sum(dim=1)
                            for w in ((df, y, z), (x, df, z), (x, y, df))], dim=1) / self.voxel_m


def sample_tsdf(volume: BlockVolume, points: torch.Tensor, min_weight: float = 0.0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TSDF and color at (M, 3) map-frame points (metres), trilinear over the 8 surrounding
    voxel centres, on the volume's device.

    Returns:
        ``(tsdf, ok, color)``: (M,) TSDF, metres; (M,) bool, all 8 corners observed (weight
        above ``min_weight``); (M, 3) float RGB in [0, 255]. TSDF and color are NaN where not
        ``ok``.
    """
    grid = _Grid(volume, volume.tsdf, min_weight)
    s = grid.sample_points(points.to(volume.device, volume.dtype))
    color = (_trilinear(s.frac)[..., None] * volume.color.reshape(-1, 3)[s.flat]).sum(dim=1)
    nan = torch.tensor(float("nan"), dtype=volume.dtype, device=volume.device)
    return (torch.where(s.valid, s.f, nan), s.valid, torch.where(s.valid[:, None], color, nan))


def sample_field(volume: BlockVolume, tsdf: torch.Tensor, points: torch.Tensor,
                 min_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Trilinear TSDF at (M, 3) map-frame points (metres) read from ``tsdf``, an (N, V) tensor
    laid out as ``volume.tsdf`` (e.g. a copy being optimised), differentiably in ``tsdf``.

    Returns:
        ``(f, ok)``: (M,) TSDF, metres (meaningless where not ``ok``); (M,) bool, all 8
        corners observed (``volume.weight`` above ``min_weight``).
    """
    s = _Grid(volume, tsdf, min_weight).sample_points(points.to(volume.device, tsdf.dtype))
    return s.f, s.valid


@dataclass
class _Cast:
    """Rays of every pixel cast into a volume (P pixels, Q hits)."""

    status: torch.Tensor  # (P,) int8 RayStatus
    hit: torch.Tensor  # (Q,) int64 pixel index (row-major) of each hit
    t: torch.Tensor  # (Q,) depth of the hit, metres (detached)
    direction: torch.Tensor  # (Q, 3) map-frame ray direction (camera z = 1)
    lower: torch.Tensor  # (Q, 3) lower corner voxel of the hit's cell
    at_hit: _Samples  # the samples at the hits
    gradient: torch.Tensor  # (Q, 3) TSDF gradient at the hit, map frame
    samples: int
    block_skips: int
    march_steps: int


def _rays(camera: PinholeCamera, T_world_cam: Any, device: torch.device, dtype: torch.dtype
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Map-frame origin (3,) and (H*W, 3) row-major pixel directions with camera z = 1."""
    if isinstance(T_world_cam, torch.Tensor):
        T_world_cam = T_world_cam.detach().cpu().numpy()
    T = torch.as_tensor(check_pose("T_world_cam", np.asarray(T_world_cam))[0], dtype=dtype,
                        device=device)
    uv = camera.pixel_grid(device, dtype).reshape(-1, 2)
    cam = torch.stack(((uv[:, 0] - camera.cx) / camera.fx, (uv[:, 1] - camera.cy) / camera.fy,
                       torch.ones_like(uv[:, 0])), dim=1)
    return T[:3, 3], cam @ T[:3, :3].T


def _march(grid: _Grid, origin: torch.Tensor, d: torch.Tensor, opt: RenderOptions
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                      list[int]]:
    """March R rays ``origin + t d`` (d: (R, 3)); returns (R,) status, (R,) bracket ``t0,
    f0 > 0`` and ``t1, f1 <= 0`` (valid where status is HIT) and [samples, skips, steps]."""
    R, dev, dtype = d.shape[0], d.device, d.dtype
    inv_norm = 1 / d.norm(dim=1)  # depth per metre of path
    min_step_m = opt.step_voxels * grid.voxel_m
    block_m = grid.B * grid.voxel_m
    t = torch.full((R,), opt.min_depth_m, dtype=dtype, device=dev)
    prev_t, prev_f = torch.zeros_like(t), torch.zeros_like(t)
    prev_ok = torch.zeros(R, dtype=torch.bool, device=dev)
    free_end, hit = torch.zeros_like(prev_ok), torch.zeros_like(prev_ok)
    t0, f0, t1, f1 = (torch.zeros_like(t) for _ in range(4))
    active = torch.ones_like(prev_ok)
    counts = [0, 0, 0]
    while True:
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        ti, di = t[idx], d[idx]
        p = origin + ti[:, None] * di
        vox, frac, slot = grid.locate(p)
        alloc = slot >= 0
        a = alloc.nonzero().squeeze(1)
        f = torch.zeros_like(ti)
        ok = torch.zeros_like(alloc)
        if a.numel():
            s = grid.sample(vox[a], frac[a], slot[a])
            f[a], ok[a] = s.f, s.valid
        counts[0] += int(a.numel())
        counts[1] += int(idx.numel() - a.numel())
        counts[2] += 1
        cross = ok & prev_ok[idx] & (prev_f[idx] > 0) & (f <= 0)
        c = idx[cross]
        t0[c], f0[c], t1[c], f1[c] = prev_t[c], prev_f[c], ti[cross], f[cross]
        hit[c] = True
        # Exit of the unallocated block's cube, from the current point (>= 0 up to rounding).
        block = torch.div(vox, grid.B, rounding_mode="floor").to(dtype)
        bound = (block + (di > 0).to(dtype)) * block_m
        exit_t = torch.where(di != 0, (bound - p) / di, math.inf).amin(dim=1).clamp(min=0)
        ahead = torch.where(ok, opt.distance_step * f, 0.0).clamp(min=min_step_m)
        step = ahead * inv_norm[idx]
        t_next = torch.where(alloc, ti + step, ti + exit_t + 0.01 * min_step_m * inv_norm[idx])
        prev_t[idx], prev_f[idx], prev_ok[idx] = ti, f, ok
        free_end[idx] = ok & (f > 0)
        t[idx] = t_next
        active[idx] = ~cross & (t_next <= opt.max_depth_m)
    status = torch.where(hit, int(RayStatus.HIT),
                         torch.where(free_end, int(RayStatus.FREE), int(RayStatus.UNKNOWN)))
    return status.to(torch.int8), t0, f0, t1, f1, counts


def _refine(grid: _Grid, origin: torch.Tensor, d: torch.Tensor, t0: torch.Tensor,
            f0: torch.Tensor, t1: torch.Tensor, f1: torch.Tensor, steps: int
            ) -> torch.Tensor:
    """Illinois (bracketed secant) refinement of brackets ``f0 > 0 >= f1``; returns the (Q,)
    observed iterate (or bracket end) with the smallest ``|f|``."""
    best_t = torch.where(f0 < -f1, t0, t1)
    best_f = torch.minimum(f0, -f1)
    side = torch.zeros_like(t0)  # +1: t0 was replaced last, -1: t1 was
    for _ in range(steps):
        tm = t0 - f0 * (t1 - t0) / (f1 - f0)
        s = grid.sample_points(origin + tm[:, None] * d)
        pos, neg = s.valid & (s.f > 0), s.valid & (s.f <= 0)
        f1 = torch.where(pos & (side > 0), f1 * 0.5, f1)  # Illinois: halve the stale end
        f0 = torch.where(neg & (side < 0), f0 * 0.5, f0)
        t0, f0 = torch.where(pos, tm, t0), torch.where(pos, s.f, f0)
        t1, f1 = torch.where(neg, tm, t1), torch.where(neg, s.f, f1)
        side = torch.where(pos, 1.0, torch.where(neg, -1.0, side))
        better = s.valid & (s.f.abs() < best_f)
        best_t, best_f = torch.where(better, tm, best_t), torch.where(better, s.f.abs(), best_f)
    return best_t


def _cast(grid: _Grid, camera: PinholeCamera, T_world_cam: Any, opt: RenderOptions) -> _Cast:
    """Cast every pixel's ray, ``opt.chunk_rays`` rays at a time."""
    origin, dirs = _rays(camera, T_world_cam, grid.volume.device, grid.volume.dtype)
    status, hits, ts, counts = [], [], [], [0, 0, 0]
    for start in range(0, dirs.shape[0], opt.chunk_rays):
        d = dirs[start:start + opt.chunk_rays]
        st, t0, f0, t1, f1, n = _march(grid, origin, d, opt)
        h = (st == int(RayStatus.HIT)).nonzero().squeeze(1)
        ts.append(_refine(grid, origin, d[h], t0[h], f0[h], t1[h], f1[h], opt.secant_steps))
        counts = [a + b for a, b in zip(counts, n)]
        counts[0] += opt.secant_steps * int(h.numel())
        status.append(st)
        hits.append(h + start)
    hit, t = torch.cat(hits), torch.cat(ts)
    direction = dirs[hit]
    vox, frac, slot = grid.locate(origin + t[:, None] * direction)
    at_hit = grid.sample(vox, frac, slot)
    return _Cast(torch.cat(status), hit, t, direction, vox, at_hit, grid.gradient(at_hit),
                 counts[0] + int(hit.numel()), counts[1], counts[2])


def _image(values: torch.Tensor, cast: _Cast, camera: PinholeCamera) -> torch.Tensor:
    """Scatter (Q, ...) per-hit values into a zero (H, W, ...) image."""
    out = values.new_zeros((camera.height * camera.width, *values.shape[1:]))
    return out.index_put((cast.hit,), values).reshape(camera.height, camera.width,
                                                      *values.shape[1:])


def render(volume: BlockVolume, camera: PinholeCamera, T_world_cam: Any,
           options: RenderOptions | None = None) -> RenderResult:
    """Render depth, normals, color and a shaded image of ``volume`` (not differentiable).

    Args:
        volume: the map.
        camera: intrinsics of the rendered image (H = ``camera.height``, W = ``camera.width``).
        T_world_cam: (4, 4) pose of the optical frame in the map frame (array or tensor on
            any device), metres.
        options: marcher options (defaults: :class:`RenderOptions`).
    """
    opt = options or RenderOptions()
    with torch.no_grad():
        grid = _Grid(volume, volume.tsdf, opt.min_weight)
        cast = _cast(grid, camera, T_world_cam, opt)
        normal = torch.nn.functional.normalize(cast.gradient, dim=1)
        w = _trilinear(cast.at_hit.frac)
        color = (w[..., None] * volume.color.reshape(-1, 3)[cast.at_hit.flat]).sum(dim=1)
        facing = -(normal * torch.nn.functional.normalize(cast.direction, dim=1)).sum(dim=1)
        shade = opt.ambient + (1 - opt.ambient) * facing.clamp(min=0)
        return RenderResult(
            depth=_image(cast.t, cast, camera),
            normal=_image(normal, cast, camera),
            color=_image(color.round().clamp(0, 255).to(torch.uint8), cast, camera),
            shaded=_image((shade * 255).round().to(torch.uint8), cast, camera),
            status=cast.status.reshape(camera.height, camera.width),
            samples=cast.samples, block_skips=cast.block_skips, march_steps=cast.march_steps)


class ImplicitDepth(torch.autograd.Function):
    """Depth of ray hits with DVR's implicit gradient in the TSDF.

    ``forward(tsdf (N, V), t (Q,), flat (Q, 8), weights (Q, 8), slope (Q,))`` returns ``t``
    (the hits found by the march; ``tsdf`` only receives the gradient), where ``flat`` are the
    flat indices into ``tsdf`` of each hit's 8 corner voxels, ``weights`` their trilinear
    weights at the hit and ``slope = d f / d t < 0`` the TSDF's derivative along the ray there.
    Backward: ``d t / d tsdf[flat_c] = -weights_c / slope`` (summed over hits sharing a voxel).
    """

    @staticmethod
    def forward(ctx: Any, tsdf: torch.Tensor, t: torch.Tensor, flat: torch.Tensor,
                weights: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(flat, weights, slope)
        ctx.tsdf_shape = tsdf.shape
        return t.detach().clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        flat, weights, slope = ctx.saved_tensors
        out = grad.new_zeros(math.prod(ctx.tsdf_shape))
        out.index_add_(0, flat.reshape(-1), (-(grad / slope)[:, None] * weights).reshape(-1))
        return out.reshape(ctx.tsdf_shape), None, None, None, None


def render_differentiable(volume: BlockVolume, camera: PinholeCamera, T_world_cam: Any,
                          tsdf: torch.Tensor, color: torch.Tensor | None = None,
                          options: RenderOptions | None = None) -> DifferentiableRender:
    """Render depth (and color) of ``volume``'s geometry with the TSDF values ``tsdf``,
    differentiably in ``tsdf`` (and ``color``).

    Args:
        volume: the map (block structure and weights; its own TSDF and color are not read).
        camera, T_world_cam: as for :func:`render`.
        tsdf: (N, V) TSDF, metres, laid out as ``volume.tsdf`` (e.g. a copy being optimised);
            the march reads it detached, the depth's gradient reaches it through
            :class:`ImplicitDepth`.
        color: optional (N, V, 3) colors laid out as ``volume.color``.
        options: marcher options.
    """
    opt = options or RenderOptions()
    with torch.no_grad():
        grid = _Grid(volume, tsdf.detach(), opt.min_weight)
        cast = _cast(grid, camera, T_world_cam, opt)
        slope = (cast.gradient * cast.direction).sum(dim=1).clamp(max=-MIN_SLOPE)
    t = ImplicitDepth.apply(tsdf, cast.t, cast.at_hit.flat, _trilinear(cast.at_hit.frac), slope)
    status = cast.status.reshape(camera.height, camera.width)
    if color is None:
        return DifferentiableRender(_image(t, cast, camera), None, status)
    origin = _rays(camera, T_world_cam, volume.device, volume.dtype)[0]
    p = origin + t[:, None] * cast.direction
    frac = p / volume.voxel_size_m - cast.lower.to(p.dtype)
    c = (_trilinear(frac)[..., None] * color.reshape(-1, 3)[cast.at_hit.flat]).sum(dim=1)
    return DifferentiableRender(_image(t, cast, camera), _image(c, cast, camera), status)
