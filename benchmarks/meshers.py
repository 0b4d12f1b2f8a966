"""Marching cubes against screened Poisson meshing of the same TSDF map, on synthetic ground
truth.

Per condition, a scene is scanned along :func:`room_scan_trajectory` (``--frames`` poses, exact
ray-cast depth at ``--width`` x ``--height``, default 60 frames at 320 x 240, 5 cm voxels) into
one :class:`Mapper`, then meshed twice:

- ``marching cubes``: ``Mapper.mesh()`` (the whole map meshed from scratch);
- ``poisson``: :func:`recon_ros.core.poisson.poisson_mesh` with ``mesh.min_weight`` and
  :class:`PoissonConfig` (``--depth``, ``--density-quantile``, ``--crop-voxels``).

Conditions: ``clean`` (the demo room, no noise), ``kinect`` (the demo room, axial Kinect depth
noise), ``random`` (``make_scene("random", 3)``, no noise).

Scored against the observed part of the true surface (back-projected noise-free renders of the
same poses, every ``--gt-stride``-th pixel) with :func:`recon_ros.evaluation.mesh_metrics`:
accuracy and completeness (mean distances, metres), F-score at 2 and 5 cm, triangle count,
wall-clock time of the meshing call, and whether Open3D calls the mesh watertight.

    .venv/bin/python benchmarks/meshers.py [--frames 60] [--width 320 --height 240]
        [--conditions clean kinect random] [--depth 0] [--density-quantile 0]
        [--crop-voxels 1.5] [--threads 1]

Times are wall clock on this machine; nothing here asserts a number.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from recon_ros.bench import hardware_line
from recon_ros.bench_maps import mesher_times
from recon_ros.core import Mapper, MapperConfig, TriangleMesh
from recon_ros.core.poisson import PoissonConfig, is_watertight
from recon_ros.evaluation import mesh_metrics
from recon_ros.io.synthetic import (
    NoiseConfig,
    Scene,
    default_camera,
    iter_frames,
    make_demo_scene,
    make_scene,
    room_scan_trajectory,
    visible_surface_points,
)

VOXEL_M = 0.05
THRESHOLDS_M = (0.02, 0.05)
CONDITIONS: dict[str, tuple[Callable[[], Scene], NoiseConfig]] = {
    "clean": (make_demo_scene, NoiseConfig()),
    "kinect": (make_demo_scene, NoiseConfig(kinect_axial=True)),
    "random": (lambda: make_scene("random", 3), NoiseConfig()),
}


@dataclass
class Row:
    """One mesher on one condition (distances in metres, time in seconds)."""

    condition: str
    method: str
    accuracy_m: float
    completeness_m: float
    fscore: dict[float, float]
    triangles: int
    time_s: float
    watertight: bool


def score(condition: str, method: str, mesh: TriangleMesh, seconds: float,
          gt: np.ndarray) -> Row:
    """Metrics of ``mesh`` against (M, 3) ground-truth surface points."""
    m = mesh_metrics(mesh, gt, THRESHOLDS_M)
    return Row(condition, method, m.accuracy_m, m.completeness_m, dict(m.fscore),
               mesh.num_faces, seconds, is_watertight(mesh))


def run_condition(name: str, frames: int, width: int, height: int, gt_stride: int,
                  poisson: PoissonConfig) -> list[Row]:
    """Map condition ``name``, mesh it both ways and score both meshes."""
    make, noise = CONDITIONS[name]
    scene = make()
    cam = default_camera(width, height)
    traj = room_scan_trajectory(scene, frames)
    mapper = Mapper(MapperConfig.from_dict({"volume": {"voxel_size_m": VOXEL_M}}))
    for frame in iter_frames(scene, cam, traj, noise=noise, seed=7):
        mapper.integrate(frame)
    gt = visible_surface_points(scene, traj, cam, stride=gt_stride)
    t = mesher_times(mapper, poisson)
    return [score(name, "marching cubes", t.marching_cubes, t.marching_cubes_s, gt),
            score(name, "poisson", t.poisson, t.poisson_s, gt)]


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS),
                    choices=list(CONDITIONS))
    ap.add_argument("--gt-stride", type=int, default=4)
    ap.add_argument("--depth", type=int, default=PoissonConfig.depth)
    ap.add_argument("--density-quantile", type=float, default=PoissonConfig.density_quantile)
    ap.add_argument("--crop-voxels", type=float, default=PoissonConfig.crop_distance_voxels)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    poisson = PoissonConfig(depth=args.depth, density_quantile=args.density_quantile,
                            crop_distance_voxels=args.crop_voxels)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        console = Console()
        console.print(hardware_line("cpu"))
        rows = [row for name in args.conditions
                for row in run_condition(name, args.frames, args.width, args.height,
                                         args.gt_stride, poisson)]
    finally:
        torch.set_num_threads(threads)
    table = Table(title=f"Meshers vs ground truth, {VOXEL_M * 100:.0f} cm voxels, "
                        f"{args.width}x{args.height}, {args.frames} frames")
    for col in ("condition", "method", "accuracy m", "completeness m",
                *(f"F @ {t * 100:g} cm" for t in THRESHOLDS_M), "triangles", "time s",
                "watertight"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r.condition, r.method, f"{r.accuracy_m:.4f}", f"{r.completeness_m:.4f}",
                      *(f"{r.fscore[t]:.4f}" for t in THRESHOLDS_M), str(r.triangles),
                      f"{r.time_s:.2f}", "yes" if r.watertight else "no")
    console.print(table)
    return rows


if __name__ == "__main__":
    main()
