"""Batched, incremental marching cubes over a :class:`BlockVolume`.

A block owns the ``B**3`` cubes whose lowest corner is one of its voxels; the cubes on its upper
faces read voxels of the (up to 7) neighbouring blocks in +x, +y, +z. So every cube belongs to
exactly one block (no duplicate faces at block borders), and a vertex is identified globally by
the grid edge it lies on (its lower voxel index and axis), which welds block meshes together
without cracks.

:class:`IncrementalMesher` keeps a triangle soup tagged with the owning block and re-meshes only
blocks whose voxels (or whose upper neighbours' voxels) changed since the last update.
"""

from __future__ import annotations

import numpy as np
import torch

from .block_hash import pack_coords
from .mc_tables import EDGES, corner_offset, triangle_table
from .mesh import TriangleMesh
from .volume import BlockVolume

_EDGE_COORD_BITS = 20
_EDGE_COORD_OFFSET = 1 << (_EDGE_COORD_BITS - 1)


def pack_edge_keys(voxel: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """(N, 3) int64 lower voxel index + (N,) axis -> (N,) int64 key of a grid edge."""
    if voxel.numel() and (voxel.min() < -_EDGE_COORD_OFFSET
                          or voxel.max() >= _EDGE_COORD_OFFSET):
        raise ValueError("voxel index out of the meshable range (+-2**19 voxels)")
    v = voxel + _EDGE_COORD_OFFSET
    return (((v[:, 0] << _EDGE_COORD_BITS | v[:, 1]) << _EDGE_COORD_BITS | v[:, 2]) << 2) | axis


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

    Args:
        volume: the map to mesh (kept by reference).
        min_weight: a cube is meshed only if all its corners have at least this weight.
        batch_blocks: blocks meshed per batch (bounds temporary memory).
    """

    def __init__(self, volume: BlockVolume, min_weight: float, batch_blocks: int = 1024) -> None:
        self.volume = volume
        self.min_weight = float(min_weight)
        self.batch_blocks = int(batch_blocks)
        self._layout = _CubeLayout(volume.block_size, volume.device)
        self._seen_stamp = -1
        self.updated_block_keys = torch.empty(0, dtype=torch.int64, device=volume.device)
        self._clear()

    def _clear(self) -> None:
        dev = self.volume.device
        self.tri_block = torch.empty(0, dtype=torch.int64, device=dev)  # (T,) block key
        self.tri_edge = torch.empty((0, 3), dtype=torch.int64, device=dev)  # (T, 3) edge keys
        self.tri_pos = torch.empty((0, 3, 3), dtype=torch.float32, device=dev)  # metres
        self.tri_rgb = torch.empty((0, 3, 3), dtype=torch.float32, device=dev)  # [0, 255]

    def reset(self) -> None:
        """Drop every triangle; the next :meth:`update` re-meshes the whole volume."""
        self._layout = _CubeLayout(self.volume.block_size, self.volume.device)
        self._seen_stamp = -1
        self._clear()

    def update(self) -> torch.Tensor:
        """Re-mesh blocks changed since the last call.

        Returns:
            (K,) int64 keys of the blocks whose triangles were replaced (also kept in
            :attr:`updated_block_keys`), for incremental publishing.
        """
        vol = self.volume
        changed = vol.changed_slots(self._seen_stamp)
        self._seen_stamp = vol.stamp
        if changed.numel() == 0:
            self.updated_block_keys = changed
            return changed
        # A block's cubes read its +x/+y/+z neighbours: changes also dirty the -x/-y/-z ones.
        coords = vol.block_coords[changed]
        cand = (coords[:, None, :] - self._layout.neighbour_offsets[None]).reshape(-1, 3)
        slots = vol.index.lookup(torch.unique(pack_coords(cand)))
        slots = slots[slots >= 0]
        keys = vol.index.slot_keys[slots]
        keep = ~torch.isin(self.tri_block, keys)
        parts = [(self.tri_block[keep], self.tri_edge[keep], self.tri_pos[keep],
                  self.tri_rgb[keep])]
        for start in range(0, slots.numel(), self.batch_blocks):
            parts.append(self._mesh_blocks(slots[start:start + self.batch_blocks]))
        self.tri_block, self.tri_edge, self.tri_pos, self.tri_rgb = (
            torch.cat(items) for items in zip(*parts))
        self.updated_block_keys = keys
        return keys

    def _mesh_blocks(self, slots: torch.Tensor) -> tuple[torch.Tensor, ...]:
        vol, L = self.volume, self._layout
        coords = vol.block_coords[slots]  # (S, 3)
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
        trunc = vol.truncation_m * (1.0 - 1e-4)
        ok = (cw >= self.min_weight).all(-1) & (ct.abs() < trunc).all(-1)
        case = ((ct < 0).to(torch.int64) * L.corner_bits).sum(-1)
        ok &= (case > 0) & (case < 255)
        blk, cub = torch.nonzero(ok, as_tuple=True)  # active cubes
        case = case[blk, cub]
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

    def block_meshes(self, block_keys: torch.Tensor, with_colors: bool = True
                     ) -> list[tuple[int, TriangleMesh]]:
        """Per-block meshes of ``block_keys`` (empty meshes for blocks without triangles),
        e.g. to publish one marker per block after :meth:`update`."""
        order = torch.argsort(self.tri_block)
        sorted_blocks = self.tri_block[order]
        keys = block_keys.to(sorted_blocks.device)
        start = torch.searchsorted(sorted_blocks, keys).tolist()
        end = torch.searchsorted(sorted_blocks, keys, right=True).tolist()
        out = []
        for key, a, b in zip(keys.tolist(), start, end):
            rows = order[a:b]
            out.append((key, self._weld(self.tri_edge[rows], self.tri_pos[rows],
                                        self.tri_rgb[rows], with_colors)))
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
        keys = torch.unique(self.tri_block if block_keys is None
                            else block_keys.to(self.tri_block.device))
        rows = torch.nonzero(torch.isin(self.tri_block, keys)).squeeze(1)
        rows = rows[torch.argsort(self.tri_block[rows], stable=True)]
        sorted_blocks = self.tri_block[rows]
        counts = (torch.searchsorted(sorted_blocks, keys, right=True)
                  - torch.searchsorted(sorted_blocks, keys))
        colors = None
        if with_colors:
            colors = self.tri_rgb[rows].round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        return (keys.cpu().numpy(), counts.cpu().numpy(), self.tri_pos[rows].cpu().numpy(),
                colors)

    def mesh(self, with_colors: bool = True, block_keys: torch.Tensor | None = None
             ) -> TriangleMesh:
        """Weld the current triangles (optionally only those of ``block_keys``) into a mesh."""
        sel = slice(None) if block_keys is None else torch.isin(self.tri_block, block_keys)
        return self._weld(self.tri_edge[sel], self.tri_pos[sel], self.tri_rgb[sel], with_colors)

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
