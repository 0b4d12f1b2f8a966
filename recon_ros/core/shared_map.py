"""A robot's own map merged with its peers' latest blocks: maps shared between robots.

Why not simply merge each delta as it arrives: TSDF fusion is a weighted average, and merging
two maps adds their weights (:mod:`~recon_ros.core.merge`). A peer sends the *current state*
of its blocks each time they change (:mod:`~recon_ros.core.map_delta`), and all of them again
to every new subscriber; adding each arrival would count the peer's earlier measurements
once per arrival, and a duplicated message twice.

So each peer has a layer (a :class:`BlockVolume`) holding the latest state received of each of
its blocks: an arriving block *replaces* the layer's copy, a removed key drops it, and
``replace_all`` empties the layer first. The shared map, :attr:`SharedMap.view`, is block by
block

    ``view[k] = own[k] (+) peer_1[k] (+) ... (+) peer_n[k]``

(``(+)``: :func:`~recon_ros.core.merge.merge_volume`, weights add, capped at
``integration.max_weight``), recomputed from scratch by :meth:`SharedMap.sync` for every
block that changed in the own map or in a layer since the last sync. Receiving a block twice
therefore counts it once, and the shared map of robots A and B equals merging A's and B's maps
once. The own map never holds a peer's block, so a robot only ever sends its own
measurements: robots that listen to each other do not echo blocks back and forth.

Costs and limits: the view is a second map (own map's memory once more, plus every peer's
blocks); ``map.clearing_radius_m`` and ``map.max_memory_mb`` bound the own map only. The view's
2D layer takes the own map's carved free space (per cell the lowest height seen free, so a
tile the own map drops stays in the view); its distance field knows free space from TSDF
voxels only (the own map's ray carving is not carried over). A peer map without color counts
as black in the weighted color average.
"""

from __future__ import annotations

import torch

from .errors import ConfigError
from .map_delta import BlockDelta, BlockGeometry, ChangeCursor, DeltaError
from .mapper import Mapper
from .merge import merge_volume
from .volume import BlockVolume

__all__ = ["SharedMap"]

#: Blocks recomputed per batch by :meth:`SharedMap.sync` (bounds its temporary memory).
SYNC_BATCH_BLOCKS = 4096


class SharedMap:
    """The own map of a robot plus the latest blocks of each peer, and their merge.

    Args:
        own: the robot's own map (integrated by the robot; read only here). TSDF fusion
            only, as for :meth:`Mapper.merge`.

    Attributes:
        own: the own map.
        view: the shared map (own and peers merged); up to date after :meth:`sync`.
        peers: source id -> layer of the latest blocks received from it.
        version: +1 each time :meth:`sync` changed the view or the view was rebuilt.

    Raises:
        ConfigError: ``own`` is a latent-fusion map (also from :meth:`rebase`).
    """

    def __init__(self, own: Mapper) -> None:
        self.peers: dict[str, BlockVolume] = {}
        self._peer_color: set[str] = set()
        self.version = 0
        self.rebase(own)

    @property
    def geometry(self) -> BlockGeometry:
        """The geometry peers' blocks must have."""
        return BlockGeometry.of(self.own.volume)

    def rebase(self, own: Mapper) -> None:
        """Follow a new own map (reset, load, new parameters): a new, empty view that the next
        :meth:`sync` fills from ``own`` and the peer layers (a layer of another geometry
        than ``own``'s is dropped)."""
        if own.latent is not None:
            raise ConfigError("cannot share into a latent-fusion map (fusion.method: latent): "
                              "its feature volume has no defined merge")
        self.own = own
        self.view = Mapper(own.config)
        self._cursor = ChangeCursor(own.volume)
        self._free_space_frames = -1
        geometry = self.geometry
        for source in [s for s, layer in self.peers.items()
                       if geometry.mismatch(BlockGeometry.of(layer)) is not None]:
            del self.peers[source]
            self._peer_color.discard(source)
        self._dirty = [layer.index.slot_keys.clone() for layer in self.peers.values()]
        self.version += 1

    def apply(self, source: str, delta: BlockDelta, geometry: BlockGeometry,
              replace_all: bool = False) -> None:
        """Take a delta of peer ``source``: its blocks replace the layer's copies, its removed
        keys are dropped (after forgetting the whole layer with ``replace_all``). The view
        follows at the next :meth:`sync`.

        Raises:
            DeltaError: ``geometry`` (the sender's map) differs from the own map's; nothing
                is changed.
        """
        why = self.geometry.mismatch(geometry)
        if why is not None:
            raise DeltaError(f"map of {source!r} has another geometry: {why}")
        own = self.own.volume
        layer = self.peers.get(source)
        if layer is None:
            layer = self.peers[source] = BlockVolume(
                own.voxel_size_m, own.block_size, own.truncation_m, own.device, own.dtype,
                initial_capacity_blocks=max(16, delta.keys.numel()))
        if replace_all and layer.num_blocks:
            self._dirty.append(layer.index.slot_keys.clone())
            layer.reset()
        removed = delta.removed.to(layer.device)
        if removed.numel():
            slots = layer.index.lookup(removed)
            layer.release(slots[slots >= 0])
            self._dirty.append(removed)
        keys = delta.keys.to(layer.device)
        if keys.numel():
            slots = layer.allocate_keys(keys)
            layer.tsdf[slots] = delta.tsdf.to(layer.device, layer.dtype)
            layer.weight[slots] = delta.weight.to(layer.device, layer.dtype)
            layer.color[slots] = (0 if delta.color is None
                                  else delta.color.to(layer.device, layer.dtype))
            self._dirty.append(keys)
        if delta.color is not None:
            self._peer_color.add(source)

    def sync(self) -> int:
        """Bring the view up to date: recompute every block changed in the own map or in a
        peer layer since the last call (everything after :meth:`rebase` or when the own map's
        change log no longer reaches back); returns how many blocks were recomputed."""
        own = self.own.volume
        slots, released, complete = self._cursor.take()
        keys = [own.index.slot_keys[slots], released, *self._dirty]
        if not complete:  # blocks the own map no longer holds must go from the view too
            keys.append(self.view.volume.index.slot_keys)
        self._dirty = []
        keys = torch.unique(torch.cat([k.to(own.device) for k in keys]))
        for start in range(0, keys.numel(), SYNC_BATCH_BLOCKS):
            self._recompute(keys[start:start + SYNC_BATCH_BLOCKS])
        if self.own.frames_integrated != self._free_space_frames:
            self.view.occupancy.merge_free_space(self.own.occupancy)
            self._free_space_frames = self.own.frames_integrated
        self.view.frames_integrated = self.own.frames_integrated
        self.view.has_color = self.own.has_color or bool(self._peer_color)
        if keys.numel():
            self.version += 1
        return int(keys.numel())

    def _recompute(self, keys: torch.Tensor) -> None:
        """``view[k] = own[k] (+) every layer's [k]`` for (K,) distinct keys; blocks that
        neither the own map nor a layer holds are released from the view."""
        view, own = self.view.volume, self.own.volume
        slots = view.allocate_keys(keys)
        view.tsdf[slots] = view.truncation_m
        view.weight[slots] = 0
        view.color[slots] = 0
        own_slots = own.index.lookup(keys)
        have = own_slots >= 0
        if bool(have.any()):
            dst, src = slots[have], own_slots[have]
            view.tsdf[dst] = own.tsdf[src].to(view.dtype)
            view.weight[dst] = own.weight[src].to(view.dtype)
            view.color[dst] = own.color[src].to(view.dtype)
        max_weight = self.own.config.integration.max_weight
        held = have
        for layer in self.peers.values():
            part = _blocks_of(layer, keys)
            if part.num_blocks:
                merge_volume(view, part, max_weight)
                held = held | (layer.index.lookup(keys) >= 0)
        view.mark_changed(slots)
        gone = keys[~held]
        if gone.numel():
            view.release(view.index.lookup(gone))


def _blocks_of(layer: BlockVolume, keys: torch.Tensor) -> BlockVolume:
    """A volume holding the blocks of ``layer`` among (K,) ``keys`` (slots in key order)."""
    slots = layer.index.lookup(keys)
    slots = slots[slots >= 0]
    part = BlockVolume(layer.voxel_size_m, layer.block_size, layer.truncation_m, layer.device,
                       layer.dtype, initial_capacity_blocks=max(1, slots.numel()))
    if slots.numel():
        dst = part.allocate_keys(layer.index.slot_keys[slots])
        part.tsdf[dst] = layer.tsdf[slots]
        part.weight[dst] = layer.weight[slots]
        part.color[dst] = layer.color[slots]
    return part
