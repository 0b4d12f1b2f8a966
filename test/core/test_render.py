"""Differentiable volumetric rendering against analytic shapes with exact truncated SDFs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from recon_ros.core.errors import ConfigError
from recon_ros.core.frame import PinholeCamera
from recon_ros.core.render import (
    RayStatus,
    RenderOptions,
    render,
    render_differentiable,
    sample_tsdf,
)
from recon_ros.core.volume import BlockVolume
from test.conftest import look_at, render_sphere_depth

VOXEL = 0.04
BLOCK = 8
TRUNC = 4 * VOXEL
K = np.array([[120.0, 0, 39.5], [0, 120.0, 29.5], [0, 0, 1]])
CAM = PinholeCamera(K, 80, 60)
SdfFn = Callable[[torch.Tensor], torch.Tensor]


def sdf_volume(sdf: SdfFn, lo: tuple[float, float, float], hi: tuple[float, float, float],
               device: str, dtype: torch.dtype = torch.float32) -> BlockVolume:
    """A volume holding the exact truncated ``sdf`` (weight 1, color = a ramp in x) in every
    block of the box ``[lo, hi]`` that has a voxel within the truncation band."""
    vol = BlockVolume(VOXEL, BLOCK, TRUNC, device, dtype, initial_capacity_blocks=64)
    block_m = VOXEL * BLOCK
    axes = [torch.arange(int(np.floor(a / block_m)), int(np.ceil(b / block_m)) + 1)
            for a, b in zip(lo, hi)]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    local = vol.local_offsets.cpu()
    centres = ((coords[:, None, :] * BLOCK + local[None]).to(torch.float64) * VOXEL)
    values = sdf(centres.reshape(-1, 3)).reshape(centres.shape[:2])
    keep = (values.abs() < TRUNC).any(dim=1)
    slots = vol.allocate(coords[keep])
    vol.tsdf[slots] = values[keep].clamp(-TRUNC, TRUNC).to(device, dtype)
    vol.weight[slots] = 1.0
    ramp = (centres[keep, :, 0] * 100 + 128).clamp(0, 255)
    vol.color[slots] = ramp[..., None].expand(-1, -1, 3).to(device, dtype)
    return vol


def sphere_sdf(center: np.ndarray, radius: float) -> SdfFn:
    c = torch.as_tensor(center)
    return lambda p: (p - c).norm(dim=1) - radius


def box_sdf(center: np.ndarray, half: np.ndarray) -> SdfFn:
    c, h = torch.as_tensor(center), torch.as_tensor(half)

    def sdf(p: torch.Tensor) -> torch.Tensor:
        q = (p - c).abs() - h
        return q.clamp(min=0).norm(dim=1) + q.amax(dim=1).clamp(max=0)
    return sdf


def world_rays(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Origin (3,) and (H, W, 3) map-frame pixel directions with camera z = 1."""
    u, v = np.meshgrid(np.arange(CAM.width), np.arange(CAM.height))
    rays = np.stack(((u - CAM.cx) / CAM.fx, (v - CAM.cy) / CAM.fy, np.ones_like(u, float)), -1)
    return T[:3, 3], rays @ T[:3, :3].T


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def views(center: np.ndarray, distance: float) -> list[np.ndarray]:
    dirs = np.array([[1, 0.2, 0.1], [-0.3, 1, 0.4], [0.2, -0.5, -1]], float)
    return [look_at(center + distance * d / np.linalg.norm(d), center) for d in dirs]


@pytest.mark.parametrize("distance_step", [0.0, 0.5])
def test_sphere_depth_and_normals_match_analytic(device, distance_step):
    # Trilinear interpolation of a curved SDF errs by about v^2 / (2 R) along the normal
    # (0.02 voxel at R = 1 m, 0.04 at 0.5 m): the renderer's own error is far below that.
    center, radius = np.array([0.13, -0.05, 0.07]), 1.0
    vol = sdf_volume(sphere_sdf(center, radius), tuple(center - 1.3), tuple(center + 1.3),
                     device)
    for T in views(center, 2.4):
        res = render(vol, CAM, T, RenderOptions(max_depth_m=4.0, distance_step=distance_step))
        truth = render_sphere_depth(K, CAM.width, CAM.height, T, center, radius)
        depth = res.depth.cpu().numpy()
        o, d = world_rays(T)
        hit_pts = o + truth[..., None] * d
        n_true = (hit_pts - center) / radius
        # Pixels whose ray meets the surface at most 70 degrees off its normal.
        facing = (truth > 0) & (angle_deg(-d, n_true) < 70)
        assert facing.sum() > 500
        status = res.status.cpu().numpy()
        assert (status[facing] == RayStatus.HIT).all()
        err = np.abs(depth - truth)[facing]
        assert err.max() < 0.05 * VOXEL, err.max()
        normal = res.normal.cpu().numpy()
        assert angle_deg(normal[facing], n_true[facing]).max() < 2.5
        # No hit off the sphere; silhouette pixels may go either way.
        miss = render_sphere_depth(K, CAM.width, CAM.height, T, center, radius + VOXEL) == 0
        assert (depth[miss] == 0).all() and (status[miss] != RayStatus.HIT).all()
        assert (res.shaded.cpu().numpy()[facing] > 0).all()
        # Color: the x ramp, interpolated at the hit.
        expected = np.clip(hit_pts[..., 0] * 100 + 128, 0, 255)[facing]
        assert np.abs(res.color.cpu().numpy()[facing][:, 0] - expected).max() <= 1.0


def test_plane_depth_and_normals_match_analytic(device):
    n = np.array([0.2, -0.3, 1.0])
    n /= np.linalg.norm(n)
    offset = 0.1  # plane n . p = offset
    sdf = lambda p: p @ torch.as_tensor(n) - offset  # noqa: E731
    vol = sdf_volume(sdf, (-1.5, -1.5, -0.6), (1.5, 1.5, 0.8), device)
    for eye in ([0.3, 0.2, 1.4], [-0.5, 0.4, 1.1]):
        T = look_at(np.array(eye), np.array([0.05, -0.1, 0.0]))
        res = render(vol, CAM, T, RenderOptions(max_depth_m=3.0))
        o, d = world_rays(T)
        truth = (offset - o @ n) / (d @ n)
        hit_pts = o + truth[..., None] * d
        inside = (np.abs(hit_pts[..., :2]) < 1.2).all(-1)
        assert inside.sum() > 0.8 * inside.size
        assert (res.status.cpu().numpy()[inside] == RayStatus.HIT).all()
        err = np.abs(res.depth.cpu().numpy() - truth)[inside]
        assert err.max() < 0.05 * VOXEL, err.max()
        assert angle_deg(res.normal.cpu().numpy()[inside], n).max() < 1.0


def slab(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Entry parameter of rays ``o + t d`` into the box ``[lo, hi]`` (0 = miss)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = (lo - o) / d, (hi - o) / d
    t_in = np.minimum(a, b).max(-1)
    t_out = np.maximum(a, b).min(-1)
    return np.where((t_in <= t_out) & (t_in > 0), t_in, 0.0)


def test_box_depth_and_normals_match_analytic(device):
    center, half = np.array([0.05, 0.1, -0.02]), np.array([0.45, 0.3, 0.35])
    vol = sdf_volume(box_sdf(center, half), tuple(center - half - 0.3),
                     tuple(center + half + 0.3), device)
    for T in views(center, 1.7):
        res = render(vol, CAM, T, RenderOptions(max_depth_m=3.0))
        o, d = world_rays(T)
        truth = slab(o, d, center - half, center + half)
        hit_pts = o + truth[..., None] * d
        q = np.abs(hit_pts - center) - half  # 0 on the face axis, < 0 on the others
        face = np.argmax(q, axis=-1)
        n_true = np.eye(3)[face] * np.sign(hit_pts - center)
        # Face pixels at least 2 voxels from an edge (the SDF has kinks there).
        margin = np.sort(-q, axis=-1)[..., 1]
        interior = (truth > 0) & (margin > 2 * VOXEL) & (angle_deg(-d, n_true) < 70)
        assert interior.sum() > 300
        assert (res.status.cpu().numpy()[interior] == RayStatus.HIT).all()
        err = np.abs(res.depth.cpu().numpy() - truth)[interior]
        assert err.max() < 0.05 * VOXEL, err.max()
        assert angle_deg(res.normal.cpu().numpy()[interior], n_true[interior]).max() < 2.0


def test_unobserved_space_is_unknown_and_observed_free_space_is_free(device):
    vol = BlockVolume(VOXEL, BLOCK, TRUNC, device, initial_capacity_blocks=64)
    # Observed free space (+truncation, weight 1) filling x, y in [-1.28, 1.28), z in [0, 1.6).
    r = torch.arange(-4, 4)
    free = torch.stack(torch.meshgrid(r, r, torch.arange(0, 5), indexing="ij"), -1)
    slots = vol.allocate(free.reshape(-1, 3))
    vol.weight[slots] = 1.0
    # Unobserved blocks holding negative TSDF (weight 0) behind it: never a surface.
    ghost = vol.allocate(torch.stack(torch.meshgrid(r, r, torch.arange(5, 8), indexing="ij"),
                                     -1).reshape(-1, 3))
    vol.tsdf[ghost] = -TRUNC
    # Observed space behind a surface (negative, weight 1) right after the unobserved blocks:
    # no observed positive sample precedes it, so no hit.
    inside = vol.allocate(torch.stack(torch.meshgrid(r, r, torch.arange(8, 10), indexing="ij"),
                                      -1).reshape(-1, 3))
    vol.tsdf[inside] = -TRUNC
    vol.weight[inside] = 1.0
    T = np.eye(4)  # looking along +z from the origin
    res = render(vol, CAM, T, RenderOptions(max_depth_m=1.2))
    assert (res.status == RayStatus.FREE).all()
    assert (res.depth == 0).all()
    # Farther: through the unobserved blocks and out of the map.
    res = render(vol, CAM, T, RenderOptions(max_depth_m=4.0))
    assert (res.status == RayStatus.UNKNOWN).all()
    assert (res.depth == 0).all()
    # From outside the map looking away: nothing allocated at all.
    res = render(vol, CAM, look_at(np.array([0.0, 0.0, -0.5]), np.array([0.0, 0.0, -3.0])))
    assert (res.status == RayStatus.UNKNOWN).all()
    assert res.samples == 0


def test_block_skipping_samples_far_fewer_than_rays_times_steps(device):
    # A ball covering a few percent of the view, 4 m ahead: most rays cross no block at all.
    center, radius = np.array([0.0, 0.0, 4.0]), 0.25
    vol = sdf_volume(sphere_sdf(center, radius), tuple(center - 0.5), tuple(center + 0.5),
                     device)
    opt = RenderOptions(max_depth_m=6.0)
    res = render(vol, CAM, np.eye(4), opt)
    rays = CAM.width * CAM.height
    steps = (opt.max_depth_m - opt.min_depth_m) / (opt.step_voxels * VOXEL)
    assert (res.status == RayStatus.HIT).sum() > 100
    assert res.samples < 0.05 * rays * steps, (res.samples, rays * steps)
    assert res.block_skips > 0


def test_sample_tsdf_is_trilinear_and_needs_all_corners(device):
    n = np.array([0.0, 0.0, 1.0])
    vol = sdf_volume(lambda p: p @ torch.as_tensor(n) - 0.013, (-0.3, -0.3, -0.3),
                     (0.3, 0.3, 0.3), device)
    pts = torch.tensor([[0.011, -0.02, 0.05], [0.1, 0.07, -0.03], [5.0, 5.0, 5.0]])
    tsdf, ok, color = sample_tsdf(vol, pts)
    assert ok.tolist() == [True, True, False]
    assert torch.allclose(tsdf[:2].cpu(), pts[:2, 2] - 0.013, atol=1e-6)
    assert torch.allclose(color[:2, 0].cpu(), pts[:2, 0] * 100 + 128, atol=1e-4)
    assert tsdf[2].isnan()


def test_options_are_validated():
    with pytest.raises(ConfigError, match="step_voxels"):
        RenderOptions(step_voxels=0.0)
    with pytest.raises(ConfigError, match="max_depth_m"):
        RenderOptions(min_depth_m=2.0, max_depth_m=1.0)


def test_implicit_depth_and_color_gradients_match_finite_differences(device):
    center, radius = np.array([0.02, 0.01, 0.9]), 0.3
    vol = sdf_volume(sphere_sdf(center, radius), tuple(center - 0.5), tuple(center + 0.5),
                     device, torch.float64)
    cam = PinholeCamera(np.array([[20.0, 0, 3.5], [0, 20.0, 2.5], [0, 0, 1]]), 8, 6)
    T = np.eye(4)
    opt = RenderOptions(max_depth_m=2.0, secant_steps=30)
    res = render(vol, cam, T, opt)
    hit = (res.status == RayStatus.HIT).reshape(-1)
    assert hit.sum() >= 6
    # The TSDF and color entries near the hits of two pixels.
    pts = torch.stack([torch.tensor([(u - 3.5) / 20, (v - 2.5) / 20, 1.0], dtype=torch.float64)
                       for v, u in ((2, 3), (3, 5))]) * res.depth.cpu()[[2, 3], [3, 5]][:, None]
    vox = torch.floor(pts / VOXEL).long()
    corners = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    idx = (vox[:, None] + corners).reshape(-1, 3).unique(dim=0)
    block = torch.div(idx, BLOCK, rounding_mode="floor")
    local = idx - block * BLOCK
    flat = vol.find(block) * BLOCK**3 + (local[:, 0] * BLOCK + local[:, 1]) * BLOCK + local[:, 2]
    assert (flat >= 0).all()
    flat = flat.to(device)

    def run(s: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tsdf = vol.tsdf.reshape(-1).index_put((flat,), s).reshape(vol.tsdf.shape)
        color = vol.color.reshape(-1, 3).index_put((flat,), c).reshape(vol.color.shape)
        out = render_differentiable(vol, cam, T, tsdf, color, opt)
        return out.depth.reshape(-1)[hit], out.color.reshape(-1, 3)[hit]

    s0 = vol.tsdf.reshape(-1)[flat].clone().requires_grad_(True)
    c0 = vol.color.reshape(-1, 3)[flat].clone().requires_grad_(True)
    depth, _ = run(s0, c0)
    assert torch.allclose(depth.detach().cpu(), res.depth.reshape(-1)[hit].cpu().double())
    assert torch.autograd.gradcheck(run, (s0, c0), eps=1e-6, atol=1e-5, rtol=1e-3)
    # The gradient reaches exactly the TSDF voxels the hits interpolate.
    depth.sum().backward()
    assert (s0.grad != 0).sum() >= 8
