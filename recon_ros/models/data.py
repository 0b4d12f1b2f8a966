"""Procedural training and evaluation data for latent fusion: random synthetic rooms
(:func:`~recon_ros.io.synthetic.make_random_scene`), room-scan trajectories, the depth noise of
design.md section 6, and exact truncated-SDF targets from the scenes' analytic SDFs.

Scene seeds are split once and for all: training draws them from ``[0, TRAIN_SEED_LIMIT)``,
validation and evaluation use seeds at or above it, so no evaluated room was ever trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..core.frame import PinholeCamera
from ..core.tsdf_integrator import FrameTensors
from ..core.upload import HostStaging
from ..io.synthetic import (NoiseConfig, Scene, apply_noise, default_camera, make_random_scene,
                            render_depth, room_scan_trajectory)

#: Training scene seeds are below this; held-out scenes (validation, evaluation) at or above.
TRAIN_SEED_LIMIT = 1_000_000
VALIDATION_SEED_BASE = 2_000_000
EVALUATION_SEED_BASE = 3_000_000


@dataclass(frozen=True)
class NoiseRanges:
    """How training sequences draw their noise (one draw per sequence).

    Attributes:
        sigma_range: multiplicative sigma, log-uniform in ``[min, max]``.
        clean_fraction: fraction of sequences without Gaussian noise.
        outlier_fractions: outlier-blob pixel fractions, drawn uniformly.
        hole_fractions: hole pixel fractions, drawn uniformly.
    """

    sigma_range: tuple[float, float] = (0.005, 0.05)
    clean_fraction: float = 0.1
    outlier_fractions: tuple[float, ...] = (0.0, 0.01, 0.05, 0.10)
    hole_fractions: tuple[float, ...] = (0.0, 0.01, 0.03)

    def draw(self, rng: np.random.Generator) -> NoiseConfig:
        lo, hi = self.sigma_range
        sigma = 0.0 if rng.uniform() < self.clean_fraction else float(
            math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return NoiseConfig(multiplicative_sigma=sigma,
                           outlier_fraction=float(rng.choice(self.outlier_fractions)),
                           hole_fraction=float(rng.choice(self.hole_fractions)))


@dataclass
class Sequence:
    """Consecutive noisy depth frames of one scene.

    Attributes:
        scene: the scene (its ``sdf`` is the ground truth).
        camera: intrinsics of every frame.
        poses: (4, 4) ``T_world_cam`` per frame.
        depths: (H, W) float32 noisy depth per frame, metres (0 = invalid).
        noise: the noise model used.
    """

    scene: Scene
    camera: PinholeCamera
    poses: list[np.ndarray]
    depths: list[np.ndarray]
    noise: NoiseConfig


def scan_poses(scene: Scene, rng: np.random.Generator, n_frames: int, frames_per_loop: int
               ) -> list[np.ndarray]:
    """``n_frames`` consecutive poses of a room scan with a random camera height, pitch, sweep
    and start (one loop = ``frames_per_loop`` poses)."""
    traj = room_scan_trajectory(scene, frames_per_loop,
                                height=float(rng.uniform(0.8, 1.6)),
                                pitch_rad=math.radians(float(rng.uniform(5.0, 35.0))),
                                sweep_rad=math.radians(float(rng.uniform(0.0, 25.0))))
    start = int(rng.integers(0, frames_per_loop))
    return [np.asarray(traj.poses[(start + i) % frames_per_loop]) for i in range(n_frames)]


def render_sequence(scene: Scene, camera: PinholeCamera, poses: list[np.ndarray],
                    noise: NoiseConfig, noise_seed: int) -> Sequence:
    """Render exact depth for every pose and apply ``noise`` (frame ``i`` seeded by
    ``(noise_seed, i)``)."""
    depths = []
    for i, T in enumerate(poses):
        depth = render_depth(scene, camera, T)
        if not noise.is_noise_free:
            depth = apply_noise(depth, noise, np.random.default_rng([noise_seed, i]))
        depths.append(depth)
    return Sequence(scene, camera, poses, depths, noise)


def training_sequence(seed: int, index: int, n_frames: int, frames_per_loop: int,
                      resolutions: tuple[tuple[int, int], ...], noise: NoiseRanges) -> Sequence:
    """Sequence ``index`` of a training run seeded with ``seed`` (a pure function of both)."""
    rng = np.random.default_rng([int(seed), int(index), 0x7EA1])
    scene = make_random_scene(int(rng.integers(0, TRAIN_SEED_LIMIT)))
    w, h = resolutions[int(rng.integers(0, len(resolutions)))]
    poses = scan_poses(scene, rng, n_frames, frames_per_loop)
    return render_sequence(scene, default_camera(w, h), poses, noise.draw(rng),
                           int(rng.integers(0, 2**31)))


def frame_tensors(depth: np.ndarray, camera: PinholeCamera, T_world_cam: np.ndarray,
                  min_depth_m: float, max_depth_m: float, device: torch.device | str
                  ) -> FrameTensors:
    """A depth-only :class:`FrameTensors` on ``device``."""
    return FrameTensors.from_host(depth, camera, T_world_cam, None, camera, np.eye(4),
                                  min_depth_m, max_depth_m, HostStaging(device))


def truncated_sdf(scene: Scene, points: torch.Tensor, truncation_m: float) -> torch.Tensor:
    """(M, 3) map-frame points -> (M,) float32 true signed distance clamped to
    ``+-truncation_m`` and divided by it (so in [-1, 1]; negative inside solids)."""
    sdf = scene.sdf(points.detach().to("cpu", torch.float64))
    return (sdf / truncation_m).clamp(-1.0, 1.0).to(torch.float32).to(points.device)
