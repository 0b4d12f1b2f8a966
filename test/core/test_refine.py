"""Test-time refinement (``refine`` section, :mod:`recon_ros.core.refine`): it lowers the
render error against the truth, touches only the blocks it is given, never the weights, and
changes nothing when off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon_ros.core import Mapper, MapperConfig
from recon_ros.core.config import RefineConfig
from recon_ros.core.errors import ConfigError
from recon_ros.core.frame import Frame, PinholeCamera
from recon_ros.core.refine import TsdfRefiner
from recon_ros.core.render import RayStatus, RenderOptions, render
from recon_ros.core.tsdf_integrator import FrameTensors, TsdfIntegrator
from recon_ros.core.upload import HostStaging
from recon_ros.core.volume import BlockVolume
from test.conftest import look_at, render_sphere_depth

VOXEL = 0.04
TRUNC = 4 * VOXEL
K = np.array([[80.0, 0, 39.5], [0, 80.0, 29.5], [0, 0, 1]])
CAM = PinholeCamera(K, 80, 60)
CENTER = np.array([0.3, -0.2, 0.5])
RADIUS = 0.4
POSE = look_at(CENTER + np.array([1.2, 0.3, 0.2]), CENTER)


def sphere_frame(T: np.ndarray, sigma: float = 0.0, seed: int = 0, color: bool = True
                 ) -> Frame:
    """The sphere's exact depth at ``T``, times ``1 + sigma N(0, 1)`` per pixel, with a
    color ramp in u."""
    depth = render_sphere_depth(K, CAM.width, CAM.height, T, CENTER, RADIUS)
    if sigma:
        noise = np.random.default_rng(seed).standard_normal(depth.shape)
        depth = (depth * (1 + sigma * noise)).astype(np.float32)
    rgb = None
    if color:
        ramp = np.linspace(40, 220, CAM.width, dtype=np.float32)
        rgb = np.broadcast_to(ramp[None, :, None], (CAM.height, CAM.width, 3)).astype(np.uint8)
    return Frame(depth=depth, camera=CAM, T_world_cam=T, color=rgb)


def tensors(frame: Frame, device: str) -> FrameTensors:
    return FrameTensors.from_host(frame.depth, frame.camera, frame.T_world_cam, frame.color,
                                  frame.camera, np.eye(4), 0.1, 5.0, HostStaging(device))


def refiner(**overrides: float) -> TsdfRefiner:
    rc = RefineConfig(**overrides)
    return TsdfRefiner(TRUNC, rc.steps, rc.learning_rate_m, rc.color_learning_rate,
                       rc.stride_px, rc.depth_weight, rc.color_weight, rc.free_space_weight,
                       rc.free_space_samples, rc.eikonal_weight)


def noisy_map(device: str) -> tuple[BlockVolume, TsdfIntegrator]:
    """The sphere fused from 3 frames with 4 % multiplicative depth noise at nearby poses."""
    vol = BlockVolume(VOXEL, 8, TRUNC, device, initial_capacity_blocks=256)
    integ = TsdfIntegrator(TRUNC, "constant", 100.0, 0, drop_start_m=VOXEL)
    for i, shift in enumerate(([0, 0, 0], [0.1, 0.1, 0], [-0.1, 0, 0.1])):
        T = look_at(POSE[:3, 3] + np.array(shift), CENTER)
        integ.integrate(vol, tensors(sphere_frame(T, sigma=0.04, seed=i), device))
    return vol, integ


def render_error(vol: BlockVolume) -> float:
    """Mean |rendered - exact| z-depth at ``POSE`` over pixels where both have depth, m."""
    r = render(vol, CAM, POSE, RenderOptions(max_depth_m=5.0))
    truth = torch.as_tensor(render_sphere_depth(K, CAM.width, CAM.height, POSE, CENTER, RADIUS))
    both = (r.status.cpu() == RayStatus.HIT) & (truth > 0)
    assert int(both.sum()) > 0.5 * int((truth > 0).sum())
    return float((r.depth.cpu() - truth).abs()[both].mean())


def test_refinement_against_an_exact_frame_lowers_the_error_of_a_noisy_map(device: str
                                                                             ) -> None:
    """A noisy map, then an exact frame fused: refining the changed blocks against it brings
    the render at its pose at least 40 % closer to the truth than fusion alone (doing
    nothing keeps 100 % of the error)."""
    vol, integ = noisy_map(device)
    frame = tensors(sphere_frame(POSE), device)
    stamp = vol.stamp
    integ.integrate(vol, frame)
    before = render_error(vol)
    result = refiner(steps=20, eikonal_weight=0.0).refine(vol, vol.changes(stamp).slots, frame)
    after = render_error(vol)
    assert result.blocks > 0 and float(result.loss_last) < float(result.loss_first)
    assert before > 0.004, before  # the noise is visible in the map
    assert after < 0.6 * before, (before, after)


def test_only_the_given_blocks_change_and_weights_never(device: str) -> None:
    vol, integ = noisy_map(device)
    frame = tensors(sphere_frame(POSE, sigma=0.02, seed=9), device)
    n = vol.num_blocks
    picked = torch.arange(0, n, 2, device=device)  # every other block
    tsdf, weight, color = vol.tsdf.clone(), vol.weight.clone(), vol.color.clone()
    stamp = vol.stamp
    refiner().refine(vol, picked, frame)
    others = torch.ones(vol.capacity, dtype=torch.bool, device=device)
    others[picked] = False
    assert torch.equal(vol.tsdf[others], tsdf[others])
    assert torch.equal(vol.color[others], color[others])
    assert torch.equal(vol.weight, weight)
    unobserved = weight[picked] == 0
    assert torch.equal(vol.tsdf[picked][unobserved], tsdf[picked][unobserved])
    assert not torch.equal(vol.tsdf[picked], tsdf[picked])  # it did something
    assert vol.tsdf.abs().max() <= TRUNC + 1e-6 and 0 <= vol.color.min() <= vol.color.max() <= 255
    assert set(vol.changes(stamp).slots.tolist()) == set(picked.tolist())


def test_config_validation() -> None:
    assert RefineConfig().enabled is False
    for bad in ({"steps": 0}, {"steps": 2.5}, {"learning_rate_m": 0.0},
                {"learning_rate_m": float("nan")}, {"color_learning_rate": -1.0},
                {"stride_px": 0}, {"free_space_samples": -1}, {"eikonal_weight": -0.1},
                {"depth_weight": 0.0, "color_weight": 0.0, "free_space_weight": 0.0,
                 "eikonal_weight": 0.0}, {"enabled": "yes"}):
        with pytest.raises(ConfigError, match=r"refine\."):
            MapperConfig.from_dict({"refine": bad})
    with pytest.raises(ConfigError, match="unknown key"):
        MapperConfig.from_dict({"refine": {"step": 3}})
    with pytest.raises(ConfigError, match="refine.enabled needs fusion.method: tsdf"):
        Mapper(MapperConfig.from_dict({"fusion": {"method": "stereo"},
                                       "refine": {"enabled": True}}))


def _config(device: str, **refine: object) -> MapperConfig:
    return MapperConfig.from_dict({"volume": {"voxel_size_m": VOXEL, "device": device,
                                              "initial_capacity_blocks": 256},
                                   "timing": {"mode": "every_stage"}, "refine": refine})


def test_mapper_with_refinement_off_is_plain_fusion_bit_for_bit(device: str) -> None:
    frames = [sphere_frame(look_at(POSE[:3, 3] + np.array(s), CENTER), sigma=0.03, seed=i)
              for i, s in enumerate(([0, 0, 0], [0.15, 0, 0.05], [0, -0.15, 0]))]
    off = Mapper(_config(device, steps=50))
    on = Mapper(_config(device, enabled=True, steps=2))
    plain = Mapper(_config(device))
    for f in frames:
        off.integrate(f)
        on.integrate(f)
        plain.integrator.integrate(plain.volume, tensors(f, device))  # fusion only
    assert off.refiner is None and "refine" not in off.timer.samples
    for name in ("tsdf", "weight", "color"):
        assert torch.equal(getattr(off.volume, name), getattr(plain.volume, name)), name
    assert not torch.equal(on.volume.tsdf, plain.volume.tsdf)
    assert len(on.timer.samples["refine"]) == len(frames)
    assert on.mesh().num_faces > 0
