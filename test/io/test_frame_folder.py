"""FrameFolder on folders written here in the 7-Scenes / 3DMatch layout: JPEG and PNG color,
16-bit millimetre depth, text poses (repaired when nearly orthonormal, refused when broken)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from recon_ros.core.errors import FrameError
from recon_ros.io.frame_folder import FrameFolder

W, H = 64, 48
K = np.array([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]])
#: Rotation by 0.7 rad about z, exact.
R0 = np.array([[np.cos(0.7), -np.sin(0.7), 0.0], [np.sin(0.7), np.cos(0.7), 0.0],
               [0.0, 0.0, 1.0]])


def _stretched(error: float) -> np.ndarray:
    """``diag(sqrt(1 + error), 1, 1) @ R0``: orthonormality error exactly ``error``, nearest
    rotation exactly ``R0`` (a polar decomposition)."""
    return np.diag([np.sqrt(1 + error), 1.0, 1.0]) @ R0


def _pose(R: np.ndarray, i: int) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, (0.1 * i, -0.25, 1.5)
    return T


def _depth_mm(i: int) -> np.ndarray:
    """(H, W) uint16 millimetres: a ramp from 500 + 10 i, with an invalid (0) corner."""
    d = (500 + 10 * i + 7 * np.arange(W)[None, :] + 3 * np.arange(H)[:, None]).astype(np.uint16)
    d[:5, :5] = 0
    return d


def _rgb(h: int, w: int, shift: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 RGB, smooth (JPEG keeps it within a few levels) and distinct per channel
    (a swapped channel order is off by about 100 levels)."""
    u = np.linspace(0, 1, w)[None, :]
    v = np.linspace(0, 1, h)[:, None]
    r = 200 - 40 * u + 0 * v
    g = 100 + 30 * v + 0 * u
    b = 20 + 20 * u * v
    return (np.stack((r, g, b), -1) + shift).astype(np.uint8)


def _write_folder(folder: Path, poses: list[np.ndarray], color_ext: str | None = ".jpg",
                  color_size: tuple[int, int] = (H, W)) -> None:
    """A 7-Scenes-layout folder: ``camera-intrinsics.txt``, depth PNG (mm), color (RGB written
    as BGR by cv2) and pose text per frame."""
    folder.mkdir(exist_ok=True)
    np.savetxt(folder / "camera-intrinsics.txt", K)
    for i, T in enumerate(poses):
        stem = folder / f"frame-{i:06d}"
        assert cv2.imwrite(f"{stem}.depth.png", _depth_mm(i))
        if color_ext is not None:
            bgr = cv2.cvtColor(_rgb(*color_size, shift=i), cv2.COLOR_RGB2BGR)
            assert cv2.imwrite(f"{stem}.color{color_ext}", bgr)
        np.savetxt(f"{stem}.pose.txt", T)


def test_seven_scenes_folder_loads_jpeg_color_and_counts_repaired_poses(tmp_path, caplog):
    poses = [_pose(R0, 0), _pose(_stretched(5e-4), 1), _pose(_stretched(5e-4), 2)]
    _write_folder(tmp_path / "seq", poses)
    folder = FrameFolder(tmp_path / "seq")
    with caplog.at_level(logging.WARNING, logger="recon_ros.io.frame_folder"):
        frames = list(folder)
        assert folder.repaired_poses == 2
        assert [f.pose_repaired for f in frames] == [False, True, True]
        list(folder)  # a second pass repairs the same frames again: no new count or warning
    assert folder.repaired_poses == 2
    warnings = [r for r in caplog.records if r.name == "recon_ros.io.frame_folder"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    message = warnings[0].getMessage()
    assert "frame-000001.pose.txt" in message and "5.0e-04" in message
    assert "repaired_poses" in message
    for i, f in enumerate(frames):
        assert f.stamp_ns == i and f.camera.width == W and f.camera.height == H
        assert np.array_equal(f.camera.K, K)
        # Depth: millimetres / 1000, exact; 0 stays invalid.
        assert f.depth.dtype == np.float32
        assert np.array_equal(f.depth, _depth_mm(i).astype(np.float32) / 1000.0)
        assert np.all(f.depth[:5, :5] == 0)
        # Color: RGB order, uint8 (H, W, 3), within JPEG's loss of what was written.
        assert f.color.dtype == np.uint8 and f.color.shape == (H, W, 3)
        assert f.color_camera is None
        diff = np.abs(f.color.astype(int) - _rgb(H, W, shift=i).astype(int))
        assert diff.mean() < 2.0 and diff.max() <= 8, (diff.mean(), diff.max())
        # Pose: repaired to R0 (the exact nearest rotation), translation untouched.
        R = f.T_world_cam[:3, :3]
        assert np.abs(R - R0).max() < 1e-9
        assert np.abs(R @ R.T - np.eye(3)).max() < 1e-12 and np.linalg.det(R) > 0
        assert np.array_equal(f.T_world_cam[:3, 3], poses[i][:3, 3])


def test_png_color_is_preferred_over_jpeg(tmp_path):
    _write_folder(tmp_path / "seq", [_pose(R0, 0)], color_ext=".png")
    other = cv2.cvtColor(_rgb(H, W, shift=40), cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(tmp_path / "seq" / "frame-000000.color.jpg"), other)
    frame = FrameFolder(tmp_path / "seq").load(0)
    assert np.array_equal(frame.color, _rgb(H, W))  # PNG is lossless: exact


def test_half_resolution_color_gets_intrinsics_scaled_about_pixel_centres(tmp_path):
    _write_folder(tmp_path / "seq", [_pose(R0, 0)], color_size=(H // 2, W // 2))
    frame = FrameFolder(tmp_path / "seq").load(0)
    assert frame.color.shape == (H // 2, W // 2, 3)
    cam = frame.color_cam
    assert (cam.width, cam.height) == (W // 2, H // 2)
    # Color pixel u' covers depth pixels 2u' and 2u' + 1, centre 2u' + 0.5:
    # u' = (u - 0.5) / 2, so fx' = 50 / 2 = 25, cx' = (32 - 0.5) / 2 = 15.75, cy' = 11.75.
    assert np.allclose(cam.K, [[25.0, 0.0, 15.75], [0.0, 25.0, 11.75], [0.0, 0.0, 1.0]])
    assert FrameFolder(tmp_path / "seq", with_color=False).load(0).color is None


def test_folder_without_color_files_loads_depth_only(tmp_path):
    _write_folder(tmp_path / "seq", [_pose(R0, 0)], color_ext=None)
    frame = FrameFolder(tmp_path / "seq").load(0)
    assert frame.color is None and frame.depth.shape == (H, W)


def test_color_of_another_aspect_ratio_is_refused(tmp_path):
    _write_folder(tmp_path / "seq", [_pose(R0, 0)], color_size=(H, W // 2))
    with pytest.raises(FrameError, match=r"frame-000000\.color\.jpg is 32x48, not a resize of "
                                         r"the 64x48 depth image"):
        FrameFolder(tmp_path / "seq").load(0)


def test_unreadable_images_are_refused_with_the_file_named(tmp_path):
    _write_folder(tmp_path / "seq", [_pose(R0, 0), _pose(R0, 1)])
    (tmp_path / "seq" / "frame-000000.color.jpg").write_bytes(b"not a jpeg at all")
    folder = FrameFolder(tmp_path / "seq")
    with pytest.raises(FrameError, match=r"cannot decode .*frame-000000\.color\.jpg"):
        folder.load(0)
    assert cv2.imwrite(str(tmp_path / "seq" / "frame-000001.depth.png"),
                       np.full((H, W), 100, np.uint8))  # 8-bit depth: units unknown
    with pytest.raises(FrameError, match=r"frame-000001\.depth\.png as a single-channel 16-bit"):
        folder.load(1)


@pytest.mark.parametrize("R, message", [
    (_stretched(2e-2), r"orthonormality error .* = 2.00e-02 exceeds the repairable 1e-02"),
    (np.diag([1.0, -1.0, 1.0]) @ R0, r"det = -1 < 0"),
])
def test_broken_pose_is_refused_with_the_frame_named(tmp_path, R, message):
    _write_folder(tmp_path / "seq", [_pose(R, 0)])
    folder = FrameFolder(tmp_path / "seq")
    with pytest.raises(FrameError, match=r"frame-000000: T_world_cam rotation part is not a "
                                         r"proper rotation: " + message):
        folder.load(0)
    assert folder.repaired_poses == 0


def test_malformed_pose_file_is_refused(tmp_path):
    _write_folder(tmp_path / "seq", [_pose(R0, 0)])
    np.savetxt(tmp_path / "seq" / "frame-000000.pose.txt", np.eye(3))
    with pytest.raises(FrameError, match=r"frame-000000\.pose\.txt holds 9 numbers"):
        FrameFolder(tmp_path / "seq").load(0)
