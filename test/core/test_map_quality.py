"""Map quality: a rendered map against measured depth, on an exact plane volume."""

import numpy as np
import pytest
import torch

from recon_ros.core.frame import FrameError, PinholeCamera
from recon_ros.core.map_quality import frame_agreement
from test.conftest import look_at
from test.core.test_render import CAM, VOXEL, sdf_volume, world_rays

N = np.array([0.2, -0.3, 1.0]) / np.linalg.norm([0.2, -0.3, 1.0])
OFFSET = 0.1  # the plane n . p = OFFSET


def _plane_and_view(device):
    vol = sdf_volume(lambda p: p @ torch.as_tensor(N) - OFFSET, (-1.5, -1.5, -0.6),
                     (1.5, 1.5, 0.8), device)
    T = look_at(np.array([0.3, 0.2, 1.4]), np.array([0.05, -0.1, 0.0]))
    o, d = world_rays(T)
    truth = (OFFSET - o @ N) / (d @ N)  # (H, W) z-depth of the plane
    inside = (np.abs((o + truth[..., None] * d)[..., :2]) < 1.2).all(-1)
    return vol, T, np.where(inside, truth, 0.0).astype(np.float32)


@pytest.mark.parametrize("stride", [1, 2])
def test_the_map_explains_a_frame_of_what_it_holds(device, stride):
    vol, T, depth = _plane_and_view(device)
    q = frame_agreement(vol, torch.from_numpy(depth), CAM, T, min_depth_m=0.1,
                        max_depth_m=3.0, stride=stride)
    assert q.pixels == int((depth[::stride, ::stride] > 0).sum())
    assert q.mean_abs_error_m < 0.05 * VOXEL
    assert q.inlier_ratio == 1.0 and q.explained == 1.0 and q.unknown == 0.0


def test_a_shifted_surface_is_not_explained(device):
    vol, T, depth = _plane_and_view(device)
    shifted = np.where(depth > 0, depth + 0.10, 0.0).astype(np.float32)
    q = frame_agreement(vol, torch.from_numpy(shifted), CAM, T, min_depth_m=0.1,
                        max_depth_m=3.0, stride=2)
    assert q.inlier_ratio == 0.0 and q.explained == 0.0
    assert q.mean_abs_error_m == pytest.approx(0.10, abs=0.05 * VOXEL)


def test_readings_where_the_map_has_nothing_count_as_unknown(device):
    vol, T, depth = _plane_and_view(device)
    far = look_at(np.array([5.0, 5.0, 1.4]), np.array([9.0, 9.0, 1.0]))  # facing away
    q = frame_agreement(vol, torch.from_numpy(np.full_like(depth, 2.0)), CAM, far,
                        min_depth_m=0.1, max_depth_m=3.0, stride=2)
    assert q.unknown == 1.0 and q.explained == 0.0 and np.isnan(q.mean_abs_error_m)


def test_strided_camera_matches_the_strided_image():
    cam = PinholeCamera(np.array([[300.0, 0, 159.5], [0, 310.0, 119.5], [0, 0, 1]]), 321, 240)
    s = cam.strided(4)
    assert (s.width, s.height) == (81, 60)
    point = torch.tensor([[0.3, -0.2, 2.0]])
    uv, _ = cam.project(point)
    uv4, _ = s.project(point)
    assert torch.allclose(uv4, uv / 4)
    with pytest.raises(FrameError, match="stride"):
        cam.strided(0)
