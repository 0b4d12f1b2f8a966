"""Block-sparse voxel storage: TSDF, weight and RGB in blocks allocated on demand.

Geometry: voxel ``(i, j, k)`` (int64, unbounded) has its centre at ``(i, j, k) * voxel_size_m``
in the map frame. Block ``(bx, by, bz)`` holds voxels ``bx*B .. bx*B + B - 1`` (and likewise in
y, z), ``B = block_size``. Within a block, voxel ``(x, y, z)`` (local) is stored at linear index
``(x * B + y) * B + z``.

Memory grows with the number of allocated blocks (the observed surface), never with a bounding
box; per-block tensors double in capacity when full.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .block_hash import BlockHashMap, pack_coords, unpack_keys
from .checkpoint import read_checkpoint

CHECKPOINT_FORMAT = "recon_ros.block_volume.v1"


class BlockVolume:
    """TSDF + weight + color voxels in sparse blocks.

    Args:
        voxel_size_m: voxel edge, metres.
        block_size: voxels per block edge ``B``.
        truncation_m: truncation distance; unobserved voxels read as ``+truncation_m``.
        device: torch device of all tensors.
        dtype: float dtype of TSDF, weight and color.
        initial_capacity_blocks: blocks allocated up front.

    Per-block tensors (``N = capacity``, ``V = B**3``):
        ``tsdf`` (N, V) metres, clamped to +-truncation; ``weight`` (N, V) accumulated
        measurement weight, 0 = unobserved; ``color`` (N, V, 3) RGB in [0, 255];
        ``block_stamp`` (N,) int64, the value of :attr:`stamp` when the block last changed.
    """

    def __init__(self, voxel_size_m: float, block_size: int, truncation_m: float,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 initial_capacity_blocks: int = 4096) -> None:
        self.voxel_size_m = float(voxel_size_m)
        self.block_size = int(block_size)
        self.truncation_m = float(truncation_m)
        self.device = torch.device(device)
        self.dtype = dtype
        self._initial_capacity = int(initial_capacity_blocks)
        self.stamp = 0
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
        self.block_stamp = torch.zeros(capacity, dtype=torch.int64, device=self.device)

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
        new_cap = self.capacity
        while new_cap < needed:
            new_cap *= 2
        if new_cap == self.capacity:
            return
        extra = new_cap - self.capacity
        v = self.voxels_per_block
        kw = dict(dtype=self.dtype, device=self.device)
        self.tsdf = torch.cat((self.tsdf, torch.full((extra, v), self.truncation_m, **kw)))
        self.weight = torch.cat((self.weight, torch.zeros((extra, v), **kw)))
        self.color = torch.cat((self.color, torch.zeros((extra, v, 3), **kw)))
        self.block_stamp = torch.cat(
            (self.block_stamp, torch.zeros(extra, dtype=torch.int64, device=self.device)))

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

    def block_of_points(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) map-frame points -> (N, 3) int64 coordinates of the block holding the
        nearest voxel centre."""
        vox = torch.round(points / self.voxel_size_m).to(torch.int64)
        return torch.div(vox, self.block_size, rounding_mode="floor")

    def changed_slots(self, since_stamp: int) -> torch.Tensor:
        """Slots of blocks modified after ``since_stamp`` (see :attr:`stamp`)."""
        return torch.nonzero(self.block_stamp[: self.num_blocks] > since_stamp).squeeze(1)

    def mark_changed(self, slots: torch.Tensor) -> None:
        """Advance :attr:`stamp` and record it on ``slots``."""
        self.stamp += 1
        self.block_stamp[slots] = self.stamp

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget every block (capacity returns to the initial one)."""
        self.stamp += 1
        self._allocate_storage(self._initial_capacity)

    def to(self, device: torch.device | str) -> "BlockVolume":
        """Move every tensor to ``device`` (in place); returns self."""
        self.device = torch.device(device)
        self.index.to(self.device)
        for name in ("tsdf", "weight", "color", "block_stamp", "local_offsets"):
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
        vol.block_stamp[:n] = vol.stamp  # everything is "new" to consumers after a load
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
