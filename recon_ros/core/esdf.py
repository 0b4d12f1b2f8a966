"""Incremental Euclidean signed distance field (ESDF) over the TSDF volume, for planners.

The layer keeps its own block-sparse storage on the volume's block lattice (same voxel size,
block size and device): blocks of the TSDF volume, and the blocks :meth:`EsdfLayer.carve` saw
free (the TSDF volume keeps only the surface band, so the ESDF records the free space a planner
needs itself, by a projective pass over the camera frustum). Every voxel is:

- **unknown** or **known** (observed by the TSDF, or carved free): unknown space is never
  reported as free (queries read NaN there), though distances travel through it;
- an **obstacle** (observed TSDF < 0, with hysteresis: it stays one until its TSDF rises above
  ``SITE_RELEASE_VOXELS``, so noise at the zero crossing does not restart waves). Its value is
  its TSDF (negative, down to minus the truncation). The obstacle voxels next to observed free
  space are the **seeds**: the first layer behind the surface, whatever angle it was seen at.
  A seed stores its depth behind the surface: the projective TSDF divided by its gradient
  magnitude (a surface seen at angle theta reads ``1 / cos(theta)`` too far along the ray),
  clamped to one voxel;
- otherwise **free**: it stores its nearest seed ("parent", as in voxblox / nvblox and Lau et
  al. 2013) and the distance between their centres. Its value is that distance plus the
  seed's (negative) depth, at most ``max_distance_m``; without a seed within
  ``max_distance_m`` it reads ``max_distance_m``.

:meth:`EsdfLayer.update` works only on what changed: the blocks the TSDF changed or released
(the volume's change log), their face neighbours, and new blocks. A **raise** wave resets every
voxel whose parent is no longer a seed (an obstacle left), spreading from the changed blocks
through face neighbours whose parents died; a **lower** wave then spreads seeds outwards from
new seeds and from the neighbours of reset and new voxels: each step hands a voxel's parent to
its 6 face neighbours, which keep it when it is nearer than their own (ties: the lower seed
index, a strict order, so the incremental and the full computation agree). Waves stop at
obstacles, at unallocated blocks and at ``max_distance_m``. All steps are batched tensor code
on the volume's device: one step per voxel of wave travel, no Python loop over voxels.

Frames: map frame, metres; voxel ``i`` (global index) has its centre at ``i * voxel_size_m``
(the volume's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .block_hash import BlockHashMap, pack_coords, unpack_keys
from .compaction import compact
from .distance_slice import DistanceSlice
from .tsdf_integrator import FrameTensors
from .volume import BlockVolume

ESDF_FORMAT = "recon_ros.esdf.v1"
#: (6, 3) face-neighbour directions; direction ``d`` is the row index.
_FACES = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
#: Bits of the seed index in the wave's ordering key ``d2 << _SEED_BITS | seed``.
_SEED_BITS = 36
_LAST = torch.iinfo(torch.int64).max
#: ``parent`` of a voxel whose seed's block was dropped (corrected by the next raise wave).
_DEAD = -2
#: An obstacle voxel stops being one when its TSDF rises above this many voxels.
SITE_RELEASE_VOXELS = 0.25


@dataclass
class DistanceQuery:
    """Distances at query points (see :meth:`EsdfLayer.query`).

    Attributes:
        distance: (N,) float32 metres, trilinear in the 8 surrounding voxels; NaN where one of
            them that carries weight is unknown.
        gradient: (N, 3) float32 d distance / d point (map frame, unit-less; about a unit
            vector pointing away from the nearest obstacle); NaN unless all 8 are known.
        observed: (N,) bool, ``distance`` is not NaN.
    """

    distance: torch.Tensor
    gradient: torch.Tensor
    observed: torch.Tensor


class EsdfLayer:
    """Distance field of a :class:`BlockVolume`, updated incrementally from its change log.

    Args:
        volume: the TSDF volume (the ESDF follows its block lattice and device).
        max_distance_m: propagation limit; farther free space reads exactly this.
        min_weight: voxels with less TSDF weight count as unobserved.
        carve_stride_px: pixel stride of the rays that find the blocks :meth:`carve` visits
            (a block missed by one frame's rays is carved by the next frames').
    """

    def __init__(self, volume: BlockVolume, max_distance_m: float, min_weight: float,
                 carve_stride_px: int) -> None:
        self.volume = volume
        self.max_distance_m = float(max_distance_m)
        self.min_weight = float(min_weight)
        self.carve_stride_px = int(carve_stride_px)
        v = volume.voxel_size_m
        #: Largest squared seed distance, in voxels, that can read within ``max_distance_m``
        #: (a seed lies up to a voxel behind the surface).
        self.max_d2 = int(math.floor(((self.max_distance_m + v) / v) ** 2))
        self.voxels_updated = 0
        self.reset()

    # ------------------------------------------------------------------ storage
    @property
    def device(self) -> torch.device:
        return self.volume.device

    @property
    def voxel_size_m(self) -> float:
        return self.volume.voxel_size_m

    @property
    def block_size(self) -> int:
        return self.volume.block_size

    @property
    def num_blocks(self) -> int:
        return len(self.index)

    @property
    def capacity(self) -> int:
        return int(self.dist.shape[0])

    def reset(self) -> None:
        """Forget everything (the next :meth:`update` rebuilds from the volume)."""
        self.index = BlockHashMap(self.device, 1024)
        self._allocate_storage(1024)
        self._seen_stamp = -1
        self._dirty: list[torch.Tensor] = []  # keys of blocks whose state may have changed
        self._new_keys: list[torch.Tensor] = []  # keys of blocks allocated since the update

    def _allocate_storage(self, capacity: int) -> None:
        for name, rows in self._empty_rows(capacity).items():
            setattr(self, name, rows)

    _FIELDS = ("dist", "parent", "known", "obstacle", "carved", "faces", "coords")

    def _empty_rows(self, n: int) -> dict[str, torch.Tensor]:
        """Storage of ``n`` empty blocks (``V`` voxels each), one tensor per field:

        - ``dist`` (n, V) float32 metres: seeds hold their depth behind the surface, other
          obstacles their TSDF; free voxels the distance from their centre to their parent
          seed's centre (``max_distance_m`` without a parent). Read through :meth:`values`.
        - ``parent`` (n, V) int64 flat index ``slot * V + local`` of each voxel's nearest seed
          (a seed is its own); -1 = none within ``max_distance_m``, ``_DEAD`` = its block
          was dropped.
        - ``known`` (n, V) bool: observed (TSDF weight, or carved free).
        - ``obstacle`` (n, V) bool: observed TSDF < 0; those next to known free space are the
          seeds of the distance waves.
        - ``carved`` (n, V) bool: seen free by the projective pass (kept when the TSDF block
          goes).
        - ``faces`` (n, 6) int64 slot of each block's face neighbour (``_FACES`` order), -1 =
          none; ``coords`` (n, 3) int64 block coordinates.
        """
        v, dev = self.volume.voxels_per_block, self.device
        return {
            "dist": torch.full((n, v), self.max_distance_m, device=dev),
            "parent": torch.full((n, v), -1, dtype=torch.int64, device=dev),
            "known": torch.zeros((n, v), dtype=torch.bool, device=dev),
            "obstacle": torch.zeros((n, v), dtype=torch.bool, device=dev),
            "carved": torch.zeros((n, v), dtype=torch.bool, device=dev),
            "faces": torch.full((n, 6), -1, dtype=torch.int64, device=dev),
            "coords": torch.zeros((n, 3), dtype=torch.int64, device=dev),
        }

    def _allocate(self, keys: torch.Tensor) -> torch.Tensor:
        """Slots of (N,) distinct block keys, allocating absent blocks (empty: unknown)."""
        old_n = self.num_blocks
        slots, n_new = self.index.insert_or_find(keys)
        if n_new == 0:
            return slots
        if self.num_blocks > self.capacity:
            extra = self.capacity
            while self.capacity + extra < self.num_blocks:
                extra *= 2
            rows = self._empty_rows(extra)
            for name in self._FIELDS:
                setattr(self, name, torch.cat((getattr(self, name), rows[name])))
        new = torch.arange(old_n, self.num_blocks, device=self.device)
        self.coords[new] = unpack_keys(self.index.slot_keys[new])
        self._link(new)
        self._new_keys.append(self.index.slot_keys[new])
        return slots

    def _link(self, slots: torch.Tensor) -> None:
        """Fill the face-neighbour table rows of (S,) new blocks and their neighbours' back
        links.

        Fixed shape: absent neighbours write to row 0 what its cell holds once linked, so
        every writer of a cell writes the same value and no neighbour list is compacted."""
        nbr = self._face_slots(slots)  # (S, 6)
        self.faces[slots] = nbr
        back = torch.arange(6, device=self.device) ^ 1  # _FACES pairs direction d with d ^ 1
        row0 = self._face_slots(torch.zeros(1, dtype=torch.int64, device=self.device))[0]
        self.faces[nbr.clamp(min=0), back] = torch.where(nbr >= 0, slots[:, None], row0[back])

    def _face_slots(self, slots: torch.Tensor) -> torch.Tensor:
        """(S,) slots -> (S, 6) slots of their face neighbours (``_FACES`` order), -1 = none."""
        eye = torch.eye(3, dtype=torch.int64, device=self.device)
        offsets = torch.stack((eye, -eye), dim=1).reshape(6, 3)  # _FACES, made on the device
        coords = (self._coords(slots)[:, None] + offsets[None]).reshape(-1, 3)
        # Face neighbours of blocks in the map: within the key range (FrameTensors.check_extent).
        return self.index.lookup(pack_coords(coords, check=False)).reshape(-1, 6)

    def _coords(self, slots: torch.Tensor) -> torch.Tensor:
        """(S,) slots -> (S, 3) int64 block coordinates."""
        return self.coords[slots]

    def drop(self, slots: torch.Tensor) -> None:
        """Forget the blocks at (R,) distinct ``slots`` (map bounds); voxels whose nearest
        seed was in them are corrected at the next :meth:`update`."""
        if slots.numel() == 0:
            return
        V = self.volume.voxels_per_block
        old_n = self.num_blocks
        new_slot = torch.arange(old_n, device=self.device)
        new_slot[slots] = -1
        src, dst = self.index.remove_slots(slots)
        new_slot[src] = dst
        n = self.num_blocks
        rows = self._empty_rows(old_n - n)
        for name in self._FIELDS:
            t = getattr(self, name)
            t[dst] = t[src]
            t[n:old_n] = rows[name]
        # Re-point parents at the moved blocks; parents in dropped blocks are dead, and the
        # blocks holding such voxels are corrected by the next update's raise wave.
        parent = self.parent[:n]
        has = parent >= 0
        moved = torch.where(has, new_slot[torch.div(parent, V, rounding_mode="floor")
                                          .clamp(min=0)], -1)
        self.parent[:n] = torch.where(has, torch.where(moved >= 0, moved * V + parent % V,
                                                       _DEAD), parent)
        orphaned = (self.parent[:n] == _DEAD).any(dim=1)
        self._dirty.append(self.index.slot_keys[torch.nonzero(orphaned).squeeze(1)])
        if self.capacity > 4 * max(n, 1024):
            keep = 2 * max(n, 1024)
            for name in self._FIELDS:
                setattr(self, name, getattr(self, name)[:keep].clone())
            self.index.compact()
        self.faces[:n] = self._face_slots(torch.arange(n, device=self.device))

    def drop_beyond(self, centre: torch.Tensor, radius_m: float) -> None:
        """Drop the blocks whose centre is farther than ``radius_m`` from ``centre`` (3,)."""
        if self.num_blocks:
            mid = self.volume.block_centers(self._coords(torch.arange(self.num_blocks,
                                                                      device=self.device)))
            self.drop(torch.nonzero((mid - centre.to(mid.dtype)).norm(dim=1) > radius_m)
                      .squeeze(1))

    # ------------------------------------------------------------------ inputs
    def carve(self, frame: FrameTensors, within: tuple[torch.Tensor, float] | None = None
              ) -> None:
        """Mark the voxels the frame sees free (more than a truncation in front of the
        measured depth, nearest pixel, valid readings only) as known free.

        The blocks visited are those crossed by the strided pixels' rays up to a truncation
        before their end (sampled half a block apart); blocks already fully carved, and
        blocks the TSDF volume holds, are skipped. ``within``: ``(centre (3,), radius_m)``,
        blocks farther are left alone.
        """
        vol, cam = self.volume, frame.camera
        s, block_m = self.carve_stride_px, vol.block_size * vol.voxel_size_m
        depth = frame.depth[::s, ::s].reshape(-1)  # (P,) metres
        valid = frame.valid(depth)
        reach = torch.where(valid, (depth - vol.truncation_m).clamp(min=0.0), -1.0)
        # Host read: the sample spacing follows the farthest reach (-1: no valid reading).
        farthest = float(reach.max())
        if farthest < 0:
            return
        reach = reach.clamp(min=0.0)  # invalid readings: samples at the camera, dropped below
        n = int(math.ceil(farthest / (0.5 * block_m))) + 1
        frac = torch.linspace(0.0, 1.0, n, device=depth.device)
        uv = cam.pixel_grid(depth.device, stride=s).reshape(-1, 2)
        ray = cam.backproject(uv, torch.ones_like(depth))  # (P, 3), z = 1
        R, t = frame.T_world_cam[:3, :3], frame.T_world_cam[:3, 3]
        pts = (reach[:, None, None] * frac[None, :, None] * (ray @ R.T)[:, None, :] + t)
        frame.check_extent(block_m)  # every sample's block can be packed: no device check
        keys = pack_coords(vol.block_of_points(pts.reshape(-1, 3)), check=False).view(-1, n)
        # Host read: the distinct blocks sampled, ascending; -1 (first) stands for the
        # samples of invalid readings.
        keys = torch.unique(torch.where(valid[:, None], keys, -1))  # (U,)
        probe = keys.clamp(min=0)  # (-1 is no key: look up any key in its place)
        todo = keys >= 0
        if within is not None:
            mid = vol.block_centers(unpack_keys(probe))
            todo &= (mid - within[0]).norm(dim=1) <= within[1]
        # Blocks the TSDF holds need no carving: it observes their free voxels itself (and
        # hands them over on release, see remember_free_space); nor do blocks fully carved.
        todo &= vol.index.lookup(probe) < 0
        have = self.index.lookup(probe)
        todo &= ~((have >= 0) & self.carved[have.clamp(min=0)].all(dim=1))
        (at,) = compact(todo)  # host read: the blocks to carve
        if at.numel() == 0:
            return
        slots = self._allocate(keys[at])
        centres = ((self._coords(slots)[:, None, :] * vol.block_size
                    + vol.local_offsets[None]).reshape(-1, 3).to(torch.float32)
                   * vol.voxel_size_m)  # (S * V, 3)
        Rc, tc = frame.T_cam_world[:3, :3], frame.T_cam_world[:3, 3]
        pix, z = cam.project(centres @ Rc.T + tc)
        u = torch.round(pix[:, 0]).to(torch.int64)
        v = torch.round(pix[:, 1]).to(torch.int64)
        inside = (z > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
        measured = frame.depth[v.clamp(0, cam.height - 1), u.clamp(0, cam.width - 1)]
        ok = frame.valid_depth[v.clamp(0, cam.height - 1), u.clamp(0, cam.width - 1)]
        free = (inside & ok & (z < measured - vol.truncation_m)).reshape(slots.numel(), -1)
        fresh = (free & ~self.known[slots]).any(dim=1)
        self.carved[slots] |= free
        # Newly known free space moves no distance, but may turn an obstacle voxel next to it
        # into a seed: those blocks are refreshed at the next update.
        self.known[slots] |= free
        self._dirty.append(self.index.slot_keys[slots[fresh]])  # host read: exact keys

    def remember_free_space(self, volume_slots: torch.Tensor) -> None:
        """Keep the observed free voxels of (R,) volume blocks about to be released (a
        :attr:`BlockVolume.release_hooks` entry) as carved free space."""
        vol = self.volume
        keys = vol.index.slot_keys[volume_slots]
        slots = self._allocate(keys)
        free = (vol.weight[volume_slots] >= self.min_weight) & (vol.tsdf[volume_slots] >= 0)
        self.carved[slots] |= free

    # ------------------------------------------------------------------ update
    def update(self) -> int:
        """Bring the field up to date with the volume and the carved free space; returns the
        number of voxels whose distance was (re)assigned."""
        vol = self.volume
        changes = vol.changes(self._seen_stamp)
        self._seen_stamp = vol.stamp
        if not changes.complete:
            return self.recompute()
        changed = vol.index.slot_keys[changes.slots]
        self._allocate(changed)
        keys = torch.cat([changed, changes.released_keys, *self._dirty])
        new_keys = torch.cat(self._new_keys) if self._new_keys else keys[:0]
        self._dirty.clear()
        self._new_keys.clear()
        if keys.numel() == 0 and new_keys.numel() == 0:
            return 0
        V = vol.voxels_per_block
        slots = self.index.lookup(torch.unique(keys))
        slots = slots[slots >= 0]
        # A voxel's seed status and surface depth read its neighbours' TSDF: the face
        # neighbours of changed blocks are refreshed too.
        near = self.faces[slots].reshape(-1)
        slots = torch.unique(torch.cat((slots, near[near >= 0])))
        reset, new_seeds = self._refresh(slots)
        # Voxels of the dirty blocks whose parent is no longer a seed start the raise wave.
        flat = _flat_all(slots, V)
        stale = flat[self._parent_dead(flat)]
        self._unset(stale)
        raised = self._raise(torch.cat((reset, stale)))
        new_slots = self.index.lookup(new_keys)
        border = torch.cat((raised, _flat_all(new_slots[new_slots >= 0], V)))
        seeds = torch.cat((new_seeds, self._neighbours_with_parent(border)))
        return self._lower(seeds) + int(raised.numel())

    def recompute(self) -> int:
        """Rebuild the whole field from the volume and the carved free space (what
        :meth:`update` equals, but for the rare voxel where the waves settle on another,
        almost as near seed)."""
        vol = self.volume
        self._seen_stamp = vol.stamp
        self._dirty.clear()
        self._allocate(vol.index.slot_keys)
        self._new_keys.clear()  # every block is refreshed and waved below
        n = self.num_blocks
        self.parent[:n] = -1
        self.dist[:n] = self.max_distance_m
        _, seeds = self._refresh(torch.arange(n, device=self.device))
        return self._lower(seeds)

    def _refresh(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recompute ``known`` and ``obstacle`` of (S,) blocks from the volume and the carving;
        obstacle voxels get their TSDF as distance, seeds become their own parent.

        Returns:
            flat indices of (1) voxels that stopped being seeds or obstacles (reset: no
            parent), (2) new seeds.
        """
        vol = self.volume
        V = vol.voxels_per_block
        v = self.voxel_size_m
        vslots = vol.index.lookup(self.index.slot_keys[slots])
        present = vslots >= 0
        observed = torch.zeros((slots.numel(), V), dtype=torch.bool, device=self.device)
        tsdf = torch.zeros((slots.numel(), V), device=self.device)
        observed[present] = vol.weight[vslots[present]] >= self.min_weight
        tsdf[present] = vol.tsdf[vslots[present]].to(torch.float32)
        base = slots[:, None] * V + torch.arange(V, device=self.device)[None]
        old_obstacle = self.obstacle[slots]
        old_seed = self.parent[slots] == base
        # Hysteresis: an obstacle stays one until its TSDF rises above SITE_RELEASE_VOXELS,
        # so sensor noise around the zero crossing does not start a wave every frame.
        release = torch.where(old_obstacle, SITE_RELEASE_VOXELS * v, 0.0)
        obstacle = observed & (tsdf < release)
        self.obstacle[slots] = obstacle
        self.known[slots] = observed | self.carved[slots]
        # Seeds: the obstacle voxels with a known free face neighbour (the first layer behind
        # the surface, whatever angle it was seen at: no holes).
        inside = base[obstacle]
        nbr = self._neighbours(inside)
        n = nbr.clamp(min=0)
        seed = torch.zeros_like(obstacle)
        seed[obstacle] = ((nbr >= 0) & self.known.view(-1)[n]
                          & ~self.obstacle.view(-1)[n]).any(dim=1)
        reset = base[(old_seed & ~seed) | (old_obstacle & ~obstacle)]
        self._unset(reset)
        value = tsdf
        with_seeds = present & seed.any(dim=1)
        if bool(with_seeds.any()):
            # A seed's free neighbour is one voxel away, so the surface lies within a voxel.
            value[with_seeds] = torch.where(seed[with_seeds],
                                            self._surface_depth(vslots[with_seeds]).clamp(-v, 0),
                                            tsdf[with_seeds])
        self.dist.view(-1)[inside] = value[obstacle]
        self.parent.view(-1)[inside] = torch.where(seed[obstacle], inside, -1)
        return reset, base[seed & ~old_seed]

    def _surface_depth(self, vslots: torch.Tensor) -> torch.Tensor:
        """(P, V) float32 signed distance to the surface of the voxels of (P,) volume blocks:
        the projective TSDF divided by its gradient magnitude where that exceeds 1.

        A projective TSDF measures along camera rays, so at a surface seen at angle theta it
        reads ``1 / cos(theta)`` times the true distance, and so does its gradient (central
        differences over observed, unsaturated neighbours; one-sided at the edge of the
        observed band). Their ratio is the distance along the surface normal.
        """
        vol, B = self.volume, self.block_size
        halo = vol.halo_flat_index(vslots)  # (P, (B + 2)^3)
        t = vol.tsdf.view(-1)[halo.clamp(min=0)].to(torch.float32)
        ok = ((halo >= 0) & (vol.weight.view(-1)[halo.clamp(min=0)] >= self.min_weight)
              & (t.abs() < vol.truncation_m))  # saturated values carry no slope
        n = B + 2
        t, ok = t.reshape(-1, n, n, n), ok.reshape(-1, n, n, n)
        inner = (slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
        centre, c_ok = t[inner], ok[inner]
        grad2 = torch.zeros_like(centre)
        for axis in (1, 2, 3):
            lo, hi = list(inner), list(inner)
            lo[axis], hi[axis] = slice(0, -2), slice(2, None)
            lo, hi = tuple(lo), tuple(hi)
            t_lo, t_hi, k_lo, k_hi = t[lo], t[hi], ok[lo], ok[hi]
            slope = torch.where(k_lo & k_hi, (t_hi - t_lo) / 2,
                                torch.where(k_hi, t_hi - centre,
                                            torch.where(k_lo, centre - t_lo, 0.0)))
            grad2 += torch.where(c_ok | (k_lo & k_hi), slope, 0.0) ** 2
        scale = (grad2.sqrt() / self.voxel_size_m).clamp(min=1.0)
        return (centre / scale).reshape(vslots.numel(), -1)

    def _unset(self, flat: torch.Tensor) -> None:
        """Voxels at ``flat`` lose their parent (distance ``max_distance_m``)."""
        self.parent.view(-1)[flat] = -1
        self.dist.view(-1)[flat] = self.max_distance_m

    def _global(self, flat: torch.Tensor) -> torch.Tensor:
        """(F,) flat voxel indices ``slot * V + local`` -> (F, 3) int64 global voxel indices."""
        V, B = self.volume.voxels_per_block, self.block_size
        slot, local = torch.div(flat, V, rounding_mode="floor"), flat % V
        return self._coords(slot) * B + self.volume.local_offsets[local]

    def _lookup(self, voxels: torch.Tensor) -> torch.Tensor:
        """(..., 3) int64 global voxel indices -> (...) flat indices, -1 where unallocated."""
        B = self.block_size
        block = torch.div(voxels, B, rounding_mode="floor")
        local = voxels - block * B
        slot = self.index.lookup(pack_coords(block.reshape(-1, 3))).reshape(voxels.shape[:-1])
        linear = (local[..., 0] * B + local[..., 1]) * B + local[..., 2]
        return torch.where(slot >= 0, slot * self.volume.voxels_per_block + linear, -1)

    def _neighbours(self, flat: torch.Tensor) -> torch.Tensor:
        """(F,) flat voxels -> (F, 6) flat indices of their face neighbours (``_FACES``
        order), -1 where the neighbour's block is not allocated."""
        V = self.volume.voxels_per_block
        slot, local = torch.div(flat, V, rounding_mode="floor"), flat % V
        nlocal, cross = self._face_tables
        nslot = torch.where(cross[local], self.faces[slot], slot[:, None])
        return torch.where(nslot >= 0, nslot * V + nlocal[local], -1)

    @cached_property
    def _face_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(V, 6) local index of each voxel's face neighbour within its block (wrapped) and
        (V, 6) bool, the neighbour lies in the adjacent block."""
        B = self.block_size
        nloc = self.volume.local_offsets[:, None, :] + torch.tensor(_FACES, device=self.device)
        cross = ((nloc < 0) | (nloc >= B)).any(dim=2)
        nloc = nloc % B
        return (nloc[..., 0] * B + nloc[..., 1]) * B + nloc[..., 2], cross

    def _parent_dead(self, flat: torch.Tensor) -> torch.Tensor:
        """(F,) bool: the voxel (not an obstacle) has a parent that is no longer a seed (a
        seed is its own parent)."""
        parent = self.parent.view(-1)[flat]
        p = parent.clamp(min=0)
        lost = (parent >= 0) & (self.parent.view(-1)[p] != p)
        return (lost | (parent == _DEAD)) & ~self.obstacle.view(-1)[flat]

    def _raise(self, seeds: torch.Tensor) -> torch.Tensor:
        """Reset every voxel reachable from ``seeds`` through face neighbours whose parent
        is dead; returns all reset voxels (seeds included)."""
        out = [seeds]
        frontier = seeds
        while frontier.numel():
            nbr = self._neighbours(frontier)
            nbr = torch.unique(nbr[nbr >= 0])
            frontier = nbr[self._parent_dead(nbr)]
            self._unset(frontier)
            out.append(frontier)
        return torch.cat(out)

    def _neighbours_with_parent(self, flat: torch.Tensor) -> torch.Tensor:
        """Face neighbours of ``flat`` that hold a parent (seeds included)."""
        if flat.numel() == 0:
            return flat
        nbr = self._neighbours(torch.unique(flat))
        nbr = torch.unique(nbr[nbr >= 0])
        return nbr[self.parent.view(-1)[nbr] >= 0]

    def _lower(self, seeds: torch.Tensor) -> int:
        """Spread parents from ``seeds`` until no voxel gets closer; returns the number of
        voxel assignments."""
        v = self.voxel_size_m
        parent, dist = self.parent.view(-1), self.dist.view(-1)
        obstacle = self.obstacle.view(-1)
        frontier = torch.unique(seeds)
        # Per voxel scratch for the per-step reductions (cheaper than sorting with unique).
        best = torch.full((self.num_blocks * self.volume.voxels_per_block,), _LAST,
                          dtype=torch.int64, device=self.device)
        assigned = 0
        while frontier.numel():
            nbr = self._neighbours(frontier)  # (F, 6)
            seed_flat = parent[frontier]
            delta = self._global(seed_flat) - self._global(frontier)  # (F, 3) voxels
            # |delta - e_d|^2 for the 6 unit steps e_d = +-axis (``_FACES`` order).
            axis = torch.stack((delta, -delta), dim=2).reshape(-1, 6)  # (F, 6): +x,-x,+y,..
            d2 = (delta * delta).sum(dim=1, keepdim=True) + 1 - 2 * axis
            n = nbr.clamp(min=0)
            # Order of candidate seeds: squared distance, then seed index (a strict order, so
            # the incremental and the full computation settle on the same seed). The
            # neighbours' current squared distance is recovered exactly from their distance
            # (dist = sqrt(d2) * v); no parent = last.
            key = (d2 << _SEED_BITS) | seed_flat[:, None]
            has = parent[n] >= 0
            d2_now = torch.round((dist[n] / v) ** 2).to(torch.int64)
            current = torch.where(has, (d2_now << _SEED_BITS) | parent[n].clamp(min=0), _LAST)
            ok = (nbr >= 0) & ~obstacle[n] & (d2 <= self.max_d2) & (key < current)
            f_idx, d_idx = torch.nonzero(ok, as_tuple=True)
            if f_idx.numel() == 0:
                break
            target = nbr[f_idx, d_idx]
            k = key[f_idx, d_idx]
            best.scatter_reduce_(0, target, k, reduce="amin")
            win = k == best[target]
            f_idx, d_idx, target = f_idx[win], d_idx[win], target[win]
            # Equal keys are the same seed: keep one row per voxel (the last written).
            row = torch.arange(target.numel(), device=self.device)
            best[target] = -1 - row
            one = best[target] == -1 - row
            f_idx, d_idx, frontier = f_idx[one], d_idx[one], target[one]
            best[frontier] = _LAST
            parent[frontier] = seed_flat[f_idx]
            dist[frontier] = d2[f_idx, d_idx].to(torch.float32).sqrt() * v
            assigned += int(frontier.numel())
        self.voxels_updated += assigned
        return assigned

    # ------------------------------------------------------------------ outputs
    def values(self, flat: torch.Tensor) -> torch.Tensor:
        """Signed distance, metres, of voxels at flat indices (any shape): obstacles read
        their TSDF (seeds: their depth behind the surface); other voxels the distance to
        their parent seed's centre plus the seed's depth (<= 0), at most ``max_distance_m``."""
        parent = self.parent.view(-1)[flat]
        dist = self.dist.view(-1)
        obstacle = self.obstacle.view(-1)[flat]
        to_seed = dist[flat] + dist[parent.clamp(min=0)]
        free = torch.where(parent >= 0, to_seed, self.max_distance_m)
        return torch.where(obstacle, dist[flat], free.clamp(max=self.max_distance_m))

    def query(self, points: torch.Tensor) -> DistanceQuery:
        """Distance and gradient at (N, 3) map-frame points (any device; results on the
        points' device), trilinear over the 8 surrounding voxel centres.

        A point's distance needs the corners it gives weight to (a point on a voxel centre
        needs only that voxel: weights below 1e-4 are ignored); its gradient needs all 8.
        """
        out_device = points.device
        p = points.to(self.device, torch.float32) / self.voxel_size_m
        i0 = torch.floor(p)
        f = p - i0  # (N, 3) in [0, 1)
        corner = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)],
                              device=self.device)  # (8, 3)
        flat = self._lookup(i0.to(torch.int64)[:, None, :] + corner[None])  # (N, 8)
        known = (flat >= 0) & self.known.view(-1)[flat.clamp(min=0)]
        d = torch.where(known, self.values(flat.clamp(min=0)), 0.0)
        cf = corner.to(torch.float32)
        w_axis = torch.where(cf[None] > 0, f[:, None, :], 1 - f[:, None, :])  # (N, 8, 3)
        weight = w_axis.prod(dim=2)
        sign = cf * 2 - 1  # d w / d f per axis
        grad = torch.stack([(sign[None, :, a] * w_axis[:, :, (a + 1) % 3]
                             * w_axis[:, :, (a + 2) % 3] * d).sum(dim=1) for a in range(3)],
                           dim=1) / self.voxel_size_m
        # Corners with a negligible weight (a point on a voxel centre, up to rounding) are
        # not needed: they move the distance by at most 1e-4 * max_distance_m.
        observed = (known | (weight < 1e-4)).all(dim=1)
        nan = torch.tensor(float("nan"), device=self.device)
        distance = torch.where(observed, (weight * d).sum(dim=1), nan)
        grad = torch.where(known.all(dim=1, keepdim=True), grad, nan)
        return DistanceQuery(distance.to(out_device), grad.to(out_device),
                             observed.to(out_device))

    def slice(self, height_m: float) -> DistanceSlice:
        """The voxel layer nearest ``height_m`` (map z) as a 2D grid (NaN = unknown)."""
        vol, B, v = self.volume, self.block_size, self.voxel_size_m
        k = int(round(height_m / v))
        bz, lz = k // B, k % B
        coords = self._coords(torch.arange(self.num_blocks, device=self.device))
        slots = torch.nonzero(coords[:, 2] == bz).squeeze(1)
        if slots.numel() == 0:
            return DistanceSlice(np.full((0, 0), np.nan, np.float32), v, (0.0, 0.0), k * v,
                                 self.max_distance_m)
        layer = (torch.arange(B, device=self.device)[:, None] * B
                 + torch.arange(B, device=self.device)[None]) * B + lz  # (x, y) -> local
        flat = slots[:, None, None] * self.volume.voxels_per_block + layer[None]
        dist = torch.where(self.known.view(-1)[flat], self.values(flat),
                           float("nan"))  # (S, B, B) indexed [x, y]
        xy = coords[slots, :2] * B
        lo = xy.min(dim=0).values
        size = (xy.max(dim=0).values - lo + B).tolist()
        grid = torch.full((size[1], size[0]), float("nan"), device=self.device)  # [y, x]
        r = torch.arange(B, device=self.device)
        cols = (xy[:, 0] - lo[0])[:, None, None] + r[:, None]
        rows = (xy[:, 1] - lo[1])[:, None, None] + r[None, :]
        grid[rows.expand(-1, B, B), cols.expand(-1, B, B)] = dist
        origin = ((float(lo[0]) - 0.5) * v, (float(lo[1]) - 0.5) * v)
        return DistanceSlice(grid.cpu().numpy(), v, origin, k * v, self.max_distance_m)

    def export(self) -> dict[str, np.ndarray | float]:
        """Known voxels as arrays: ``indices`` (N, 3) int32 global voxel indices (centre =
        index * ``voxel_size_m``), ``distance`` (N,) float32 metres, ``obstacle`` (N,) bool, and
        the scalars ``voxel_size_m``, ``max_distance_m``."""
        n = self.num_blocks
        flat = _flat_all(torch.arange(n, device=self.device), self.volume.voxels_per_block)
        flat = flat[self.known.view(-1)[flat]]
        return {
            "indices": self._global(flat).to(torch.int32).cpu().numpy(),
            "distance": self.values(flat).cpu().numpy(),
            "obstacle": self.obstacle.view(-1)[flat].cpu().numpy(),
            "voxel_size_m": self.voxel_size_m,
            "max_distance_m": self.max_distance_m,
        }

    # ------------------------------------------------------------------ lifecycle
    def to(self, device: torch.device | str) -> "EsdfLayer":
        """Follow the volume to ``device`` (call after moving the volume); returns self."""
        self.index.to(device)
        for name in self._FIELDS:
            setattr(self, name, getattr(self, name).to(device))
        self._dirty = [k.to(device) for k in self._dirty]
        self._new_keys = [k.to(device) for k in self._new_keys]
        self.__dict__.pop("_face_tables", None)
        return self

    def state_dict(self) -> dict[str, torch.Tensor | str]:
        """The carved free space (the rest is rebuilt from the volume)."""
        n = self.num_blocks
        return {"format": ESDF_FORMAT, "keys": self.index.slot_keys.cpu().clone(),
                "carved": self.carved[:n].cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the carved free space; the next :meth:`update` rebuilds the field."""
        self.reset()
        slots = self._allocate(state["keys"].to(self.device))
        self.carved[slots] = state["carved"].to(self.device)

    def memory_bytes(self) -> int:
        """Bytes of storage (capacity) and index."""
        return (sum(getattr(self, n).numel() * getattr(self, n).element_size()
                    for n in self._FIELDS) + self.index.nbytes())


def _flat_all(slots: torch.Tensor, voxels_per_block: int) -> torch.Tensor:
    """(S,) slots -> (S * V,) flat indices of all their voxels."""
    return (slots[:, None] * voxels_per_block
            + torch.arange(voxels_per_block, device=slots.device)[None]).reshape(-1)

