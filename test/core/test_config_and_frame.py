import numpy as np
import pytest
import torch

from recon_ros.core import ConfigError, Frame, FrameError, MapperConfig, PinholeCamera
from recon_ros.core.frame import (ROTATION_EXACT_TOL, ROTATION_REPAIR_TOL, nearest_rotation,
                                  rotation_error)

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = MapperConfig.from_dict({"volume": {"voxel_size_m": 0.02},
                                  "integration": {"weighting": "inverse_square"}})
    cfg.to_yaml(tmp_path / "c.yaml")
    assert MapperConfig.from_yaml(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("data, message", [
    ({"volume": {"voxel_size_m": 0.0}}, "volume.voxel_size_m"),
    ({"volume": {"block_size": 7}}, "volume.block_size"),
    ({"volume": {"dtype": "int8"}}, "volume.dtype"),
    ({"integration": {"max_depth_m": 0.05}}, "integration.max_depth_m"),
    ({"integration": {"weighting": "linear"}}, "integration.weighting"),
    ({"integration": {"max_weight": -1}}, "integration.max_weight"),
    ({"occupancy": {"min_height_m": 2.0, "max_height_m": 1.0}}, "occupancy.max_height_m"),
    ({"integration": {"trunc": 3}}, "unknown key"),
    ({"voxels": {}}, "unknown config section"),
])
def test_invalid_values_are_rejected_with_the_field_named(data, message):
    with pytest.raises(ConfigError, match=message):
        MapperConfig.from_dict(data)


def test_projection_round_trip_and_hand_computed_pixel():
    cam = PinholeCamera(K, 640, 480)
    p = torch.tensor([[0.2, -0.1, 2.0]])
    uv, z = cam.project(p)
    # u = 500 * 0.2 / 2 + 320 = 370, v = 500 * -0.1 / 2 + 240 = 215
    assert torch.allclose(uv, torch.tensor([[370.0, 215.0]]))
    assert torch.allclose(cam.backproject(uv, z), p)
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(1000, 3, generator=g) * torch.tensor([4.0, 3.0, 5.0]) + torch.tensor(
        [-2.0, -1.5, 0.5])
    uv, z = cam.project(pts)
    assert torch.allclose(cam.backproject(uv, z), pts, atol=1e-5)


def test_frame_checks_shapes_and_poses():
    cam = PinholeCamera(K, 640, 480)
    with pytest.raises(FrameError, match="640x480"):
        Frame(np.zeros((100, 100), np.float32), cam, np.eye(4))
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(FrameError, match="rotation"):
        Frame(np.zeros((480, 640), np.float32), cam, bad)
    with pytest.raises(FrameError, match="positive"):
        PinholeCamera(np.zeros((3, 3)), 640, 480)
    with pytest.raises(FrameError, match="uint8"):
        Frame(np.zeros((480, 640), np.float32), cam, np.eye(4),
              color=np.zeros((480, 640, 3), np.float32))


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' formula, written out: rotation by ``angle`` rad about ``axis``."""
    k = axis / np.linalg.norm(axis)
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


R0 = _rotation(np.array([0.3, -0.5, 0.8]), 1.1)


def _stretched(error: float) -> np.ndarray:
    """``S @ R0`` with ``S = diag(sqrt(1 + error), 1, 1)``: its orthonormality error
    ``max |M M^T - I|`` is exactly ``error`` (``M M^T = S^2``), and its nearest rotation is
    exactly ``R0`` (``S R0 = R0 (R0^T S R0)`` is its polar decomposition)."""
    return np.diag([np.sqrt(1 + error), 1.0, 1.0]) @ R0


def _pose(R: np.ndarray, t=(0.4, -1.2, 2.5)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def test_nearly_orthonormal_pose_is_projected_to_the_nearest_rotation():
    cam = PinholeCamera(K, 640, 480)
    T_in = _pose(_stretched(5e-4))
    assert rotation_error(T_in[:3, :3]) == pytest.approx(5e-4, rel=1e-9)
    before = T_in.copy()
    frame = Frame(np.zeros((480, 640), np.float32), cam, T_in)
    assert frame.pose_repaired
    R = frame.T_world_cam[:3, :3]
    assert np.abs(R - R0).max() < 1e-9
    assert np.abs(R @ R.T - np.eye(3)).max() < 1e-12 and np.linalg.det(R) == pytest.approx(1)
    assert np.array_equal(frame.T_world_cam[:3, 3], T_in[:3, 3])
    assert np.array_equal(frame.T_world_cam[3], [0, 0, 0, 1])
    assert np.array_equal(T_in, before)  # the caller's array is not modified
    # The color extrinsic goes through the same check.
    frame = Frame(np.zeros((480, 640), np.float32), cam, np.eye(4),
                  T_cam_color=_pose(_stretched(5e-4), (0.025, 0, 0)))
    assert frame.pose_repaired and np.abs(frame.T_cam_color[:3, :3] - R0).max() < 1e-9


def test_nearest_rotation_matches_the_polar_factor_of_a_generic_perturbation():
    M = R0 + 5e-4 * np.random.default_rng(3).standard_normal((3, 3))
    # Independent oracle: M = Q P with P = sqrt(M^T M) from an eigendecomposition, Q = M P^-1.
    w, V = np.linalg.eigh(M.T @ M)
    Q = M @ (V / np.sqrt(w)) @ V.T
    assert np.abs(nearest_rotation(M) - Q).max() < 1e-9
    assert 1e-4 < rotation_error(M) < 1e-2
    # det < 0: the nearest *proper* rotation (Kabsch); for diag(3, 2, -1) it is the identity
    # (trace(R^T M) = 4, against 2, 0 and -6 for the half turns about x, y and z).
    assert np.abs(nearest_rotation(np.diag([3.0, 2.0, -1.0])) - np.eye(3)).max() < 1e-12


def test_pose_within_the_exact_tolerance_is_used_unchanged():
    T_in = _pose(_stretched(0.9 * ROTATION_EXACT_TOL))
    frame = Frame(np.zeros((480, 640), np.float32), PinholeCamera(K, 640, 480), T_in)
    assert not frame.pose_repaired and np.array_equal(frame.T_world_cam, T_in)


@pytest.mark.parametrize("R, message", [
    (_stretched(2e-2), r"orthonormality error max\|R R\^T - I\| = 2.00e-02 exceeds the "
                       r"repairable 1e-02"),
    (np.diag([1.0, 1.0, -1.0]) @ R0, r"det = -1 < 0 \(a reflection"),
])
def test_broken_pose_is_refused_not_repaired(R, message):
    assert ROTATION_REPAIR_TOL == 1e-2
    with pytest.raises(FrameError, match="T_world_cam rotation part is not a proper rotation: "
                       + message):
        Frame(np.zeros((480, 640), np.float32), PinholeCamera(K, 640, 480), _pose(R))
