import numpy as np
import pytest
import torch

from recon_ros.core import ConfigError, Frame, FrameError, MapperConfig, PinholeCamera

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
