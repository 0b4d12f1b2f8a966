"""Map deltas: blocks of a TSDF map packed into compact bytes, for sharing maps between robots.

A delta holds the *current state* (TSDF, weight, color) of some blocks of the sender's own map,
the blocks that changed since its previous delta (:class:`ChangeCursor`), and the keys of the
blocks it released since. It never holds increments: the receiver replaces its copy of the
sender's blocks (:mod:`~recon_ros.core.shared_map`), so a delta delivered twice, or a block
sent again in a full snapshot, counts once.

Packing (:func:`encode_blocks`, :func:`decode_blocks`), lossless: the int64 block keys (see
:func:`~recon_ros.core.block_hash.pack_coords`), the int64 removed keys, then the voxels of
the blocks in the volume's float dtype, ``tsdf`` (N, V) metres, ``weight`` (N, V) and, when
the map has color, ``color`` (N, V, 3) RGB in [0, 255], byte-shuffled (byte 0 of every value,
then byte 1, ...: unobserved voxels and slowly varying values become long runs), the whole
compressed with zlib. The encoding string names all of it, e.g.
``"zlib;shuffle;float32;tsdf,weight,color"``. Decoding restores the values bit for bit.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ReconError
from .volume import BlockVolume

__all__ = [
    "BlockDelta",
    "BlockGeometry",
    "ChangeCursor",
    "DeltaError",
    "block_bytes",
    "decode_blocks",
    "encode_blocks",
]

_PREFIX = "zlib;shuffle"
_FIELDS = {True: "tsdf,weight,color", False: "tsdf,weight"}
_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
#: zlib level: 1 packs a 10 KiB block in well under a millisecond; higher levels gain little
#: on shuffled voxels.
ZLIB_LEVEL = 1


class DeltaError(ReconError):
    """A delta cannot be decoded or applied (malformed data, another map geometry)."""


@dataclass(frozen=True)
class BlockGeometry:
    """What two maps must share for their blocks to merge voxel by voxel.

    Attributes:
        voxel_size_m: voxel edge, metres.
        block_size: voxels per block edge.
        truncation_m: TSDF truncation distance, metres.
    """

    voxel_size_m: float
    block_size: int
    truncation_m: float

    @classmethod
    def of(cls, volume: BlockVolume) -> "BlockGeometry":
        return cls(volume.voxel_size_m, volume.block_size, volume.truncation_m)

    def mismatch(self, other: "BlockGeometry") -> str | None:
        """Why blocks of ``other`` cannot merge into a map of this geometry (the first
        differing quantity, e.g. ``"voxel_size_m 0.05 != 0.04"``), or None if they can."""
        for name in ("voxel_size_m", "block_size", "truncation_m"):
            a, b = getattr(self, name), getattr(other, name)
            if not abs(a - b) <= 1e-9 * max(abs(a), 1.0):  # also catches NaN
                return f"{name} {b:g} != {a:g}"
        return None


@dataclass
class BlockDelta:
    """Decoded blocks of a delta (CPU tensors, the sender's dtype).

    Attributes:
        keys: (N,) int64 distinct block keys.
        removed: (R,) int64 keys of blocks the sender no longer holds.
        tsdf: (N, V) TSDF, metres.
        weight: (N, V) accumulated weight, 0 = unobserved.
        color: (N, V, 3) RGB in [0, 255], or None (the sender's map has no color).
    """

    keys: torch.Tensor
    removed: torch.Tensor
    tsdf: torch.Tensor
    weight: torch.Tensor
    color: torch.Tensor | None


def block_bytes(volume: BlockVolume, with_color: bool) -> int:
    """Uncompressed bytes one block of ``volume`` takes in a delta (key and voxels): the most
    it can take compressed, give or take zlib's few bytes of framing."""
    planes = 5 if with_color else 2
    return 8 + volume.voxels_per_block * planes * volume.tsdf.element_size()


def _shuffle(values: np.ndarray) -> bytes:
    """Bytes of ``values`` grouped by byte position (all first bytes, then all second...)."""
    return np.ascontiguousarray(values.view(np.uint8).reshape(-1, values.itemsize).T).tobytes()


def _unshuffle(raw: memoryview, dtype: np.dtype, count: int) -> np.ndarray:
    planes = np.frombuffer(raw, np.uint8, count * dtype.itemsize).reshape(dtype.itemsize, count)
    return planes.T.copy().view(dtype).reshape(count)  # a writable copy


def encode_blocks(volume: BlockVolume, slots: torch.Tensor, removed_keys: torch.Tensor,
                  with_color: bool) -> tuple[str, bytes]:
    """Pack the blocks at (N,) ``slots`` of ``volume`` and (R,) ``removed_keys``.

    Args:
        volume: the map (float32 or float16 storage).
        slots: (N,) distinct slots of the blocks to send.
        removed_keys: (R,) int64 keys of blocks no longer in the map.
        with_color: include the color voxels.

    Returns:
        (encoding, data): see the module docstring.
    """
    dtype_name = str(volume.dtype).removeprefix("torch.")
    if dtype_name not in _DTYPES:
        raise DeltaError(f"cannot encode a {dtype_name} volume (float32 or float16 only)")
    slots = slots.to(volume.device, torch.int64)
    keys = volume.index.slot_keys[slots].cpu().numpy().astype("<i8")
    removed = removed_keys.cpu().numpy().astype("<i8")
    fields = [volume.tsdf[slots], volume.weight[slots]]
    if with_color:
        fields.append(volume.color[slots])
    voxels = torch.cat([f.reshape(-1) for f in fields]).cpu().numpy().astype(
        _DTYPES[dtype_name], copy=False)
    raw = keys.tobytes() + removed.tobytes() + _shuffle(voxels)
    return f"{_PREFIX};{dtype_name};{_FIELDS[with_color]}", zlib.compress(raw, ZLIB_LEVEL)


def decode_blocks(encoding: str, data: bytes, num_blocks: int, num_removed: int,
                  block_size: int) -> BlockDelta:
    """Unpack what :func:`encode_blocks` packed.

    Args:
        encoding, data: as encoded.
        num_blocks, num_removed: N and R of the delta.
        block_size: voxels per block edge of the sender's map.

    Raises:
        DeltaError: an unknown encoding, data that does not decompress to exactly the sizes
            stated, duplicate or negative keys, non-finite voxels or negative weights.
    """
    parts = encoding.split(";")
    if len(parts) != 4 or ";".join(parts[:2]) != _PREFIX or parts[2] not in _DTYPES \
            or parts[3] not in _FIELDS.values():
        raise DeltaError(f"unknown delta encoding {encoding!r} (expected "
                         f"'{_PREFIX};float32|float16;{_FIELDS[True]}|{_FIELDS[False]}')")
    if num_blocks < 0 or num_removed < 0 or not 1 <= block_size <= 64:
        raise DeltaError(f"invalid delta sizes: {num_blocks} blocks, {num_removed} removed, "
                         f"block size {block_size}")
    dtype, with_color = _DTYPES[parts[2]], parts[3] == _FIELDS[True]
    v = block_size ** 3
    values = num_blocks * v * (5 if with_color else 2)
    expected = 8 * (num_blocks + num_removed) + values * dtype.itemsize
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(bytes(data), expected + 1)  # bounded: no zip bomb
    except zlib.error as err:
        raise DeltaError(f"delta data does not decompress: {err}") from err
    if len(raw) != expected or not inflater.eof:
        raise DeltaError(f"delta data holds {len(raw)}{'+' if not inflater.eof else ''} bytes, "
                         f"{expected} expected for {num_blocks} blocks and {num_removed} "
                         f"removed")
    view = memoryview(raw)
    keys = np.frombuffer(view, "<i8", num_blocks)
    removed = np.frombuffer(view, "<i8", num_removed, 8 * num_blocks)
    voxels = _unshuffle(view[8 * (num_blocks + num_removed):], dtype, values)
    for name, k in (("block", keys), ("removed", removed)):
        if k.size and (k.min() < 0 or np.unique(k).size != k.size):
            raise DeltaError(f"delta {name} keys are negative or repeated")
    if not np.isfinite(voxels).all():
        raise DeltaError("delta voxels are not finite")
    n_tsdf = num_blocks * v
    tsdf = torch.from_numpy(voxels[:n_tsdf].reshape(num_blocks, v))
    weight = torch.from_numpy(voxels[n_tsdf:2 * n_tsdf].reshape(num_blocks, v))
    if bool((weight < 0).any()):
        raise DeltaError("delta weights are negative")
    color = (torch.from_numpy(voxels[2 * n_tsdf:].reshape(num_blocks, v, 3))
             if with_color else None)
    return BlockDelta(torch.from_numpy(keys.astype(np.int64)),
                      torch.from_numpy(removed.astype(np.int64)), tsdf, weight, color)


class ChangeCursor:
    """The blocks of a volume changed and released since the previous :meth:`take`
    (through :meth:`BlockVolume.changes`), for the sender of deltas. The change log leaves out
    a block whose TSDF moved by less than a thousandth of the truncation (the integrator's
    change threshold), so such a block's weight reaches receivers with its next change.

    Args:
        volume: the map to follow; the first :meth:`take` reports every block.
    """

    def __init__(self, volume: BlockVolume) -> None:
        self.volume = volume
        self._stamp = -1  # before the log's floor (0 or later): the first take is full

    def take(self, full: bool = False) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(slots of the blocks changed, keys of the blocks released and not allocated again,
        complete) since the previous call. ``complete`` False (the first call, the change log
        no longer reaches back, or ``full`` asked for it): the slots are every block and the
        receiver must forget the blocks it holds from this map first."""
        volume = self.volume
        changes = volume.changes(self._stamp)
        self._stamp = volume.stamp
        if full or not changes.complete:
            every = torch.arange(volume.num_blocks, device=volume.device)
            return every, torch.empty(0, dtype=torch.int64, device=volume.device), False
        released = changes.released_keys
        if released.numel():
            released = released[volume.index.lookup(released) < 0]
        return changes.slots, released, True
