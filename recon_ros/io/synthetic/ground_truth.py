"""Exact ground truth of synthetic scenes: surface samples, observed surface, 2D occupancy."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ...core.errors import ConfigError
from ...core.frame import Frame, PinholeCamera
from ...core.occupancy_grid import FREE, OCCUPIED, OccupancyGrid2D
from .noise import SeedLike, as_generator
from .render import backproject_depth, render
from .scene import Scene
from .trajectory import Trajectory

Region = tuple[Sequence[float], Sequence[float]]


def _region(region: Region | None) -> tuple[np.ndarray, np.ndarray] | None:
    if region is None:
        return None
    lo = np.asarray(region[0], dtype=np.float64).reshape(-1)
    hi = np.asarray(region[1], dtype=np.float64).reshape(-1)
    if lo.shape != (3,) or hi.shape != (3,) or np.any(hi < lo):
        raise ConfigError(f"region must be ((3,) lo, (3,) hi) with lo <= hi, got {region!r}")
    return lo, hi


def sample_surface_points(scene: Scene, n: int, seed: SeedLike = 0,
                          region: Region | None = None, tol_m: float = 1e-6,
                          return_parts: bool = False
                          ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Points uniformly distributed by area on the surface of the scene's union of solids.

    Each part's surface is sampled analytically in proportion to its area; a sample is kept
    only if it lies strictly outside every *other* part (signed distance > ``tol_m``), which
    removes faces buried in or pressed against other solids (e.g. a box's bottom face on the
    floor and the floor under it), and inside ``region`` if given.

    Args:
        scene: the scene.
        n: number of points.
        seed: Generator or int seed.
        region: optional axis-aligned crop ``(lo (3,), hi (3,))`` in world metres.
        tol_m: see above.
        return_parts: also return the (n,) part index (into ``scene.parts``) of each point.

    Returns:
        (n, 3) float64 world points (and optionally (n,) int64 part indices).
    """
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    g = as_generator(seed)
    reg = _region(region)
    parts = scene.parts
    areas = np.array([s.area() for s in parts])
    probs = areas / areas.sum()
    got_p: list[np.ndarray] = []
    got_i: list[np.ndarray] = []
    have = drawn = 0
    rate = 1.0
    for _ in range(200):
        if have >= n:
            break
        if have == 0 and drawn >= 2_000_000:
            break
        m = int(min(4_000_000, math.ceil((n - have) / rate * 1.2) + 64))
        drawn += m
        counts = g.multinomial(m, probs)
        pts = np.concatenate([s.sample_surface(int(c), g) for s, c in zip(parts, counts)])
        idx = np.repeat(np.arange(len(parts)), counts)
        perm = g.permutation(m)
        pts, idx = pts[perm], idx[perm]
        psdf = scene.part_sdf(torch.from_numpy(pts)).numpy()
        psdf[np.arange(m), idx] = np.inf
        keep = psdf.min(axis=1) > tol_m
        if reg is not None:
            keep &= np.all((pts >= reg[0]) & (pts <= reg[1]), axis=1)
        rate = max(keep.mean(), 1e-4)
        got_p.append(pts[keep])
        got_i.append(idx[keep])
        have += int(keep.sum())
    if have < n:
        raise ConfigError(f"could only find {have} of {n} surface points (empty region?)")
    pts = np.concatenate(got_p)[:n] if got_p else np.zeros((0, 3))
    idx = np.concatenate(got_i)[:n] if got_i else np.zeros((0,), dtype=np.int64)
    return (pts, idx.astype(np.int64)) if return_parts else pts


def visible_surface_points(scene: Scene, poses: Trajectory | Sequence[np.ndarray | Frame],
                           camera: PinholeCamera, *, stride: int = 1,
                           max_range_m: float | None = None,
                           device: torch.device | str = "cpu") -> np.ndarray:
    """The observed part of the surface: back-projections of noise-free renders.

    Args:
        scene: the scene.
        poses: a :class:`Trajectory`, a sequence of (4, 4) ``T_world_cam``, or of
            :class:`~recon_ros.core.frame.Frame` (their ``T_world_cam`` is used).
        camera: intrinsics.
        stride: keep every ``stride``-th pixel along both image axes.
        max_range_m: ignore hits beyond this z-depth.

    Returns:
        (M, 3) float64 world points exactly on the surface (float64 ray hits, not the
        float32 depth image), concatenated over all poses.
    """
    if stride < 1:
        raise ConfigError(f"stride must be >= 1, got {stride}")
    if isinstance(poses, Trajectory):
        mats = list(poses.poses)
    else:
        mats = [np.asarray(T.T_world_cam if isinstance(T, Frame) else T) for T in poses]
    out = []
    for T in mats:
        r = render(scene, camera, T, max_range_m=max_range_m, color=False, device=device)
        d = r.depth64.detach().cpu().clone()
        if stride > 1:
            keep = torch.zeros_like(d, dtype=torch.bool)
            keep[::stride, ::stride] = True
            d[~keep] = 0.0
        out.append(backproject_depth(d, camera, T))
    return np.concatenate(out) if out else np.zeros((0, 3))


def gt_occupancy_grid(scene: Scene, resolution_m: float, min_height_m: float,
                      max_height_m: float,
                      bounds: tuple[float, float, float, float] | None = None, *,
                      subsamples: int = 3) -> OccupancyGrid2D:
    """Ground-truth 2D occupancy of a height band.

    A cell is occupied if the solid (scene sdf < 0) reaches into its column between
    ``min_height_m`` and ``max_height_m`` at any of ``subsamples x subsamples`` cell-centred
    positions (odd counts include the centre). The vertical test is exact, not sampled: every
    primitive reports the open z interval of its solid above a map point, and the room's solid
    is everything outside its walls plus z < 0 and z > height (keep ``min_height_m > 0`` or
    the floor fills every cell).

    Args:
        scene: the scene.
        resolution_m: cell size, metres.
        min_height_m, max_height_m: the z band, metres.
        bounds: ``(x_min, y_min, x_max, y_max)``; default: the room padded by 2 cells.
        subsamples: positions per cell edge.

    Returns:
        :class:`OccupancyGrid2D` with cells 0 (free) or 100 (occupied), row 0 at ``y_min``.
    """
    if not (math.isfinite(resolution_m) and resolution_m > 0):
        raise ConfigError(f"resolution_m must be > 0, got {resolution_m}")
    if not max_height_m >= min_height_m:
        raise ConfigError(f"need max_height_m >= min_height_m, got {min_height_m}, {max_height_m}")
    if subsamples < 1:
        raise ConfigError(f"subsamples must be >= 1, got {subsamples}")
    if bounds is None:
        lo, hi = scene.room.bounds
        pad = 2 * resolution_m
        bounds = (lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + pad)
    x0, y0, x1, y1 = (float(v) for v in bounds)
    if not (x1 > x0 and y1 > y0):
        raise ConfigError(f"bounds must be (x_min, y_min, x_max, y_max) with max > min: {bounds}")
    w = max(1, int(math.ceil((x1 - x0) / resolution_m - 1e-9)))
    h = max(1, int(math.ceil((y1 - y0) / resolution_m - 1e-9)))
    sub = (np.arange(subsamples) + 0.5) / subsamples
    xs = x0 + (np.arange(w)[:, None] + sub[None, :]).reshape(-1) * resolution_m  # (w*s,)
    ys = y0 + (np.arange(h)[:, None] + sub[None, :]).reshape(-1) * resolution_m  # (h*s,)
    Y, X = np.meshgrid(ys, xs, indexing="ij")
    a, b = float(min_height_m), float(max_height_m)
    rlo, rhi = scene.room.bounds
    inside_room = (X > rlo[0]) & (X < rhi[0]) & (Y > rlo[1]) & (Y < rhi[1])
    solid = ~inside_room | (a < rlo[2]) | (b > rhi[2])
    for obj in scene.objects:
        zlo, zhi = obj.column_interval(X, Y)
        solid |= (zlo < b) & (zhi > a)
    occ = solid.reshape(h, subsamples, w, subsamples).any(axis=(1, 3))
    data = np.where(occ, OCCUPIED, FREE).astype(np.int8)
    return OccupancyGrid2D(data=data, resolution_m=float(resolution_m), origin_xy=(x0, y0),
                           min_height_m=float(min_height_m), max_height_m=float(max_height_m))
