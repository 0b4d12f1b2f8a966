"""Block-sparse voxel storage: TSDF, weight and RGB in blocks allocated on demand.

Geometry: voxel ``(i, j, k)`` (int64, unbounded) has its centre at ``(i, j, k) * voxel_size_m``
in the map frame. Block ``(bx, by, bz)`` holds voxels ``bx*B .. bx*B + B - 1`` (and likewise in
y, z), ``B = block_size``. Within a block, voxel ``(x, y, z)`` (local) is stored at linear index
``(x * B + y) * B + z``.

Memory grows with the number of allocated blocks (the observed surface), never with a bounding
box; per-block tensors double in capacity when full (up to ``max_capacity_blocks`` when set).
Blocks can be released (:meth:`BlockVolume.release`): slots stay dense, the last blocks move
into the freed slots, and per-slot data held elsewhere (e.g. latent features) follows through
:class:`SlotListener`.

Consumers (mesher, occupancy) follow the map through a change log: :meth:`BlockVolume.changes`
gives the slots changed and the keys released since a stamp, in time proportional to the
change, not to the map.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from .block_hash import BlockHashMap, pack_coords, unpack_keys
from .checkpoint import read_checkpoint

CHECKPOINT_FORMAT = "recon_ros.block_volume.v1"
#: Entries kept in the change log; a consumer further behind rebuilds from scratch.
CHANGE_LOG_LENGTH = 4096


def neighbour_offsets(device: torch.device | str) -> torch.Tensor:
    """(27, 3) int64 offsets of a 3x3x3 neighbourhood, x-major (x, then y, then z)."""
    r = torch.arange(-1, 2, device=device)
    return torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(27, 3)


class SlotListener(Protocol):
    """Holder of per-slot data aligned with a volume's slots."""

    def move_slots(self, src: torch.Tensor, dst: torch.Tensor, start: int, end: int) -> None:
        """Copy slot ``src[i]`` to ``dst[i]``; slots ``start .. end - 1`` were freed and must
        read as never allocated; storage may have to match the volume's capacity again
        (after :meth:`BlockVolume.shrink_to`)."""


@dataclass
class Changes:
    """What changed in a volume since a stamp (see :meth:`BlockVolume.changes`).

    Attributes:
        slots: (S,) int64 distinct slots of blocks whose voxels changed (current slots).
        released_keys: (R,) int64 distinct keys of blocks released (a key may be in both when
            its block was released and allocated again).
        complete: False when the log no longer reaches back that far: the consumer must treat
            every block as changed and forget whatever it holds for blocks not in the map.
    """

    slots: torch.Tensor
    released_keys: torch.Tensor
    complete: bool


class BlockVolume:
    """TSDF + weight + color voxels in sparse blocks.

    Args:
        voxel_size_m: voxel edge, metres.
        block_size: voxels per block edge ``B``.
        truncation_m: truncation distance; unobserved voxels read as ``+truncation_m``.
        device: torch device of all tensors.
        dtype: float dtype of TSDF, weight and color.
        initial_capacity_blocks: blocks allocated up front.
        max_capacity_blocks: storage stops doubling at this many blocks (it still grows to
            what a single allocation needs); 0 = no limit. See :meth:`shrink_to`.

    Per-block tensors (``N = capacity``, ``V = B**3``):
        ``tsdf`` (N, V) metres, clamped to +-truncation; ``weight`` (N, V) accumulated
        measurement weight, 0 = unobserved; ``color`` (N, V, 3) RGB in [0, 255].
    """

    def __init__(self, voxel_size_m: float, block_size: int, truncation_m: float,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 initial_capacity_blocks: int = 4096, max_capacity_blocks: int = 0) -> None:
        self.voxel_size_m = float(voxel_size_m)
        self.block_size = int(block_size)
        self.truncation_m = float(truncation_m)
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_capacity_blocks = int(max_capacity_blocks)
        self._initial_capacity = int(initial_capacity_blocks)
        if self.max_capacity_blocks:
            self._initial_capacity = min(self._initial_capacity, self.max_capacity_blocks)
        self.stamp = 0
        self.listeners: list[SlotListener] = []
        #: Called with the (R,) slots about to be released, while their voxels are readable.
        self.release_hooks: list[Callable[[torch.Tensor], None]] = []
        self._log: deque[tuple[int, torch.Tensor, torch.Tensor]] = deque()
        self._log_floor = 0  # changes at stamps <= this are no longer in the log
        self._halo: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._allocate_storage(self._initial_capacity)
        b = torch.arange(self.block_size, device=self.device)
        gx, gy, gz = torch.meshgrid(b, b, b, indexing="ij")
        self.local_offsets = torch.stack((gx, gy, gz), dim=-1).reshape(-1, 3)  # (V, 3) int64

    # ------------------------------------------------------------------ storage
    def _allocate_storage(self, capacity: int) -> None:
        v = self.voxels_per_block
        self.index = BlockHashMap(self.device, capacity)
        self.tsdf = torch.full((capacity, v), self.truncation_m, dtype=self.dtype,
                               device=self.device)
        self.weight = torch.zeros((capacity, v), dtype=self.dtype, device=self.device)
        self.color = torch.zeros((capacity, v, 3), dtype=self.dtype, device=self.device)

    @property
    def voxels_per_block(self) -> int:
        return self.block_size ** 3

    @property
    def capacity(self) -> int:
        return int(self.tsdf.shape[0])

    @property
    def num_blocks(self) -> int:
        return len(self.index)

    @property
    def block_coords(self) -> torch.Tensor:
        """(num_blocks, 3) int64 coordinates of the allocated blocks, slot order."""
        return unpack_keys(self.index.slot_keys)

    def _grow(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        new_cap = self.capacity
        while new_cap < needed:
            new_cap *= 2
        if self.max_capacity_blocks:
            new_cap = max(needed, min(new_cap, self.max_capacity_blocks))
        extra = new_cap - self.capacity
        v = self.voxels_per_block
        kw = dict(dtype=self.dtype, device=self.device)
        self.tsdf = torch.cat((self.tsdf, torch.full((extra, v), self.truncation_m, **kw)))
        self.weight = torch.cat((self.weight, torch.zeros((extra, v), **kw)))
        self.color = torch.cat((self.color, torch.zeros((extra, v, 3), **kw)))

    def allocate_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """Slots of (N,) distinct block keys (see ``block_hash.pack_coords``), allocating
        absent blocks."""
        slots, n_new = self.index.insert_or_find(keys)
        if n_new:
            self._grow(self.num_blocks)
        return slots

    def allocate(self, block_coords: torch.Tensor) -> torch.Tensor:
        """Slots of (N, 3) distinct block coordinates, allocating absent blocks."""
        return self.allocate_keys(pack_coords(block_coords.to(self.device)))

    def find(self, block_coords: torch.Tensor) -> torch.Tensor:
        """Slots of (N, 3) block coordinates, -1 where not allocated."""
        return self.index.lookup(pack_coords(block_coords.to(self.device)))

    # ------------------------------------------------------------------ geometry
    def slot_coords(self, slots: torch.Tensor) -> torch.Tensor:
        """(S,) slots -> (S, 3) int64 block coordinates."""
        return unpack_keys(self.index.slot_keys[slots])

    def voxel_indices(self, slots: torch.Tensor) -> torch.Tensor:
        """(S,) slots -> (S, V, 3) int64 global voxel indices of their voxels."""
        return self.slot_coords(slots)[:, None, :] * self.block_size + self.local_offsets[None]

    def voxel_centers(self, slots: torch.Tensor) -> torch.Tensor:
        """(S,) slots -> (S, V, 3) float32 voxel centres in the map frame, metres."""
        return self.voxel_indices(slots).to(torch.float32) * self.voxel_size_m

    def voxel_centers_at(self, slots: torch.Tensor, block: torch.Tensor, voxel: torch.Tensor
                         ) -> torch.Tensor:
        """(M, 3) float32 map-frame centres of M voxels given as (M,) indices into ``slots``
        and (M,) linear voxel indices within the block (e.g. ``nonzero`` of an (S, V) mask)."""
        return ((self.slot_coords(slots)[block] * self.block_size + self.local_offsets[voxel])
                .to(torch.float32) * self.voxel_size_m)

    def block_centers(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, 3) float32 map-frame centres of the voxel-centre boxes of (N, 3) blocks."""
        B = self.block_size
        return (coords.to(torch.float32) * B + 0.5 * (B - 1)) * self.voxel_size_m

    def neighbour_slots(self, slots: torch.Tensor) -> torch.Tensor:
        """(S, 27) slots of the 3x3x3 blocks around each of the (S,) blocks, in
        :func:`neighbour_offsets` order (the block itself at 13), -1 where not allocated."""
        offsets = neighbour_offsets(self.device)
        # Neighbours of allocated blocks: within the key range (see FrameTensors.check_extent).
        return self.index.lookup(pack_coords(
            (self.slot_coords(slots)[:, None, :] + offsets[None]).reshape(-1, 3), check=False)
        ).reshape(-1, 27)

    def halo_flat_index(self, slots: torch.Tensor) -> torch.Tensor:
        """(S, (B + 2)**3) flat voxel index ``slot * V + local`` of each of the (S,) blocks
        grown by a one-voxel halo from its 26 neighbour blocks (-1 where a neighbour block is
        absent). Sample ``(x, y, z)`` in ``-1 .. B`` is at ``((x + 1) * (B + 2) + y + 1) *
        (B + 2) + z + 1``; the block's own voxel ``(x, y, z)`` is sample ``(x, y, z)``."""
        if self._halo is None:
            B, dev = self.block_size, self.device
            s = torch.arange(-1, B + 1, device=dev)
            sample = torch.stack(torch.meshgrid(s, s, s, indexing="ij"), -1).reshape(-1, 3)
            block = torch.div(sample, B, rounding_mode="floor")  # in {-1, 0, 1}
            local = sample - block * B
            nbr_index = ((block[:, 0] + 1) * 3 + block[:, 1] + 1) * 3 + block[:, 2] + 1
            linear = (local[:, 0] * B + local[:, 1]) * B + local[:, 2]
            self._halo = (nbr_index, linear)
        nbr_index, linear = self._halo
        sample_slot = self.neighbour_slots(slots)[:, nbr_index]  # (S, (B + 2)^3)
        return torch.where(sample_slot >= 0, sample_slot * self.voxels_per_block + linear[None],
                           -1)

    def block_of_points(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) map-frame points -> (N, 3) int64 coordinates of the block holding the
        nearest voxel centre."""
        vox = torch.round(points / self.voxel_size_m).to(torch.int64)
        return torch.div(vox, self.block_size, rounding_mode="floor")

    def mark_changed(self, slots: torch.Tensor) -> None:
        """Advance :attr:`stamp` and log ``slots`` as changed (see :meth:`changes`)."""
        self.stamp += 1
        self._append_log(self.index.slot_keys[slots], torch.empty_like(slots[:0]))

    def _append_log(self, changed_keys: torch.Tensor, released_keys: torch.Tensor) -> None:
        self._log.append((self.stamp, changed_keys, released_keys))
        while len(self._log) > CHANGE_LOG_LENGTH:
            self._log_floor = self._log.popleft()[0]

    def changes(self, since_stamp: int) -> Changes:
        """Blocks changed and released after ``since_stamp`` (a previous :attr:`stamp`)."""
        empty = torch.empty(0, dtype=torch.int64, device=self.device)
        if since_stamp < self._log_floor:
            return Changes(torch.arange(self.num_blocks, device=self.device), empty, False)
        entries = list(itertools.takewhile(lambda e: e[0] > since_stamp, reversed(self._log)))
        if not entries:
            return Changes(empty, empty, True)
        changed = torch.unique(torch.cat([e[1] for e in entries]))
        slots = self.index.lookup(changed)
        released = torch.unique(torch.cat([e[2] for e in entries]))
        return Changes(slots[slots >= 0], released, True)

    def release(self, slots: torch.Tensor) -> torch.Tensor:
        """Free the blocks at (R,) distinct ``slots``; returns their (R,) keys.

        Their voxels read as unobserved afterwards. The last blocks move into the freed
        slots (so slots of other blocks may change); listeners are told.
        """
        slots = slots.to(self.device, torch.int64)
        if slots.numel() == 0:
            return slots
        for hook in self.release_hooks:
            hook(slots)
        keys = self.index.slot_keys[slots].clone()
        old_n = self.num_blocks
        src, dst = self.index.remove_slots(slots)
        n = self.num_blocks
        for name in ("tsdf", "weight", "color"):
            t = getattr(self, name)
            t[dst] = t[src]
        self.tsdf[n:old_n] = self.truncation_m
        self.weight[n:old_n] = 0
        self.color[n:old_n] = 0
        for listener in self.listeners:
            listener.move_slots(src, dst, n, old_n)
        self.stamp += 1
        self._append_log(torch.empty_like(keys[:0]), keys)
        return keys

    def decay(self, factor: float, min_weight: float) -> int:
        """Multiply every weight by ``factor``; voxels falling below ``min_weight`` become
        unobserved (weight 0, TSDF ``+truncation``), blocks left with no observed voxel are
        released. Returns the number of blocks released. One pass over the whole map."""
        n = self.num_blocks
        if n == 0:
            return 0
        w = self.weight[:n]
        before = w >= min_weight
        w.mul_(factor)
        lost = before & (w < min_weight)
        w.masked_fill_(w < min_weight, 0)
        self.tsdf[:n].masked_fill_(w <= 0, self.truncation_m)
        changed = lost.any(dim=1)
        empty = (w <= 0).all(dim=1)
        slots = torch.arange(n, device=self.device)
        if bool(changed.any()):
            self.mark_changed(slots[changed & ~empty])
        return int(self.release(slots[empty]).numel())

    def shrink_to(self, capacity: int) -> None:
        """Drop storage beyond ``max(capacity, num_blocks)`` blocks and shrink the index to
        the blocks it holds (returns memory after releases)."""
        capacity = max(int(capacity), self.num_blocks, 1)
        self.index.compact()
        if capacity >= self.capacity:
            return
        for name in ("tsdf", "weight", "color"):
            setattr(self, name, getattr(self, name)[:capacity].clone())
        empty = torch.empty(0, dtype=torch.int64, device=self.device)
        for listener in self.listeners:
            listener.move_slots(empty, empty, self.num_blocks, self.num_blocks)

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget every block (capacity returns to the initial one; consumers of
        :meth:`changes` see an incomplete log and rebuild)."""
        self.stamp += 1
        self._log.clear()
        self._log_floor = self.stamp
        self._allocate_storage(self._initial_capacity)

    def to(self, device: torch.device | str) -> "BlockVolume":
        """Move every tensor to ``device`` (in place); returns self."""
        self.device = torch.device(device)
        self.index.to(self.device)
        self._halo = None
        for name in ("tsdf", "weight", "color", "local_offsets"):
            setattr(self, name, getattr(self, name).to(self.device))
        return self

    def state_dict(self) -> dict[str, torch.Tensor | float | int | str]:
        n = self.num_blocks
        return {
            "format": CHECKPOINT_FORMAT,
            "voxel_size_m": self.voxel_size_m,
            "block_size": self.block_size,
            "truncation_m": self.truncation_m,
            "dtype": str(self.dtype).removeprefix("torch."),
            "stamp": self.stamp,
            "keys": self.index.slot_keys.cpu().clone(),
            "tsdf": self.tsdf[:n].cpu().clone(),
            "weight": self.weight[:n].cpu().clone(),
            "color": self.color[:n].cpu().clone(),
        }

    def save(self, path: str | Path) -> None:
        """Write a checkpoint (plain tensors, loadable with ``weights_only=True``)."""
        torch.save(self.state_dict(), str(path))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "BlockVolume":
        """Read a checkpoint written by :meth:`save` onto ``device``."""
        return cls.from_state_dict(read_checkpoint(path, CHECKPOINT_FORMAT, "volume"), device)

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> "BlockVolume":
        dtype = getattr(torch, state["dtype"])
        n = int(state["keys"].numel())
        vol = cls(state["voxel_size_m"], state["block_size"], state["truncation_m"], device,
                  dtype, initial_capacity_blocks=max(n, 16))
        vol.index = BlockHashMap.from_keys(state["keys"], vol.device)
        vol.tsdf[:n] = state["tsdf"].to(vol.device)
        vol.weight[:n] = state["weight"].to(vol.device)
        vol.color[:n] = state["color"].to(vol.device)
        vol.stamp = int(state["stamp"]) + 1
        vol._log_floor = vol.stamp  # consumers rebuild everything after a load
        return vol

    # ------------------------------------------------------------------ stats
    def bytes_per_voxel(self) -> float:
        """Bytes of voxel payload (TSDF + weight + RGB) per voxel."""
        return float(self.tsdf.element_size() * 5)

    def memory_bytes(self) -> dict[str, int]:
        """Allocated bytes: voxel payload (capacity), used payload, hash index."""
        per_block = int(self.bytes_per_voxel()) * self.voxels_per_block
        return {
            "voxel_capacity_bytes": self.capacity * per_block,
            "voxel_used_bytes": self.num_blocks * per_block,
            "index_bytes": self.index.nbytes(),
        }

    def bytes_per_block(self) -> int:
        """Bytes of voxel payload one block slot costs."""
        return int(self.bytes_per_voxel()) * self.voxels_per_block
