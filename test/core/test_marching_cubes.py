"""Marching cubes on volumes filled with exact SDFs."""

from collections import Counter

import numpy as np
import pytest
import torch

from recon_ros.core.marching_cubes import IncrementalMesher
from recon_ros.core.mc_tables import triangle_table
from recon_ros.core.volume import BlockVolume

VOXEL = 0.05


def sdf_volume(device, sdf_fn, block_range=(-3, 3), trunc=4 * VOXEL):
    vol = BlockVolume(VOXEL, 8, trunc, device)
    r = torch.arange(*block_range)
    coords = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    slots = vol.allocate(coords)
    p = vol.voxel_centers(slots)
    vol.tsdf[slots] = sdf_fn(p).clamp(-trunc, trunc)
    vol.weight[slots] = 1.0
    vol.color[slots] = 200.0
    vol.mark_changed(slots)
    return vol


def edge_use(faces):
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return Counter(map(tuple, e))


def directed_edges(faces):
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def test_tables_cover_every_case_consistently():
    tris, counts = triangle_table()
    assert counts[0] == 0 and counts[255] == 0
    assert (counts[1:255] >= 1).all() and counts.max() <= 5
    # Complementary cases produce the same number of triangles (sign symmetry of the rule is
    # not required, but a single corner in or out always yields exactly one triangle).
    for c in range(8):
        assert counts[1 << c] == 1 and counts[255 ^ (1 << c)] == 1


@pytest.mark.parametrize("center", [(0.0, 0.0, 0.0), (0.13, -0.21, 0.07)])
def test_sphere_mesh_is_closed_oriented_and_on_the_surface(device, center):
    c = torch.tensor(center)
    radius = 0.61
    vol = sdf_volume(device, lambda p: (p - c.to(p.device)).norm(dim=-1) - radius)
    mesher = IncrementalMesher(vol, 1e-3)
    mesher.update()
    mesh = mesher.mesh()
    assert mesh.num_faces > 2000
    err = np.abs(np.linalg.norm(mesh.vertices - np.array(center), axis=1) - radius)
    assert err.max() < 1e-3  # linear interpolation of an exact SDF: error ~ v**2 / (8 R)
    # Closed 2-manifold across block borders: every edge used by exactly two faces ...
    assert set(edge_use(mesh.faces).values()) == {2}
    # ... with consistent winding: each directed edge appears once (its twin reversed).
    d = directed_edges(mesh.faces)
    assert len(set(map(tuple, d))) == len(d)
    # No duplicate faces.
    assert len({tuple(sorted(f)) for f in mesh.faces}) == mesh.num_faces
    # Normals point outwards (towards positive SDF) for every non-degenerate face.
    n = mesh.face_normals()
    centroid = mesh.vertices[mesh.faces].mean(1) - np.array(center)
    nondeg = np.linalg.norm(n, axis=1) > 0
    assert ((n * centroid).sum(1)[nondeg] > 0).all()
    # Euler characteristic of a sphere.
    n_edges = len(edge_use(mesh.faces))
    assert mesh.num_vertices - n_edges + mesh.num_faces == 2
    assert (mesh.colors == 200).all()


def test_incremental_update_equals_full_remesh(device):
    radius = 0.6
    vol = sdf_volume(device, lambda p: p.norm(dim=-1) - radius)
    mesher = IncrementalMesher(vol, 1e-3)
    mesher.update()
    # Dent the sphere inside one block, as a new measurement would.
    coords = torch.tensor([[2, 0, 0]], device=vol.device)
    slot = vol.find(coords)
    p = vol.voxel_centers(slot)
    vol.tsdf[slot] = ((p - torch.tensor([0.75, 0.05, 0.05], device=vol.device)).norm(dim=-1)
                      - 0.3).clamp(-0.2, 0.2)
    vol.mark_changed(slot)
    updated = mesher.update()
    # The block and its -x/-y/-z neighbours (whose cubes read it) are re-meshed, nothing else.
    assert 1 <= updated.numel() <= 8
    fresh = IncrementalMesher(vol, 1e-3)
    fresh.update()
    a, b = mesher.mesh(), fresh.mesh()
    key = lambda m: sorted(map(tuple, np.round(m.vertices[m.faces].reshape(-1, 9), 6)))
    assert key(a) == key(b)


def test_unobserved_voxels_produce_no_surface(device):
    vol = sdf_volume(device, lambda p: p[..., 2] - 0.013)  # plane z = 0.013
    mesher = IncrementalMesher(vol, 1e-3)
    mesher.update()
    full = mesher.mesh().num_faces
    half = vol.voxel_centers(torch.arange(vol.num_blocks))[..., 0] < 0
    vol.weight[: vol.num_blocks][half] = 0.0
    vol.mark_changed(torch.arange(vol.num_blocks))
    mesher.update()
    mesh = mesher.mesh()
    assert 0 < mesh.num_faces < full
    assert (mesh.vertices[:, 0] >= -1e-6).all()
    assert np.abs(mesh.vertices[:, 2] - 0.013).max() < 1e-5


def test_block_meshes_partition_the_whole_mesh(device):
    vol = sdf_volume(device, lambda p: p.norm(dim=-1) - 0.6)
    mesher = IncrementalMesher(vol, 1e-3)
    keys = mesher.update()
    parts = mesher.block_meshes(keys)
    assert len(parts) == keys.numel()
    assert sum(m.num_faces for _, m in parts) == mesher.mesh().num_faces
    assert any(m.num_faces == 0 for _, m in parts)  # blocks away from the surface
