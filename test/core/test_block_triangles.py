"""IncrementalMesher.block_triangles: the per-block triangle soup behind the node's markers."""

import numpy as np
import torch

from recon_ros.core.marching_cubes import IncrementalMesher

from .test_marching_cubes import sdf_volume


def _corner_set(points: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(p) for p in np.round(np.asarray(points).reshape(-1, 3) / 1e-6).astype(int)}


def test_block_triangles_match_block_meshes(device: str) -> None:
    vol = sdf_volume(device, lambda p: p.norm(dim=-1) - 0.6)
    mesher = IncrementalMesher(vol, 1e-3)
    changed = mesher.update()
    keys, counts, corners, colors = mesher.block_triangles(changed)
    assert np.all(np.diff(keys) > 0) and counts.sum() == len(corners) == len(colors)
    assert corners.shape[1:] == (3, 3) and colors.dtype == np.uint8
    start = 0
    meshes = dict(mesher.block_meshes(torch.as_tensor(keys)))
    for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
        mesh = meshes[key]
        assert count == mesh.num_faces
        assert _corner_set(corners[start:start + count]) == _corner_set(
            mesh.vertices[mesh.faces])
        start += count
    # None = every block with triangles; no colors on request
    all_keys, all_counts, all_corners, none = mesher.block_triangles(None, with_colors=False)
    assert none is None and np.all(all_counts > 0) and len(all_corners) == mesher.mesh().num_faces
    assert set(keys[counts > 0].tolist()) <= set(all_keys.tolist())
