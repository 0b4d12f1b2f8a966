"""IncrementalMesher.block_indexed: per-block indexed meshes (behind the node's Mesh topic)
against the unwelded per-block triangles of block_triangles."""

import numpy as np
import torch

from recon_ros.core.block_hash import pack_coords, unpack_keys
from recon_ros.core.marching_cubes import IncrementalMesher

from .test_marching_cubes import sdf_volume


def test_block_indexed_welds_each_block(device: str) -> None:
    vol = sdf_volume(device, lambda p: p.norm(dim=-1) - 0.6)
    mesher = IncrementalMesher(vol, 1e-3)
    mesher.update()
    keys, tri_keys = mesher.block_indexed()[0], mesher.block_triangles()[0]
    np.testing.assert_array_equal(keys, tri_keys)
    # a block of the volume without triangles and one outside it: 0 vertices, 0 triangles
    volume_keys = vol.index.slot_keys[:vol.num_blocks].cpu().numpy()
    bare = np.setdiff1d(volume_keys, keys)[:1]
    far = pack_coords(torch.tensor([[50, 50, 50]])).numpy()
    asked = torch.as_tensor(np.concatenate((keys, bare, far)), device=device)
    keys, vertex_counts, tri_counts, vertices, triangles, colors = mesher.block_indexed(asked)
    t_keys, t_counts, corners, corner_colors = mesher.block_triangles(asked)
    np.testing.assert_array_equal(keys, t_keys)
    np.testing.assert_array_equal(tri_counts, t_counts)
    assert vertices.dtype == np.float32 and triangles.dtype == np.int64
    assert colors is not None and colors.dtype == np.uint8
    assert vertex_counts.sum() == len(vertices) == len(colors)
    assert tri_counts.sum() == len(triangles) and len(keys) == len(asked)
    assert np.count_nonzero(vertex_counts) == np.count_nonzero(tri_counts) == len(keys) - 2

    meshes = dict(mesher.block_meshes(torch.as_tensor(keys, device=device)))
    coords = unpack_keys(torch.as_tensor(keys)).numpy()
    block_m = vol.block_size * vol.voxel_size_m
    v_end, t_end = np.cumsum(vertex_counts), np.cumsum(tri_counts)
    for k in range(len(keys)):
        v = slice(v_end[k] - vertex_counts[k], v_end[k])
        t = slice(t_end[k] - tri_counts[k], t_end[k])
        local = triangles[t]
        assert local.size == 0 or (local.min() >= 0 and local.max() < vertex_counts[k])
        # exactly the unwelded corners, in block_triangles' order, colors included
        np.testing.assert_array_equal(vertices[v][local], corners[t])
        np.testing.assert_array_equal(colors[v][local], corner_colors[t])
        # every vertex used, none twice within the block: as many as block_meshes' per-block
        # weld by grid edge (positions alone may repeat where the surface passes through a
        # voxel centre, which several edges share)
        assert len(np.unique(local)) == vertex_counts[k] == meshes[int(keys[k])].num_vertices
        # inside the block's cubes: [index, index + 1] * block size
        tol = 1e-6
        assert np.all(vertices[v] >= coords[k] * block_m - tol)
        assert np.all(vertices[v] <= (coords[k] + 1) * block_m + tol)

    # blocks share border vertices (each block has its own copy), so the per-block total
    # exceeds the globally welded mesh; the surface is the same
    whole = mesher.mesh()
    assert len(vertices) > whole.num_vertices and len(triangles) == whole.num_faces
    np.testing.assert_array_equal(np.unique(vertices, axis=0), np.unique(whole.vertices, axis=0))

    no_color = mesher.block_indexed(asked, with_colors=False)
    assert no_color[5] is None
    np.testing.assert_array_equal(no_color[3], vertices)


def test_block_indexed_empty(device: str) -> None:
    vol = sdf_volume(device, lambda p: p.norm(dim=-1) + 1.0)  # all negative: no surface
    mesher = IncrementalMesher(vol, 1e-3)
    mesher.update()
    keys, vertex_counts, tri_counts, vertices, triangles, colors = mesher.block_indexed(
        pack_coords(torch.tensor([[0, 0, 0]], device=device)))
    assert keys.shape == vertex_counts.shape == tri_counts.shape == (1,)
    assert vertex_counts[0] == tri_counts[0] == 0
    assert vertices.shape == (0, 3) and triangles.shape == (0, 3) and colors.shape == (0, 3)
    assert mesher.block_indexed()[0].shape == (0,)
