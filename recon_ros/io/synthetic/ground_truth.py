"""Exact ground truth of synthetic scenes: surface samples, observed surface, 2D occupancy,
and for dynamic scenes the surface and footprint of objects that appear or disappear."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from ...core.errors import ConfigError
from ...core.frame import Frame, PinholeCamera
from ...core.occupancy_grid import FREE, OCCUPIED, OccupancyGrid2D
from .noise import SeedLike, as_generator
from .dynamic import DynamicObject, DynamicScene, frame_scene
from .render import backproject_depth, camera_rays, cast_camera_rays, render
from .scene import Scene
from .shapes import Shape, Solid
from .trajectory import Trajectory

Poses = Trajectory | Sequence[np.ndarray | Frame]

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
    pts, idx = _sample_outside_others(scene.parts, list(range(len(scene.parts))), n,
                                      as_generator(seed), tol_m, _region(region))
    return (pts, idx) if return_parts else pts


def exposed_surface_points(scene: Scene, shapes: Sequence[Shape], n: int, seed: SeedLike = 0,
                           tol_m: float = 0.01) -> np.ndarray:
    """Points uniformly distributed by area on the *exposed* surface of some parts of a scene.

    ``shapes`` (e.g. the top and legs of a table) must be parts of ``scene`` (the very
    objects, compared by identity). Their surfaces are sampled by area and a sample is kept
    only if it lies farther than ``tol_m`` outside every other part of the scene, the other
    ``shapes`` included: faces on the floor, leg ends under a table top and the top's
    underside where the legs meet it are not exposed.

    Args:
        scene: the scene holding the shapes.
        shapes: the parts to sample.
        n: number of points.
        seed: Generator or int seed.
        tol_m: contact tolerance, metres.

    Returns:
        (n, 3) float64 world points exactly on the shapes' surfaces.
    """
    parts = scene.parts
    chosen = [i for i, p in enumerate(parts) if any(p is s for s in shapes)]
    if not shapes or len(chosen) != len(shapes):
        raise ConfigError("exposed_surface_points: shapes must be one or more parts of the scene")
    return _sample_outside_others(parts, chosen, n, as_generator(seed), tol_m, None)[0]


def _sample_outside_others(parts: Sequence[Shape], chosen: Sequence[int], n: int,
                           g: np.random.Generator, tol_m: float,
                           reg: tuple[np.ndarray, np.ndarray] | None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Rejection sampling behind :func:`sample_surface_points` and
    :func:`exposed_surface_points`: (n, 3) points uniform by area on the surfaces of
    ``parts[chosen]`` that lie more than ``tol_m`` outside every other part (and inside the
    region ``reg``), and their (n,) int64 indices into ``parts``."""
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    sampled = [parts[i] for i in chosen]
    areas = np.array([s.area() for s in sampled])
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
        pts = np.concatenate([s.sample_surface(int(c), g) for s, c in zip(sampled, counts)])
        idx = np.repeat(np.asarray(chosen, dtype=np.int64), counts)
        perm = g.permutation(m)
        pts, idx = pts[perm], idx[perm]
        tp = torch.from_numpy(pts)
        psdf = torch.stack([s.sdf(tp) for s in parts], dim=1).numpy()
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
    return pts, idx.astype(np.int64)


def _pose_matrices(poses: Poses) -> list[np.ndarray]:
    """(4, 4) float64 ``T_world_cam`` of a Trajectory, of Frames, or of matrices."""
    if isinstance(poses, Trajectory):
        return list(poses.poses)
    return [np.asarray(T.T_world_cam if isinstance(T, Frame) else T, dtype=np.float64)
            for T in poses]


def visible_surface_points(scene: Scene, poses: Poses,
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
    out = []
    for T in _pose_matrices(poses):
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
    _check_band(resolution_m, min_height_m, max_height_m)
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
    X, Y = _cell_subsamples(x0, y0, w, h, resolution_m, subsamples)
    a, b = float(min_height_m), float(max_height_m)
    rlo, rhi = scene.room.bounds
    inside_room = (X > rlo[0]) & (X < rhi[0]) & (Y > rlo[1]) & (Y < rhi[1])
    solid = ~inside_room | (a < rlo[2]) | (b > rhi[2]) | _band_hits(scene.objects, X, Y, a, b)
    occ = _any_per_cell(solid, h, w, subsamples)
    data = np.where(occ, OCCUPIED, FREE).astype(np.int8)
    return OccupancyGrid2D(data=data, resolution_m=float(resolution_m), origin_xy=(x0, y0),
                           min_height_m=float(min_height_m), max_height_m=float(max_height_m))


def _check_band(resolution_m: float, min_height_m: float, max_height_m: float) -> None:
    if not (math.isfinite(resolution_m) and resolution_m > 0):
        raise ConfigError(f"resolution_m must be > 0, got {resolution_m}")
    if not max_height_m >= min_height_m:
        raise ConfigError(f"need max_height_m >= min_height_m, got {min_height_m}, {max_height_m}")


def _cell_subsamples(x0: float, y0: float, w: int, h: int, resolution_m: float,
                     subsamples: int) -> tuple[np.ndarray, np.ndarray]:
    """(h*s, w*s) map x and y of ``s x s`` cell-centred positions in each of ``h x w`` cells of
    edge ``resolution_m`` whose outer corner is ``(x0, y0)`` (``s = subsamples``)."""
    sub = (np.arange(subsamples) + 0.5) / subsamples
    xs = x0 + (np.arange(w)[:, None] + sub[None, :]).reshape(-1) * resolution_m  # (w*s,)
    ys = y0 + (np.arange(h)[:, None] + sub[None, :]).reshape(-1) * resolution_m  # (h*s,)
    Y, X = np.meshgrid(ys, xs, indexing="ij")
    return X, Y


def _any_per_cell(mask: np.ndarray, h: int, w: int, subsamples: int) -> np.ndarray:
    """(h*s, w*s) per-position flags -> (h, w): any position of the cell."""
    return mask.reshape(h, subsamples, w, subsamples).any(axis=(1, 3))


def _band_hits(solids: Iterable[Shape], X: np.ndarray, Y: np.ndarray, a: float, b: float
               ) -> np.ndarray:
    """Whether some solid fills the vertical line above each map point within ``(a, b)``
    (exact in z: :meth:`~.shapes.Solid.column_interval`)."""
    hit = np.zeros(X.shape, dtype=bool)
    for s in solids:
        if not isinstance(s, Solid):
            raise ConfigError(f"expected a Sphere, Box or Cylinder, got {type(s).__name__}")
        zlo, zhi = s.column_interval(X, Y)
        hit |= (zlo < b) & (zhi > a)
    return hit


def footprint_cells(shapes: Sequence[Solid], resolution_m: float, min_height_m: float,
                    max_height_m: float, *, subsamples: int = 8) -> np.ndarray:
    """The 2D grid cells whose column meets the solids within a height band.

    Cells follow the mapper's convention (:mod:`recon_ros.core.occupancy`): cell ``(ix, iy)``
    is the square of edge ``resolution_m`` centred on ``(ix, iy) * resolution_m`` in the map
    frame (``iy`` is the grid row, ``ix`` the column). A cell belongs to the footprint when a
    solid fills the vertical line above one of ``subsamples x subsamples`` cell-centred
    positions between ``min_height_m`` and ``max_height_m`` (exact in z; in x and y exact up
    to slivers thinner than ``resolution_m / subsamples``).

    Args:
        shapes: the solids (e.g. every part of the removed objects).
        resolution_m: cell edge, metres.
        min_height_m, max_height_m: the z band, metres (map frame).
        subsamples: positions per cell edge.

    Returns:
        (K, 2) int64 ``(ix, iy)`` cells, sorted by ``iy`` then ``ix``; their centres are
        ``cells * resolution_m``.
    """
    _check_band(resolution_m, min_height_m, max_height_m)
    if subsamples < 1:
        raise ConfigError(f"subsamples must be >= 1, got {subsamples}")
    if not shapes:
        return np.zeros((0, 2), dtype=np.int64)
    lo = np.min([s.aabb()[0][:2] for s in shapes], axis=0)
    hi = np.max([s.aabb()[1][:2] for s in shapes], axis=0)
    first = np.floor(lo / resolution_m + 0.5).astype(np.int64)  # cells holding the corners
    last = np.floor(hi / resolution_m + 0.5).astype(np.int64)
    w, h = (last - first + 1).tolist()
    X, Y = _cell_subsamples((first[0] - 0.5) * resolution_m, (first[1] - 0.5) * resolution_m,
                            w, h, resolution_m, subsamples)
    hit = _band_hits(shapes, X, Y, float(min_height_m), float(max_height_m))
    rows, cols = np.nonzero(_any_per_cell(hit, h, w, subsamples))
    return np.stack((cols + first[0], rows + first[1]), axis=1).astype(np.int64)


def visible_mask(points: np.ndarray, views: Iterable[tuple[Scene, np.ndarray]],
                 camera: PinholeCamera, *, max_range_m: float | None = None,
                 rel_tol: float = 1e-6) -> np.ndarray:
    """Which surface points at least one view sees.

    A point is seen from a view ``(scene, T_world_cam)`` when it projects into the image
    (inside the pixels' footprint, ``-0.5 <= u < W - 0.5``, same for v), its z-depth is in
    ``(0, max_range_m]``, and the ray from the optical centre towards it first meets the
    view's scene at the point itself (ray parameter ``>= 1 - rel_tol`` with the point at 1):
    nothing, not even the point's own solid, is in front of it.

    Args:
        points: (N, 3) world points on the surface, metres.
        views: ``(scene, (4, 4) T_world_cam)`` pairs; each view is cast against its scene.
        camera: intrinsics.
        max_range_m: farthest measured z-depth (None = no limit).
        rel_tol: see above.

    Returns:
        (N,) bool.
    """
    p = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(-1, 3))
    seen = torch.zeros(len(p), dtype=torch.bool)
    for scene, T_world_cam in views:
        todo = torch.nonzero(~seen, as_tuple=True)[0]
        if len(todo) == 0:
            break
        T = torch.as_tensor(np.asarray(T_world_cam, dtype=np.float64))
        q = p[todo]
        pc = (q - T[:3, 3]) @ T[:3, :3]  # camera frame: R^T (q - t)
        z = pc[:, 2]
        u = camera.fx * pc[:, 0] / z + camera.cx
        v = camera.fy * pc[:, 1] / z + camera.cy
        inside = ((z > 0) & (u >= -0.5) & (u < camera.width - 0.5) & (v >= -0.5)
                  & (v < camera.height - 0.5))
        if max_range_m is not None:
            inside &= z <= max_range_m
        todo, q = todo[inside], q[inside]
        t_hit, _ = scene.intersect(T[None, :3, 3], q - T[:3, 3])
        seen[todo[t_hit >= 1.0 - rel_tol]] = True
    return seen.numpy()


def _frames_where(obj: DynamicObject, n_frames: int, present: bool) -> list[int]:
    return [i for i in range(n_frames) if obj.present_at(i) == present]


def change_surface_points(scene: DynamicScene, obj: DynamicObject, camera: PinholeCamera,
                          poses: Poses, n: int, seed: SeedLike = 0, *, tol_m: float = 0.01,
                          margin_m: float = 0.1, max_range_m: float | None = None
                          ) -> np.ndarray:
    """Ground-truth surface of an object that appears or disappears during a sequence.

    The points are the object's exposed surface (:func:`exposed_surface_points`, ``n`` drawn
    in the first frame where it stands) that

    - a camera saw (:func:`visible_mask`) in a frame where the object stands, and
    - lie farther than ``margin_m`` from every surface of the scene in the frames where the
      object is absent (e.g. its sides' lowest ``margin_m`` above the floor are dropped), so
      a map that correctly lacks (or has) the object has no other surface that close.

    Args:
        scene: the dynamic scene; ``obj`` must be one of its dynamic objects.
        obj: the object.
        camera: intrinsics.
        poses: frame ``i`` is seen from ``poses[i]`` (Trajectory, Frames or (4, 4) matrices).
        n: points drawn before the two filters.
        seed: Generator or int seed.
        tol_m: contact tolerance of :func:`exposed_surface_points`, metres.
        margin_m: see above, metres.
        max_range_m: farthest measured z-depth.

    Returns:
        (M, 3) float64 world points, M <= n.
    """
    if not any(o is obj for o in scene.dynamic_objects):
        raise ConfigError(f"{obj.name!r} is not a dynamic object of the scene")
    mats = _pose_matrices(poses)
    present = _frames_where(obj, len(mats), True)
    if not present:
        raise ConfigError(f"{obj.name!r} is present in none of the {len(mats)} frames")
    pts = exposed_surface_points(scene.scene_at(present[0]), obj.shapes, n, seed, tol_m)
    pts = pts[visible_mask(pts, ((scene.scene_at(i), mats[i]) for i in present), camera,
                           max_range_m=max_range_m)]
    absent_states = {tuple(o.name for o in scene.present(i)): i
                     for i in _frames_where(obj, len(mats), False)}
    for i in absent_states.values():
        pts = pts[scene.scene_at(i).sdf_np(pts) > margin_m]
    return pts


def seen_free_cells(cells: np.ndarray, scene: Scene | DynamicScene, camera: PinholeCamera,
                    poses: Poses, resolution_m: float, min_height_m: float,
                    free_below_m: float, *, frames: Iterable[int] | None = None,
                    stride_px: int = 4, max_range_m: float | None = None,
                    step_fraction: float = 0.25) -> np.ndarray:
    """Which 2D cells the cameras saw free low in the height band.

    A cell counts when a camera ray of one of ``frames`` (pixels on a ``stride_px`` grid, cast
    exactly against that frame's scene, :func:`~.dynamic.frame_scene`) crosses the cell's
    column at a height in ``[min_height_m, free_below_m]`` before its first hit, and that hit
    is measured (z-depth <= ``max_range_m``). This is what a mapper's free-space carving can
    see (:mod:`recon_ros.core.occupancy`, ``free_below_m``). Rays are sampled every
    ``step_fraction * resolution_m`` of horizontal travel.

    Args:
        cells: (K, 2) int64 ``(ix, iy)`` cells centred on ``(ix, iy) * resolution_m``
            (as :func:`footprint_cells` returns).
        scene: the scene (dynamic or static).
        camera: intrinsics.
        poses: frame ``i`` is seen from ``poses[i]``.
        resolution_m: cell edge, metres.
        min_height_m, free_below_m: the z range of the free-space evidence, metres.
        frames: frame indices to use (default: all).
        stride_px: pixel stride of the rays along both image axes.
        max_range_m: farthest measured z-depth (None = no limit).
        step_fraction: ray sampling step in cells.

    Returns:
        (K,) bool.
    """
    _check_band(resolution_m, min_height_m, free_below_m)
    if stride_px < 1 or not 0 < step_fraction <= 1:
        raise ConfigError(f"need stride_px >= 1 and 0 < step_fraction <= 1, got {stride_px}, "
                          f"{step_fraction}")
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    mats = _pose_matrices(poses)
    seen = np.zeros(len(cells), dtype=bool)
    if len(cells) == 0:
        return seen
    box = (cells.min(0) - 0.5) * resolution_m, (cells.max(0) + 0.5) * resolution_m
    for i in range(len(mats)) if frames is None else frames:
        segments = _band_segments(frame_scene(scene, i), camera, mats[i], min_height_m,
                                  free_below_m, stride_px, max_range_m, box)
        seen |= _cells_crossed(cells, *segments, resolution_m * step_fraction, resolution_m)
    return seen


def _band_segments(scene: Scene, camera: PinholeCamera, T_world_cam: np.ndarray,
                   z_lo: float, z_hi: float, stride_px: int, max_range_m: float | None,
                   box: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The parts of one view's strided pixel rays that lie between the camera and their first
    hit, at heights in ``[z_lo, z_hi]``, keeping only those whose plan-view bounding box meets
    ``box = (lo (2,), hi (2,))``.

    Returns:
        ``(start (N, 3), end (N, 3))`` world points of the N segments.
    """
    o, d = camera_rays(camera, T_world_cam)
    t, _ = cast_camera_rays(scene, camera, T_world_cam)
    pick = torch.zeros(camera.height, camera.width, dtype=torch.bool)
    pick[::stride_px, ::stride_px] = True
    o = o.numpy()[0]
    d = d[pick.reshape(-1)].numpy()
    t = t[pick].numpy()
    ok = np.isfinite(t)
    if max_range_m is not None:
        ok &= t <= max_range_m
    with np.errstate(divide="ignore", invalid="ignore"):
        s_a, s_b = (z_lo - o[2]) / d[:, 2], (z_hi - o[2]) / d[:, 2]
    flat = d[:, 2] == 0  # horizontal rays: inside the band all along, or never
    inside = z_lo <= o[2] <= z_hi
    s0 = np.where(flat, 0.0 if inside else np.inf, np.maximum(np.minimum(s_a, s_b), 0.0))
    s1 = np.where(flat, t if inside else -np.inf, np.minimum(np.maximum(s_a, s_b), t))
    ok &= s1 > s0
    start, end = o + s0[:, None] * d, o + np.where(ok, s1, s0)[:, None] * d
    lo, hi = np.minimum(start, end)[:, :2], np.maximum(start, end)[:, :2]
    ok &= np.all((hi >= box[0]) & (lo <= box[1]), axis=1)
    return start[ok], end[ok]


def _cells_crossed(cells: np.ndarray, start: np.ndarray, end: np.ndarray, step_m: float,
                   resolution_m: float) -> np.ndarray:
    """(K,) bool: which ``cells`` the segments ``start -> end`` (sampled every ``step_m`` of
    horizontal travel, both ends included) pass over."""
    if len(start) == 0:
        return np.zeros(len(cells), dtype=bool)
    length = np.linalg.norm((end - start)[:, :2], axis=1)
    n = int(np.ceil(length.max() / step_m)) + 1
    f = np.minimum(np.arange(n + 1)[None, :] * (step_m / np.maximum(length, 1e-12))[:, None], 1.0)
    xy = start[:, None, :2] + f[:, :, None] * (end - start)[:, None, :2]  # (N, n + 1, 2)
    crossed = np.floor(xy.reshape(-1, 2) / resolution_m + 0.5).astype(np.int64)
    return np.isin(_cell_keys(cells), _cell_keys(crossed))


def _cell_keys(cells: np.ndarray) -> np.ndarray:
    """(N, 2) int64 cells -> (N,) int64 keys, unique for |ix|, |iy| < 2**31."""
    return (cells[:, 0] << 32) + (cells[:, 1] & 0xFFFFFFFF)


@dataclass
class ChangeGroundTruth:
    """Ground truth of the objects that a dynamic sequence removes or adds.

    Attributes:
        removed_surface: (N, 3) float64 points on the removed objects
            (:func:`change_surface_points`), map frame, metres.
        added_surface: (M, 3) points on the added objects.
        removed_footprint_xy: (K, 2) centres of the removed objects' footprint cells
            (:func:`footprint_cells`), metres.
        removed_footprint_seen_free_xy: (J, 2) centres of those of them seen free after the
            removal (:func:`seen_free_cells`).
    """

    removed_surface: np.ndarray
    added_surface: np.ndarray
    removed_footprint_xy: np.ndarray
    removed_footprint_seen_free_xy: np.ndarray


def change_ground_truth(scene: DynamicScene, camera: PinholeCamera, poses: Poses, *,
                        resolution_m: float, min_height_m: float, max_height_m: float,
                        free_below_m: float, n_points: int = 20_000, seed: int = 0,
                        margin_m: float = 0.1, stride_px: int = 4,
                        max_range_m: float | None = None) -> ChangeGroundTruth:
    """Everything :func:`recon_ros.evaluation.dynamic_metrics` needs about the changes.

    Removed objects stand in the first frame and not in the last; added objects the reverse.
    Footprint cells are seen free in the frames after the last removal.

    Args:
        scene: the dynamic scene.
        camera: intrinsics.
        poses: frame ``i`` is seen from ``poses[i]``.
        resolution_m, min_height_m, max_height_m: the 2D grid (cells centred on multiples of
            ``resolution_m``) and its height band, metres.
        free_below_m: free space counts only below this height (:func:`seen_free_cells`).
        n_points: surface points drawn per object (:func:`change_surface_points`).
        seed: object ``k`` of ``scene.dynamic_objects`` draws with ``default_rng([seed, k])``.
        margin_m: see :func:`change_surface_points`.
        stride_px: pixel stride of the free-space rays.
        max_range_m: farthest measured z-depth.
    """
    mats = _pose_matrices(poses)
    n = len(mats)
    removed, added = scene.removed(0, n - 1), scene.added(0, n - 1)
    index = {o.name: k for k, o in enumerate(scene.dynamic_objects)}

    def surface(objects: list[DynamicObject]) -> np.ndarray:
        pts = [change_surface_points(scene, o, camera, mats, n_points,
                                     np.random.default_rng([seed, index[o.name]]),
                                     margin_m=margin_m, max_range_m=max_range_m)
               for o in objects]
        return np.concatenate(pts) if pts else np.zeros((0, 3))

    cells = footprint_cells([s for o in removed for s in o.shapes], resolution_m, min_height_m,
                            max_height_m)
    after = max((o.last_frame for o in removed if o.last_frame is not None), default=n)
    seen = seen_free_cells(cells, scene, camera, mats, resolution_m, min_height_m,
                           free_below_m, frames=range(after, n), stride_px=stride_px,
                           max_range_m=max_range_m)
    centres = cells * resolution_m
    return ChangeGroundTruth(surface(removed), surface(added), centres, centres[seen])
