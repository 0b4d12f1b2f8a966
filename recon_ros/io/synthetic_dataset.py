"""A synthetic dataset on disk: a scene's rosbag2 plus its exact ground truth.

Layout of ``out/``::

    bag/                     rosbag2 (sqlite3 or MCAP) with depth, color, camera_info, /tf
    ground_truth/points.ply  points on the true surface seen by the noise-free camera
    ground_truth/map.yaml    true 2D occupancy of the height band (Nav2 map files)
    scene.json               scene description, trajectory and noise (to rebuild everything)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError
from ..core.mesh import TriangleMesh
from .map_files import write_nav2_map, write_ply
from .synthetic import (NoiseConfig, default_camera, gt_occupancy_grid, make_scene,
                        room_scan_trajectory, visible_surface_points)
from .synthetic_bag import SceneBagInfo, write_scene_bag


def write_synthetic_dataset(out: str | Path, scene_name: str = "demo", seed: int = 0,
                            n_frames: int = 60, storage: str = "sqlite3", width: int = 640,
                            height: int = 480, rate_hz: float = 10.0,
                            noise_sigma: float = 0.0, kinect_noise: bool = False,
                            outlier_fraction: float = 0.0, hole_fraction: float = 0.0,
                            depth_encoding: str = "16UC1", max_range_m: float = 5.0,
                            grid_resolution_m: float = 0.05,
                            grid_band_m: tuple[float, float] = (0.05, 1.5),
                            gt_stride_px: int = 4) -> SceneBagInfo:
    """Render ``make_scene(scene_name, seed)`` along a room scan and write bag + ground truth.

    Args:
        out: output folder (created; must not hold a previous dataset's ``bag/``).
        scene_name, seed: which scene (see ``recon_ros.io.synthetic.SCENES``).
        n_frames, width, height, rate_hz: the camera stream.
        noise_sigma, kinect_noise, outlier_fraction, hole_fraction: depth noise
            (design.md section 6); ground truth is always noise-free.
        storage, depth_encoding: rosbag2 storage and depth encoding.
        max_range_m: depths beyond are not measured (and not in the ground-truth points).
        grid_resolution_m, grid_band_m: the ground-truth 2D occupancy grid.
        gt_stride_px: pixel stride of the ground-truth surface points.
    """
    out = Path(out)
    if (out / "bag").exists():
        raise ConfigError(f"{out / 'bag'} already exists; choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    scene = make_scene(scene_name, seed)
    camera = default_camera(width, height)
    trajectory = room_scan_trajectory(scene, n_frames, rate_hz=rate_hz)
    noise = NoiseConfig(multiplicative_sigma=noise_sigma, kinect_axial=kinect_noise,
                        outlier_fraction=outlier_fraction, hole_fraction=hole_fraction,
                        max_range_m=max_range_m)
    info = write_scene_bag(out / "bag", scene, camera, trajectory, storage=storage, noise=noise,
                           rate_hz=rate_hz, depth_encoding=depth_encoding, seed=seed)
    points = visible_surface_points(scene, trajectory, camera, stride=gt_stride_px,
                                    max_range_m=max_range_m)
    gt_dir = out / "ground_truth"
    write_ply(gt_dir / "points.ply", TriangleMesh(points.astype(np.float32),
                                                  np.zeros((0, 3), np.int64)))
    # Cells centred on multiples of the resolution, as the mapper's grid (OccupancyMapper).
    lo, hi = scene.room.bounds
    r = grid_resolution_m
    bounds = ((np.round(lo[0] / r) - 2.5) * r, (np.round(lo[1] / r) - 2.5) * r,
              (np.round(hi[0] / r) + 2.5) * r, (np.round(hi[1] / r) + 2.5) * r)
    write_nav2_map(gt_dir / "map.yaml", gt_occupancy_grid(scene, r, *grid_band_m, bounds))
    (out / "scene.json").write_text(json.dumps({
        "scene": scene.describe(), "frames": n_frames, "width": width, "height": height,
        "rate_hz": rate_hz, "noise": noise.to_dict(), "seed": seed, "storage": storage,
        "depth_encoding": depth_encoding, "world_frame": info.world_frame,
        "grid": {"resolution_m": grid_resolution_m, "band_m": list(grid_band_m)},
    }, indent=2))
    return info
