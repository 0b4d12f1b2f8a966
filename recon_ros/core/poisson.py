"""Screened Poisson meshing of a TSDF map: a second mesher for clean, closed exports.

Pipeline (all geometry in the map frame, metres):

1. :func:`surface_points`: an oriented point cloud from the TSDF. One point per grid edge
   between two observed neighbouring voxels whose TSDF changes sign (linear interpolation of
   the crossing, the same edges and saturation rule as marching cubes); its normal is the TSDF
   gradient at the crossing (towards free space, positive TSDF); its confidence the
   interpolated weight of the two voxels.
2. Open3D's screened Poisson reconstruction (Kazhdan & Hoppe 2013) of those points, at an
   octree depth whose finest cell is no larger than a voxel unless set.
3. Trimming: vertices whose Poisson density (how many samples support them) is in the lowest
   ``density_quantile`` go (off by default), and so do vertices outside observed space or
   farther than ``crop_distance_voxels`` from the TSDF's zero level (read back from the
   volume, trilinear): Poisson closes every surface, so without this it invents a "bubble"
   around everything that was not seen (behind walls, under the floor). Triangles lose any
   removed vertex.
4. Vertex colors from the volume's color (trilinear over the observed voxels).

Confidence: Open3D 0.20's Poisson normalises every input normal (its ``ProcessData`` divides
by the length; the upstream ``--confidence`` options are compiled out), so a per-point weight
cannot enter the solve through the normals' length. :func:`surface_points` still returns the
confidence; :func:`poisson_mesh` relies on ``min_weight`` (points are only made between voxels
that have it) and on the density and observed-space trimming instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import ConfigError
from .marching_cubes import saturation_threshold
from .mesh import TriangleMesh
from .volume import BlockVolume

#: A crossing whose TSDF gradient is shorter than this (metres per metre; a distance field has
#: gradient norm 1) has no usable normal: opposite surfaces or averaging cancelled it.
MIN_GRADIENT_NORM = 0.1
#: A mesh vertex is in observed space when observed voxels carry at least this share of its
#: trilinear interpolation weight.
MIN_OBSERVED_SHARE = 0.5
#: Smallest octree depth chosen automatically.
MIN_AUTO_DEPTH = 4
_SECTION = "poisson"


def _require(cond: bool, name: str, reason: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{_SECTION}.{name}={value!r} is invalid: {reason}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class PoissonConfig:
    """Options of :func:`poisson_mesh`.

    Attributes:
        depth: octree depth of the Poisson solve (the finest grid is ``2**depth`` cells across
            ``scale`` times the points' bounding cube); 0 picks the smallest depth whose finest
            cell is at most one voxel, capped at ``max_depth``.
        max_depth: upper bound of the automatic depth (memory and time grow ~4x per level).
        scale: ratio of the solve cube's edge to the points' bounding cube edge.
        point_weight: screening weight (interpolation of the points against smoothness;
            0 = unscreened Poisson).
        samples_per_node: minimum samples per octree node (more smooths noisy points).
        linear_fit: place iso-vertices by linear interpolation instead of the solver's fit.
        density_quantile: fraction of vertices with the lowest Poisson density removed, in
            [0, 1). Off by default: a closed, uniformly sampled surface has no low-density
            region, so any positive quantile punches holes into it; the bubble Poisson
            invents beyond observed space is removed by the crop instead.
        crop_distance_voxels: vertices farther than this many voxels from the TSDF's zero level
            (interpolated TSDF magnitude) are removed; at or beyond the truncation nothing in
            observed space is removed by distance.
        n_threads: threads of the Poisson solve; 0 = ``torch.get_num_threads()``. Default 1:
            Open3D's multi-threaded solve segfaults now and then (a race in its PoissonRecon,
            isl-org/Open3D#6828; seen in this project's CI with 2 threads on 2026-11-29), and
            a segfault kills the process: a node loses what it mapped since its last save.
            Raise it only where a crash costs a rerun, e.g. an offline replay.
        batch_blocks: blocks read per batch by :func:`surface_points` (bounds memory).
    """

    depth: int = 0
    max_depth: int = 11
    scale: float = 1.1
    point_weight: float = 4.0
    samples_per_node: float = 1.5
    linear_fit: bool = False
    density_quantile: float = 0.0
    crop_distance_voxels: float = 1.5
    n_threads: int = 1
    batch_blocks: int = 1024

    def __post_init__(self) -> None:
        _require(_is_int(self.depth) and (self.depth == 0 or 2 <= self.depth <= 16), "depth",
                 "must be 0 (automatic) or an integer in [2, 16]", self.depth)
        _require(_is_int(self.max_depth) and MIN_AUTO_DEPTH <= self.max_depth <= 16,
                 "max_depth", f"must be an integer in [{MIN_AUTO_DEPTH}, 16]", self.max_depth)
        _require(math.isfinite(self.scale) and self.scale >= 1.0, "scale",
                 "must be a finite number >= 1", self.scale)
        _require(math.isfinite(self.point_weight) and self.point_weight >= 0, "point_weight",
                 "must be a finite number >= 0", self.point_weight)
        _require(math.isfinite(self.samples_per_node) and self.samples_per_node >= 1,
                 "samples_per_node", "must be a finite number >= 1", self.samples_per_node)
        _require(isinstance(self.linear_fit, bool), "linear_fit", "must be a bool",
                 self.linear_fit)
        _require(0.0 <= self.density_quantile < 1.0, "density_quantile", "must be in [0, 1)",
                 self.density_quantile)
        _require(math.isfinite(self.crop_distance_voxels) and self.crop_distance_voxels > 0,
                 "crop_distance_voxels", "must be a finite number > 0",
                 self.crop_distance_voxels)
        _require(_is_int(self.n_threads) and self.n_threads >= 0, "n_threads",
                 "must be an integer >= 0", self.n_threads)
        _require(_is_int(self.batch_blocks) and self.batch_blocks >= 1, "batch_blocks",
                 "must be an integer >= 1", self.batch_blocks)


# ---------------------------------------------------------------------- surface points
def _halo_window(block_size: int, shift: tuple[int, int, int]) -> tuple[slice, ...]:
    """Index of the (S, B, B, B) window of an (S, B+2, B+2, B+2) halo grid holding the
    samples ``own voxel + shift`` (shift components in {-1, 0, 1})."""
    return (slice(None), *(slice(1 + s, 1 + s + block_size) for s in shift))


def _unit(axis: int, sign: int = 1) -> tuple[int, int, int]:
    e = [0, 0, 0]
    e[axis] = sign
    return e[0], e[1], e[2]


def _add(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def _block_crossings(volume: BlockVolume, slots: torch.Tensor, min_weight: float,
                     saturated: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Oriented zero crossings on the grid edges owned by the blocks at (S,) ``slots``: the
    edges from each of their voxels to its +x, +y, +z neighbour (read through the halo)."""
    B, H, v = volume.block_size, volume.block_size + 2, volume.voxel_size_m
    flat = volume.halo_flat_index(slots)  # (S, H^3)
    present = flat >= 0
    safe = flat.clamp(min=0)
    tsdf = volume.tsdf.reshape(-1)[safe].to(torch.float32).reshape(-1, H, H, H)
    weight = torch.where(present, volume.weight.reshape(-1)[safe].to(torch.float32), 0.0)
    observed = (weight >= min_weight).reshape(-1, H, H, H)
    weight = weight.reshape(-1, H, H, H)
    origin = volume.slot_coords(slots) * B  # (S, 3) global index of each block's voxel 0
    points, normals, confidence = [], [], []
    own = _halo_window(B, (0, 0, 0))
    for a in range(3):
        ea = _unit(a)
        up = _halo_window(B, ea)
        t0, t1 = tsdf[own], tsdf[up]
        ok = observed[own] & observed[up] & ((t0 < 0) != (t1 < 0))
        # Two saturated values of opposite sign: a jump between two surfaces, no crossing.
        ok &= ~(((t0 >= saturated) & (t1 <= -saturated))
                | ((t0 <= -saturated) & (t1 >= saturated)))
        # Central differences across the edge's two voxels in the two other axes.
        tangential = []
        for b in (b for b in range(3) if b != a):
            windows = [_halo_window(B, _add(base, _unit(b, sign)))
                       for base in ((0, 0, 0), ea) for sign in (1, -1)]
            for w in windows:
                ok &= observed[w]
            tangential.append(((tsdf[windows[0]] - tsdf[windows[1]]) / (2 * v),
                               (tsdf[windows[2]] - tsdf[windows[3]]) / (2 * v)))
        blk, x, y, z = torch.nonzero(ok, as_tuple=True)
        t0, t1 = t0[blk, x, y, z], t1[blk, x, y, z]
        s = t0 / (t0 - t1)  # signs differ, so the denominator is not 0
        grad = torch.empty((s.numel(), 3), dtype=torch.float32, device=volume.device)
        grad[:, a] = (t1 - t0) / v
        for b, (g0, g1) in zip((b for b in range(3) if b != a), tangential):
            g0, g1 = g0[blk, x, y, z], g1[blk, x, y, z]
            grad[:, b] = g0 + s * (g1 - g0)
        local = torch.stack((x, y, z), 1)
        pos = (origin[blk] + local).to(torch.float32)
        pos[:, a] += s
        w0, w1 = weight[own][blk, x, y, z], weight[up][blk, x, y, z]
        points.append(pos * v)
        normals.append(grad)
        confidence.append(w0 + s * (w1 - w0))
    grad = torch.cat(normals)
    norm = grad.norm(dim=1)
    good = norm >= MIN_GRADIENT_NORM
    return (torch.cat(points)[good], grad[good] / norm[good, None],
            torch.cat(confidence)[good])


def surface_points(volume: BlockVolume, min_weight: float, batch_blocks: int = 1024
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Oriented points on the TSDF's zero level.

    A point lies on each grid edge (x, y or z) between two voxels with at least ``min_weight``
    whose TSDF changes sign, unless both are saturated (see
    :func:`~recon_ros.core.marching_cubes.saturation_threshold`); it is placed by linear
    interpolation, so it coincides with the marching-cubes vertex of that edge. Its normal is
    the TSDF gradient at the crossing: the forward difference along the edge and, across it,
    central differences at both voxels interpolated like the position (all in the block's
    one-voxel halo). Edges whose difference stencil touches an unobserved voxel, and crossings
    with a gradient shorter than :data:`MIN_GRADIENT_NORM`, are dropped.

    Args:
        volume: the map.
        min_weight: voxels with less weight count as unobserved.
        batch_blocks: blocks read per batch (bounds temporary memory).

    Returns:
        ``(points (P, 3) float32 metres map frame, normals (P, 3) float32 unit, towards
        positive TSDF (free space), confidence (P,) float32)``, on the volume's device;
        confidence is the weight of the two voxels interpolated at the crossing.
    """
    saturated = saturation_threshold(volume)
    slots = torch.arange(volume.num_blocks, device=volume.device)
    parts = [_block_crossings(volume, slots[i:i + batch_blocks], min_weight, saturated)
             for i in range(0, slots.numel(), batch_blocks)]
    if not parts:
        empty = torch.empty((0, 3), dtype=torch.float32, device=volume.device)
        return empty, empty.clone(), empty[:, 0].clone()
    p, n, c = zip(*parts)
    return torch.cat(p), torch.cat(n), torch.cat(c)


# ---------------------------------------------------------------------- volume queries
@dataclass
class VolumeSample:
    """The volume read at points by :func:`sample_volume` (tensors on the volume's device).

    Attributes:
        tsdf: (N,) float32 metres, trilinear over the observed corner voxels (0 where none).
        observed_share: (N,) float32 in [0, 1], the trilinear weight of the observed corners.
        color: (N, 3) float32 RGB in [0, 255], interpolated like ``tsdf``.
    """

    tsdf: torch.Tensor
    observed_share: torch.Tensor
    color: torch.Tensor


def sample_volume(volume: BlockVolume, points: torch.Tensor, min_weight: float
                  ) -> VolumeSample:
    """Read TSDF and color at (N, 3) map-frame points (metres) from the 8 surrounding voxel
    centres, using only the corners with at least ``min_weight``."""
    B, v = volume.block_size, volume.voxel_size_m
    p = points.to(volume.device, torch.float32) / v
    i0 = torch.floor(p)
    f = p - i0  # (N, 3) in [0, 1)
    r = torch.arange(2, device=volume.device)
    corner = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(8, 3)
    vox = i0.to(torch.int64)[:, None, :] + corner[None]  # (N, 8, 3)
    block = torch.div(vox, B, rounding_mode="floor")
    local = vox - block * B
    slot = volume.find(block.reshape(-1, 3)).reshape(-1, 8)
    flat = (slot.clamp(min=0) * volume.voxels_per_block
            + (local[..., 0] * B + local[..., 1]) * B + local[..., 2])
    weight = torch.where(slot >= 0, volume.weight.reshape(-1)[flat].to(torch.float32), 0.0)
    cf = corner.to(torch.float32)
    tri = torch.where(cf[None] > 0, f[:, None, :], 1 - f[:, None, :]).prod(dim=2)  # (N, 8)
    tri = torch.where(weight >= min_weight, tri, 0.0)
    share = tri.sum(dim=1)
    norm = tri / share.clamp(min=1e-12)[:, None]
    tsdf = (norm * volume.tsdf.reshape(-1)[flat].to(torch.float32)).sum(dim=1)
    color = (norm[..., None] * volume.color.reshape(-1, 3)[flat].to(torch.float32)).sum(dim=1)
    return VolumeSample(tsdf, share, color)


# ---------------------------------------------------------------------- Poisson
def auto_depth(points: np.ndarray, voxel_size_m: float, config: PoissonConfig) -> int:
    """Octree depth whose finest cell (``scale`` x the points' bounding cube edge over
    ``2**depth``) is at most one voxel, within ``[MIN_AUTO_DEPTH, config.max_depth]``."""
    extent = float((points.max(axis=0) - points.min(axis=0)).max()) * config.scale
    depth = math.ceil(math.log2(max(extent / voxel_size_m, 1.0)))
    return int(min(max(depth, MIN_AUTO_DEPTH), config.max_depth))


def to_open3d(mesh: TriangleMesh) -> Any:
    """An ``open3d.geometry.TriangleMesh`` (legacy) with the mesh's vertices and faces."""
    import open3d as o3d

    return o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(mesh.vertices.astype(np.float64)),
        o3d.utility.Vector3iVector(mesh.faces.astype(np.int32)))


def is_watertight(mesh: TriangleMesh) -> bool:
    """Open3D's test: closed (every edge in exactly two faces), edge- and vertex-manifold and
    not self-intersecting. False for a mesh without faces."""
    return mesh.num_faces > 0 and bool(to_open3d(mesh).is_watertight())


def poisson_mesh(volume: BlockVolume, min_weight: float,
                 config: PoissonConfig | None = None, with_colors: bool = True
                 ) -> TriangleMesh:
    """Screened Poisson mesh of the TSDF's zero level, trimmed to observed space.

    Args:
        volume: the map (any device; the solve runs on the CPU through Open3D).
        min_weight: voxels with less weight count as unobserved (for the points and the crop),
            e.g. ``MapperConfig.mesh.min_weight``.
        config: solver and trimming options (defaults: :class:`PoissonConfig`).
        with_colors: give the vertices the volume's interpolated color.

    Returns:
        The mesh in the map frame, metres; faces counter-clockwise seen from free space (as
        :class:`TriangleMesh`). Empty when the volume has no zero crossing.
    """
    import open3d as o3d

    config = config or PoissonConfig()
    points, normals, _ = surface_points(volume, min_weight, config.batch_blocks)
    if points.shape[0] < 4:
        return TriangleMesh.empty(with_colors)
    pts = points.cpu().numpy().astype(np.float64)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    cloud.normals = o3d.utility.Vector3dVector(normals.cpu().numpy().astype(np.float64))
    depth = config.depth or auto_depth(pts, volume.voxel_size_m, config)
    solved, density = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
        cloud, depth=depth, scale=config.scale, linear_fit=config.linear_fit,
        n_threads=config.n_threads or torch.get_num_threads(),
        samples_per_node=config.samples_per_node, point_weight=config.point_weight)
    vertices = np.asarray(solved.vertices, dtype=np.float32)
    faces = np.asarray(solved.triangles, dtype=np.int64)
    if len(faces) == 0:
        return TriangleMesh.empty(with_colors)
    density = np.asarray(density)
    keep = density >= np.quantile(density, config.density_quantile)
    sample = sample_volume(volume, torch.from_numpy(vertices), min_weight)
    near = ((sample.observed_share >= MIN_OBSERVED_SHARE)
            & (sample.tsdf.abs() <= config.crop_distance_voxels * volume.voxel_size_m))
    keep &= near.cpu().numpy()
    faces = faces[keep[faces].all(axis=1)]
    used = np.unique(faces)
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    colors = None
    if with_colors:
        rgb = sample.color.cpu().numpy()[used]
        colors = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    # Open3D orients faces like the input normals (towards free space), as TriangleMesh does.
    return TriangleMesh(vertices[used], remap[faces], colors)
