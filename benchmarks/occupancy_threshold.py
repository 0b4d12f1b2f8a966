"""Choose ``fusion.occupancy_threshold`` (latent maps) on validation rooms, not on test rooms.

Latent maps decide occupancy by the decoded occupancy head: an observed voxel is occupied
when its probability is >= the threshold (issue 13, item 5). This script maps validation rooms
(scene seeds ``VALIDATION_SEED_BASE + j``: disjoint from the training seeds, < 1,000,000, and
from the evaluation seeds, >= 3,000,000) with latent fusion and with TSDF fusion of the same
noisy depth, then scores the 2D grid of each latent map under every candidate threshold (and
under the TSDF sign rule of the same latent map) against the ground-truth grid
(:func:`~recon_ros.io.synthetic.gt_occupancy_grid`, the occupancy height band).

Per condition (no averaging across conditions) and rule: obstacles marked free (the unsafe
error for a planner), free marked occupied, occupied IoU; means over the rooms.

Selection rule, fixed before the numbers: the **largest** candidate whose obstacles-marked-
free ratio is at most TSDF fusion's + ``--margin`` in **every** condition (as safe as the
classical map, then as few phantom obstacles as possible); if none qualifies, the smallest
candidate. The script prints the table and the choice; it changes nothing.

    .venv/bin/python benchmarks/occupancy_threshold.py [--rooms 3] [--frames 24]
        [--width 160 --height 120] [--thresholds 0.05,0.1,0.2,0.3,0.5] [--weights W]
        [--margin 0.005] [--threads 1]

Nothing here asserts a number; the figures go to docs/latent_fusion.md with this command.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from recon_ros.bench import hardware_line
from recon_ros.core import Mapper
from recon_ros.core.config import OccupancyConfig
from recon_ros.core.occupancy_grid import OccupancyGrid2D
from recon_ros.evaluation import GridMetrics, grid_metrics
from recon_ros.io.synthetic import (
    NoiseConfig,
    apply_noise,
    default_camera,
    gt_occupancy_grid,
    make_random_scene,
    render_depth,
)
from recon_ros.models.data import VALIDATION_SEED_BASE, scan_poses
from recon_ros.models.evaluate import fusion_mapper_config, fuse

VOXEL_M = 0.05
TRUNCATION_VOXELS = 4.0
MAX_DEPTH_M = 5.0
#: The conditions, each reported on its own (in distribution of the training noise).
CONDITIONS: dict[str, NoiseConfig] = {
    "noise-free": NoiseConfig(),
    "sigma 0.01": NoiseConfig(multiplicative_sigma=0.01),
    "sigma 0.01, 5% outliers": NoiseConfig(multiplicative_sigma=0.01, outlier_fraction=0.05),
    "sigma 0.01, 10% outliers": NoiseConfig(multiplicative_sigma=0.01, outlier_fraction=0.10),
    "sigma 0.05, 5% outliers": NoiseConfig(multiplicative_sigma=0.05, outlier_fraction=0.05),
}
#: The rule names besides the thresholds.
TSDF_FUSION, SIGN_RULE = "TSDF fusion", "latent, TSDF sign rule"


@dataclass
class Row:
    """One condition and rule: grid metrics, means over the rooms."""

    condition: str
    rule: str
    obstacles_marked_free: float
    free_marked_occupied: float
    occupied_iou: float


def latent_grids(mapper: Mapper, thresholds: list[float]) -> dict[str, OccupancyGrid2D]:
    """The latent map's 2D grid under each threshold and under the TSDF sign rule (the
    occupancy layer is rebuilt for each rule; the map itself is not touched)."""
    latent = mapper.latent
    assert latent is not None
    grids: dict[str, OccupancyGrid2D] = {}
    for t in thresholds:
        mapper.occupancy.use_probability(lambda: latent.occupancy, t)
        grids[f"p >= {t:g}"] = mapper.occupancy_grid()
    mapper.occupancy.use_probability(lambda: None, 0.5)  # None: the TSDF rule applies
    grids[SIGN_RULE] = mapper.occupancy_grid()
    return grids


def evaluate(rooms: int, frames: int, width: int, height: int, thresholds: list[float],
             weights: str, log: Console) -> list[Row]:
    """Every condition x rule, means over ``rooms`` validation rooms."""
    camera = default_camera(width, height)
    occ = OccupancyConfig()
    scores: dict[tuple[str, str], list[GridMetrics]] = {}
    for j in range(rooms):
        seed = VALIDATION_SEED_BASE + j
        scene = make_random_scene(seed)
        poses = scan_poses(scene, np.random.default_rng([VALIDATION_SEED_BASE, j]), frames, 60)
        clean = [render_depth(scene, camera, T) for T in poses]
        gt = gt_occupancy_grid(scene, VOXEL_M, occ.min_height_m, occ.max_height_m)
        for name, noise in CONDITIONS.items():
            depths = clean if noise.is_noise_free else [
                apply_noise(d, noise, np.random.default_rng([seed, i, 7]))
                for i, d in enumerate(clean)]
            tsdf, _ = fuse(fusion_mapper_config("tsdf", VOXEL_M, TRUNCATION_VOXELS,
                                                MAX_DEPTH_M), depths, poses, camera)
            grids = {TSDF_FUSION: tsdf.occupancy_grid()}
            latent, _ = fuse(fusion_mapper_config("latent", VOXEL_M, TRUNCATION_VOXELS,
                                                  MAX_DEPTH_M, weights), depths, poses, camera)
            grids.update(latent_grids(latent, thresholds))
            for rule, grid in grids.items():
                scores.setdefault((name, rule), []).append(grid_metrics(grid, gt))
            log.print(f"[{seed}] {name}: done", highlight=False)
    return [Row(cond, rule, *(float(np.mean([getattr(m, k) for m in ms])) for k in (
        "obstacles_marked_free", "free_marked_occupied", "occupied_iou")))
        for (cond, rule), ms in scores.items()]


def choose(rows: list[Row], thresholds: list[float], margin: float) -> float:
    """The selection rule of the module docstring."""
    safe_limit = {r.condition: r.obstacles_marked_free + margin
                  for r in rows if r.rule == TSDF_FUSION}
    ok = [t for t in thresholds
          if all(r.obstacles_marked_free <= safe_limit[r.condition]
                 for r in rows if r.rule == f"p >= {t:g}")]
    return max(ok) if ok else min(thresholds)


def main(argv: list[str] | None = None) -> tuple[list[Row], float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rooms", type=int, default=3)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--thresholds", default="0.05,0.1,0.2,0.3,0.5")
    p.add_argument("--weights", default="", help='latent weights ("" = shipped)')
    p.add_argument("--margin", type=float, default=0.005)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    thresholds = sorted(float(x) for x in a.thresholds.split(",") if x.strip())
    console = Console()
    console.print(hardware_line("cpu"), highlight=False)
    rows = evaluate(a.rooms, a.frames, a.width, a.height, thresholds, a.weights, console)
    table = Table(title=f"2D grid vs ground truth, {a.rooms} validation rooms x {a.frames} "
                  f"frames at {a.width}x{a.height}, {VOXEL_M * 100:g} cm voxels (means)")
    for col in ("condition", "rule", "obstacles marked free", "free marked occupied",
                "occupied IoU"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.condition, r.rule, f"{r.obstacles_marked_free:.3f}",
                      f"{r.free_marked_occupied:.3f}", f"{r.occupied_iou:.3f}")
    console.print(table)
    chosen = choose(rows, thresholds, a.margin)
    console.print(f"chosen threshold: {chosen:g} (largest with obstacles marked free <= TSDF "
                  f"fusion's + {a.margin:g} in every condition)", highlight=False)
    return rows, chosen


if __name__ == "__main__":
    main()
