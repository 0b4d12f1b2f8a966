"""Batched, incremental marching cubes over a :class:`BlockVolume`.

A block owns the ``B**3`` cubes whose lowest corner is one of its voxels; the cubes on its upper
faces read voxels of the (up to 7) neighbouring blocks in +x, +y, +z. So every cube belongs to
exactly one block (no duplicate faces at block borders), and a vertex is identified globally by
the grid edge it lies on (its lower voxel index and axis), which welds block meshes together
without cracks.

Which cubes hold surface: a cube is meshed when all 8 corners have at least the minimum weight,
its corners do not all have the same sign, and none of its sign-changing edges joins two
*saturated* values of opposite sign (one ``>= +s``, the other ``<= -s`` with
``s = (1 - SATURATION_EPS) * truncation`` in the volume's storage dtype). Such a pair carries no
zero crossing: the TSDF jumps there between two sides of a thin object, or between a voxel far
in front of a surface and one far behind another. The whole cube is dropped rather than the
edge alone, so the four cubes around that edge agree and no half-polygons appear. Cubes with
one saturated corner next to an unsaturated one of the other sign are kept: that is what a
surface seen at a grazing angle looks like (projective distances grow as ``1 / sin(angle)``).

:class:`IncrementalMesher` keeps each block's triangles and, on :meth:`~IncrementalMesher.update`,
re-meshes only the blocks the volume's change log names (plus their -x/-y/-z neighbours, whose
cubes read them), so an update costs time proportional to the change, not to the map.
"""

from __future__ import annotations

import numpy as np
import torch

from .block_hash import BlockHashMap, pack_coords, unpack_keys
from .mc_tables import EDGES, corner_offset, triangle_table
from .mesh import TriangleMesh
from .volume import BlockVolume

_EDGE_COORD_BITS = 20
_EDGE_COORD_OFFSET = 1 << (_EDGE_COORD_BITS - 1)
#: A TSDF value within this fraction of the truncation counts as saturated. Above the relative
#: rounding of float16 (``2**-11``), so a value clamped to the truncation is saturated whether
#: the volume stores float16 or float32.
SATURATION_EPS = 1e-3
#: Smallest row capacity of the triangle store.
_MIN_ROWS = 1024


def pack_edge_keys(voxel: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """(N, 3) int64 lower voxel index + (N,) axis -> (N,) int64 key of a grid edge."""
    if voxel.numel() and (voxel.min() < -_EDGE_COORD_OFFSET
                          or voxel.max() >= _EDGE_COORD_OFFSET):
        raise ValueError("voxel index out of the meshable range (+-2**19 voxels)")
    v = voxel + _EDGE_COORD_OFFSET
    return (((v[:, 0] << _EDGE_COORD_BITS | v[:, 1]) << _EDGE_COORD_BITS | v[:, 2]) << 2) | axis


def saturation_threshold(volume: BlockVolume) -> float:
    """TSDF magnitude (metres) from which a stored value counts as saturated: the truncation
    as the volume's dtype stores it (float16 rounds 0.2 down to 0.19995), less
    :data:`SATURATION_EPS` of it."""
    stored = float(torch.tensor(volume.truncation_m, dtype=volume.dtype).item())
    return stored * (1.0 - SATURATION_EPS)


class _CubeLayout:
    """Index tables of one block's (B+1)**3 sample grid, built once per block size/device."""

    def __init__(self, block_size: int, device: torch.device) -> None:
        B, n = block_size, block_size + 1
        r = torch.arange(n, device=device)
        s = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)  # (n^3, 3)
        over = s // B  # which neighbour (0/1 per axis) holds the sample
        self.sample_neighbour = over[:, 0] + 2 * over[:, 1] + 4 * over[:, 2]  # (n^3,)
        loc = s % B
        self.sample_local = (loc[:, 0] * B + loc[:, 1]) * B + loc[:, 2]  # (n^3,)
        self.neighbour_offsets = torch.tensor([corner_offset(c) for c in range(8)],
                                              device=device)  # (8, 3) in corner order
        rb = torch.arange(B, device=device)
        cube = torch.stack(torch.meshgrid(rb, rb, rb, indexing="ij"), -1).reshape(-1, 3)
        self.cube_origin = cube  # (B^3, 3) local voxel index of each cube's corner 0
        corners = cube[:, None, :] + self.neighbour_offsets[None]  # (B^3, 8, 3)
        self.cube_corner_sample = (corners[..., 0] * n + corners[..., 1]) * n + corners[..., 2]
        tris, counts = triangle_table()
        self.tri_table = torch.as_tensor(tris, device=device)  # (256, T, 3)
        self.tri_count = torch.as_tensor(counts, device=device)  # (256,)
        edges = torch.tensor(EDGES, device=device)  # (12, 3): corner0, corner1, axis
        self.edge_c0, self.edge_c1, self.edge_axis = edges[:, 0], edges[:, 1], edges[:, 2]
        self.corner_bits = 1 << torch.arange(8, device=device)


class IncrementalMesher:
    """Marching cubes of a volume, updated block by block.

    Triangles live in one row store (``edge`` (C, 3) int64 grid-edge keys, ``pos`` (C, 3, 3)
    float32 metres, ``rgb`` (C, 3, 3) float32 in [0, 255]); each block that has triangles owns
    one contiguous run of rows, found through a hash map from block key to ``(start, count)``.
    Re-meshing a block abandons its old rows and appends new ones; the store is compacted when
    it fills up or becomes mostly garbage (amortised O(1) per row written).

    Args:
        volume: the map to mesh (kept by reference).
        min_weight: a cube is meshed only if all its corners have at least this weight.
        batch_blocks: blocks meshed per batch (bounds temporary memory).

    Attributes:
        updated_block_keys: (K,) int64 keys returned by the last :meth:`update`.
        blocks_meshed: blocks run through marching cubes since construction (a work counter).
    """

    def __init__(self, volume: BlockVolume, min_weight: float, batch_blocks: int = 1024) -> None:
        self.volume = volume
        self.min_weight = float(min_weight)
        self.batch_blocks = int(batch_blocks)
        self.blocks_meshed = 0
        self.reset()

    def _clear(self) -> None:
        """Drop every triangle (storage on the volume's current device)."""
        dev = self.volume.device
        self._blocks = BlockHashMap(dev)  # keys of the blocks that have triangles
        self._block_start = torch.zeros(16, dtype=torch.int64, device=dev)  # per hash slot
        self._block_count = torch.zeros(16, dtype=torch.int64, device=dev)  # per hash slot
        self._edge = torch.empty((0, 3), dtype=torch.int64, device=dev)
        self._pos = torch.empty((0, 3, 3), dtype=torch.float32, device=dev)
        self._rgb = torch.empty((0, 3, 3), dtype=torch.float32, device=dev)
        self._rows_used = 0  # rows written (live or abandoned) at the front of the store
        self._num_triangles = 0

    def reset(self) -> None:
        """Drop every triangle; the next :meth:`update` re-meshes the whole volume (on its
        current device)."""
        self._layout = _CubeLayout(self.volume.block_size, self.volume.device)
        self._seen_stamp = -1  # older than any change log: the next update rebuilds
        self.updated_block_keys = torch.empty(0, dtype=torch.int64, device=self.volume.device)
        self._clear()

    @property
    def num_triangles(self) -> int:
        """Number of triangles currently held (all blocks)."""
        return self._num_triangles

    def memory_bytes(self) -> int:
        """Bytes held for triangles: the row store (live and abandoned rows, spare capacity)
        and the per-block index."""
        return (sum(t.numel() * t.element_size() for t in (self._edge, self._pos, self._rgb,
                                                          self._block_start, self._block_count))
                + self._blocks.nbytes())

    # ------------------------------------------------------------------ updating
    def update(self) -> torch.Tensor:
        """Re-mesh what changed in the volume since the last call.

        Re-meshed: blocks the change log names, blocks released since (their triangles are
        dropped), and the -x/-y/-z neighbours of both (their cubes read those voxels). When the
        log no longer reaches back (first call, volume reset or loaded, or a long pause), every
        block is re-meshed and triangles of blocks no longer in the volume are dropped.

        Returns:
            (K,) int64 distinct keys, ascending, of the blocks whose triangles may have changed
            (re-meshed, released or dropped; also kept in :attr:`updated_block_keys`), for
            incremental publishing: a key whose block has no triangles any more means "clear
            this block".
        """
        vol, dev = self.volume, self.volume.device
        changes = vol.changes(self._seen_stamp)
        self._seen_stamp = vol.stamp
        if changes.complete:
            if changes.slots.numel() == 0 and changes.released_keys.numel() == 0:
                self.updated_block_keys = torch.empty(0, dtype=torch.int64, device=dev)
                return self.updated_block_keys
            sources = torch.cat((vol.slot_coords(changes.slots),
                                 unpack_keys(changes.released_keys)))
            # A block's cubes read its +x/+y/+z neighbours: changes dirty the -x/-y/-z ones.
            dirty = torch.unique(pack_coords(
                (sources[:, None, :] - self._layout.neighbour_offsets[None]).reshape(-1, 3)))
            dropped = self._drop(dirty)
            slots = vol.index.lookup(dirty)
            slots = slots[slots >= 0]
        else:
            dropped = self._blocks.slot_keys.clone()
            self._clear()
            slots = torch.arange(vol.num_blocks, device=dev)
        parts = [self._mesh_blocks(slots[start:start + self.batch_blocks])
                 for start in range(0, slots.numel(), self.batch_blocks)]
        if parts:
            self._append(*(torch.cat(items) for items in zip(*parts)))
        self._reserve(0)  # returns memory when most rows were abandoned
        self.blocks_meshed += int(slots.numel())
        self.updated_block_keys = torch.unique(torch.cat(
            (vol.index.slot_keys[slots], changes.released_keys, dropped)))
        return self.updated_block_keys

    def _drop(self, keys: torch.Tensor) -> torch.Tensor:
        """Forget the triangles of (N,) distinct block keys; returns the (D,) keys that had
        some. Their rows become garbage until the next compaction."""
        slots = self._blocks.lookup(keys)
        held = slots >= 0
        slots = slots[held]
        if slots.numel() == 0:
            return slots
        self._num_triangles -= int(self._block_count[slots].sum())
        src, dst = self._blocks.remove_slots(slots)
        self._block_start[dst] = self._block_start[src]
        self._block_count[dst] = self._block_count[src]
        return keys[held]

    def _append(self, block_key: torch.Tensor, edge: torch.Tensor, pos: torch.Tensor,
                rgb: torch.Tensor) -> None:
        """Store new triangles: (T,) block keys, each block's rows consecutive and the blocks
        not held yet; (T, 3) edge keys; (T, 3, 3) positions, metres; (T, 3, 3) colors."""
        n = int(edge.shape[0])
        if n == 0:
            return
        keys, counts = torch.unique_consecutive(block_key, return_counts=True)
        self._reserve(n)
        first = self._rows_used
        self._edge[first:first + n] = edge
        self._pos[first:first + n] = pos
        self._rgb[first:first + n] = rgb
        slots, _ = self._blocks.insert_or_find(keys)
        if len(self._blocks) > self._block_start.numel():
            grow = max(len(self._blocks), 2 * self._block_start.numel()) \
                - self._block_start.numel()
            zeros = torch.zeros(grow, dtype=torch.int64, device=self._block_start.device)
            self._block_start = torch.cat((self._block_start, zeros))
            self._block_count = torch.cat((self._block_count, zeros))
        self._block_start[slots] = first + torch.cumsum(counts, 0) - counts
        self._block_count[slots] = counts
        self._rows_used += n
        self._num_triangles += n

    def _reserve(self, n: int) -> None:
        """Make room for ``n`` more rows. Compacts the live rows into a store of
        ``max(_MIN_ROWS, next_pow2(2 * (live + n)))`` rows when they do not fit, or when the
        live rows fill less than an eighth of a store larger than the minimum."""
        capacity = int(self._edge.shape[0])
        needed = self._num_triangles + n
        if self._rows_used + n <= capacity and (8 * needed >= capacity
                                                or capacity <= _MIN_ROWS):
            return
        capacity = max(_MIN_ROWS, 1 << (2 * needed - 1).bit_length())
        n_held = len(self._blocks)
        counts = self._block_count[:n_held]
        rows = self._rows(self._block_start[:n_held], counts)
        for name in ("_edge", "_pos", "_rgb"):
            old = getattr(self, name)
            new = old.new_empty((capacity, *old.shape[1:]))
            new[:rows.numel()] = old[rows]
            setattr(self, name, new)
        self._block_start[:n_held] = torch.cumsum(counts, 0) - counts
        self._rows_used = int(rows.numel())

    @staticmethod
    def _rows(start: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """(K,) first rows and (K,) row counts -> (sum(count),) int64 rows, run after run."""
        total = int(count.sum())
        run_offset = torch.cumsum(count, 0) - count
        return (torch.repeat_interleave(start - run_offset, count, output_size=total)
                + torch.arange(total, device=start.device))

    # ------------------------------------------------------------------ meshing
    def _mesh_blocks(self, slots: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Marching cubes of the blocks at (S,) distinct volume slots.

        Returns:
            ``(block_key (T,) int64, edge_key (T, 3) int64, pos (T, 3, 3) float32 metres,
            rgb (T, 3, 3) float32)``, one row per triangle, rows of a block consecutive.
        """
        vol, L = self.volume, self._layout
        coords = vol.slot_coords(slots)  # (S, 3)
        nbr = vol.find((coords[:, None, :] + L.neighbour_offsets[None]).reshape(-1, 3))
        nbr = nbr.reshape(-1, 8)  # (S, 8) slot of each +offset neighbour, -1 if absent
        sample_slot = nbr[:, L.sample_neighbour]  # (S, n^3)
        present = sample_slot >= 0
        flat = sample_slot.clamp(min=0) * vol.voxels_per_block + L.sample_local[None]
        tsdf = vol.tsdf.reshape(-1)[flat].to(torch.float32)
        weight = torch.where(present, vol.weight.reshape(-1)[flat].to(torch.float32), 0.0)
        # Only blocks whose observed samples hold both signs can contain a surface.
        observed = weight >= self.min_weight
        has_neg = (observed & (tsdf < 0)).any(1)
        has_pos = (observed & (tsdf >= 0)).any(1)
        surf = torch.nonzero(has_neg & has_pos).squeeze(1)
        slots, coords, tsdf, weight, flat = (x[surf] for x in (slots, coords, tsdf, weight,
                                                                 flat))
        rgb = vol.color.reshape(-1, 3)[flat].to(torch.float32)  # (S, n^3, 3)

        ct = tsdf[:, L.cube_corner_sample]  # (S, B^3, 8)
        cw = weight[:, L.cube_corner_sample]
        case = ((ct < 0).to(torch.int64) * L.corner_bits).sum(-1)
        ok = (cw >= self.min_weight).all(-1) & (case > 0) & (case < 255)
        blk, cub = torch.nonzero(ok, as_tuple=True)  # candidate cubes, grouped by block
        # Drop cubes with an edge between saturated values of opposite sign (no surface there).
        s = saturation_threshold(vol)
        f = ct[blk, cub]  # (K, 8)
        side = (f >= s).to(torch.int8) - (f <= -s).to(torch.int8)  # +1 / -1 saturated, else 0
        keep = ~(side[:, L.edge_c0] * side[:, L.edge_c1] < 0).any(-1)
        blk, cub, case = blk[keep], cub[keep], case[blk[keep], cub[keep]]

        n_tri = L.tri_count[case]
        t_max = L.tri_table.shape[1]
        tri_ok = torch.arange(t_max, device=vol.device)[None] < n_tri[:, None]  # (K, T)
        cube_i, tri_i = torch.nonzero(tri_ok, as_tuple=True)
        edge = L.tri_table[case[cube_i], tri_i]  # (F, 3) edge ids
        b, c = blk[cube_i][:, None], cub[cube_i][:, None]  # (F, 1)
        c0, c1 = L.edge_c0[edge], L.edge_c1[edge]  # (F, 3) corner ids
        f0 = ct[b, c, c0]
        f1 = ct[b, c, c1]
        t = (f0 / (f0 - f1)).clamp(0.0, 1.0)[..., None]  # (F, 3, 1)
        s0 = L.cube_corner_sample[c, c0]
        s1 = L.cube_corner_sample[c, c1]
        rgb0, rgb1 = rgb[b, s0], rgb[b, s1]
        vox0 = (coords[blk[cube_i]] * vol.block_size + L.cube_origin[cub[cube_i]])[:, None, :] \
            + L.neighbour_offsets[c0]  # (F, 3, 3) global voxel index of corner0
        direction = L.neighbour_offsets[c1 ^ c0].to(torch.float32)  # unit step along the edge
        pos = (vox0.to(torch.float32) + t * direction) * vol.voxel_size_m
        edge_key = pack_edge_keys(vox0.reshape(-1, 3), L.edge_axis[edge].reshape(-1)).reshape(
            -1, 3)
        block_key = vol.index.slot_keys[slots][blk[cube_i]]
        return block_key, edge_key, pos, rgb0 + t * (rgb1 - rgb0)

    # ------------------------------------------------------------------ outputs
    def _held_runs(self, block_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K,) block keys -> their (K,) first rows and (K,) triangle counts (0 when a block
        has no triangles)."""
        slots = self._blocks.lookup(block_keys.to(self._edge.device, torch.int64))
        held = slots >= 0
        safe = slots.clamp(min=0)
        return (torch.where(held, self._block_start[safe], 0),
                torch.where(held, self._block_count[safe], 0))

    def _all_keys(self) -> torch.Tensor:
        """(K,) int64 keys of the blocks that have triangles, ascending."""
        return torch.sort(self._blocks.slot_keys).values

    def block_meshes(self, block_keys: torch.Tensor, with_colors: bool = True
                     ) -> list[tuple[int, TriangleMesh]]:
        """Per-block meshes of ``block_keys`` (empty meshes for blocks without triangles),
        e.g. to publish one marker per block after :meth:`update`."""
        start, count = self._held_runs(block_keys)
        out = []
        for key, a, n in zip(block_keys.tolist(), start.tolist(), count.tolist()):
            rows = slice(a, a + n)
            out.append((key, self._weld(self._edge[rows], self._pos[rows], self._rgb[rows],
                                        with_colors)))
        return out

    def block_triangles(self, block_keys: torch.Tensor | None = None, with_colors: bool = True
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Unwelded triangles of ``block_keys`` (None: of every block that has some), grouped
        by block, e.g. for one ``TRIANGLE_LIST`` marker per block (no shared vertices needed;
        vectorised, unlike :meth:`block_meshes`).

        Returns:
            ``(keys (K,) int64, counts (K,) int64, positions (T, 3, 3) float32 metres,
            colors (T, 3, 3) uint8 or None)``: the distinct ``block_keys`` ascending, the
            number of triangles of each (0: the block has no surface any more), and the
            triangles' corners, block after block in that order.
        """
        keys = self._all_keys() if block_keys is None else torch.unique(
            block_keys.to(self._edge.device))
        start, count = self._held_runs(keys)
        rows = self._rows(start, count)
        colors = None
        if with_colors:
            colors = self._rgb[rows].round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        return keys.cpu().numpy(), count.cpu().numpy(), self._pos[rows].cpu().numpy(), colors

    def block_indexed(self, block_keys: torch.Tensor | None = None, with_colors: bool = True
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                 np.ndarray | None]:
        """Indexed meshes of ``block_keys`` (None: of every block that has triangles), each
        block welded on its own (its triangles share vertices; blocks share none), e.g. for
        one ``recon_ros_interfaces/MeshBlock`` per block. Vectorised over blocks, unlike
        :meth:`block_meshes`.

        Returns:
            ``(keys (K,) int64, vertex_counts (K,) int64, triangle_counts (K,) int64,
            vertices (V, 3) float32 metres map frame, triangles (T, 3) int64, colors (V, 3)
            uint8 or None)``: the distinct ``block_keys`` ascending (block coordinates:
            :func:`~recon_ros.core.block_hash.unpack_keys`), how many vertices and triangles
            each has (0 triangles: the block has no surface any more), then the vertices and
            the triangles block after block in that order. Triangle indices are local to their
            block (into its own ``vertex_counts[k]`` vertices); winding as :class:`TriangleMesh`
            (normals towards positive TSDF).
        """
        keys = self._all_keys() if block_keys is None else torch.unique(
            block_keys.to(self._edge.device))
        start, count = self._held_runs(keys)
        rows = self._rows(start, count)
        edge = self._edge[rows].reshape(-1)  # (3T,) grid edge of each corner
        # A vertex is one (block, grid edge) pair: number the distinct edges, then the pairs;
        # the pairs sort by block first, so each block's vertices come out consecutive.
        edge_ids, edge_id = torch.unique(edge, return_inverse=True)
        corner_block = torch.repeat_interleave(
            torch.arange(keys.numel(), device=edge.device), 3 * count,
            output_size=edge.numel())
        pairs, vertex = torch.unique(corner_block * edge_ids.numel() + edge_id,
                                     return_inverse=True)
        vertex_count = torch.bincount(pairs // max(edge_ids.numel(), 1),
                                      minlength=keys.numel())
        first_vertex = torch.cumsum(vertex_count, 0) - vertex_count
        vertices = torch.empty((pairs.numel(), 3), dtype=torch.float32, device=edge.device)
        vertices[vertex] = self._pos[rows].reshape(-1, 3)
        colors = None
        if with_colors:
            rgb = torch.empty((pairs.numel(), 3), dtype=torch.float32, device=edge.device)
            rgb[vertex] = self._rgb[rows].reshape(-1, 3)
            colors = rgb.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        triangles = (vertex - first_vertex[corner_block]).reshape(-1, 3)
        return (keys.cpu().numpy(), vertex_count.cpu().numpy(), count.cpu().numpy(),
                vertices.cpu().numpy(), triangles.cpu().numpy(), colors)

    def mesh(self, with_colors: bool = True, block_keys: torch.Tensor | None = None
             ) -> TriangleMesh:
        """Weld the current triangles (optionally only those of ``block_keys``) into a mesh
        (O(map) without ``block_keys``)."""
        keys = self._all_keys() if block_keys is None else torch.unique(
            block_keys.to(self._edge.device))
        rows = self._rows(*self._held_runs(keys))
        return self._weld(self._edge[rows], self._pos[rows], self._rgb[rows], with_colors)

    @staticmethod
    def _weld(edge: torch.Tensor, pos: torch.Tensor, rgb: torch.Tensor, with_colors: bool
              ) -> TriangleMesh:
        """Triangles (T, 3) edge keys / (T, 3, 3) positions and colors -> indexed mesh."""
        if edge.numel() == 0:
            return TriangleMesh.empty(with_colors)
        uniq, inverse = torch.unique(edge.reshape(-1), return_inverse=True)
        verts = torch.empty((uniq.numel(), 3), dtype=torch.float32, device=pos.device)
        verts[inverse] = pos.reshape(-1, 3)
        colors = None
        if with_colors:
            c = torch.empty((uniq.numel(), 3), dtype=torch.float32, device=pos.device)
            c[inverse] = rgb.reshape(-1, 3)
            colors = c.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        faces = inverse.reshape(-1, 3)  # a triangle's three edges are distinct
        return TriangleMesh(verts.cpu().numpy(), faces.cpu().numpy(), colors)
