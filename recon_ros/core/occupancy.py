"""Occupancy for planners: occupied voxels (3D) and a 2D grid over a height band.

Map frame z is up. A voxel is *occupied* when it was observed (weight >= ``min_weight``) and its
TSDF is below ``occupied_threshold_m`` (on or behind a surface), *free* when observed and above.
With a per-voxel occupancy probability (:meth:`OccupancyMapper.use_probability`; latent fusion's
decoded occupancy head) a voxel is occupied when observed and its probability is at least the
given threshold instead; the probability is then also each occupied voxel's confidence
(:meth:`OccupancyMapper.occupied_points_with_probability`).
Both outputs derive from the *current* TSDF, so when free-space clearing removes an object from
the volume it leaves the occupied voxels and the grid too.

The 2D grid keeps, per cell, in tiles of ``TILE x TILE`` cells indexed by a hash map:

- ``flags``: derived from the volume's voxels in the cell's column within the band: bit
  ``OCC_BIT`` if one is occupied, bit ``FREE_BIT`` if one is observed free at or below
  ``free_below_m``. Recomputed only for the columns of blocks changed or released since the
  last update (the volume's change log), so an update costs what changed, not the map.
- ``free_z``: the lowest height at which carving rays (a strided subset of pixels, crossing
  the band and stopping one truncation distance before the measured surface) last saw the
  cell free; +inf = not seen free. It is overwritable evidence: a ray that *ends* on a surface
  inside the band resets the cell's ``free_z`` (the last observation wins). Blocks released
  from the volume hand their observed free voxels low in the band over to this layer first
  (:meth:`OccupancyMapper.remember_free_space`), so space cleared and released stays free.

A cell is *occupied* when its flags say so; *free* when not occupied and seen free at or below
``free_below_m`` (seeing the space above a cabinet free says nothing about the cabinet, so free
space high in the band alone leaves the cell *unknown*); *unknown* otherwise. 2D cells are
centred on multiples of ``resolution_m`` (with ``resolution_m == voxel_size_m`` every voxel
column falls in exactly one cell).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .block_hash import COORD_OFFSET, BlockHashMap, pack_coords, unpack_keys
from .compaction import compact
from .errors import ConfigError, VolumeError
from .merge import is_identity, resample_free_cells
from .occupancy_grid import FREE, OCCUPIED, UNKNOWN, OccupancyGrid2D
from .tsdf_integrator import FrameTensors
from .volume import BlockVolume

TILE_BITS = 5
TILE = 1 << TILE_BITS
OCC_BIT = 1
FREE_BIT = 2


class OccupancyMapper:
    """Occupied voxels and a 2D occupancy grid of ``volume``, plus carved free space.

    Args:
        volume: the map (kept by reference; followed through its change log).
        resolution_m: 2D cell size, metres.
        min_height_m: lower edge of the projected band (map z), metres.
        max_height_m: upper edge of the band, metres.
        occupied_threshold_m: TSDF below which an observed voxel is occupied, metres.
        free_below_m: a cell is free only if seen free at or below this map height, metres.
        min_weight: voxels with less weight are unknown.
        truncation_m: carving stops this far in front of each measured surface point.
        free_space_stride_px: pixel stride of carving rays.
        batch_blocks: blocks (or block columns) processed per batch.
    """

    def __init__(self, volume: BlockVolume, resolution_m: float, min_height_m: float,
                 max_height_m: float, occupied_threshold_m: float, free_below_m: float,
                 min_weight: float, truncation_m: float, free_space_stride_px: int,
                 batch_blocks: int = 2048) -> None:
        self.volume = volume
        self.resolution_m = float(resolution_m)
        self.min_height_m = float(min_height_m)
        self.max_height_m = float(max_height_m)
        self.occupied_threshold_m = float(occupied_threshold_m)
        self.free_below_m = float(free_below_m)
        self.min_weight = float(min_weight)
        self.truncation_m = float(truncation_m)
        self.stride = int(free_space_stride_px)
        self.batch_blocks = int(batch_blocks)
        self.cells_cleared = 0
        self._probability: Callable[[], torch.Tensor | None] | None = None
        self.probability_threshold = 0.5
        self.reset()

    def use_probability(self, source: Callable[[], torch.Tensor | None], threshold: float
                        ) -> None:
        """Decide occupancy by a per-voxel probability instead of the TSDF sign rule.

        Args:
            source: returns the (N, V) occupancy probability aligned with the volume's slots
                (e.g. ``LatentVolume.occupancy``), or None (then the TSDF rule applies).
            threshold: an observed voxel is occupied when its probability is >= this.
        """
        self._probability = source
        self.probability_threshold = float(threshold)
        self._seen_stamp = -1  # rebuild the derived layers by the new rule
        self._points.clear()
        self._probs.clear()

    def _occupied(self, slots: torch.Tensor, tsdf: torch.Tensor) -> torch.Tensor:
        """(..., V) bool, on or behind a surface, of the voxels of (...) ``slots`` whose TSDF
        is ``tsdf`` (..., V): the probability rule if one is set (:meth:`use_probability`),
        else ``tsdf < occupied_threshold_m``."""
        prob = self._probability() if self._probability is not None else None
        if prob is None:
            return tsdf.to(torch.float32) < self.occupied_threshold_m
        return prob[slots] >= self.probability_threshold

    @property
    def device(self) -> torch.device:
        return self.volume.device

    def reset(self) -> None:
        """Forget the free-space layer and every derived result."""
        self._tiles = BlockHashMap(self.device, 256)
        self._free_z = self._new_tiles(256, float("inf"), torch.float32)
        self._flags = self._new_tiles(256, 0, torch.uint8)
        self._points: dict[int, torch.Tensor] = {}
        self._probs: dict[int, torch.Tensor] = {}
        self._seen_stamp = -1

    def _new_tiles(self, n: int, value: float, dtype: torch.dtype) -> torch.Tensor:
        return torch.full((n, TILE * TILE), value, dtype=dtype, device=self.device)

    # ------------------------------------------------------------------ tiles
    def _tile_slots(self, cells: torch.Tensor) -> torch.Tensor:
        """(N,) flat index ``slot * TILE**2 + local`` of (N, 2) cells, allocating tiles.

        Cells often come in runs sharing a tile (ray by ray): collapsing runs first makes
        the sort in ``unique`` cheap."""
        tile = torch.div(cells, TILE, rounding_mode="floor")
        local = cells - tile * TILE
        runs, run_of = torch.unique_consecutive(_pack_xy(tile), return_inverse=True)
        tile_keys, key_of_run = torch.unique(runs, return_inverse=True)
        slots = self._tiles.insert_or_find(tile_keys)[0][key_of_run[run_of]]
        self._grow_tiles()
        return slots * (TILE * TILE) + local[:, 0] * TILE + local[:, 1]

    def _box_tile_slots(self, cells: torch.Tensor, touched: torch.Tensor,
                        centre_cell: torch.Tensor, radius: int) -> torch.Tensor:
        """(N,) flat index ``slot * TILE**2 + local`` of (N, 2) cells lying in the square of
        ``2 * radius + 1`` tiles around the tile of ``centre_cell`` (2,), allocating the tiles
        of the cells marked in (N,) bool ``touched``. Unmarked cells of absent tiles get an
        index into tile slot 0's rows: only neutral values may be written there.

        Looking up the whole square (a host-known size) instead of deduplicating the cells'
        tiles leaves one host read: how many touched tiles are new."""
        side = 2 * radius + 1
        origin = torch.div(centre_cell, TILE, rounding_mode="floor") - radius  # (2,)
        r = torch.arange(side, device=self.device)
        square = origin + torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
        # Coordinates bounded on the host by the caller (frame extent): no range check.
        keys = _pack_xy(square, check=False)  # (side**2,), ascending
        slots = self._tiles.lookup(keys)
        rel = cells - origin * TILE  # (N, 2) cells from the square's corner, >= 0
        tile, local = rel >> TILE_BITS, rel & (TILE - 1)
        at = tile[:, 0] * side + tile[:, 1]  # (N,) index into the square
        marked = torch.zeros(side * side + 1, dtype=torch.bool, device=self.device)
        marked.index_fill_(0, torch.where(touched, at, side * side), True)  # last: discarded
        (new,) = compact(marked[:-1] & (slots < 0))  # the host read
        if new.numel():
            slots[new] = self._tiles.insert_or_find(keys[new])[0]
            self._grow_tiles()
        base = slots.clamp(min=0) * (TILE * TILE)
        return base[at] + (local[:, 0] << TILE_BITS) + local[:, 1]

    def _grow_tiles(self) -> None:
        """Grow the per-tile layers to the tiles allocated (doubling)."""
        n = len(self._tiles)
        if n > self._free_z.shape[0]:
            extra = max(n, 2 * self._free_z.shape[0]) - self._free_z.shape[0]
            self._free_z = torch.cat((self._free_z,
                                      self._new_tiles(extra, float("inf"), torch.float32)))
            self._flags = torch.cat((self._flags, self._new_tiles(extra, 0, torch.uint8)))

    def drop_tiles_beyond(self, centre_xy: torch.Tensor, radius_m: float) -> int:
        """Forget the tiles lying entirely farther than ``radius_m`` from ``centre_xy`` (2,),
        map frame; returns how many were dropped."""
        n = len(self._tiles)
        if n == 0:
            return 0
        extent = TILE * self.resolution_m
        lo = (unpack_keys(self._tiles.slot_keys)[:, :2].to(torch.float32) * TILE - 0.5) \
            * self.resolution_m
        nearest = torch.maximum(lo, torch.minimum(centre_xy.to(lo.dtype), lo + extent))
        far = torch.nonzero((nearest - centre_xy).norm(dim=1) > radius_m).squeeze(1)
        src, dst = self._tiles.remove_slots(far)
        m = len(self._tiles)
        for t, empty in ((self._free_z, float("inf")), (self._flags, 0)):
            t[dst] = t[src]
            t[m:n] = empty
        return int(far.numel())

    # ------------------------------------------------------------------ free space
    def carve(self, frame: FrameTensors, within: tuple[torch.Tensor, float] | None = None
              ) -> None:
        """Record the free space crossed by the frame's rays (within the height band) and
        reset the cells where rays end on a surface inside the band.

        Two host reads: how many ray samples there are (every strided pixel is a ray, invalid
        readings masked, on a grid of as many samples as the longest ray the camera can
        measure needs) and how many tiles are new (:meth:`_box_tile_slots`). Masked hits and
        samples write neutral values.

        Args:
            frame: the frame.
            within: ``(centre (3,), radius_m)``: only cells within ``radius_m`` of the centre
                in the plane are touched (a map bounded around the robot would drop the rest).
        """
        s, res = self.stride, self.resolution_m
        depth = frame.depth[::s, ::s].reshape(-1)  # (P,) metres
        uv = frame.camera.pixel_grid(depth.device, stride=s).reshape(-1, 2)
        valid = frame.valid(depth)
        # Invalid readings get an in-range depth: their (masked) rays stay finite and short.
        depth = torch.where(valid, depth, frame.max_depth_m)
        R, t = frame.T_world_cam[:3, :3], frame.T_world_cam[:3, 3]
        end = frame.camera.backproject(uv, depth) @ R.T + t  # (P, 3)
        hit = valid & (end[:, 2] >= self.min_height_m) & (end[:, 2] <= self.max_height_m)
        ray = end - t
        length = ray.norm(dim=1)
        s_max = ((length - self.truncation_m) / length).clamp(min=0.0)
        # Clip each ray's parameter to the height band: z(s) = t_z + s * ray_z.
        dz = torch.where(ray[:, 2].abs() < 1e-9, torch.full_like(length, 1e-9), ray[:, 2])
        s_a = (self.min_height_m - t[2]) / dz
        s_b = (self.max_height_m - t[2]) / dz
        s0 = torch.minimum(s_a, s_b).clamp(min=0.0)
        s1 = torch.minimum(torch.maximum(s_a, s_b), s_max)
        step = 0.9 * res / length  # parameter step: < one cell per sample
        longest = self._longest_ray_m(frame)
        n = max(math.ceil((longest - self.truncation_m) / (0.9 * res)), 0) + 1
        k = torch.arange(n, device=ray.device, dtype=ray.dtype)
        sk = s0[:, None] + k[None] * step[:, None]  # (P, n)
        sampled = (valid & (s1 > s0))[:, None] & (sk <= s1[:, None])
        # A host read: most of the (P, n) samples lie beyond their ray's end, and the
        # per-sample work below costs more on CPU than the read does on CUDA.
        (at,) = compact(sampled.reshape(-1))  # (M,) ray-major
        ray_id = torch.div(at, n, rounding_mode="floor")
        sk, r = sk.reshape(-1)[at, None], ray[ray_id]  # (M, 1), (M, 3)
        xy = t[:2] + sk * r[:, :2]
        z = t[2] + sk[:, 0] * r[:, 2]
        touched = torch.ones_like(z, dtype=torch.bool)
        if within is not None:
            hit &= _near(end[:, :2], within)
            touched = _near(xy, within)
        # Rays reach at most ``longest`` from the camera: cells lie within ``radius`` tiles.
        radius = math.ceil((longest / res + 1) / TILE) + 1
        if frame.reach_m / (TILE * res) + radius + 1 >= COORD_OFFSET:
            raise VolumeError(f"the camera is {frame.reach_m:.3g} m from the map origin: "
                              "beyond what 2D tile keys index")
        cells = torch.round(torch.cat((end[:, :2], xy)) / res).to(torch.int64)
        flat = self._box_tile_slots(cells, torch.cat((hit, touched)),
                                    torch.round(t[:2] / res).to(torch.int64), radius)
        free_z = self._free_z.view(-1)
        P = hit.numel()
        # Hit cells reset to +inf (amax with -inf elsewhere), then samples lower the cells'
        # height (amin with +inf elsewhere): masked entries write neutral values.
        inf = float("inf")
        free_z.scatter_reduce_(0, flat[:P], torch.where(hit, inf, -inf), reduce="amax")
        free_z.scatter_reduce_(0, flat[P:], torch.where(touched, z, inf), reduce="amin")

    @staticmethod
    def _longest_ray_m(frame: FrameTensors) -> float:
        """Length of the longest ray the frame can hold: to a pixel at the image corner
        farthest from the principal point, at ``max_depth_m``; metres."""
        cam = frame.camera
        u = max(cam.cx, cam.width - cam.cx) / cam.fx
        v = max(cam.cy, cam.height - cam.cy) / cam.fy
        return frame.max_depth_m * math.sqrt(1.0 + u * u + v * v) * (1 + 1e-6)

    def remember_free_space(self, slots: torch.Tensor) -> None:
        """Record the observed free voxels at or below ``free_below_m`` in the band of the
        (R,) blocks ``slots`` (about to be released) in the carved free-space layer."""
        vol = self.volume
        k0, _ = self._band_voxels()
        z_top = min(self.free_below_m, self.max_height_m)
        blocks = vol.slot_coords(slots)
        low = blocks[:, 2] * vol.block_size * vol.voxel_size_m <= z_top + 1e-6
        high = (blocks[:, 2] + 1) * vol.block_size > k0
        centre = vol.voxel_centers(slots)  # (R, V, 3)
        free = ((low & high)[:, None] & (vol.weight[slots] >= self.min_weight)
                & ~self._occupied(slots, vol.tsdf[slots])
                & (centre[..., 2] >= self.min_height_m - 1e-6) & (centre[..., 2] <= z_top + 1e-6))
        (at,) = compact(free.reshape(-1))  # one host read
        if at.numel() == 0:
            return
        centre = centre.reshape(-1, 3)[at]
        flat = self._tile_slots(torch.round(centre[:, :2] / self.resolution_m).to(torch.int64))
        self._free_z.view(-1).scatter_reduce_(0, flat, centre[:, 2], reduce="amin")

    # ------------------------------------------------------------------ derived layers
    def update(self) -> None:
        """Bring the occupied voxels and the grid's flags up to date with the volume: only
        blocks changed or released since the last call are recomputed."""
        vol = self.volume
        changes = vol.changes(self._seen_stamp)
        self._seen_stamp = vol.stamp
        if not changes.complete:
            self._points.clear()
            self._probs.clear()
            self._flags.zero_()
        for key in changes.released_keys.tolist():
            self._points.pop(key, None)
            self._probs.pop(key, None)
        for start in range(0, changes.slots.numel(), self.batch_blocks):
            self._update_points(changes.slots[start:start + self.batch_blocks])
        columns = torch.cat((vol.slot_coords(changes.slots), unpack_keys(changes.released_keys)))
        columns = self._columns_in_band(columns)
        for start in range(0, columns.shape[0], self.batch_blocks):
            self._update_columns(columns[start:start + self.batch_blocks])

    def _update_points(self, slots: torch.Tensor) -> None:
        """Recompute the occupied voxel centres of (S,) blocks."""
        vol = self.volume
        occupied = ((vol.weight[slots] >= self.min_weight)
                    & self._occupied(slots, vol.tsdf[slots]))
        block, voxel = torch.nonzero(occupied, as_tuple=True)
        centres = vol.voxel_centers_at(slots, block, voxel)
        counts = torch.bincount(block, minlength=slots.numel()).tolist()
        prob = self._probability() if self._probability is not None else None
        probs = (torch.split(prob[slots[block], voxel], counts) if prob is not None
                 else [None] * len(counts))
        for key, count, pts, p in zip(vol.index.slot_keys[slots].tolist(), counts,
                                      torch.split(centres, counts), probs):
            if count:
                self._points[key] = pts
                if p is not None:
                    self._probs[key] = p
            else:
                self._points.pop(key, None)
                self._probs.pop(key, None)

    def _band_voxels(self) -> tuple[int, int]:
        """First and last voxel z index whose centre lies in the height band."""
        v = self.volume.voxel_size_m
        return (math.ceil(self.min_height_m / v - 1e-6), math.floor(self.max_height_m / v + 1e-6))

    def _columns_in_band(self, blocks: torch.Tensor) -> torch.Tensor:
        """(C, 2) distinct block columns ``(bx, by)`` of (N, 3) blocks that reach into the band,
        grown by the columns sharing 2D cells with them when cells are larger than voxels."""
        B = self.volume.block_size
        k0, k1 = self._band_voxels()
        bz0, bz1 = k0 // B, k1 // B
        blocks = blocks[(blocks[:, 2] >= bz0) & (blocks[:, 2] <= bz1)]
        cols = torch.unique(blocks[:, :2], dim=0)
        grow = self._column_overlap()
        if grow and cols.numel():
            r = torch.arange(-grow, grow + 1, device=cols.device)
            d = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
            cols = torch.unique((cols[:, None, :] + d[None]).reshape(-1, 2), dim=0)
        return cols

    def _column_overlap(self) -> int:
        """How many neighbouring block columns can share a 2D cell with a block column."""
        v = self.volume.voxel_size_m
        if self.resolution_m <= v * (1 + 1e-6):
            return 0  # every cell takes voxel columns of one block column only
        return math.ceil(self.resolution_m / (self.volume.block_size * v)) + 1

    def _update_columns(self, columns: torch.Tensor) -> None:
        """Recompute the flags of every 2D cell covered by (C, 2) block columns (flags of
        cells only partly covered by a grown column set are left to their own columns)."""
        vol, B = self.volume, self.volume.block_size
        k0, k1 = self._band_voxels()
        bz = torch.arange(k0 // B, k1 // B + 1, device=self.device)
        nz = bz.numel()
        blocks = torch.cat((columns[:, None, :].expand(-1, nz, -1),
                            bz[None, :, None].expand(columns.shape[0], -1, 1)), dim=2)
        slots = vol.find(blocks.reshape(-1, 3)).reshape(-1, nz)  # (C, nz)
        present = slots >= 0
        s = slots.clamp(min=0)
        # (C, nz, x, y, z): on or behind a surface
        below = self._occupied(s, vol.tsdf[s]).reshape(-1, nz, B, B, B)
        weight = torch.where(present[..., None], vol.weight[s].to(torch.float32), 0.0)
        weight = weight.reshape(-1, nz, B, B, B)
        k = (bz[:, None] * B + torch.arange(B, device=self.device)[None])  # (nz, B) voxel z
        in_band = ((k >= k0) & (k <= k1))[None, :, None, None, :]
        observed = (weight >= self.min_weight) & in_band
        occupied = observed & below
        low = (k.to(torch.float32) * vol.voxel_size_m <= self.free_below_m)[None, :, None, None]
        low_free = observed & ~occupied & low
        flags = (occupied.any(dim=(1, 4)).to(torch.uint8) * OCC_BIT
                 | low_free.any(dim=(1, 4)).to(torch.uint8) * FREE_BIT)  # (C, x, y)
        rb = torch.arange(B, device=self.device)
        vx = columns[:, 0, None, None] * B + rb[None, :, None]  # (C, x, 1) voxel column x
        vy = columns[:, 1, None, None] * B + rb[None, None, :]
        xy = torch.stack(torch.broadcast_tensors(vx, vy), -1).reshape(-1, 2)
        cells = torch.round(xy.to(torch.float64) * vol.voxel_size_m
                            / self.resolution_m).to(torch.int64)
        uniq, inverse = torch.unique(_pack_xy(cells), return_inverse=True)
        merged = torch.zeros(uniq.numel(), dtype=torch.uint8, device=self.device)
        for bit in (OCC_BIT, FREE_BIT):  # bitwise OR of the cell's voxel columns
            has = torch.zeros(uniq.numel(), dtype=torch.uint8, device=self.device)
            has.scatter_reduce_(0, inverse, (flags.reshape(-1) & bit), reduce="amax")
            merged |= has
        cells = unpack_keys(uniq)[:, :2]
        if self._column_overlap():
            inner = self._fully_covered(cells, columns)
            cells, merged = cells[inner], merged[inner]
        flat = self._tile_slots(cells)
        old = self._flags.view(-1)[flat]
        self.cells_cleared += int((((old & OCC_BIT) > 0) & ((merged & OCC_BIT) == 0)).sum())
        self._flags.view(-1)[flat] = merged

    def _fully_covered(self, cells: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """(N,) bool: every block column holding a voxel column of the (N, 2) cells is one of
        the (C, 2) ``columns`` (so the cell's flags can be computed from them alone)."""
        vol, B = self.volume, self.volume.block_size
        centre = cells.to(torch.float64) * (self.resolution_m / vol.voxel_size_m)
        half = 0.5 * self.resolution_m / vol.voxel_size_m
        # Voxel columns i with round(i * v / res) == cell, as block columns.
        lo = torch.div(torch.ceil(centre - half - 1e-9).to(torch.int64), B, rounding_mode="floor")
        hi = torch.div(torch.floor(centre + half - 1e-9).to(torch.int64), B,
                       rounding_mode="floor")
        span = int((hi - lo).max()) + 1 if cells.numel() else 1
        r = torch.arange(span, device=self.device)
        d = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)  # (D, 2)
        cand = lo[:, None, :] + d[None]  # (N, D, 2)
        needed = (cand <= hi[:, None, :]).all(-1)
        known = torch.isin(_pack_xy(cand.reshape(-1, 2)), _pack_xy(columns)).reshape(needed.shape)
        return (known | ~needed).all(dim=1)

    # ------------------------------------------------------------------ outputs
    def occupied_points(self) -> torch.Tensor:
        """(N, 3) centres of the occupied voxels in the map frame, metres."""
        self.update()
        if not self._points:
            return torch.empty((0, 3), dtype=torch.float32, device=self.device)
        return torch.cat(list(self._points.values()))

    def occupied_points_with_probability(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`occupied_points` and (N,) float32 occupancy probability of each (the
        source of :meth:`use_probability`).

        Raises:
            ConfigError: no probability source is set (TSDF maps).
        """
        if self._probability is None or self._probability() is None:
            raise ConfigError("occupancy probabilities exist only for latent fusion maps "
                              "(fusion.method: latent)")
        points = self.occupied_points()
        if not self._points:
            return points, torch.empty(0, device=self.device)
        return points, torch.cat([self._probs[k] for k in self._points])

    def grid(self) -> OccupancyGrid2D:
        """The 2D grid over the height band: occupied > free > unknown (see module doc)."""
        self.update()
        n = len(self._tiles)
        flags, free_z = self._flags[:n], self._free_z[:n]
        occupied = (flags & OCC_BIT) > 0
        free = ~occupied & (((flags & FREE_BIT) > 0) | (free_z <= self.free_below_m))
        data = torch.full((n, TILE * TILE), UNKNOWN, dtype=torch.int8, device=self.device)
        data[free] = FREE
        data[occupied] = OCCUPIED
        known = data != UNKNOWN
        tiles = unpack_keys(self._tiles.slot_keys)[:, :2]
        used = known.any(dim=1)
        if not bool(used.any()):
            return OccupancyGrid2D(torch.full((1, 1), UNKNOWN, dtype=torch.int8).numpy(),
                                   self.resolution_m, (0.0, 0.0), self.min_height_m,
                                   self.max_height_m)
        tiles, data, known = tiles[used], data[used], known[used]
        local = torch.arange(TILE * TILE, device=self.device)
        cells = tiles[:, None, :] * TILE + torch.stack((local // TILE, local % TILE), -1)[None]
        cells = cells[known]  # (M, 2) known cells
        values = data[known]
        lo, hi = cells.min(0).values, cells.max(0).values
        w, h = (hi - lo + 1).tolist()
        out = torch.full((h, w), UNKNOWN, dtype=torch.int8, device=self.device)
        c = cells - lo
        out[c[:, 1], c[:, 0]] = values
        origin = ((float(lo[0]) - 0.5) * self.resolution_m,
                  (float(lo[1]) - 0.5) * self.resolution_m)
        return OccupancyGrid2D(out.cpu().numpy(), self.resolution_m, origin, self.min_height_m,
                               self.max_height_m)

    def merge_free_space(self, other: "OccupancyMapper",
                         T_dst_src: np.ndarray | torch.Tensor | None = None) -> None:
        """Add ``other``'s carved free space to this layer (per cell, the lowest height seen
        free); the grid reads it at once. With ``T_dst_src`` (``other``'s frame -> this one's)
        the cells are resampled first (``core.merge.resample_free_cells``: rotations about the
        vertical axis only; a tilting transform carries no free space over).

        Raises:
            ConfigError: the layers' cell size or height band differ, or ``T_dst_src`` is not
                rigid.
        """
        for name in ("resolution_m", "min_height_m", "max_height_m", "free_below_m"):
            a, b = getattr(self, name), getattr(other, name)
            if abs(a - b) > 1e-9:
                raise ConfigError(f"cannot merge 2D layers with different {name}: {a:g} and "
                                  f"{b:g}")
        n = len(other._tiles)
        if n == 0:
            return
        if is_identity(T_dst_src):
            slots = self._tiles.insert_or_find(other._tiles.slot_keys.to(self.device))[0]
            self._grow_tiles()
            self._free_z[slots] = torch.minimum(self._free_z[slots],
                                                other._free_z[:n].to(self.device))
            return
        free_z = other._free_z[:n].to(self.device)
        tile, local = torch.nonzero(torch.isfinite(free_z), as_tuple=True)
        tiles = unpack_keys(other._tiles.slot_keys.to(self.device))[:, :2]
        cells = tiles[tile] * TILE + torch.stack((local // TILE, local % TILE), 1)
        cells, heights = resample_free_cells(cells, free_z[tile, local], self.resolution_m,
                                             T_dst_src)
        if cells.numel():
            self._free_z.view(-1).scatter_reduce_(0, self._tile_slots(cells), heights,
                                                  reduce="amin")

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The carved free space (everything else derives from the volume)."""
        n = len(self._tiles)
        return {"tile_keys": self._tiles.slot_keys.cpu().clone(),
                "free_z": self._free_z[:n].cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.reset()
        self._tiles = BlockHashMap.from_keys(state["tile_keys"], self.device)
        n = len(self._tiles)
        self._free_z = self._new_tiles(max(n, 256), float("inf"), torch.float32)
        self._flags = self._new_tiles(max(n, 256), 0, torch.uint8)
        self._free_z[:n] = state["free_z"].to(self.device)

    def follow_volume_device(self) -> "OccupancyMapper":
        """Follow the volume to its (new) device; derived layers are recomputed."""
        state = self.state_dict()
        self.load_state_dict(state)
        return self

    def memory_bytes(self) -> int:
        """Bytes of the free-space layer, flags and cached occupied points."""
        points = sum(p.numel() for p in self._points.values()) * 4
        return (self._free_z.numel() * 4 + self._flags.numel() + self._tiles.nbytes() + points)


def _near(xy: torch.Tensor, within: tuple[torch.Tensor, float]) -> torch.Tensor:
    """(N,) bool: (N, 2) points lie within ``radius`` of ``centre[:2]`` (``within``)."""
    centre, radius = within
    return (xy - centre[:2].to(xy.dtype)).norm(dim=1) <= radius


def _pack_xy(cells: torch.Tensor, check: bool = True) -> torch.Tensor:
    """(N, 2) int64 cells -> (N,) hash keys (z = 0); ``check`` as in ``pack_coords``."""
    return pack_coords(torch.nn.functional.pad(cells, (0, 1)), check=check)
