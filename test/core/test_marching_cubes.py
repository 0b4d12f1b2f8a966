"""Marching cubes on volumes filled with exact SDFs, and which cubes count as surface."""

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch

from recon_ros.core import Frame, Mapper, MapperConfig, PinholeCamera
from recon_ros.core.marching_cubes import IncrementalMesher
from recon_ros.core.mc_tables import triangle_table
from recon_ros.core.mesh import TriangleMesh
from recon_ros.core.volume import BlockVolume
from test.conftest import look_at

VOXEL = 0.05


def sdf_volume(device: str, sdf_fn: Callable[[torch.Tensor], torch.Tensor],
               block_range: tuple[int, int] = (-3, 3), trunc: float = 4 * VOXEL,
               dtype: torch.dtype = torch.float32) -> BlockVolume:
    """A volume of 8**3-voxel blocks over ``block_range`` (per axis) whose TSDF is
    ``sdf_fn((..., 3) voxel centres, metres)`` clamped to +-trunc, weight 1, color 200."""
    vol = BlockVolume(VOXEL, 8, trunc, device, dtype)
    r = torch.arange(*block_range)
    coords = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    slots = vol.allocate(coords)
    p = vol.voxel_centers(slots)
    vol.tsdf[slots] = sdf_fn(p).clamp(-trunc, trunc).to(dtype)
    vol.weight[slots] = 1.0
    vol.color[slots] = 200.0
    vol.mark_changed(slots)
    return vol


def edge_use(faces: np.ndarray) -> Counter:
    """How many faces use each undirected edge of (F, 3) faces."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return Counter(map(tuple, e))


def directed_edges(faces: np.ndarray) -> np.ndarray:
    """(3F, 2) directed edges of (F, 3) faces."""
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def test_tables_cover_every_case_consistently() -> None:
    tris, counts = triangle_table()
    assert counts[0] == 0 and counts[255] == 0
    assert (counts[1:255] >= 1).all() and counts.max() <= 5
    # Complementary cases produce the same number of triangles (sign symmetry of the rule is
    # not required, but a single corner in or out always yields exactly one triangle).
    for c in range(8):
        assert counts[1 << c] == 1 and counts[255 ^ (1 << c)] == 1


@pytest.mark.parametrize("center", [(0.0, 0.0, 0.0), (0.13, -0.21, 0.07)])
def test_sphere_mesh_is_closed_oriented_and_on_the_surface(
        device: str, center: tuple[float, float, float]) -> None:
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


def test_incremental_update_equals_full_remesh(device: str) -> None:
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


def test_unobserved_voxels_produce_no_surface(device: str) -> None:
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


def test_block_meshes_partition_the_whole_mesh(device: str) -> None:
    vol = sdf_volume(device, lambda p: p.norm(dim=-1) - 0.6)
    mesher = IncrementalMesher(vol, 1e-3)
    keys = mesher.update()
    parts = mesher.block_meshes(keys)
    assert len(parts) == keys.numel()
    assert sum(m.num_faces for _, m in parts) == mesher.mesh().num_faces
    assert any(m.num_faces == 0 for _, m in parts)  # blocks away from the surface


def _upward_area(mesh: TriangleMesh, select: np.ndarray) -> float:
    """Signed area (m^2) of the selected faces projected on the xy plane, counted positive for
    faces whose normal points up (+z)."""
    tri = mesh.vertices[mesh.faces[select]].astype(np.float64)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    return float(0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_saturated_sign_changes_are_not_surface(device: str, dtype: torch.dtype) -> None:
    """Three regions of one horizontal surface at z = 0.013:

    * x < 0: the exact SDF;
    * x >= 0, y < 0: +trunc above and -trunc below (the two sides of a thin wall, or a voxel far
      in front of a surface next to one far behind another): a sign change that is no surface;
    * x >= 0, y >= 0: +trunc above, but five times the distance below (a surface seen at a
      grazing angle: projective distances are stretched, the free side saturates).
    """
    trunc = 4 * VOXEL

    def tsdf(p: torch.Tensor) -> torch.Tensor:
        d = p[..., 2] - 0.013
        saturated = torch.where(d > 0, trunc, -trunc)
        grazing = torch.where(d > 0, trunc, 5 * d)
        right = torch.where(p[..., 1] < 0, saturated, grazing)
        return torch.where(p[..., 0] < 0, d, right)

    vol = sdf_volume(device, tsdf, block_range=(-2, 2), dtype=dtype)
    mesher = IncrementalMesher(vol, 1e-3)
    mesher.update()
    mesh = mesher.mesh()
    c = mesh.vertices[mesh.faces].mean(1)
    # Every cube with a corner in the saturated region is dropped ...
    assert not ((c[:, 0] > -VOXEL) & (c[:, 1] < 0)).any()
    # ... while the other two regions are meshed completely (the upper cubes of the volume's
    # last layer have no neighbour to read: the mesh ends at 0.75 m) and on the surface.
    assert _upward_area(mesh, c[:, 0] < -VOXEL) == pytest.approx(0.75 * 1.55, rel=1e-5)
    assert _upward_area(mesh, (c[:, 0] > 0) & (c[:, 1] > 0)) == pytest.approx(0.75 ** 2,
                                                                             rel=1e-5)
    assert np.abs(mesh.vertices[:, 2] - 0.013).max() < 1e-3


FLOOR_K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
FLOOR_CAMERA = PinholeCamera(FLOOR_K, 320, 240)
#: Floor height: 1 cm above a voxel layer, so the voxels just below it are observed up to
#: 0.4 m * trunc / 1 cm = 8 m away. Projective distances grow as 1 / sin(grazing angle): where
#: the first voxel layer below the floor is more than ``trunc * sin`` under it, that layer is
#: beyond the truncation band, never observed, and no mesher can find the floor there.
FLOOR_Z = -0.04


def floor_mapper(device: str, dtype: str) -> Mapper:
    """Default mapper (5 cm voxels, 4-voxel truncation) after one frame of a floor seen from a
    camera 0.4 m above it, looking at the floor 3 m ahead (+x)."""
    # Default block search: with the automatic stride (6 px here) consecutive sampled pixel
    # rows are ~0.45 m apart on the floor 3 m ahead, more than a block; the integrator fills
    # such gaps on continuous surfaces, so no floor block is skipped.
    mapper = Mapper(MapperConfig.from_dict({"volume": {"device": device, "dtype": dtype}}))
    T = look_at(np.array([0.0, 0.0, FLOOR_Z + 0.4]), np.array([3.0, 0.0, FLOOR_Z]))
    u, v = np.meshgrid(np.arange(320), np.arange(240))
    rays = np.stack(((u - FLOOR_K[0, 2]) / FLOOR_K[0, 0], (v - FLOOR_K[1, 2]) / FLOOR_K[1, 1],
                     np.ones_like(u, float)), -1)  # camera frame, z = 1
    down = (rays @ T[:3, :3].T)[..., 2]  # world z of each ray per unit of depth
    depth = np.where(down < 0, (FLOOR_Z - T[2, 3]) / np.minimum(down, -1e-12), 0.0)
    mapper.integrate(Frame(depth.astype(np.float32), FLOOR_CAMERA, T))
    return mapper


def test_floor_seen_at_a_grazing_angle_is_meshed(device: str) -> None:
    mesh = floor_mapper(device, "float32").mesh()
    c = mesh.vertices[mesh.faces].mean(1)
    # 2 to 4 m ahead (grazing angles of 11 to 6 degrees), within 0.5 m of the optical axis.
    ahead = (c[:, 0] > 2.0) & (c[:, 0] < 4.0) & (np.abs(c[:, 1]) < 0.5)
    assert _upward_area(mesh, ahead) >= 0.9 * 2.0 * 1.0
    assert np.abs(mesh.vertices[mesh.faces[ahead]][..., 2] - FLOOR_Z).max() <= 0.015


def test_float16_and_float32_volumes_give_the_same_mesh(device: str) -> None:
    m32 = floor_mapper(device, "float32")
    m16 = floor_mapper(device, "float16")
    a, b = m32.mesh(), m16.mesh()
    assert a.num_faces > 5000
    assert abs(a.num_faces - b.num_faces) <= 0.01 * a.num_faces
    # Each vertex of one lies within float16 rounding of the truncation of one of the other.
    tol = 2.0 ** -10 * m32.volume.truncation_m
    for p, q in ((a.vertices, b.vertices), (b.vertices, a.vertices)):
        nearest = np.concatenate([np.linalg.norm(chunk[:, None] - q[None], axis=-1).min(1)
                                  for chunk in np.array_split(p, 1 + len(p) // 512)])
        assert nearest.max() <= tol
