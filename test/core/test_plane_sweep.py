"""Plane-sweep stereo (core/plane_sweep.py) and keyframe selection (core/keyframes.py).

Ground truth comes from images rendered analytically: a randomly textured plane at a known
depth, and the synthetic demo room (exact depth from the ray caster).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recon_ros.core.errors import ConfigError, FrameError
from recon_ros.core.frame import PinholeCamera
from recon_ros.core.keyframes import KeyframeSelector, relative_motion
from recon_ros.core.plane_sweep import (
    PlaneSweepConfig,
    PlaneSweepStereo,
    box_mean,
    scale_camera,
)
from recon_ros.io.synthetic import default_camera, make_demo_scene, render, room_scan_trajectory

W, H = 128, 96
CAMERA = PinholeCamera(K=np.array([[102.4, 0.0, (W - 1) / 2], [0.0, 102.4, (H - 1) / 2],
                                   [0.0, 0.0, 1.0]]), width=W, height=H)


def translation(x: float, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def textured_plane_image(camera: PinholeCamera, T_world_cam: np.ndarray, plane_z: float,
                         seed: int = 0) -> np.ndarray:
    """(H, W) float32 grey image of the world plane ``z = plane_z`` (fronto-parallel to a camera
    at the world origin looking down +z) carrying a smooth random texture of 3 cm texels over
    [-2, 2]^2 m; every pixel samples the texture where its centre ray meets the plane."""
    g = torch.Generator().manual_seed(seed)
    texture = F.avg_pool2d(torch.rand(1, 1, 128, 128, generator=g, dtype=torch.float64), 3, 1,
                           1, count_include_pad=False)
    uv = camera.pixel_grid(dtype=torch.float64).reshape(-1, 2)
    R = torch.as_tensor(T_world_cam[:3, :3])
    o = torch.as_tensor(T_world_cam[:3, 3])
    d = camera.backproject(uv, torch.ones(len(uv), dtype=torch.float64)) @ R.T
    hit = o + ((plane_z - o[2]) / d[:, 2])[:, None] * d
    grid = (hit[:, :2] / 2.0).view(1, camera.height, camera.width, 2)
    image = F.grid_sample(texture, grid, align_corners=False)
    return image.view(camera.height, camera.width).float().numpy()


def plane_views(plane_z: float, offsets: list[tuple[float, float]]
                ) -> tuple[np.ndarray, list[tuple[np.ndarray, PinholeCamera, np.ndarray]]]:
    """Reference image (camera at the origin) and source views translated by ``offsets``."""
    ref = textured_plane_image(CAMERA, np.eye(4), plane_z)
    sources = [(textured_plane_image(CAMERA, translation(x, y), plane_z), CAMERA,
                translation(x, y)) for x, y in offsets]
    return ref, sources


def depth_spacing(stereo: PlaneSweepStereo, depth_m: float) -> float:
    """Distance between neighbouring depth hypotheses at ``depth_m``, metres."""
    inv = stereo.inverse_depths()
    return depth_m ** 2 * float(inv[0] - inv[1])


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("field, value", [
    ("min_depth_m", 0.0), ("max_depth_m", 0.4), ("num_depths", 2), ("window_radius_px", 0),
    ("image_scale", 1.5), ("best_k", 5), ("min_score", 1.0), ("uniqueness_ratio", 0.0),
    ("min_texture_std", -0.1), ("consistency_steps", -1), ("min_consistent_views", 0),
    ("num_depths", 64.0),
])
def test_config_rejects_bad_values_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"plane_sweep.{field}="):
        PlaneSweepConfig(**{field: value})


def test_box_mean_matches_avg_pool_and_scaled_camera_keeps_rays() -> None:
    x = torch.rand(2, 3, 17, 23, dtype=torch.float64)
    expected = F.avg_pool2d(x, 7, stride=1, padding=3, count_include_pad=False)
    assert torch.allclose(box_mean(x, 3), expected, atol=1e-12)
    # the ray through a pixel's corner is the same in the original and the halved image
    half = scale_camera(CAMERA, W // 2, H // 2)
    corner = torch.tensor([[-0.5, -0.5], [W - 0.5, H - 0.5]], dtype=torch.float64)
    one = torch.ones(2, dtype=torch.float64)
    assert torch.allclose(CAMERA.backproject(corner, one),
                          half.backproject((corner + 0.5) / 2 - 0.5, one), atol=1e-12)


# ----------------------------------------------------------------------------- stereo
@pytest.mark.parametrize("image_scale", [1.0, 0.5])
def test_fronto_parallel_plane_depth(device: str, image_scale: float) -> None:
    z = 2.07  # between two hypotheses
    ref, sources = plane_views(z, [(0.2, 0.0), (-0.2, 0.0), (0.0, 0.2), (0.0, -0.2)])
    stereo = PlaneSweepStereo(PlaneSweepConfig(image_scale=image_scale), device)
    depth, confidence = stereo.depth(ref, CAMERA, np.eye(4), sources)
    assert depth.shape == confidence.shape == (H, W)
    assert depth.dtype == confidence.dtype == torch.float32
    assert depth.device.type == torch.device(device).type
    depth, confidence = depth.cpu().numpy(), confidence.cpu().numpy()
    est = depth > 0
    assert np.array_equal(est, confidence > 0)
    assert confidence.max() <= 1.0
    # measured: coverage 0.86 (scale 1) / 0.73 (scale 0.5), the rest lies near the border
    assert est.mean() > (0.8 if image_scale == 1.0 else 0.65)
    assert est[H // 4:-H // 4, W // 4:-W // 4].all()
    err = np.abs(depth[est] - z)
    spacing = depth_spacing(stereo, z)  # 86 mm
    # measured: median 3.3 mm (scale 1) / 4.3 mm (scale 0.5), max 17 mm / 10 mm
    assert err.max() < 0.5 * spacing
    assert np.median(err) < 0.1 * spacing


def test_textureless_image_gives_no_estimate(device: str) -> None:
    flat = np.full((H, W, 3), 128, np.uint8)
    sources = [(flat, CAMERA, translation(x)) for x in (0.2, -0.2)]
    depth, confidence = PlaneSweepStereo(PlaneSweepConfig(), device).depth(
        flat, CAMERA, np.eye(4), sources)
    assert not depth.any() and not confidence.any()


def test_pixels_outside_every_source_get_no_estimate(device: str) -> None:
    z, baseline = 2.0, 0.5
    cfg = PlaneSweepConfig(min_depth_m=1.0, max_depth_m=4.0, num_depths=64, image_scale=1.0)
    ref, sources = plane_views(z, [(baseline, 0.0)])
    stereo = PlaneSweepStereo(cfg, device)
    depth = stereo.depth(ref, CAMERA, np.eye(4), sources)[0].cpu().numpy()
    # a point at depth d seen at column u lies at u - f b / d in the source (which sits at
    # +b): its window is outside the source image for every hypothesis when
    # u - f b / max_depth < r
    f, r = CAMERA.fx, cfg.window_radius_px
    never_inside = np.arange(W) < r + f * baseline / cfg.max_depth_m
    assert never_inside.sum() >= 15
    assert not depth[:, never_inside].any()
    # where the true point is in view the plane is found (two-view stereo: one source)
    seen = np.arange(W) - f * baseline / z >= r + 1
    est = depth[r:-r][:, seen]
    assert (est > 0).mean() > 0.85
    assert np.median(np.abs(est[est > 0] - z)) < 0.1 * depth_spacing(stereo, z)


def test_input_errors(device: str) -> None:
    stereo = PlaneSweepStereo(PlaneSweepConfig(), device)
    image = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(FrameError, match="at least one source"):
        stereo.depth(image, CAMERA, np.eye(4), [])
    with pytest.raises(FrameError, match="src0 image is 64x96"):
        stereo.depth(image, CAMERA, np.eye(4), [(image[:, :64], CAMERA, translation(0.1))])
    with pytest.raises(FrameError, match="RGB or"):
        stereo.depth(np.zeros((H, W, 4), np.uint8), CAMERA, np.eye(4),
                     [(image, CAMERA, translation(0.1))])


@pytest.fixture(scope="module")
def room_views() -> dict:
    """A reference view of the demo room scan at 320x240 (pose 30 of 120) with its exact
    depth, four source views 0.18 and 0.36 m before and after it, and their exact depths."""
    scene = make_demo_scene()
    camera = default_camera(320, 240)
    poses = room_scan_trajectory(scene, 120).poses
    ref = render(scene, camera, poses[30])
    src = [(render(scene, camera, poses[30 + k]), poses[30 + k]) for k in (-2, -4, 2, 4)]
    return {"camera": camera, "ref": ref, "T_ref": poses[30], "sources": src}


def test_demo_room_accuracy(device: str, room_views: dict) -> None:
    cam, ref = room_views["camera"], room_views["ref"]
    sources = [(r.color, cam, T) for r, T in room_views["sources"]]
    stereo = PlaneSweepStereo(PlaneSweepConfig(), device)
    depth = stereo.depth(ref.color, cam, room_views["T_ref"], sources)[0].cpu().numpy()
    truth = ref.depth > 0
    est = truth & (depth > 0)
    err = np.abs(depth[est] - ref.depth[est])
    # measured: coverage 0.72, median 3.0 cm (1.2% of the depth), p90 11.1 cm, 32% above
    # 5 cm (depths 1.0-5.7 m, median 2.3 m); the synthetic texture is a checker of flat
    # cells, so every match leans on cell edges (see benchmarks/plane_sweep.py)
    assert est.sum() / truth.sum() > 0.6
    assert np.median(err) < 0.04
    assert np.percentile(err, 90) < 0.15
    assert np.mean(err > 0.05) < 0.4
    assert np.median(err / ref.depth[est]) < 0.015


def test_demo_room_occluded_pixels_rarely_get_an_estimate(device: str, room_views: dict
                                                          ) -> None:
    """Reference pixels whose surface point no source view sees (outside the image or
    hidden behind something nearer) get an estimate far less often than visible ones. Only
    the two later sources are used, so that such pixels are many."""
    cam, ref = room_views["camera"], room_views["ref"]
    views = room_views["sources"][2:]
    truth = torch.as_tensor(ref.depth)
    uv = cam.pixel_grid(dtype=torch.float32)
    points_ref = cam.backproject(uv, truth)  # (H, W, 3)
    seen_somewhere = torch.zeros_like(truth, dtype=torch.bool)
    for r, T in views:
        T_src_ref = torch.as_tensor(np.linalg.inv(T) @ room_views["T_ref"], dtype=torch.float32)
        p = points_ref @ T_src_ref[:3, :3].T + T_src_ref[:3, 3]
        uv_s, z = cam.project(p)
        iu, iv = uv_s[..., 0].round().long(), uv_s[..., 1].round().long()
        inside = (z > 0) & (iu >= 0) & (iu < cam.width) & (iv >= 0) & (iv < cam.height)
        src_depth = torch.as_tensor(r.depth)[iv.clamp(0, cam.height - 1),
                                             iu.clamp(0, cam.width - 1)]
        seen_somewhere |= inside & ((src_depth - z).abs() < 0.03 * z)
    unseen = (truth > 0) & ~seen_somewhere
    assert unseen.sum() > 1000  # the view has such pixels (image sides, behind the table)
    sources = [(r.color, cam, T) for r, T in views]
    depth = PlaneSweepStereo(PlaneSweepConfig(), device).depth(
        ref.color, cam, room_views["T_ref"], sources)[0].cpu()
    unseen_rate = float((depth[unseen] > 0).float().mean())
    seen_rate = float((depth[seen_somewhere] > 0).float().mean())
    # measured: 1.1% of the 7472 unseen pixels against 44% of the seen ones
    assert unseen_rate < 0.05
    assert unseen_rate < 0.1 * seen_rate


# ----------------------------------------------------------------------------- keyframes
def yawed(yaw_deg: float, x: float = 0.0) -> np.ndarray:
    """Camera at (x, 0, 0) rotated by ``yaw_deg`` about the optical y axis."""
    a = math.radians(yaw_deg)
    T = translation(x)
    T[:3, :3] = [[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0],
                 [-math.sin(a), 0.0, math.cos(a)]]
    return T


def test_relative_motion() -> None:
    t, r = relative_motion(yawed(10.0, 0.3), yawed(-25.0, -0.1))
    assert t == pytest.approx(0.4, abs=1e-12) and r == pytest.approx(35.0, abs=1e-9)
    assert relative_motion(np.eye(4), yawed(1e-6))[1] == pytest.approx(1e-6, rel=1e-6)
    assert relative_motion(np.eye(4), yawed(180.0))[1] == pytest.approx(180.0, abs=1e-9)


def test_keyframe_thresholds_and_window() -> None:
    sel: KeyframeSelector[str] = KeyframeSelector(0.1, 5.0, window=3)
    assert sel.offer(np.eye(4), "a") is not None  # the first frame always
    assert sel.offer(translation(0.09), "b") is None  # moved too little
    assert sel.offer(yawed(4.9, 0.05), "c") is None  # turned too little
    kf = sel.offer(translation(0.1), "d")  # 0.1 m from "a": translation suffices
    assert kf is not None and kf.index == 3 and kf.data == "d"
    assert sel.offer(yawed(5.5, 0.1), "e") is not None  # rotation alone suffices
    assert sel.is_keyframe(yawed(5.5, 0.19)) is False  # nothing stored by asking
    assert sel.offer(yawed(5.5, 0.25), "f") is not None
    assert [k.data for k in sel.keyframes] == ["d", "e", "f"]  # window of 3, "a" dropped
    assert [k.index for k in sel.keyframes] == [3, 4, 5]


def test_keyframe_sources() -> None:
    sel: KeyframeSelector[int] = KeyframeSelector(0.05, 90.0, window=10)
    for i, x in enumerate([0.0, 0.25, 0.5, 0.75, 1.0, 1.25]):
        sel.offer(translation(x), i)
    sel.offer(yawed(45.0, 1.5), 6)  # turned too far away to be a source by default
    ref = translation(0.75)  # the keyframe at 0.75 m itself is excluded by the baseline
    assert [k.data for k in sel.sources(ref, 3, min_baseline_m=0.3)] == [5, 1, 0]
    # equal baselines: the most recent first
    assert [k.data for k in sel.sources(ref, 2, min_baseline_m=0.1)] == [4, 2]
    assert [k.data for k in sel.sources(ref, 9, min_baseline_m=0.1,
                                        max_rotation_deg=50.0)] == [4, 2, 5, 1, 6, 0]
    assert sel.sources(ref, 4, min_baseline_m=2.0) == []


@pytest.mark.parametrize("args, field", [((-0.1, 5.0, 3), "min_translation_m"),
                                         ((0.1, 200.0, 3), "min_rotation_deg"),
                                         ((0.1, 5.0, 0), "window")])
def test_keyframe_selector_rejects_bad_settings(args: tuple, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        KeyframeSelector(*args)
    with pytest.raises(ConfigError, match="count"):
        KeyframeSelector(0.1, 5.0, 3).sources(np.eye(4), 0)
