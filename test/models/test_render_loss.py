"""The rendering loss (:mod:`recon_ros.core.render_loss`) on dense grids and in Atlas training:
a dense box viewed as blocks renders its surface where it is, the loss is differentiable in
the grid (descent on the grid closes a gap), and with ``render_loss_weight`` > 0 its gradient
reaches the network and training keeps it finite (on this tiny network it does not fall
within 20 steps: see docs/rendering.md)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from recon_ros.core.errors import ConfigError
from recon_ros.core.frame import PinholeCamera
from recon_ros.core.render_loss import dense_grid_volume, render_loss
from recon_ros.models.atlas import AtlasModel, Fragment
from recon_ros.models.train_atlas import (AtlasTrainConfig, fragment_loss, fragment_render_loss,
                                          train, training_sample)
from test.conftest import look_at
from test.models.test_atlas import TINY, TINY_GEOMETRY

pytestmark = pytest.mark.usefixtures("one_thread")

VOXEL = 0.05
TRUNC = 3 * VOXEL
CAM = PinholeCamera(np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]]), 64, 48)


def plane_grid(height_m: float) -> tuple[Fragment, torch.Tensor]:
    """A 24 x 24 x 16 box (origin index (-12, -12, -4)) holding the truncated SDF of the
    horizontal plane ``z = height_m`` (free space above), in truncation units."""
    frag = Fragment((-12, -12, -4), (24, 24, 16), VOXEL)
    z = frag.centres(1)[..., 2].to(torch.float64)
    return frag, ((z - height_m) / TRUNC).clamp(-1, 1).to(torch.float32)


def test_a_dense_grid_renders_its_surface_and_the_loss_pulls_it_to_the_measurement() -> None:
    frag, grid_tsdf = plane_grid(0.113)
    T = look_at(np.array([0.05, -0.4, 0.9]), np.array([0.0, 0.0, 0.113]))
    seen = torch.ones(frag.dims, dtype=torch.bool)
    blocks = dense_grid_volume(frag.origin_index, seen, VOXEL, TRUNC)
    # Measured: the same plane 2 cm higher (exact z-depth of every pixel's ray).
    v, u = np.mgrid[0:CAM.height, 0:CAM.width]
    rays = np.stack(((u - CAM.cx) / CAM.fx, (v - CAM.cy) / CAM.fy, np.ones(u.shape)), -1)
    dz = (rays @ T[:3, :3].T)[..., 2]
    depth = torch.as_tensor(np.where(dz < 0, (0.133 - T[2, 3]) / dz, 0.0), dtype=torch.float32)

    def loss_of(shift_m: float) -> tuple[torch.Tensor, torch.Tensor]:
        dense = (grid_tsdf * TRUNC - shift_m).requires_grad_(True)
        r = render_loss(blocks.volume, blocks.scatter(dense, TRUNC), CAM, T, depth,
                        min_depth_m=0.1, max_depth_m=3.0, stride=2)
        return r.depth_l1, dense, r.pixels

    exact, dense, pixels = loss_of(0.02)  # the grid's plane moved up to z = 0.133
    assert int(pixels) > 0.5 * CAM.width * CAM.height / 4
    assert float(exact.detach()) < 1e-3  # renders where the measurement is
    off, dense, _ = loss_of(0.0)
    assert float(off.detach()) > 0.01
    off.backward()
    # Raising the plane (lower TSDF) brings it towards the camera, to the measurement.
    assert dense.grad is not None and float(dense.grad.sum()) > 0
    # Gradient descent on the grid itself closes most of the 2 cm gap.
    grid = (grid_tsdf * TRUNC).requires_grad_(True)
    opt = torch.optim.Adam([grid], lr=0.002)
    losses = []
    for _ in range(20):
        r = render_loss(blocks.volume, blocks.scatter(grid, TRUNC), CAM, T, depth,
                        min_depth_m=0.1, max_depth_m=3.0, stride=2)
        opt.zero_grad()
        r.depth_l1.backward()
        opt.step()
        losses.append(float(r.depth_l1.detach()))
    assert losses[-1] < 0.3 * losses[0], losses


def test_the_render_loss_gradient_reaches_the_network_and_training_lowers_it(tmp_path
                                                                              ) -> None:
    cfg = replace(TINY_GEOMETRY, render_loss_weight=1.0)
    sample = training_sample(cfg, 0)
    torch.manual_seed(0)
    model = AtlasModel(TINY).train()
    trunc = model.truncation_m(cfg.voxel_size_m)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def step(with_render: bool) -> float:
        out = model(sample.images, sample.camera, sample.poses, sample.fragment)
        render = fragment_render_loss(out, sample, trunc, cfg.render_stride)
        total = fragment_loss(out, sample.targets, cfg.weight_bce)["loss"]
        opt.zero_grad()
        (total + render if with_render else total).backward()
        opt.step()
        return float(render.detach())

    # An untrained network predicts no surface (no zero crossing, so no depth term): warm up
    # on the TSDF loss until it has some.
    first = [step(False) for _ in range(25)]
    assert all(math.isfinite(x) for x in first)
    out = model(sample.images, sample.camera, sample.poses, sample.fragment)
    loss = fragment_render_loss(out, sample, trunc, cfg.render_stride)
    opt.zero_grad()
    loss.backward()
    for part in (model.volume, model.features):  # the 3D and the 2D network
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0
                   for p in part.parameters())
    renders = [step(True) for _ in range(5)]
    assert all(math.isfinite(x) and x > 0 for x in renders)
    result = train(cfg, tmp_path / "run", log=lambda s: None)
    assert len(result.history["render"]) == cfg.sequences
    assert all(math.isfinite(x) and x >= 0 for x in result.history["render"])


def test_render_loss_options_are_validated() -> None:
    for bad in ({"render_loss_weight": -1.0}, {"render_stride": 0}):
        with pytest.raises(ConfigError):
            replace(AtlasTrainConfig(), **bad)
