"""Latent feature voxels (NeuralFusion) stored in the blocks of a :class:`BlockVolume`.

A :class:`LatentVolume` owns no index of its own: it holds per-slot tensors aligned with the
slots of a :class:`~recon_ros.core.volume.BlockVolume` (same hash map, same block layout, same
voxel geometry: voxel ``(i, j, k)`` centred at ``(i, j, k) * voxel_size_m``). Blocks are
allocated through that volume, and the volume's ``tsdf`` / ``weight`` receive the TSDF decoded
from the latent features, so meshing, occupancy and export read the decoded map unchanged.

Per-slot tensors (``N`` = the volume's capacity, ``V = B**3``, ``F`` feature channels):
``features`` (N, V, F) float32 latent code, 0 = never updated; ``count`` (N, V) float32 number
of frames that updated the voxel (capped by the integrator); ``occupancy`` (N, V) float32
decoded occupancy probability (0 where not decoded); ``pending`` (N, V) bool, the voxel was
updated since the last decode; ``dirty`` (N,) bool, the block or one of its 26 neighbour
blocks holds a pending voxel (see :meth:`LatentVolume.mark_updated`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as nnf

from .block_hash import pack_coords
from .errors import VolumeError
from .volume import BlockVolume

LATENT_FORMAT = "recon_ros.latent_volume.v1"
#: Update count at which the confidence channel reaches 0.5 (see :func:`encode_count`).
COUNT_HALF = 4.0


def encode_count(count: torch.Tensor) -> torch.Tensor:
    """Confidence channel fed to the networks: ``count / (count + COUNT_HALF)`` in [0, 1)."""
    return count / (count + COUNT_HALF)


def voxel_flat_index(volume: BlockVolume, voxels: torch.Tensor, allocate: bool
                     ) -> torch.Tensor:
    """Flat index ``slot * V + local`` of global voxel indices in ``volume``'s storage.

    Args:
        volume: the block volume.
        voxels: (..., 3) int64 global voxel indices.
        allocate: allocate absent blocks (else their voxels get -1).

    Returns:
        (...) int64 index into ``volume.tsdf.view(-1)`` (and any per-voxel tensor aligned with
        its slots); -1 for voxels of unallocated blocks when ``allocate`` is False.
    """
    B = volume.block_size
    flat_vox = voxels.reshape(-1, 3)
    block = torch.div(flat_vox, B, rounding_mode="floor")
    local = flat_vox - block * B
    linear = (local[:, 0] * B + local[:, 1]) * B + local[:, 2]
    keys, inverse = torch.unique(pack_coords(block), return_inverse=True)
    slots = volume.allocate_keys(keys) if allocate else volume.index.lookup(keys)
    slot = slots[inverse]
    flat = torch.where(slot >= 0, slot * volume.voxels_per_block + linear, -1)
    return flat.reshape(voxels.shape[:-1])


def cube_offsets(radius: int, device: torch.device | str) -> torch.Tensor:
    """((2r + 1)^3, 3) int64 offsets of a cube of voxels, x-major (x, then y, then z);
    ``r = 1`` is ``volume.neighbour_offsets``."""
    r = torch.arange(-radius, radius + 1, device=device)
    return torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)


class LatentVolume:
    """F feature channels and an update count per voxel, in the blocks of ``volume``.

    Args:
        volume: the block volume whose index (and slots) are shared; it receives the decoded
            TSDF.
        feature_channels: ``F``.
    """

    def __init__(self, volume: BlockVolume, feature_channels: int) -> None:
        if feature_channels < 1:
            raise VolumeError(f"feature_channels must be >= 1, got {feature_channels}")
        self.volume = volume
        self.feature_channels = int(feature_channels)
        self._halos: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._allocate_storage(volume.capacity)
        volume.listeners.append(self)

    def _allocate_storage(self, capacity: int) -> None:
        v, dev = self.volume.voxels_per_block, self.volume.device
        self.features = torch.zeros((capacity, v, self.feature_channels), device=dev)
        self.count = torch.zeros((capacity, v), device=dev)
        self.occupancy = torch.zeros((capacity, v), device=dev)
        self.pending = torch.zeros((capacity, v), dtype=torch.bool, device=dev)
        self.dirty = torch.zeros(capacity, dtype=torch.bool, device=dev)

    @property
    def device(self) -> torch.device:
        return self.volume.device

    @property
    def capacity(self) -> int:
        return int(self.count.shape[0])

    def _grow_to_volume(self) -> None:
        """Append zero slots until this storage matches the volume's capacity (the volume
        doubles its own storage inside ``allocate_keys``; after ``shrink_to`` it is cut
        back). ``torch.cat`` keeps autograd."""
        extra = self.volume.capacity - self.capacity
        if extra < 0:
            for name in ("features", "count", "occupancy", "pending", "dirty"):
                setattr(self, name, getattr(self, name)[: self.volume.capacity].clone())
        if extra <= 0:
            return
        v, f, dev = self.volume.voxels_per_block, self.feature_channels, self.device
        self.features = torch.cat((self.features, torch.zeros((extra, v, f), device=dev)))
        self.count = torch.cat((self.count, torch.zeros((extra, v), device=dev)))
        self.occupancy = torch.cat((self.occupancy, torch.zeros((extra, v), device=dev)))
        self.pending = torch.cat((self.pending,
                                  torch.zeros((extra, v), dtype=torch.bool, device=dev)))
        self.dirty = torch.cat((self.dirty, torch.zeros(extra, dtype=torch.bool, device=dev)))

    def move_slots(self, src: torch.Tensor, dst: torch.Tensor, start: int, end: int) -> None:
        """Follow the volume's slot moves after a release (see ``BlockVolume.release``)."""
        self._grow_to_volume()
        for t in (self.features, self.count, self.occupancy, self.pending, self.dirty):
            t[dst] = t[src]
            t[start:end] = 0

    # ------------------------------------------------------------------ voxel addressing
    def allocate_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """(S,) slots of (S,) distinct block keys (``block_hash.pack_coords``), allocating
        absent blocks in the volume and growing the latent storage with it."""
        slots = self.volume.allocate_keys(keys)
        self._grow_to_volume()
        return slots

    def voxel_flat_index(self, voxels: torch.Tensor, allocate: bool) -> torch.Tensor:
        """Flat voxel index ``slot * V + local`` of global voxel indices (see
        :func:`voxel_flat_index`), growing the latent storage with the volume.

        Args:
            voxels: (..., 3) int64 global voxel indices.
            allocate: allocate absent blocks (else their voxels get -1).

        Returns:
            (...) int64 index into ``features.view(-1, F)`` / ``count.view(-1)``; -1 for voxels
            of unallocated blocks when ``allocate`` is False.
        """
        flat = voxel_flat_index(self.volume, voxels, allocate)
        if allocate:
            self._grow_to_volume()
        return flat

    def flat_to_voxels(self, flat: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`voxel_flat_index`: (M,) flat indices -> (M, 3) int64 voxels."""
        v = self.volume.voxels_per_block
        slot, local = torch.div(flat, v, rounding_mode="floor"), flat % v
        return (self.volume.slot_coords(slot) * self.volume.block_size
                + self.volume.local_offsets[local])

    # ------------------------------------------------------------------ neighbourhoods
    def voxel_neighbourhoods(self, flat: torch.Tensor, radius: int = 1) -> torch.Tensor:
        """Features of the ``(2r + 1)^3`` neighbourhood of voxels, for the translator.

        Args:
            flat: (M,) flat indices (see :meth:`voxel_flat_index`) of allocated voxels.
            radius: ``r`` (1: 3x3x3, 2: 5x5x5).

        Returns:
            (M, F + 1, D, D, D), ``D = 2r + 1``: features and :func:`encode_count` of each
            neighbour (zeros where a neighbour's block is not allocated); axis order x, y, z (a
            channels-last view).
        """
        offsets = cube_offsets(radius, self.device)
        nbr = self.voxel_flat_index(self.flat_to_voxels(flat)[:, None, :] + offsets[None],
                                    allocate=False)  # (M, D^3)
        return self._as_neighbourhoods(self._gather_channels(nbr), radius)

    def halo_flat_index(self, slots: torch.Tensor, radius: int = 1) -> torch.Tensor:
        """(S, (B + 2r)**3) flat voxel index of each of the (S,) blocks grown by an
        ``r``-voxel halo from its 26 neighbour blocks (-1 where a neighbour block is absent;
        ``r <= B``). Sample ``(x, y, z)`` in ``-r .. B + r - 1`` is at ``((x + r) * (B + 2r)
        + y + r) * (B + 2r) + z + r``. ``r = 1`` is ``BlockVolume.halo_flat_index``."""
        vol = self.volume
        if radius == 1:
            return vol.halo_flat_index(slots)
        B = vol.block_size
        if radius > B:
            raise VolumeError(f"a halo of {radius} voxels exceeds the block size {B}")
        key = (radius, str(self.device))
        if key not in self._halos:
            s = torch.arange(-radius, B + radius, device=self.device)
            sample = torch.stack(torch.meshgrid(s, s, s, indexing="ij"), -1).reshape(-1, 3)
            block = torch.div(sample, B, rounding_mode="floor")  # in {-1, 0, 1}
            local = sample - block * B
            nbr_index = ((block[:, 0] + 1) * 3 + block[:, 1] + 1) * 3 + block[:, 2] + 1
            linear = (local[:, 0] * B + local[:, 1]) * B + local[:, 2]
            self._halos[key] = (nbr_index, linear)
        nbr_index, linear = self._halos[key]
        sample_slot = vol.neighbour_slots(slots)[:, nbr_index]
        return torch.where(sample_slot >= 0, sample_slot * vol.voxels_per_block + linear[None],
                           -1)

    def halo_channels(self, halo: torch.Tensor) -> torch.Tensor:
        """(S, (B + 2r)**3, F + 1) features and :func:`encode_count` of S blocks grown by an
        ``r``-voxel halo, from their (S, (B + 2r)**3) :meth:`halo_flat_index` (zeros where a
        neighbour block is absent)."""
        return self._gather_channels(halo)

    def halo_neighbourhoods(self, channels: torch.Tensor, rows: torch.Tensor,
                            local: torch.Tensor, radius: int = 1) -> torch.Tensor:
        """:meth:`voxel_neighbourhoods` of voxels of a few blocks, read from their halo
        channels (no hash lookups).

        Args:
            channels: (S, (B + 2r)**3, F + 1) :meth:`halo_channels` of S blocks (halo
                ``radius``).
            rows: (M,) int64 row of each voxel's block in ``channels``.
            local: (M,) int64 linear index of each voxel in its block.
            radius: ``r``.

        Returns:
            (M, F + 1, D, D, D) as :meth:`voxel_neighbourhoods`.
        """
        n = self.volume.block_size + 2 * radius
        # (V, D^3) halo sample of each neighbour of each voxel: voxel (x, y, z) is sample
        # (x + r, y + r, z + r), its neighbour at offset o is sample (x, y, z) + o + r
        sample = (self.volume.local_offsets[:, None, :]
                  + cube_offsets(radius, self.device)[None] + radius)
        sample = (sample[..., 0] * n + sample[..., 1]) * n + sample[..., 2]
        idx = rows[:, None] * n ** 3 + sample.index_select(0, local)  # (M, D^3)
        c = self.feature_channels + 1
        return self._as_neighbourhoods(
            channels.reshape(-1, c).index_select(0, idx.reshape(-1)).reshape(
                -1, (2 * radius + 1) ** 3, c), radius)

    def _as_neighbourhoods(self, x: torch.Tensor, radius: int = 1) -> torch.Tensor:
        """(M, D^3, F + 1) channels of the x-major neighbours -> (M, F + 1, D, D, D), a view
        (the translator reads it channels-last without a copy)."""
        d = 2 * radius + 1
        return x.reshape(-1, d, d, d, self.feature_channels + 1).permute(0, 4, 1, 2, 3)

    def _gather_channels(self, flat: torch.Tensor) -> torch.Tensor:
        """(...) flat indices (-1 = absent) -> (..., F + 1) features and :func:`encode_count`."""
        F = self.feature_channels
        idx = flat.clamp(min=0).reshape(-1)
        x = torch.empty((idx.numel(), F + 1), dtype=self.features.dtype, device=self.device)
        x[:, :F] = self.features.reshape(-1, F).index_select(0, idx)
        x[:, F] = encode_count(self.count.reshape(-1).index_select(0, idx))
        return x.masked_fill_((flat < 0).reshape(-1, 1), 0.0).reshape(*flat.shape, F + 1)

    # ------------------------------------------------------------------ pending voxels
    def mark_updated(self, flat: torch.Tensor, slots: torch.Tensor) -> None:
        """Record updated voxels for the next decode: they become pending, and their blocks
        and those blocks' neighbours dirty (a pending voxel changes the neighbourhoods of
        voxels in the neighbour blocks).

        Args:
            flat: (U,) flat indices of the updated voxels.
            slots: (S,) distinct slots of the blocks holding them, at least one block inside
                the range of ``block_hash.pack_coords`` (``latent_integrator.group_samples``
                checks it), so that their neighbours pack without a device-side check.
        """
        self.pending.view(-1)[flat] = True
        nbr = self.volume.neighbour_slots(slots)
        self.dirty[torch.where(nbr >= 0, nbr, slots[:, None])] = True

    def dilated_pending(self, halo: torch.Tensor, radius: int = 1) -> torch.Tensor:
        """Voxels whose ``(2r + 1)^3`` neighbourhood holds a pending voxel.

        Args:
            halo: (S, (B + 2r)**3) :meth:`halo_flat_index` of S blocks.
            radius: ``r``.

        Returns:
            (S, V) bool, per voxel of each block.
        """
        n = self.volume.block_size + 2 * radius
        pending = self.pending.view(-1).index_select(0, halo.clamp(min=0).reshape(-1))
        pending = (pending & (halo.reshape(-1) >= 0)).to(torch.float32).reshape(-1, 1, n, n, n)
        return nnf.max_pool3d(pending, kernel_size=2 * radius + 1,
                              stride=1).reshape(halo.shape[0], -1) > 0

    # ------------------------------------------------------------------ lifecycle
    def detach(self) -> None:
        """Cut the autograd history of the features (truncated backpropagation)."""
        self.features = self.features.detach()

    def reset(self) -> None:
        """Forget every block (the shared volume is reset too)."""
        self.volume.reset()
        self._allocate_storage(self.volume.capacity)

    def to(self, device: torch.device | str) -> "LatentVolume":
        """Move the latent tensors (and the shared volume) to ``device``; returns self."""
        self.volume.to(device)
        self._halos.clear()
        for name in ("features", "count", "occupancy", "pending", "dirty"):
            setattr(self, name, getattr(self, name).to(self.volume.device))
        return self

    def state_dict(self) -> dict[str, torch.Tensor | int | str]:
        """Latent payload of the allocated slots (the volume saves the index itself)."""
        n = self.volume.num_blocks
        return {"format": LATENT_FORMAT, "feature_channels": self.feature_channels,
                "features": self.features[:n].detach().cpu().clone(),
                "count": self.count[:n].cpu().clone(),
                "occupancy": self.occupancy[:n].cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` into slots ``0 .. n-1`` of the (already loaded) volume."""
        if state.get("format") != LATENT_FORMAT:
            raise VolumeError(f"not a latent volume state (expected format {LATENT_FORMAT})")
        n = int(state["count"].shape[0])
        if int(state["feature_channels"]) != self.feature_channels or n != self.volume.num_blocks:
            raise VolumeError("latent state does not match the volume (blocks or channels)")
        self._allocate_storage(self.volume.capacity)
        self.features[:n] = state["features"].to(self.device)
        self.count[:n] = state["count"].to(self.device)
        self.occupancy[:n] = state["occupancy"].to(self.device)

    def bytes_per_voxel(self) -> float:
        """Bytes of latent payload (float32 features, count, occupancy; bool pending) per
        voxel."""
        return float(4 * (self.feature_channels + 2) + 1)

    def memory_bytes(self) -> int:
        """Allocated bytes of the latent storage (capacity, not only used slots)."""
        return int(self.bytes_per_voxel()) * self.volume.voxels_per_block * self.capacity
