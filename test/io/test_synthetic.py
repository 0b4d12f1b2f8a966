"""Synthetic scenes: exact SDFs, exact ray casting, noise statistics, TF chain, ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transforms3d

from recon_ros.core.errors import ConfigError
from recon_ros.core.frame import Frame, PinholeCamera
from recon_ros.core.occupancy_grid import FREE, OCCUPIED
from recon_ros.io.synthetic import (
    Q_LINK_OPTICAL_XYZW,
    Box,
    CameraRig,
    Cylinder,
    NoiseConfig,
    Room,
    Scene,
    Sphere,
    apply_noise,
    backproject_depth,
    blob_labels,
    default_camera,
    gt_occupancy_grid,
    iter_frames,
    kinect_axial_sigma,
    make_demo_scene,
    make_random_scene,
    make_scene,
    orbit_trajectory,
    render,
    render_color,
    render_depth,
    room_scan_trajectory,
    sample_surface_points,
    scene_from_dict,
    visible_surface_points,
)

DTYPES = [torch.float32, torch.float64]


def _pts(rows, device, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype, device=device)


def _tol(dtype: torch.dtype) -> float:
    return 1e-6 if dtype == torch.float32 else 1e-12


def _optical_looking(eye, forward, down=(0.0, 0.0, -1.0)) -> np.ndarray:
    """T_world_cam with optical z along ``forward`` and optical y along ``down``."""
    z = np.asarray(forward, float) / np.linalg.norm(forward)
    y = np.asarray(down, float)
    y = y - (y @ z) * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    T = np.eye(4)
    T[:3, :3] = np.stack((x, y, z), axis=1)
    T[:3, 3] = eye
    return T


def _small_camera(w: int = 65, h: int = 49, f: float = 100.0) -> PinholeCamera:
    return PinholeCamera(K=np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]]),
                         width=w, height=h)


# ----------------------------------------------------------------------------- SDFs
@pytest.mark.parametrize("dtype", DTYPES)
def test_sphere_sdf(device, dtype):
    s = Sphere(center=(1.0, 2.0, 3.0), radius=0.5)
    p = _pts([[1, 2, 3], [1, 2, 3.5], [1, 2, 4], [1.3, 2, 3], [1, 2 - 0.5, 3]], device, dtype)
    got = s.sdf(p).cpu().double().numpy()
    np.testing.assert_allclose(got, [-0.5, 0.0, 0.5, -0.2, 0.0], atol=_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_sdf_faces_edges_corners(device, dtype):
    b = Box(center=(0.0, 0.0, 1.0), half_extents=(1.0, 0.5, 0.25))
    p = _pts([
        [0, 0, 1],          # centre: nearest face is z
        [2, 0, 1],          # 1 m outside the +x face
        [1, 0.5, 1.25],     # corner (on the surface)
        [2, 1.5, 2.25],     # outside a corner: (1, 1, 1) away
        [2, 1.5, 1.0],      # outside an edge: (1, 1, 0) away
        [0.9, 0, 1],        # inside, 0.1 from +x face
        [1, 0.2, 1.1],      # on the +x face
        [-1, -0.5, 1.0],    # on an edge
    ], device, dtype)
    got = b.sdf(p).cpu().double().numpy()
    want = [-0.25, 1.0, 0.0, math.sqrt(3), math.sqrt(2), -0.1, 0.0, 0.0]
    np.testing.assert_allclose(got, want, atol=max(_tol(dtype), 1e-7))


def test_box_sdf_with_yaw(device):
    b90 = Box(center=(0.0, 0.0, 1.0), half_extents=(1.0, 0.5, 0.25), yaw_rad=math.pi / 2)
    got = b90.sdf(_pts([[0.75, 0, 1], [0, 1.5, 1], [0, 1.0, 1.25]], device)).cpu().numpy()
    np.testing.assert_allclose(got, [0.25, 0.5, 0.0], atol=1e-12)
    b45 = Box(center=(1.0, 1.0, 0.0), half_extents=(1.0, 1.0, 1.0), yaw_rad=math.pi / 4)
    r2 = math.sqrt(2)
    p = _pts([[1 + r2, 1 + r2, 0],   # 2 m along local x: 1 m outside the face
              [1 + r2 / 2, 1 + r2 / 2, 0],  # on the +x face centre
              [1 + r2, 1, 0],        # at the corner (local (1, -1, 0))... on the edge
              [1, 1 + r2 + 1, 0]],   # 1 m beyond the local (-1, 1) ... vertical edge
             device)
    got = b45.sdf(p).cpu().numpy()
    np.testing.assert_allclose(got, [1.0, 0.0, 0.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cylinder_sdf(device, dtype):
    c = Cylinder(center=(0.0, 0.0, 1.0), radius=0.5, half_height=1.0)
    p = _pts([[0, 0, 1], [1, 0, 1], [0, 0, 2.5], [1, 0, 2.5], [0.5, 0, 2], [0.25, 0, 1.9],
              [0, -0.5, 0.3], [0, 0, 0]], device, dtype)
    got = c.sdf(p).cpu().double().numpy()
    want = [-0.5, 0.5, 0.5, math.hypot(0.5, 0.5), 0.0, -0.1, 0.0, 0.0]
    np.testing.assert_allclose(got, want, atol=max(_tol(dtype), 1e-7))


@pytest.mark.parametrize("dtype", DTYPES)
def test_room_sdf_positive_inside(device, dtype):
    r = Room(size_xy=(6.0, 5.0), height=2.5)
    p = _pts([[0, 0, 1], [0, 0, 0], [3, 0, 1], [4, 0, 1], [0, 0, -0.5], [4, 3.5, 1],
              [2.5, 2, 2]], device, dtype)
    got = r.sdf(p).cpu().double().numpy()
    want = [1.0, 0.0, 0.0, -1.0, -0.5, -math.sqrt(2), 0.5]
    np.testing.assert_allclose(got, want, atol=max(_tol(dtype), 1e-7))


def test_scene_sdf_is_min_of_parts(device):
    scene = make_demo_scene()
    g = torch.Generator().manual_seed(0)
    p = (torch.rand(1000, 3, generator=g, dtype=torch.float64) * torch.tensor([6.0, 5, 2.5])
         - torch.tensor([3.0, 2.5, 0])).to(device)
    parts = torch.stack([s.sdf(p) for s in scene.parts], 1)
    torch.testing.assert_close(scene.sdf(p), parts.min(1).values)
    assert scene.sdf(_pts([[0.5, 0.35, 0.375]], device)).item() < 0  # table centre is solid
    assert scene.sdf(_pts([[-2.0, 1.8, 1.0]], device)).item() > 0  # free space


def test_invalid_shapes_raise():
    with pytest.raises(ConfigError):
        Sphere(center=(0, 0, 0), radius=-1)
    with pytest.raises(ConfigError):
        Box(center=(0, 0, 0), half_extents=(1, 0, 1))
    with pytest.raises(ConfigError):
        Cylinder(center=(0, 0), radius=1, half_height=1)
    with pytest.raises(ConfigError):
        Sphere(center=(0, 0, 0), radius=1, color=(2, 0, 0))
    with pytest.raises(ConfigError):
        Sphere(center=(0, 0, 0), radius=1).sdf(torch.zeros(3))


# ----------------------------------------------------------------------------- ray casting
def _rays(o, d, device, dtype=torch.float64):
    return _pts([o] * len(d), device, dtype), _pts(d, device, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sphere_intersection(device, dtype):
    s = Sphere(center=(5.0, 0.0, 0.0), radius=1.0)
    o, d = _rays([0, 0, 0], [[1, 0, 0], [2, 0, 0], [0, 1, 0], [-1, 0, 0], [4, 2.9, 0]], device,
                 dtype)
    t = s.intersect(o, d).cpu().double().numpy()
    np.testing.assert_allclose(t[:2], [4.0, 2.0], rtol=1e-6)
    assert np.isinf(t[2]) and np.isinf(t[3])
    # (4, 3, 0) would be tangent at (3.2, 2.4)... (4, 2.9, 0) passes just beside: a miss
    assert np.isinf(t[4])
    # from inside: exit at r
    t_in = s.intersect(_pts([[5, 0, 0]], device, dtype), _pts([[0, 0, 1]], device, dtype))
    assert abs(t_in.item() - 1.0) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_intersection_with_yaw(device, dtype):
    o, d = _rays([-5, 0, 1], [[1, 0, 0], [0, 1, 0], [-1, 0, 0]], device, dtype)
    b = Box(center=(0.0, 0.0, 1.0), half_extents=(1.0, 0.5, 0.25))
    t = b.intersect(o, d).cpu().double().numpy()
    assert abs(t[0] - 4.0) < 1e-6 and np.isinf(t[1]) and np.isinf(t[2])
    b90 = Box(center=(0.0, 0.0, 1.0), half_extents=(1.0, 0.5, 0.25), yaw_rad=math.pi / 2)
    assert abs(b90.intersect(o, d)[0].item() - 4.5) < 1e-6
    b45 = Box(center=(0.0, 0.0, 1.0), half_extents=(1.0, 1.0, 1.0), yaw_rad=math.pi / 4)
    assert abs(b45.intersect(o, d)[0].item() - (5 - math.sqrt(2))) < 1e-6
    # from inside: exit distance
    t_in = b.intersect(_pts([[0, 0, 1]], device, dtype), _pts([[0, 0, 1]], device, dtype))
    assert abs(t_in.item() - 0.25) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_cylinder_intersection_side_and_caps(device, dtype):
    c = Cylinder(center=(0.0, 0.0, 1.0), radius=0.5, half_height=1.0)
    cases = [
        ([-5, 0, 1], [1, 0, 0], 4.5),          # side
        ([0, 0, 5], [0, 0, -1], 3.0),          # exactly vertical onto the top cap
        ([0.2, 0.1, -3], [0, 0, 1], 3.0),      # vertical from below onto the bottom cap
        ([-2, 0, 3], [1, 0, -0.5], 2.0),       # oblique onto the top cap at x = 0
        ([-5, 0, 2.5], [1, 0, 0], math.inf),   # passes above
        ([-5, 2, 1], [1, 0, 0], math.inf),     # passes beside
        ([2, 0, 5], [0, 0, -1], math.inf),     # vertical outside the radius
        ([0, 0, 1], [1, 0, 0], 0.5),           # from inside through the side
    ]
    o = _pts([c_[0] for c_ in cases], device, dtype)
    d = _pts([c_[1] for c_ in cases], device, dtype)
    t = c.intersect(o, d).cpu().double().numpy()
    np.testing.assert_allclose(t, [c_[2] for c_ in cases], rtol=1e-6)


def test_room_intersection_is_exit_distance(device):
    r = Room(size_xy=(6.0, 5.0), height=2.5)
    o, d = _rays([0, 0, 1], [[1, 0, 0], [0, 0, -1], [1, 1, 0], [0, -2, 0], [0, 0, 3]], device)
    t = r.intersect(o, d).cpu().numpy()
    np.testing.assert_allclose(t, [3.0, 1.0, 2.5, 1.25, 0.5], atol=1e-12)


def test_render_wall_depth_is_exact(device):
    scene = Scene(room=Room(size_xy=(6.0, 5.0), height=2.5))
    cam = _small_camera(64, 48, 100.0)
    T = _optical_looking([1.0, 0.3, 1.25], [1, 0, 0])
    for dtype in DTYPES:
        depth = render_depth(scene, cam, T, device=device, dtype=dtype)
        assert depth.shape == (48, 64) and depth.dtype == np.float32
        np.testing.assert_allclose(depth, 2.0, atol=1e-6)
    # tilted camera: z-depth of a plane varies linearly across rows
    T_tilt = _optical_looking([0.0, 0.0, 1.25], [0, 0, -1], down=(-1.0, 0.0, 0.0))
    d = render_depth(scene, cam, T_tilt, device=device)
    np.testing.assert_allclose(d, 1.25, atol=1e-6)  # looking straight at the floor


def test_render_sphere_ahead(device):
    scene = Scene(room=Room(size_xy=(10.0, 10.0), height=4.0),
                  objects=[Sphere(center=(2.0, 0.0, 1.25), radius=0.5)])
    cam = _small_camera(65, 49, 100.0)
    T = _optical_looking([0.0, 0.0, 1.25], [1, 0, 0])
    r = render(scene, cam, T, device=device)
    assert r.depth[24, 32] == pytest.approx(1.5, abs=1e-6)
    assert r.part[24, 32] == 1 and r.part[0, 0] == 0
    # every pixel against an independent numpy ray-sphere computation
    u, v = np.meshgrid(np.arange(65), np.arange(49))
    dcam = np.stack(((u - 32) / 100.0, (v - 24) / 100.0, np.ones(u.shape)), -1)
    dw = dcam @ T[:3, :3].T
    oc = T[:3, 3] - np.array([2.0, 0, 1.25])
    a, b, c = (dw * dw).sum(-1), dw @ oc, oc @ oc - 0.25
    disc = b * b - a * c
    ts = (-b - np.sqrt(np.maximum(disc, 0))) / a
    hit = disc > 0
    np.testing.assert_allclose(r.depth[hit], ts[hit], atol=1e-5)
    np.testing.assert_allclose(r.depth[~hit], 5.0, atol=1e-5)  # the far wall at x = 5


@pytest.mark.parametrize("dtype", DTYPES)
def test_rendered_depth_backprojects_onto_surface(device, dtype):
    scene = make_demo_scene()
    cam = default_camera(160, 120)
    traj = room_scan_trajectory(scene, 12)
    for i in range(0, 12, 3):
        T = traj.poses[i]
        r = render(scene, cam, T, device=device, dtype=dtype)
        valid = r.depth > 0
        assert valid.all()  # closed room: every ray hits
        pts = backproject_depth(r.depth, cam, T)
        sdf = scene.sdf_np(pts)
        assert np.abs(sdf).max() < 1e-4
        # the reported part is the surface that was hit
        part_sdf = scene.part_sdf(torch.from_numpy(pts)).numpy()
        own = part_sdf[np.arange(len(pts)), r.part[valid].astype(np.int64)]
        assert np.abs(own).max() < 1e-4
        assert len(np.unique(r.part)) >= 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_culled_render_equals_brute_force_intersection(device, seed):
    """render() only casts objects inside their projected bounding rectangles; the result must
    equal casting every ray against every part (including views with objects behind or
    straddling the image plane)."""
    from recon_ros.io.synthetic import camera_rays, cast_camera_rays

    scene = make_random_scene(seed)
    cam = default_camera(96, 72)
    rng = np.random.default_rng(seed)
    poses = list(room_scan_trajectory(scene, 6).poses)
    for _ in range(6):  # random positions in free space, random directions
        lo, hi = scene.room.bounds
        while True:
            eye = rng.uniform(lo + 0.2, hi - 0.2)
            if scene.sdf_np(eye[None])[0] > 0.05:
                break
        poses.append(_optical_looking(eye, rng.normal(size=3), down=rng.normal(size=3)))
    for T in poses:
        t, part = cast_camera_rays(scene, cam, T, device=device)
        o, d = camera_rays(cam, T, device=device)
        t_ref, part_ref = scene.intersect(o, d)
        torch.testing.assert_close(t.reshape(-1), t_ref, rtol=0, atol=1e-12)
        assert torch.equal(part.reshape(-1), part_ref)


def test_render_max_range_and_color(device):
    scene = make_demo_scene()
    cam = default_camera(80, 60)
    T = room_scan_trajectory(scene, 8).poses[2]
    full = render(scene, cam, T, device=device)
    capped = render(scene, cam, T, max_range_m=3.0, device=device)
    far = full.depth > 3.0
    assert far.any() and (~far).any()
    assert np.all(capped.depth[far] == 0) and np.all(capped.part[far] == -1)
    np.testing.assert_array_equal(capped.depth[~far], full.depth[~far])
    assert np.all(capped.color[far] == 0)
    assert full.color.dtype == np.uint8 and full.color.shape == (60, 80, 3)
    np.testing.assert_array_equal(render_color(scene, cam, T, device=device), full.color)
    # color is a deterministic function of the surface point and part
    pts = backproject_depth(full.depth64, cam, T)
    alb = scene.albedo(torch.from_numpy(pts), torch.from_numpy(full.part.reshape(-1)).long())
    want = np.round(alb.numpy() * 255).astype(np.int64).reshape(60, 80, 3)
    assert np.mean(np.abs(want - full.color.astype(np.int64)).max(-1) > 1) < 0.005
    # texture: more than one shade per object
    assert len(np.unique(full.color.reshape(-1, 3), axis=0)) > 6


# ----------------------------------------------------------------------------- noise
def test_default_noise_is_identity():
    d = np.random.default_rng(0).uniform(0.5, 4, size=(48, 64)).astype(np.float32)
    d[:3] = 0
    assert NoiseConfig().is_noise_free
    np.testing.assert_array_equal(apply_noise(d, NoiseConfig(), 0), d)


def test_multiplicative_noise_sigma():
    d = np.full((480, 640), 2.0, dtype=np.float32)
    out = apply_noise(d, NoiseConfig(multiplicative_sigma=0.01), rng=1)
    rel = out.astype(np.float64) / 2.0 - 1.0
    assert abs(rel.std() - 0.01) < 0.001
    assert abs(rel.mean()) < 0.0002


def test_kinect_axial_noise_sigma():
    assert kinect_axial_sigma(0.4) == pytest.approx(0.0012)
    assert kinect_axial_sigma(3.0) == pytest.approx(0.0012 + 0.0019 * 2.6**2)
    d = np.full((480, 640), 3.0, dtype=np.float32)
    out = apply_noise(d, NoiseConfig(kinect_axial=True), rng=np.random.default_rng(2))
    err = out.astype(np.float64) - 3.0
    assert abs(err.std() / kinect_axial_sigma(3.0) - 1) < 0.1


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.10])
def test_outlier_blobs_fraction_and_offsets(fraction):
    d = np.full((480, 640), 2.0, dtype=np.float32)
    cfg = NoiseConfig(outlier_fraction=fraction, outlier_blob_radius_px=3,
                      outlier_offset_range_m=(0.5, 1.0))
    out, masks = apply_noise(d, cfg, rng=3, return_masks=True)
    changed = out != d
    np.testing.assert_array_equal(changed, masks.outliers)
    assert abs(changed.mean() - fraction) < 0.1 * fraction
    off = np.abs(out[changed] - 2.0)
    assert off.min() >= 0.5 - 1e-6 and off.max() <= 1.0 + 1e-6
    # blobs, not single pixels: few distinct offsets (one per blob)
    labels = blob_labels((480, 640), fraction, 3, 3)
    assert labels.max() < 0.1 * changed.sum()


def test_holes_range_and_invalid_pixels():
    d = np.random.default_rng(4).uniform(0.5, 6.0, size=(480, 640)).astype(np.float32)
    d[:10] = 0.0
    out, masks = apply_noise(d, NoiseConfig(hole_fraction=0.1, max_range_m=5.0, min_range_m=0.6),
                             rng=5, return_masks=True)
    assert abs(masks.holes.mean() - 0.1) < 0.01
    assert np.all(out[masks.holes] == 0)
    keep = ~masks.holes & (d >= 0.6) & (d <= 5.0)
    np.testing.assert_array_equal(out[keep], d[keep])
    assert np.all(out[(d > 5.0) | (d < 0.6)] == 0)
    assert np.all(out[:10] == 0)
    assert out.max() <= 5.0


def test_noise_seed_determinism_and_validation():
    d = np.full((120, 160), 2.5, dtype=np.float32)
    cfg = NoiseConfig(multiplicative_sigma=0.02, kinect_axial=True, outlier_fraction=0.05,
                      hole_fraction=0.05)
    a, b, c = apply_noise(d, cfg, 7), apply_noise(d, cfg, 7), apply_noise(d, cfg, 8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert NoiseConfig.from_dict(cfg.to_dict()) == cfg
    for bad in [dict(multiplicative_sigma=-0.1), dict(outlier_fraction=1.0),
                dict(hole_blob_radius_px=-1), dict(outlier_offset_range_m=(2.0, 1.0)),
                dict(max_range_m=0.0)]:
        with pytest.raises(ConfigError):
            NoiseConfig(**bad)
    with pytest.raises(ConfigError):
        NoiseConfig.from_dict({"sigma": 0.1})


# ----------------------------------------------------------------------------- TF chain
def _T_from_tuple(t, q_xyzw) -> np.ndarray:
    x, y, z, w = q_xyzw
    T = np.eye(4)
    T[:3, :3] = transforms3d.quaternions.quat2mat([w, x, y, z])  # transforms3d is wxyz
    T[:3, 3] = t
    return T


def _compose(tfs, root, leaf) -> np.ndarray:
    by_child = {c: (p, t, q) for p, c, _, t, q in tfs}
    T, f = np.eye(4), leaf
    while f != root:
        p, t, q = by_child[f]
        T = _T_from_tuple(t, q) @ T
        f = p
    return T


@pytest.mark.parametrize("kind", ["scan", "orbit", "orbit_offcentre"])
def test_tf_chain_composes_to_render_pose(kind):
    scene = make_demo_scene()
    if kind == "scan":
        traj = room_scan_trajectory(scene, 20)
    elif kind == "orbit":
        traj = orbit_trajectory((0.3, 0.1, 0.4), radius=2.0, height=1.4, n=16)
    else:
        traj = orbit_trajectory((0.0, 0.0), radius=2.0, height=1.4, n=16,
                                look_at=(0.8, 0.3, 0.5))
    static = traj.tf_static()
    assert all(s[2] == traj.stamps_ns[0] for s in static)
    for i in range(len(traj)):
        dyn = traj.tf_dynamic(i)
        assert all(s[2] == traj.stamps_ns[i] for s in dyn)
        names = {(p, c) for p, c, *_ in dyn + static}
        assert names == {("map", "odom"), ("odom", "base_link"), ("base_link", "camera_link"),
                         ("camera_link", "camera_depth_optical_frame")}
        T = _compose(dyn + static, "map", "camera_depth_optical_frame")
        np.testing.assert_allclose(T, traj.poses[i], atol=1e-12)
        # odom -> base_link is planar
        t_ob = [s for s in dyn if s[1] == "base_link"][0]
        assert t_ob[3][2] == pytest.approx(0.0, abs=1e-12)
        assert abs(t_ob[4][0]) < 1e-12 and abs(t_ob[4][1]) < 1e-12
    mount_static = any(c == "camera_link" for _, c, *_ in static)
    assert mount_static == (kind != "orbit_offcentre")


def test_tf_fixed_transforms():
    traj = room_scan_trajectory(make_demo_scene(), 3)
    static = {c: (t, q) for _, c, _, t, q in traj.tf_static()}
    np.testing.assert_allclose(static["camera_depth_optical_frame"][1], [-0.5, 0.5, -0.5, 0.5])
    np.testing.assert_allclose(Q_LINK_OPTICAL_XYZW, [-0.5, 0.5, -0.5, 0.5])
    np.testing.assert_allclose(static["camera_link"][0], [0.1, 0.0, 1.2])
    # camera_link pitched down 20 degrees about y
    x, y, z, w = static["camera_link"][1]
    assert transforms3d.euler.quat2euler([w, x, y, z], "sxyz")[1] == pytest.approx(
        math.radians(20))
    dyn = {c: (t, q) for _, c, _, t, q in traj.tf_dynamic(0)}
    np.testing.assert_allclose(dyn["odom"][0], [0.5, -0.2, 0.0])
    x, y, z, w = dyn["odom"][1]
    assert transforms3d.euler.quat2euler([w, x, y, z], "sxyz")[2] == pytest.approx(
        math.radians(10))
    # the optical rotation: optical z = link x (forward), optical x = -link y, y = -link z
    R = _T_from_tuple([0, 0, 0], Q_LINK_OPTICAL_XYZW)[:3, :3]
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, -1, 0], atol=1e-15)
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1], atol=1e-15)


def test_orbit_looks_at_target_and_is_upright():
    target = np.array([0.3, -0.2, 0.5])
    traj = orbit_trajectory((0.0, 0.0), 2.5, 1.5, 12, look_at=target)
    for T in traj.poses:
        fwd = target - T[:3, 3]
        np.testing.assert_allclose(T[:3, 2], fwd / np.linalg.norm(fwd), atol=1e-12)
        assert T[2, 1] < 0  # optical y (down) points down in the world
        assert T[2, 3] == pytest.approx(1.5)
    c = traj.camera_positions
    assert np.allclose(np.linalg.norm(c[:, :2], axis=1), 2.5)
    assert np.all(np.diff(traj.stamps_ns) == 100_000_000)


def test_trajectory_validation():
    with pytest.raises(ConfigError):
        orbit_trajectory((0, 0), -1.0, 1.0, 5)
    with pytest.raises(ConfigError):
        room_scan_trajectory(make_demo_scene(), 0)
    with pytest.raises(ConfigError):
        CameraRig(map_frame="odom")
    traj = room_scan_trajectory(make_demo_scene(), 5).retimed(30.0, start_ns=5)
    assert traj.stamps_ns[0] == 5 and traj.stamps_ns[1] == 5 + 33_333_333


# ----------------------------------------------------------------------------- scenes
def _object_sdf(scene: Scene, p: np.ndarray) -> np.ndarray:
    pt = torch.from_numpy(p)
    return torch.stack([o.sdf(pt) for o in scene.objects], 1).min(1).values.numpy()


def test_demo_scene_and_scan_path():
    scene = make_demo_scene()
    lo, hi = scene.room.bounds
    np.testing.assert_allclose(lo, [-3, -2.5, 0])
    np.testing.assert_allclose(hi, [3, 2.5, 2.5])
    assert [type(o).__name__ for o in scene.objects] == ["Box", "Sphere", "Cylinder", "Box"]
    traj = room_scan_trajectory(scene, 60)
    assert scene.sdf_np(traj.camera_positions).min() > 0.4
    for z in (0.05, 0.5, 1.0):  # the robot's body column (camera and base) is clear
        for xy in (traj.camera_positions[:, :2], traj.base_xy_yaw[:, :2]):
            assert _object_sdf(scene, np.c_[xy, np.full(len(xy), z)]).min() > 0.4
    assert make_scene("demo").describe() == scene.describe()


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7])
def test_random_scene(seed):
    scene = make_random_scene(seed)
    assert scene_from_dict(scene.describe()).describe() == scene.describe()
    assert make_scene("random", seed).describe() == scene.describe()
    assert 3 <= len(scene.objects) <= 6
    lo, hi = scene.room.bounds
    for o in scene.objects:
        olo, ohi = o.aabb()
        assert np.all(olo >= lo - 1e-9) and np.all(ohi <= hi)
    traj = room_scan_trajectory(scene, 90)
    cams = traj.camera_positions
    assert scene.sdf_np(cams).min() > 0.3
    for z in (0.05, 0.5, 1.0):
        for xy in (cams[:, :2], traj.base_xy_yaw[:, :2]):
            assert _object_sdf(scene, np.c_[xy, np.full(len(xy), z)]).min() > 0.4
    # objects do not overlap
    for i, a in enumerate(scene.objects):
        for b in scene.objects[i + 1:]:
            s_a = a.sample_surface(500, np.random.default_rng(0))
            assert b.sdf(torch.from_numpy(s_a)).min().item() > 0


def test_random_scenes_differ():
    assert make_random_scene(1).describe() != make_random_scene(2).describe()
    with pytest.raises(ConfigError):
        make_scene("nope")


# ----------------------------------------------------------------------------- ground truth
def test_surface_samples_on_union_surface_uniform_by_area():
    scene = make_demo_scene()
    n = 40_000
    pts, part = sample_surface_points(scene, n, seed=0, return_parts=True)
    assert pts.shape == (n, 3)
    psdf = scene.part_sdf(torch.from_numpy(pts)).numpy()
    assert np.abs(psdf.min(1)).max() < 1e-9  # on the union surface
    assert psdf.min(1).min() > -1e-9  # inside no solid
    np.testing.assert_array_equal(sample_surface_points(scene, 100, seed=3),
                                  sample_surface_points(scene, 100, seed=3))
    # uniform by area: the floor's share of the union surface
    table, sphere, cyl, box = scene.objects
    hidden_floor = 1.2 * 0.8 + math.pi * 0.3**2 + 0.6 * 0.5
    floor_area = 30.0 - hidden_floor
    union_area = (scene.room.area() - hidden_floor + (table.area() - 1.2 * 0.8)
                  + sphere.area() + (cyl.area() - math.pi * 0.3**2) + (box.area() - 0.6 * 0.5))
    p_floor = floor_area / union_area
    on_floor = np.mean((part == 0) & (np.abs(pts[:, 2]) < 1e-12))
    assert abs(on_floor - p_floor) < 4 * math.sqrt(p_floor * (1 - p_floor) / n)
    p_sphere = sphere.area() / union_area
    assert abs(np.mean(part == 2) - p_sphere) < 4 * math.sqrt(p_sphere / n)


def test_surface_samples_region():
    scene = make_demo_scene()
    region = ((-0.5, -0.5, 0.0), (1.5, 1.5, 1.0))
    pts = sample_surface_points(scene, 2000, seed=1, region=region)
    assert np.all(pts >= np.array(region[0]) - 1e-12) and np.all(pts <= np.array(region[1]))
    assert np.abs(scene.sdf_np(pts)).max() < 1e-9
    with pytest.raises(ConfigError):
        sample_surface_points(scene, 10, region=((0, 0, 1.0), (0.1, 0.1, 1.1)))  # empty air


def test_visible_surface_points(device):
    scene = make_demo_scene()
    cam = default_camera(64, 48)
    traj = room_scan_trajectory(scene, 4)
    pts = visible_surface_points(scene, traj, cam, device=device)
    assert pts.shape == (4 * 64 * 48, 3)
    assert np.abs(scene.sdf_np(pts)).max() < 1e-9
    sub = visible_surface_points(scene, list(traj.poses[:1]), cam, stride=4)
    assert sub.shape == (16 * 12, 3)
    frames = list(iter_frames(scene, cam, traj))
    np.testing.assert_array_equal(visible_surface_points(scene, frames, cam), pts)


def test_gt_occupancy_grid():
    scene = make_demo_scene()
    g = gt_occupancy_grid(scene, 0.1, 0.1, 1.0)
    assert g.resolution_m == 0.1 and g.origin_xy == pytest.approx((-3.2, -2.7))
    assert (g.width, g.height) == (64, 54)
    assert set(np.unique(g.data)) <= {FREE, OCCUPIED}

    def at(x, y):
        r, c = g.cell_of(x, y)
        return g.data[r, c]

    for x, y in [(-3.1, 0.0), (3.05, 1.0), (0.0, -2.55), (1.0, 2.6)]:  # walls
        assert at(x, y) == OCCUPIED
    # box, table, ball, pillar
    for x, y in [(1.2, -0.45), (0.5, 0.35), (-1.05, 0.4), (-0.6, -0.65)]:
        assert at(x, y) == OCCUPIED
    for x, y in [(-2.2, 1.8), (2.0, 1.5), (0.0, -1.8), (-2.5, -2.0)]:  # free floor
        assert at(x, y) == FREE
    interior = g.data[3:-3, 3:-3]
    assert 0.8 < np.mean(interior == FREE) < 0.95
    # above the table and the small box only the pillar (top at 1.2 m) and walls remain
    high = gt_occupancy_grid(scene, 0.1, 1.0, 2.0)
    r, c = high.cell_of(np.array([0.5, 1.2, -0.6]), np.array([0.35, -0.45, -0.65]))
    np.testing.assert_array_equal(high.data[r, c], [FREE, FREE, OCCUPIED])


@pytest.mark.parametrize("seed", [0, 5])
def test_gt_occupancy_matches_dense_sdf_sampling(seed):
    scene = make_random_scene(seed)
    res, a, b = 0.1, 0.1, 1.0
    g = gt_occupancy_grid(scene, res, a, b, subsamples=1)
    cols = np.arange(g.width)
    rows = np.arange(g.height)
    xs = g.origin_xy[0] + (cols + 0.5) * res
    ys = g.origin_xy[1] + (rows + 0.5) * res
    zs = np.linspace(a, b, 91)
    Y, X, Z = np.meshgrid(ys, xs, zs, indexing="ij")
    sdf = scene.sdf_np(np.stack((X.ravel(), Y.ravel(), Z.ravel()), 1)).reshape(X.shape)
    sampled = (sdf < 0).any(-1)
    analytic = g.data == OCCUPIED
    assert np.all(analytic[sampled])  # exact test finds everything dense sampling finds
    assert np.mean(analytic != sampled) < 0.01  # and only thin slivers beyond it


def test_iter_frames(device):
    scene = make_demo_scene()
    cam = default_camera(64, 48)
    traj = room_scan_trajectory(scene, 3)
    noise = NoiseConfig(multiplicative_sigma=0.01)
    frames = list(iter_frames(scene, cam, traj, noise=noise, seed=4, device=device))
    again = list(iter_frames(scene, cam, traj, noise=noise, seed=4, device=device))
    assert len(frames) == 3 and all(isinstance(f, Frame) for f in frames)
    assert frames[1].stamp_ns == traj.stamps_ns[1]
    assert frames[0].frame_id == "camera_depth_optical_frame"
    np.testing.assert_allclose(frames[2].T_world_cam, traj.poses[2])
    np.testing.assert_array_equal(frames[1].depth, again[1].depth)
    clean = render_depth(scene, cam, traj.poses[1])
    rel = frames[1].depth / clean - 1
    assert 0.005 < rel.std() < 0.015


# ----------------------------------------------------------------------------- bag
@pytest.mark.parametrize("storage,encoding", [("sqlite3", "16UC1"), ("mcap", "32FC1")])
def test_write_scene_bag_round_trip(tmp_path, storage, encoding):
    pytest.importorskip("rosbags")
    from recon_ros.io.rosbag_source import RosbagSource
    from recon_ros.io.synthetic_bag import write_scene_bag

    scene = make_random_scene(3)
    cam = default_camera(32, 24)
    traj = room_scan_trajectory(scene, 5)
    info = write_scene_bag(tmp_path / "bag", scene, cam, traj, storage=storage,
                           depth_encoding=encoding, rate_hz=10.0)
    assert info.n_frames == 5 and info.scene_name == "random" and info.scene_seed == 3
    assert info.depth_frame_id == "camera_depth_optical_frame"
    assert set(info.topics) == {"/camera/depth/image_raw", "/camera/depth/camera_info",
                                "/camera/color/image_raw", "/camera/color/camera_info",
                                "/tf", "/tf_static"}
    src = RosbagSource(tmp_path / "bag", world_frame="map")
    frames = list(src)
    assert len(frames) == 5
    rebuilt = make_scene(info.scene_name, info.scene_seed)
    for i, f in enumerate(frames):
        np.testing.assert_allclose(f.T_world_cam, traj.poses[i], atol=1e-6)
        clean = render(rebuilt, cam, traj.poses[i])
        atol = 0.0006 if encoding == "16UC1" else 1e-6
        np.testing.assert_allclose(np.asarray(f.depth), clean.depth, atol=atol)
        np.testing.assert_array_equal(np.asarray(f.color), clean.color)
        assert f.stamp_ns == traj.stamps_ns[i]


def test_tf_between_frames_interpolates_the_base_pose():
    """tf_dynamic_at: at whole positions the frame's transforms (restamped, looping); between
    frames x, y and yaw are linear, yaw the short way round across +-pi."""
    from recon_ros.io.synthetic import Trajectory
    from recon_ros.io.synthetic.trajectory import T_from_tf
    traj = Trajectory.from_base_poses(np.array([[0.0, 0.0, math.pi - 0.1],
                                                [1.0, 2.0, -math.pi + 0.1]]))
    stamp = 123
    for position, i in ((0.0, 0), (1.0, 1), (2.0, 0), (3.0, 1)):
        got, want = traj.tf_dynamic_at(position, stamp), traj.tf_dynamic(i)
        assert [(p, c, s) for p, c, s, _, _ in got] == [(p, c, stamp) for p, c, _, _, _ in want]
        for (_, _, _, t, q), (_, _, _, t2, q2) in zip(got, want):
            np.testing.assert_allclose(T_from_tf(t, q), T_from_tf(t2, q2), atol=1e-12)
    odom_base = {c: T_from_tf(t, q) for _, c, _, t, q in traj.tf_dynamic_at(0.25, stamp)}
    T_map_base = traj.rig.T_map_odom @ odom_base[traj.rig.base_frame]
    np.testing.assert_allclose(T_map_base[:2, 3], [0.25, 0.5], atol=1e-12)
    yaw = math.atan2(T_map_base[1, 0], T_map_base[0, 0])
    assert yaw == pytest.approx(math.pi - 0.1 + 0.25 * 0.2)
