"""A synthetic dataset on disk: a scene's rosbag2 plus its exact ground truth.

Layout of ``out/``::

    bag/                     rosbag2 (sqlite3 or MCAP) with depth, color, camera_info, /tf
    ground_truth/points.ply  points on the true surface seen by the noise-free camera
    ground_truth/map.yaml    true 2D occupancy of the height band (Nav2 map files)
    scene.json               scene description, trajectory and noise (to rebuild everything)

A dynamic scene (a name in ``recon_ros.io.synthetic.DYNAMIC_SCENES``, e.g. ``dynamic``: the
same loop driven twice, ``n_frames // 2`` frames each, objects removed or added in between)
has ``points.ply`` and ``map.yaml`` of its *final* state (the surface seen in the frames after
the last change, the occupancy of the final scene) and also::

    ground_truth/removed_surface.ply             surface points of the removed objects
    ground_truth/added_surface.ply               surface points of the added objects
    ground_truth/removed_footprint.ply           centres of the removed objects' footprint cells
    ground_truth/removed_footprint_seen_free.ply those of them seen free after the removal

Object surface points (:func:`~recon_ros.io.synthetic.change_surface_points`) are exposed
(not touching another solid), were seen while the object stood, and lie more than
``change_margin_m`` from every surface of the scene without it. Footprint cells
(:func:`~recon_ros.io.synthetic.footprint_cells`) are the grid's cells (centred on multiples
of ``grid_resolution_m``) whose column meets a removed object within ``grid_band_m``; their
centres are written at z = 0. A cell is seen free
(:func:`~recon_ros.io.synthetic.seen_free_cells`) when, after the removal, a camera ray
crossed its column between ``grid_band_m[0]`` and ``free_below_m`` before hitting a surface.
``scene.json`` then also has a ``dynamic`` section naming the objects and these settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import OccupancyConfig
from ..core.errors import ConfigError
from ..core.frame import PinholeCamera
from ..core.mesh import TriangleMesh
from .map_files import read_points, write_nav2_map, write_ply
from .synthetic import (DYNAMIC_SCENES, ChangeGroundTruth, DynamicScene, NoiseConfig, Room,
                        Scene, Trajectory, change_ground_truth, default_camera,
                        gt_occupancy_grid, make_dynamic, make_scene, room_scan_trajectory,
                        visible_surface_points)
from .synthetic_bag import SceneBagInfo, write_scene_bag

#: File names (in ``ground_truth/``) of the ground truth of dynamic scenes.
REMOVED_SURFACE_FILE = "removed_surface.ply"
ADDED_SURFACE_FILE = "added_surface.ply"
REMOVED_FOOTPRINT_FILE = "removed_footprint.ply"
REMOVED_FOOTPRINT_SEEN_FREE_FILE = "removed_footprint_seen_free.ply"


def write_synthetic_dataset(out: str | Path, scene_name: str = "demo", seed: int = 0,
                            n_frames: int = 60, storage: str = "sqlite3", width: int = 640,
                            height: int = 480, rate_hz: float = 10.0,
                            noise_sigma: float = 0.0, kinect_noise: bool = False,
                            outlier_fraction: float = 0.0, hole_fraction: float = 0.0,
                            depth_encoding: str = "16UC1", max_range_m: float = 5.0,
                            grid_resolution_m: float = 0.05,
                            grid_band_m: tuple[float, float] = (0.05, 1.5),
                            gt_stride_px: int = 0,
                            free_below_m: float = OccupancyConfig.free_below_m,
                            change_points: int = 20_000, change_margin_m: float = 0.1
                            ) -> SceneBagInfo:
    """Render a registered scene along a room scan and write bag + ground truth.

    Args:
        out: output folder (created; must not hold a previous dataset's ``bag/``).
        scene_name, seed: which scene (``recon_ros.io.synthetic.SCENES``, or
            ``DYNAMIC_SCENES`` rendered with their own two-pass trajectory).
        n_frames, width, height, rate_hz: the camera stream (dynamic scenes: an even
            ``n_frames``, two passes of ``n_frames // 2``).
        noise_sigma, kinect_noise, outlier_fraction, hole_fraction: depth noise
            (design.md section 6); ground truth is always noise-free.
        storage, depth_encoding: rosbag2 storage and depth encoding.
        max_range_m: depths beyond are not measured (and not in the ground-truth points).
        grid_resolution_m, grid_band_m: the ground-truth 2D occupancy grid.
        gt_stride_px: pixel stride of the ground-truth surface points (and of the rays that
            find the footprint cells seen free); 0 = one ray per 4 px of a 640 px wide image
            (``max(1, width // 160)``), so small images get equally dense ground truth.
        free_below_m: dynamic scenes: footprint cells count as seen free only below this
            height (the mapper's ``occupancy.free_below_m``).
        change_points: dynamic scenes: surface points drawn per changed object (before the
            visibility and margin filters).
        change_margin_m: dynamic scenes: see the module doc, metres.
    """
    out = Path(out)
    if (out / "bag").exists():
        raise ConfigError(f"{out / 'bag'} already exists; choose another output folder")
    camera = default_camera(width, height)
    gt_stride_px = gt_stride_px or max(1, width // 160)
    scene, trajectory = _scene_and_trajectory(scene_name, seed, n_frames, rate_hz)
    out.mkdir(parents=True, exist_ok=True)
    noise = NoiseConfig(multiplicative_sigma=noise_sigma, kinect_axial=kinect_noise,
                        outlier_fraction=outlier_fraction, hole_fraction=hole_fraction,
                        max_range_m=max_range_m)
    info = write_scene_bag(out / "bag", scene, camera, trajectory, storage=storage, noise=noise,
                           rate_hz=rate_hz, depth_encoding=depth_encoding, seed=seed)
    final, first_final = scene, 0
    if isinstance(scene, DynamicScene):
        final, first_final = scene.scene_at(n_frames - 1), scene.stable_from(n_frames)
    points = visible_surface_points(final, trajectory.poses[first_final:], camera,
                                    stride=gt_stride_px, max_range_m=max_range_m)
    gt_dir = out / "ground_truth"
    write_points(gt_dir / "points.ply", points)
    r = grid_resolution_m
    write_nav2_map(gt_dir / "map.yaml",
                   gt_occupancy_grid(final, r, *grid_band_m, _grid_bounds(final.room, r)))
    meta: dict[str, Any] = {
        "scene": scene.describe(), "frames": n_frames, "width": width, "height": height,
        "rate_hz": rate_hz, "noise": noise.to_dict(), "seed": seed, "storage": storage,
        "depth_encoding": depth_encoding, "world_frame": info.world_frame,
        "grid": {"resolution_m": grid_resolution_m, "band_m": list(grid_band_m)},
    }
    if isinstance(scene, DynamicScene):
        meta["dynamic"] = _write_change_ground_truth(
            gt_dir, scene, camera, trajectory, seed=seed, n_points=change_points,
            margin_m=change_margin_m, resolution_m=r, band_m=grid_band_m,
            free_below_m=free_below_m, stride_px=gt_stride_px, max_range_m=max_range_m)
    (out / "scene.json").write_text(json.dumps(meta, indent=2))
    return info


def _scene_and_trajectory(scene_name: str, seed: int, n_frames: int, rate_hz: float
                          ) -> tuple[Scene | DynamicScene, Trajectory]:
    """The registered scene and its room-scan trajectory (two passes for dynamic scenes)."""
    if scene_name not in DYNAMIC_SCENES:
        scene = make_scene(scene_name, seed)
        return scene, room_scan_trajectory(scene, n_frames, rate_hz=rate_hz)
    if n_frames < 2 or n_frames % 2:
        raise ConfigError(f"dynamic scene {scene_name!r} needs an even number of frames (two "
                          f"passes of the same loop), got {n_frames}")
    dynamic, trajectory = make_dynamic(scene_name, seed, n_frames // 2)
    return dynamic, trajectory.retimed(rate_hz)


def _grid_bounds(room: Room, r: float) -> tuple[float, float, float, float]:
    """Room bounds padded by 2 cells, on cell edges of a grid whose cells are centred on
    multiples of ``r`` (as the mapper's grid, ``OccupancyMapper``)."""
    lo, hi = room.bounds
    return ((np.round(lo[0] / r) - 2.5) * r, (np.round(lo[1] / r) - 2.5) * r,
            (np.round(hi[0] / r) + 2.5) * r, (np.round(hi[1] / r) + 2.5) * r)


def write_points(path: Path, points: np.ndarray) -> None:
    """Write (N, 3) points as a face-less PLY (float32 coordinates)."""
    write_ply(path, TriangleMesh(np.asarray(points, dtype=np.float32).reshape(-1, 3),
                                 np.zeros((0, 3), np.int64)))


def _write_change_ground_truth(gt_dir: Path, scene: DynamicScene, camera: PinholeCamera,
                               trajectory: Trajectory, *, seed: int, n_points: int,
                               margin_m: float, resolution_m: float,
                               band_m: tuple[float, float], free_below_m: float,
                               stride_px: int, max_range_m: float) -> dict[str, Any]:
    """Write the removed/added objects' files (module doc) and return their description."""
    truth = change_ground_truth(scene, camera, trajectory, resolution_m=resolution_m,
                                min_height_m=band_m[0], max_height_m=band_m[1],
                                free_below_m=free_below_m, n_points=n_points, seed=seed,
                                margin_m=margin_m, stride_px=stride_px,
                                max_range_m=max_range_m)
    write_points(gt_dir / REMOVED_SURFACE_FILE, truth.removed_surface)
    write_points(gt_dir / ADDED_SURFACE_FILE, truth.added_surface)
    for name, xy in ((REMOVED_FOOTPRINT_FILE, truth.removed_footprint_xy),
                     (REMOVED_FOOTPRINT_SEEN_FREE_FILE, truth.removed_footprint_seen_free_xy)):
        write_points(gt_dir / name, np.concatenate((xy, np.zeros((len(xy), 1))), axis=1))
    n = len(trajectory)
    return {"removed": [o.name for o in scene.removed(0, n - 1)],
            "added": [o.name for o in scene.added(0, n - 1)],
            "surface_margin_m": margin_m, "free_below_m": free_below_m,
            "removed_surface_points": len(truth.removed_surface),
            "added_surface_points": len(truth.added_surface),
            "footprint_cells": len(truth.removed_footprint_xy),
            "footprint_cells_seen_free": len(truth.removed_footprint_seen_free_xy)}


def read_change_ground_truth(gt_dir: str | Path) -> ChangeGroundTruth:
    """Read the dynamic-scene files of a dataset's ``ground_truth/`` folder."""
    gt_dir = Path(gt_dir)
    return ChangeGroundTruth(
        removed_surface=read_points(gt_dir / REMOVED_SURFACE_FILE),
        added_surface=read_points(gt_dir / ADDED_SURFACE_FILE),
        removed_footprint_xy=read_points(gt_dir / REMOVED_FOOTPRINT_FILE)[:, :2],
        removed_footprint_seen_free_xy=read_points(
            gt_dir / REMOVED_FOOTPRINT_SEEN_FREE_FILE)[:, :2])
