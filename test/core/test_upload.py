"""Frame upload (pinned staging on CUDA), the frame tensors computed on the host, and the
one-sync mask compaction."""

import numpy as np
import pytest
import torch
import transforms3d

from recon_ros.core import Frame, Mapper, MapperConfig, PinholeCamera, VolumeError
from recon_ros.core.compaction import compact
from recon_ros.core.sync_audit import SyncOpCounter
from recon_ros.core.tsdf_integrator import FrameTensors
from recon_ros.core.upload import RING, HostStaging

K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
CAM = PinholeCamera(K, 320, 240)


def _pose(angles, t):
    T = np.eye(4)
    T[:3, :3] = transforms3d.euler.euler2mat(*angles)
    T[:3, 3] = t
    return T


def test_uploads_carry_the_values_through_every_buffer_of_the_ring(device):
    """More uploads than pinned buffers, of changing shapes, read-only numpy and CPU tensors:
    every result equals its source, converted (a reused pinned buffer never corrupts an
    upload still queued)."""
    staging = HostStaging(device)
    g = np.random.default_rng(0)
    sources = [g.random((48, 64), dtype=np.float32) for _ in range(2 * RING + 1)]
    sources[2] = g.random((24, 32), dtype=np.float32)  # a new shape mid-stream
    sources[3].setflags(write=False)  # e.g. a decoded ROS message
    out = [staging.upload("depth", a, torch.float32) for a in sources]
    out.append(staging.upload("depth", torch.from_numpy(sources[0]), torch.float64))
    for a, t in zip(sources + [sources[0]], out):
        assert t.device.type == torch.device(device).type
        assert torch.equal(t.cpu(), torch.tensor(a).to(t.dtype))
    rgb = g.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert torch.equal(staging.upload("color", rgb, torch.uint8).cpu(), torch.from_numpy(rgb))


def test_frame_tensors_hold_host_computed_inverses_and_registration(device):
    T_world_cam = _pose((0.3, -0.2, 1.1), (1.5, -2.0, 0.7))
    T_cam_color = _pose((0.01, 0.02, -0.015), (0.025, 0.0, 0.001))
    depth = np.full((240, 320), 2.0, np.float32)
    color_cam = PinholeCamera(np.array([[400.0, 0, 319.5], [0, 400.0, 239.5], [0, 0, 1]]),
                              640, 480)
    staging = HostStaging(device)
    ft = FrameTensors.from_host(depth, CAM, T_world_cam, None, color_cam, T_cam_color, 0.1,
                                5.0, staging)
    eye = torch.eye(4, dtype=torch.float64)
    assert torch.allclose(ft.T_world_cam.cpu().double() @ ft.T_cam_world.cpu().double(), eye,
                          atol=1e-6)
    assert torch.allclose(ft.T_color_cam.cpu().double() @ torch.from_numpy(T_cam_color), eye,
                          atol=1e-6)
    assert not ft.registered
    assert ft.params.cpu().tolist() == pytest.approx([300, 300, 159.5, 119.5, 400, 400, 319.5,
                                                      239.5, 0.1, 5.0])
    same = FrameTensors.from_host(depth, CAM, T_world_cam, None, CAM, np.eye(4), 0.1, 5.0,
                                  staging)
    assert same.registered
    # Every point the frame reaches lies within reach_m of the origin on every axis.
    corner_ray = np.array([159.5 / 300, 120.5 / 300, 1.0])
    farthest = np.abs(T_world_cam[:3, 3]) + 5.0 * np.linalg.norm(corner_ray)
    assert same.reach_m >= farthest.max()


def test_a_pose_beyond_the_indexable_extent_is_refused_before_any_work(device):
    mapper = Mapper(MapperConfig.from_dict({"volume": {"voxel_size_m": 0.05,
                                                       "device": device}}))
    depth = np.full((240, 320), 2.0, np.float32)
    far = _pose((0, 0, 0), (0.05 * 8 * 2**20, 0, 0))  # a million blocks out
    with pytest.raises(VolumeError, match="out of the supported range"):
        mapper.integrate(Frame(depth, CAM, far))
    assert mapper.volume.num_blocks == 0
    mapper.integrate(Frame(depth, CAM, np.eye(4)))  # the map is still usable
    assert mapper.volume.num_blocks > 0


def test_compact_equals_nonzero_at_one_host_read(device):
    g = torch.Generator().manual_seed(3)
    masks = [torch.rand(n, generator=g).to(device) < p
             for n, p in ((1000, 0.3), (17, 0.0), (0, 0.5), (64, 1.0))]
    with SyncOpCounter("cuda") as counter:
        out = compact(*masks)
    assert counter.total == 1
    for m, idx in zip(masks, out):
        assert torch.equal(idx, torch.nonzero(m).squeeze(1))
    assert compact() == []
