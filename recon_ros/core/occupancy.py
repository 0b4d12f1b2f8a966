"""Occupancy for planners: occupied voxels (3D) and a 2D grid over a height band.

Map frame z is up. A voxel is *occupied* when it was observed (weight >= ``min_weight``) and its
TSDF is below ``occupied_threshold_m`` (on or behind a surface), *free* when observed and above.
TSDF blocks only exist near surfaces, so free space away from surfaces is carved separately:
rays through a strided subset of pixels cross the height band, stopping one truncation
distance before the measured surface, and every 2D cell they cross records the *lowest height*
at which it was seen free. Free TSDF voxels contribute their heights too. That layer is stored
sparsely in tiles of ``TILE x TILE`` cells indexed by the same hash map as the voxel blocks.

A cell is *occupied* when an occupied voxel lies in its column within the band; *free* when it
is not occupied and was seen free at or below ``free_below_m`` (seeing the space above a
cabinet free says nothing about the cabinet, so free space high in the band alone leaves the
cell *unknown*); *unknown* otherwise. 2D cells are centred on multiples of ``resolution_m`` (so
with ``resolution_m == voxel_size_m`` every voxel column falls in exactly one cell).
"""

from __future__ import annotations

import torch

from .block_hash import BlockHashMap, pack_coords, unpack_keys
from .occupancy_grid import FREE, OCCUPIED, UNKNOWN, OccupancyGrid2D
from .tsdf_integrator import FrameTensors
from .volume import BlockVolume

TILE = 32


class OccupancyMapper:
    """Builds occupied voxels and a 2D occupancy grid from a volume plus carved free space.

    Args:
        resolution_m: 2D cell size, metres.
        min_height_m: lower edge of the projected band (map z), metres.
        max_height_m: upper edge of the band, metres.
        occupied_threshold_m: TSDF below which an observed voxel is occupied, metres.
        free_below_m: a cell is free only if seen free at or below this map height, metres.
        min_weight: voxels with less weight are unknown.
        truncation_m: carving stops this far in front of each measured surface point.
        free_space_stride_px: pixel stride of carving rays.
        device: torch device of the free-space layer.
    """

    def __init__(self, resolution_m: float, min_height_m: float, max_height_m: float,
                 occupied_threshold_m: float, free_below_m: float, min_weight: float,
                 truncation_m: float, free_space_stride_px: int,
                 device: torch.device | str) -> None:
        self.resolution_m = float(resolution_m)
        self.min_height_m = float(min_height_m)
        self.max_height_m = float(max_height_m)
        self.occupied_threshold_m = float(occupied_threshold_m)
        self.free_below_m = float(free_below_m)
        self.min_weight = float(min_weight)
        self.truncation_m = float(truncation_m)
        self.stride = int(free_space_stride_px)
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        self._tiles = BlockHashMap(self.device, 256)
        self._free_z = self._new_tiles(256)

    def _new_tiles(self, n: int) -> torch.Tensor:
        """(n, TILE * TILE) lowest height seen free per cell; +inf = never seen free."""
        return torch.full((n, TILE * TILE), float("inf"), dtype=torch.float32,
                          device=self.device)

    # ------------------------------------------------------------------ free space
    def carve(self, frame: FrameTensors) -> None:
        """Record the free space crossed by the frame's rays (within the height band)."""
        s = self.stride
        depth = frame.depth[::s, ::s]
        uv = frame.camera.pixel_grid(depth.device, stride=s)
        valid = frame.valid(depth)
        if not bool(valid.any()):
            return
        R, t = frame.T_world_cam[:3, :3], frame.T_world_cam[:3, 3]
        end = frame.camera.backproject(uv[valid], depth[valid]) @ R.T + t  # (N, 3)
        ray = end - t
        length = ray.norm(dim=1)
        s_max = ((length - self.truncation_m) / length).clamp(min=0.0)
        # Clip each ray's parameter to the height band: z(s) = t_z + s * ray_z.
        dz = torch.where(ray[:, 2].abs() < 1e-9, torch.full_like(length, 1e-9), ray[:, 2])
        s_a = (self.min_height_m - t[2]) / dz
        s_b = (self.max_height_m - t[2]) / dz
        s0 = torch.minimum(s_a, s_b).clamp(min=0.0)
        s1 = torch.minimum(torch.maximum(s_a, s_b), s_max)
        keep = s1 > s0
        if not bool(keep.any()):
            return
        ray, s0, s1, length = ray[keep], s0[keep], s1[keep], length[keep]
        step = 0.9 * self.resolution_m / length  # parameter step: < one cell per sample
        n = int(((s1 - s0) / step).max().ceil()) + 1
        k = torch.arange(n, device=ray.device, dtype=ray.dtype)
        sk = s0[:, None] + k[None] * step[:, None]  # (N, n)
        ray_id, sample = torch.nonzero(sk <= s1[:, None], as_tuple=True)  # ray-major order
        sk, r = sk[ray_id, sample, None], ray[ray_id]  # (M, 1), (M, 3)
        xy = t[:2] + sk * r[:, :2]
        self._mark_free(torch.round(xy / self.resolution_m).to(torch.int64),
                        t[2] + sk[:, 0] * r[:, 2])

    def _mark_free(self, cells: torch.Tensor, z: torch.Tensor) -> None:
        """Record that (N, 2) cells were seen free at heights (N,), allocating their tiles.

        Cells come ray by ray, so consecutive ones mostly share a tile: collapsing runs first
        makes the sort in ``unique`` cheap."""
        tile = torch.div(cells, TILE, rounding_mode="floor")
        local = cells - tile * TILE
        runs, run_of = torch.unique_consecutive(_pack_xy(tile), return_inverse=True)
        tile_keys, key_of_run = torch.unique(runs, return_inverse=True)
        slots = self._tiles.insert_or_find(tile_keys)[0][key_of_run[run_of]]
        if len(self._tiles) > self._free_z.shape[0]:
            self._free_z = torch.cat((self._free_z, self._new_tiles(len(self._tiles))))
        flat = slots * (TILE * TILE) + local[:, 0] * TILE + local[:, 1]
        self._free_z.view(-1).scatter_reduce_(0, flat, z.to(torch.float32), reduce="amin")

    def _free_cells(self) -> torch.Tensor:
        """(N, 2) int64 cells seen free low enough in the band."""
        n = len(self._tiles)
        slot, idx = torch.nonzero(self._free_z[:n] <= self.free_below_m, as_tuple=True)
        tile = unpack_keys(self._tiles.slot_keys)[slot, :2]
        return tile * TILE + torch.stack((idx // TILE, idx % TILE), dim=1)

    # ------------------------------------------------------------------ voxels
    def _classified_voxels(self, volume: BlockVolume, band_only: bool
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres (N, 3) of observed voxels and whether each is occupied (N,)."""
        n = volume.num_blocks
        slots = torch.arange(n, device=volume.device)
        if band_only:
            extent = volume.block_size * volume.voxel_size_m
            z0 = volume.block_coords[:, 2].to(torch.float32) * extent  # lowest voxel centre
            z1 = z0 + extent - volume.voxel_size_m
            slots = slots[(z1 >= self.min_height_m) & (z0 <= self.max_height_m)]
        centers = volume.voxel_centers(slots).reshape(-1, 3)
        w = volume.weight[slots].reshape(-1)
        d = volume.tsdf[slots].reshape(-1)
        seen = w >= self.min_weight
        if band_only:
            seen &= (centers[:, 2] >= self.min_height_m) & (centers[:, 2] <= self.max_height_m)
        centers, d = centers[seen], d[seen]
        return centers, d < self.occupied_threshold_m

    def occupied_points(self, volume: BlockVolume) -> torch.Tensor:
        """(N, 3) centres of the occupied voxels in the map frame, metres."""
        centers, occupied = self._classified_voxels(volume, band_only=False)
        return centers[occupied]

    def grid(self, volume: BlockVolume) -> OccupancyGrid2D:
        """The 2D grid over the height band: occupied > free > unknown (see module doc)."""
        centers, occupied = self._classified_voxels(volume, band_only=True)
        cells = torch.round(centers[:, :2] / self.resolution_m).to(torch.int64)
        occ_cells = cells[occupied]
        low_free = ~occupied & (centers[:, 2] <= self.free_below_m)
        free_cells = torch.cat((cells[low_free], self._free_cells()))
        every = torch.cat((occ_cells, free_cells))
        if every.numel() == 0:
            return OccupancyGrid2D(torch.full((1, 1), UNKNOWN, dtype=torch.int8).numpy(),
                                   self.resolution_m, (0.0, 0.0), self.min_height_m,
                                   self.max_height_m)
        lo, hi = every.min(0).values, every.max(0).values
        w, h = (hi - lo + 1).tolist()
        data = torch.full((h, w), UNKNOWN, dtype=torch.int8, device=every.device)
        f, o = free_cells - lo, occ_cells - lo
        data[f[:, 1], f[:, 0]] = FREE
        data[o[:, 1], o[:, 0]] = OCCUPIED
        origin = ((float(lo[0]) - 0.5) * self.resolution_m, (float(lo[1]) - 0.5) * self.resolution_m)
        return OccupancyGrid2D(data.cpu().numpy(), self.resolution_m, origin, self.min_height_m,
                               self.max_height_m)

    # ------------------------------------------------------------------ persistence
    def to(self, device: torch.device | str) -> "OccupancyMapper":
        self.device = torch.device(device)
        self._tiles.to(self.device)
        self._free_z = self._free_z.to(self.device)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"tile_keys": self._tiles.slot_keys.cpu().clone(),
                "free_z": self._free_z[: len(self._tiles)].cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._tiles = BlockHashMap.from_keys(state["tile_keys"], self.device)
        n = len(self._tiles)
        self._free_z = self._new_tiles(max(n, 256))
        self._free_z[:n] = state["free_z"].to(self.device)


def _pack_xy(cells: torch.Tensor) -> torch.Tensor:
    """(N, 2) int64 cells -> (N,) hash keys (z = 0)."""
    return pack_coords(torch.nn.functional.pad(cells, (0, 1)))
