"""A vectorized open-addressing hash map from integer 3D coordinates to dense slot indices.

This is the index of the block-sparse volume: block coordinates ``(bx, by, bz)`` are packed into
one int64 key and mapped to a slot in dense per-block storage. Lookups and inserts are batched
torch operations on the map's device (linear probing, load factor <= 1/4), so the cost of a
frame depends on the number of blocks it touches, not on the size of the map.

On an accelerator, probing asks the host nothing: a lookup runs a fixed number of probe rounds
over all its keys, the longest probe sequence any stored key needs (tracked on the host as keys
are placed; about 5 at this load), and placement issues :data:`PLACE_ROUNDS` rounds between
two checks of whether every key found a cell. An insert costs two host synchronisations (how
many keys are new; whether all were placed), a lookup none (see
``recon_ros.core.sync_audit``). On the CPU, where asking costs nothing, each key is followed
only until it is found or meets an empty cell, and placement checks after every round: the
same table, less work. :func:`fixed_probing` makes the CPU probe as an accelerator does (for
audits and tests).

Entries can be removed (:meth:`BlockHashMap.remove_slots`): the table cell becomes a tombstone
(probe chains stay intact) and the last slots move into the freed ones, so slots stay dense
``0 .. len - 1``. Tombstones count towards the load factor and vanish at the next rehash.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .compaction import compact
from .errors import VolumeError

COORD_BITS = 21
COORD_OFFSET = 1 << (COORD_BITS - 1)
COORD_MASK = (1 << COORD_BITS) - 1
EMPTY = -1
TOMBSTONE = -2
_MIX1 = -49064778989728563  # 0xFF51AFD7ED558CCD as signed int64 (murmur3 finaliser)
_MIX2 = -4265267296055464877  # 0xC4CEB9FE1A85EC53
#: Placement probe rounds issued between two host checks.
PLACE_ROUNDS = 4
#: The table is rehashed when entries plus tombstones exceed this fraction of its cells...
MAX_LOAD = 0.25
#: ...into a table of the power of two at or above this many cells per entry.
CELLS_PER_ENTRY = 8


_fixed_everywhere = False


@contextmanager
def fixed_probing() -> Iterator[None]:
    """Inside the block, tables on every device probe as on an accelerator (fixed rounds, no
    host checks): what ``recon_ros.core.sync_audit`` audits on the CPU."""
    global _fixed_everywhere
    previous, _fixed_everywhere = _fixed_everywhere, True
    try:
        yield
    finally:
        _fixed_everywhere = previous


def pack_coords(coords: torch.Tensor, check: bool = True) -> torch.Tensor:
    """Pack (N, 3) int64 coordinates in [-2**20, 2**20) into (N,) non-negative int64 keys.

    ``check`` raises :class:`VolumeError` for coordinates out of that range (one host
    synchronisation); callers that bound their coordinates on the host pass False."""
    if check and coords.numel() and bool(((coords < -COORD_OFFSET)
                                          | (coords >= COORD_OFFSET)).any()):
        raise VolumeError(
            f"block coordinates out of the supported range [-{COORD_OFFSET}, {COORD_OFFSET}); "
            "the map extent (or a bad pose) exceeds what the volume can index"
        )
    c = coords.to(torch.int64) + COORD_OFFSET
    return (c[:, 0] << (2 * COORD_BITS)) | (c[:, 1] << COORD_BITS) | c[:, 2]


def unpack_keys(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_coords`: (N,) keys -> (N, 3) int64 coordinates."""
    x = (keys >> (2 * COORD_BITS)) & COORD_MASK
    y = (keys >> COORD_BITS) & COORD_MASK
    z = keys & COORD_MASK
    return torch.stack((x, y, z), dim=1) - COORD_OFFSET


def _hash(keys: torch.Tensor, mask: int) -> torch.Tensor:
    h = (keys ^ (keys >> 33)) * _MIX1  # multiplications wrap modulo 2**64, as intended
    h = (h ^ (h >> 33)) * _MIX2
    return (h ^ (h >> 33)) & mask


class BlockHashMap:
    """Maps packed int64 keys to slots ``0 .. len(self) - 1`` in insertion order.

    Args:
        device: where the table lives.
        initial_slots: expected number of entries; the table grows (rehashes) as needed.
    """

    def __init__(self, device: torch.device | str = "cpu", initial_slots: int = 1024) -> None:
        self.device = torch.device(device)
        self._count = 0
        self._tombstones = 0
        self._max_probe = 0  # probes the farthest stored key needs (its displacement + 1)
        self._slot_buf = torch.empty(max(initial_slots, 16), dtype=torch.int64, device=self.device)
        self._resize_table(_next_pow2(CELLS_PER_ENTRY * max(initial_slots, 16)))

    def __len__(self) -> int:
        return self._count

    @property
    def slot_keys(self) -> torch.Tensor:
        """(len(self),) key of each slot."""
        return self._slot_buf[: self._count]

    @property
    def table_size(self) -> int:
        """Cells of the table (a power of two; one more cell at the end takes discarded
        writes)."""
        return int(self._keys.numel()) - 1

    def _resize_table(self, size: int) -> None:
        self._tombstones = 0
        self._max_probe = 0
        self._keys = torch.full((size + 1,), EMPTY, dtype=torch.int64, device=self.device)
        self._vals = torch.full((size + 1,), -1, dtype=torch.int64, device=self.device)
        if self._count:
            slots = torch.arange(self._count, device=self.device)
            self._place(self.slot_keys, slots)

    def lookup(self, keys: torch.Tensor) -> torch.Tensor:
        """(N,) keys -> (N,) int64 slots, -1 where absent."""
        return self._lookup(keys)[0]

    @property
    def _asks_host(self) -> bool:
        """Whether probing may read results on the host (see the module docstring)."""
        return self.device.type == "cpu" and not _fixed_everywhere

    def _lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) keys -> ((N,) slots, (N,) table cells), both -1 where absent.

        Every key is compared with the cells at its first :attr:`_max_probe` probe positions
        (stored keys are unique, so a match is the key's own cell, wherever an empty cell or
        a tombstone lies in between); on the CPU, only until it meets an empty cell."""
        if self._asks_host:
            return self._lookup_until_empty(keys)
        mask = self.table_size - 1
        slots = torch.full_like(keys, -1)
        cells = torch.full_like(keys, -1)
        home = _hash(keys, mask)
        for r in range(self._max_probe):
            pos = (home + r) & mask
            hit = self._keys[pos] == keys
            slots = torch.where(hit, self._vals[pos], slots)
            cells = torch.where(hit, pos, cells)
        return slots, cells

    def _lookup_until_empty(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_lookup` following each key only while it is neither found nor at an empty
        cell (a shrinking set of keys; every round reads its size on the host)."""
        mask = self.table_size - 1
        slots = torch.full_like(keys, -1)
        cells = torch.full_like(keys, -1)
        active = torch.arange(keys.numel(), device=self.device)
        pos = _hash(keys, mask)
        while active.numel():
            stored = self._keys[pos]
            hit = stored == keys[active]
            slots[active[hit]] = self._vals[pos[hit]]
            cells[active[hit]] = pos[hit]
            more = ~hit & (stored != EMPTY)
            active = active[more]
            pos = (pos[more] + 1) & mask
        return slots, cells

    def _place(self, keys: torch.Tensor, slots: torch.Tensor) -> None:
        """Write keys known to be absent and pairwise distinct into the table.

        Round ``r`` offers every unplaced key the cell ``home + r`` if it is empty (colliding
        writers: exactly one wins each cell); the host checks for unplaced keys every
        :data:`PLACE_ROUNDS` rounds (on the CPU, every round)."""
        if keys.numel() == 0:
            return
        mask, discard = self.table_size - 1, self.table_size
        home = _hash(keys, mask)
        pending = torch.ones_like(keys, dtype=torch.bool)
        r, rounds = 0, 1 if self._asks_host else PLACE_ROUNDS
        while r == 0 or bool(pending.any()):
            for _ in range(rounds):
                pos = (home + r) & mask
                free = pending & (self._keys[pos] == EMPTY)
                self._keys.index_put_((torch.where(free, pos, discard),), keys)
                won = free & (self._keys[pos] == keys)
                self._vals.index_put_((torch.where(won, pos, discard),), slots)
                pending &= ~won
                r += 1
        self._max_probe = max(self._max_probe, r)

    def insert_or_find(self, keys: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Slots of (N,) distinct keys, inserting the absent ones.

        Returns:
            ``(slots, n_new)``: (N,) int64 slots and how many keys were new. New keys get the
            next free slots in the order they appear in ``keys``.
        """
        slots = self.lookup(keys)
        (new_at,) = compact(slots < 0)
        n_new = int(new_at.numel())
        if n_new == 0:
            return slots, 0
        new_keys = keys[new_at]
        new_slots = torch.arange(self._count, self._count + n_new, device=self.device)
        if self._count + n_new > self._slot_buf.numel():
            grown = torch.empty(_next_pow2(self._count + n_new), dtype=torch.int64,
                                device=self.device)
            grown[: self._count] = self.slot_keys
            self._slot_buf = grown
        self._slot_buf[self._count: self._count + n_new] = new_keys
        self._count += n_new
        if self._count + self._tombstones > MAX_LOAD * self.table_size:
            # re-places every key, new included
            self._resize_table(_next_pow2(CELLS_PER_ENTRY * self._count))
        else:
            self._place(new_keys, new_slots)
        slots[new_at] = new_slots
        return slots, n_new

    def remove_slots(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Remove the entries at (R,) distinct ``slots``; the last live slots fill the holes.

        Returns:
            ``(src, dst)``: (M,) int64 each; the entry that was at slot ``src[i]`` is now at
            ``dst[i]``. Callers holding per-slot data copy ``data[dst] = data[src]`` (and may
            then drop everything at ``len(self)`` and beyond).
        """
        n_remove = int(slots.numel())
        if n_remove == 0:
            empty = torch.empty(0, dtype=torch.int64, device=self.device)
            return empty, empty
        slots = slots.to(self.device, torch.int64)
        _, cells = self._lookup(self.slot_keys[slots])
        self._keys[cells] = TOMBSTONE
        self._vals[cells] = -1
        self._tombstones += n_remove
        new_count = self._count - n_remove
        removed = torch.zeros(self._count, dtype=torch.bool, device=self.device)
        removed[slots] = True
        # Holes to fill (ascending) and the live entries beyond the new end: as many of each.
        holes, movers = compact(removed[:new_count], ~removed[new_count:])
        movers = movers + new_count
        if movers.numel():
            moved_keys = self.slot_keys[movers]
            _, moved_cells = self._lookup(moved_keys)
            self._vals[moved_cells] = holes
            self._slot_buf[holes] = moved_keys
        self._count = new_count
        return movers, holes

    def compact(self) -> None:
        """Shrink the table and the slot buffer to what the current entries need (a table of
        :data:`CELLS_PER_ENTRY` cells per entry, no tombstones)."""
        n = max(self._count, 16)
        self._slot_buf = self._slot_buf[:n].clone()
        self._resize_table(_next_pow2(CELLS_PER_ENTRY * n))

    def to(self, device: torch.device | str) -> "BlockHashMap":
        self.device = torch.device(device)
        self._slot_buf = self._slot_buf.to(self.device)
        self._keys = self._keys.to(self.device)
        self._vals = self._vals.to(self.device)
        return self

    @classmethod
    def from_keys(cls, keys: torch.Tensor, device: torch.device | str) -> "BlockHashMap":
        """A map whose slot i holds ``keys[i]`` (used when loading a checkpoint)."""
        table = cls(device, initial_slots=max(int(keys.numel()), 16))
        table._slot_buf = keys.to(table.device, torch.int64).clone()
        table._count = int(keys.numel())
        table._place(table.slot_keys, torch.arange(table._count, device=table.device))
        return table

    def nbytes(self) -> int:
        return (self._keys.numel() + self._vals.numel() + self._slot_buf.numel()) * 8


def _next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 1).bit_length()
