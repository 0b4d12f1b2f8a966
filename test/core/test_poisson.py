"""Screened Poisson meshing of the TSDF (recon_ros.core.poisson) on volumes filled with exact
SDFs: surface points, normals, the closed mesh of a fully observed object, the crop to
observed space, and option validation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import open3d as o3d
import pytest
import torch

from recon_ros.core.errors import ConfigError
from recon_ros.core.marching_cubes import IncrementalMesher
from recon_ros.core.poisson import (
    PoissonConfig,
    is_watertight,
    poisson_mesh,
    sample_volume,
    surface_points,
)
from recon_ros.core.volume import BlockVolume

VOXEL = 0.05
TRUNC = 4 * VOXEL
MIN_WEIGHT = 1e-3
CENTER = (0.13, -0.21, 0.07)
RADIUS = 0.61
BOX_CENTER = (0.02, -0.03, 0.01)
BOX_HALF = (0.45, 0.35, 0.3)

#: (..., 3) map-frame points, metres -> (...,) value.
Sdf = Callable[[torch.Tensor], torch.Tensor]


def sphere_sdf(p: torch.Tensor) -> torch.Tensor:
    return (p - torch.tensor(CENTER, device=p.device)).norm(dim=-1) - RADIUS


def box_sdf(p: torch.Tensor) -> torch.Tensor:
    q = (p - torch.tensor(BOX_CENTER, device=p.device)).abs() - torch.tensor(BOX_HALF,
                                                                            device=p.device)
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


def sdf_volume(device: str, sdf: Sdf, observed: Sdf | None = None) -> BlockVolume:
    """8**3-voxel blocks over [-3, 3)**3 blocks holding ``sdf`` clamped to the truncation,
    weight 1 (0 where ``observed(centres)`` is False: unobserved, TSDF +truncation) and color
    200."""
    vol = BlockVolume(VOXEL, 8, TRUNC, device)
    r = torch.arange(-3, 3)
    slots = vol.allocate(torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3))
    p = vol.voxel_centers(slots)
    seen = torch.ones(p.shape[:2], dtype=torch.bool, device=vol.device) if observed is None \
        else observed(p)
    vol.tsdf[slots] = torch.where(seen, sdf(p).clamp(-TRUNC, TRUNC), TRUNC)
    vol.weight[slots] = seen.to(vol.dtype)
    vol.color[slots] = 200.0
    vol.mark_changed(slots)
    return vol


def test_sphere_points_lie_on_the_surface_with_radial_normals(device: str) -> None:
    vol = sdf_volume(device, sphere_sdf)
    points, normals, confidence = surface_points(vol, MIN_WEIGHT, batch_blocks=50)
    assert points.device == vol.device
    assert points.shape[0] > 2000 and points.shape == normals.shape
    radial = points.cpu() - torch.tensor(CENTER)
    r = radial.norm(dim=1)
    assert (r - RADIUS).abs().max() < 0.05 * VOXEL  # linear interpolation of an exact SDF
    assert ((radial / r[:, None]) * normals.cpu()).sum(1).min() > 0.99  # outward, unit
    assert torch.allclose(normals.norm(dim=1).cpu(), torch.ones(len(normals)), atol=1e-5)
    assert torch.allclose(confidence.cpu(), torch.ones(len(confidence)))
    # One point per sign-changing grid edge: exactly the marching-cubes vertices.
    mesher = IncrementalMesher(vol, MIN_WEIGHT)
    mesher.update()
    mc = torch.from_numpy(mesher.mesh().vertices)
    assert mc.shape[0] == points.shape[0]
    exact = "donot_use_mm_for_euclid_dist"
    assert torch.cdist(points.cpu(), mc, compute_mode=exact).min(dim=1).values.max() < 1e-6


def test_sphere_mesh_is_watertight_on_the_surface_and_oriented(device: str) -> None:
    vol = sdf_volume(device, sphere_sdf)
    mesh = poisson_mesh(vol, MIN_WEIGHT)
    assert mesh.num_faces > 2000
    assert is_watertight(mesh)
    err = np.abs(np.linalg.norm(mesh.vertices - np.array(CENTER), axis=1) - RADIUS)
    assert err.max() < 0.1 * VOXEL
    outward = ((mesh.face_normals() * (mesh.vertices[mesh.faces].mean(1) - CENTER)).sum(1))
    assert (outward > 0).all()  # counter-clockwise seen from free space
    assert mesh.colors is not None and (mesh.colors == 200).all()
    assert poisson_mesh(vol, MIN_WEIGHT, with_colors=False).colors is None


def test_box_points_have_face_normals_and_mesh_is_closed(device: str) -> None:
    vol = sdf_volume(device, box_sdf)
    points, normals, _ = surface_points(vol, MIN_WEIGHT)
    q = points.cpu() - torch.tensor(BOX_CENTER)
    sdf = box_sdf(points.cpu()).abs()
    assert sdf.max() < 0.25 * VOXEL  # linear interpolation across the rounded outer edges
    # Away from edges (nearest face at least 2 voxels clear of the others) the SDF is linear:
    # exact crossings, and the normal is the face's axis.
    gap = torch.tensor(BOX_HALF) - q.abs()  # (P, 3) distance to each pair of faces
    axis = gap.argmin(dim=1)
    clear = gap.sort(dim=1).values[:, 1] > 2 * VOXEL
    assert clear.sum() > 500
    assert sdf[clear].max() < 1e-5
    expected = torch.nn.functional.one_hot(axis, 3).float() * q.sign()
    assert ((normals.cpu() * expected).sum(1)[clear] > 0.999).all()

    mesh = poisson_mesh(vol, MIN_WEIGHT)
    assert is_watertight(mesh)
    sdf = box_sdf(torch.from_numpy(mesh.vertices)).abs()
    assert sdf.max() < 1.5 * VOXEL  # Poisson rounds the edges and corners a little
    assert sdf.median() < 0.1 * VOXEL  # and is on the faces elsewhere


def test_crop_removes_the_bubble_beyond_observed_space(device: str) -> None:
    # Only the -x half of the box was seen: voxels with x > 0 are unobserved.
    def front(p: torch.Tensor) -> torch.Tensor:
        return p[..., 0] <= 0.0

    vol = sdf_volume(device, box_sdf, front)
    points, normals, _ = surface_points(vol, MIN_WEIGHT)
    # Uncropped, Poisson closes the open half box with a bubble through unobserved space (a
    # solve cube twice the points' extent leaves it room to close).
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.cpu().double().numpy()))
    cloud.normals = o3d.utility.Vector3dVector(normals.cpu().double().numpy())
    raw, _ = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(cloud, depth=7, scale=2.0)
    raw_v = torch.from_numpy(np.asarray(raw.vertices, np.float32))
    assert raw.is_watertight()
    assert (box_sdf(raw_v).abs() > 3 * VOXEL).any() and (raw_v[:, 0] > 4 * VOXEL).any()

    mesh = poisson_mesh(vol, MIN_WEIGHT, PoissonConfig(scale=2.0, crop_distance_voxels=1.0))
    assert mesh.num_faces > 500
    v = torch.from_numpy(mesh.vertices)
    assert box_sdf(v).abs().max() < 1.5 * VOXEL
    assert (v[:, 0] <= VOXEL).all()  # nothing beyond observed space
    share = sample_volume(vol, v, MIN_WEIGHT).observed_share
    assert (share >= 0.5).all()
    # The seen front face is kept: its area (0.7 x 0.6 m) is covered.
    tri = mesh.vertices[mesh.faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert area.sum() > 0.9 * (2 * BOX_HALF[1]) * (2 * BOX_HALF[2])


def test_empty_volume_gives_an_empty_mesh(device: str) -> None:
    vol = BlockVolume(VOXEL, 8, TRUNC, device)
    points, normals, confidence = surface_points(vol, MIN_WEIGHT)
    assert points.shape == (0, 3) and normals.shape == (0, 3) and confidence.shape == (0,)
    mesh = poisson_mesh(vol, MIN_WEIGHT)
    assert mesh.num_faces == 0 and mesh.colors is not None
    assert not is_watertight(mesh)


def test_density_quantile_trims_low_density_vertices(device: str) -> None:
    vol = sdf_volume(device, sphere_sdf)
    full = poisson_mesh(vol, MIN_WEIGHT)
    trimmed = poisson_mesh(vol, MIN_WEIGHT, PoissonConfig(density_quantile=0.2))
    assert 0.7 * full.num_vertices < trimmed.num_vertices < 0.9 * full.num_vertices


@pytest.mark.parametrize("field, value", [
    ("depth", 1), ("depth", 3.0), ("max_depth", 2), ("scale", 0.9), ("point_weight", -1.0),
    ("samples_per_node", 0.5), ("linear_fit", "yes"), ("density_quantile", 1.0),
    ("density_quantile", -0.1), ("crop_distance_voxels", 0.0),
    ("crop_distance_voxels", float("inf")), ("n_threads", -1), ("batch_blocks", 0),
])
def test_bad_options_are_rejected_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"poisson\.{field}="):
        PoissonConfig(**{field: value})
