"""Accuracy of the incremental ESDF against the analytic SDF, per condition, with a baseline.

Scenes (exact ray-cast depth, ``--width`` x ``--height``, default 320 x 240, 5 cm voxels):

- ``demo``: the demo room scanned along ``--frames`` poses, one condition per depth noise:
  ``clean``, ``kinect`` (axial Kinect model), ``mult 2%`` (multiplicative, sigma 0.02) and
  ``outliers 5%`` (outlier blobs on 5 % of the pixels);
- ``dynamic``: the two-pass change benchmark (objects removed and one added between passes,
  ``--frames`` poses per pass), scored against the scene of the second pass, so distances
  that still see a removed object (or miss the added one) count as errors.

The ESDF is updated after every frame (incremental, as a planner would read it). Scored: the
known free voxels whose nearest true surface was observed (the distance to the nearest point
of the observed surface, sampled densely from noise-free renders, is within 1 cm of the true
SDF) and whose true distance is below ``esdf.max_distance_m`` - 5 cm. Errors are ESDF minus
truth, metres: mean, mean absolute, p99 of the absolute error, the share within one voxel
diagonal, and the share reading *farther* than the truth by more than a diagonal (the unsafe
side for a planner).

Baseline (the best simple classical method): the exact Euclidean distance transform of the
same map's obstacle voxels (observed TSDF < 0), computed from scratch at the end by nearest-
neighbour search (Open3D), minus half a voxel, as ``scipy.ndimage.distance_transform_edt`` on a
dense occupancy grid would give. Also reported: the full recompute of the ESDF against the
incremental result (voxels that differ), and the wall-clock cost of both.

    .venv/bin/python benchmarks/esdf_accuracy.py [--frames 40] [--width 320 --height 240]
        [--conditions clean kinect ...] [--threads 1]

Nothing here asserts a number; the figures go to docs/esdf.md with this command.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import open3d.core as o3c
import torch
from rich.console import Console
from rich.table import Table

from recon_ros.bench import hardware_line
from recon_ros.core import Mapper, MapperConfig
from recon_ros.io.synthetic import (
    NoiseConfig,
    Scene,
    default_camera,
    iter_frames,
    make_demo_scene,
    make_dynamic_scene,
    room_scan_trajectory,
    visible_surface_points,
)

VOXEL_M = 0.05
NOISE: dict[str, NoiseConfig] = {
    "clean": NoiseConfig(),
    "kinect": NoiseConfig(kinect_axial=True),
    "mult 2%": NoiseConfig(multiplicative_sigma=0.02),
    "outliers 5%": NoiseConfig(outlier_fraction=0.05),
}


def nearest_distance(points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(Q,) Euclidean distance from each query to its nearest point (exact, Open3D)."""
    nns = o3c.nns.NearestNeighborSearch(o3c.Tensor(points.astype(np.float32)))
    nns.knn_index()
    _, d2 = nns.knn_search(o3c.Tensor(queries.astype(np.float32)), 1)
    return np.sqrt(d2.numpy()[:, 0].astype(np.float64))


def score(values: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = values - truth
    diag = math.sqrt(3) * VOXEL_M
    return {"mean": float(err.mean()), "abs": float(np.abs(err).mean()),
            "p99": float(np.quantile(np.abs(err), 0.99)),
            "within": float((np.abs(err) <= diag).mean()), "long": float((err > diag).mean())}


def run_condition(frames: list, scene: Scene, visible: np.ndarray, threads: int
                  ) -> dict[str, object]:
    """Map ``frames``, updating the ESDF after each; score ESDF and baseline against
    ``scene``'s SDF."""
    torch.set_num_threads(threads)
    mapper = Mapper(MapperConfig.from_dict({"volume": {"voxel_size_m": VOXEL_M}}))
    update_ms = []
    for frame in frames:
        mapper.integrate(frame)
        t0 = time.perf_counter()
        mapper.update_esdf()
        update_ms.append((time.perf_counter() - t0) * 1e3)
    esdf = mapper.esdf
    incremental = esdf.export()
    t0 = time.perf_counter()
    esdf.recompute()
    recompute_ms = (time.perf_counter() - t0) * 1e3
    full = esdf.export()
    changed = float((np.abs(full["distance"] - incremental["distance"]) > 1e-5).mean())

    centres = incremental["indices"].astype(np.float64) * VOXEL_M
    truth = scene.sdf_np(centres)
    free = ~incremental["obstacle"]
    max_d = float(incremental["max_distance_m"])
    idx = np.nonzero(free & (truth > 0) & (truth < max_d - VOXEL_M))[0]
    scored = np.zeros_like(free)
    scored[idx[np.abs(nearest_distance(visible, centres[idx]) - truth[idx]) < 0.01]] = True

    t0 = time.perf_counter()
    obstacles = centres[incremental["obstacle"]]
    baseline = np.minimum(nearest_distance(obstacles, centres[scored]) - 0.5 * VOXEL_M, max_d)
    baseline_ms = (time.perf_counter() - t0) * 1e3
    return {"voxels": int(scored.sum()), "esdf": score(incremental["distance"][scored],
                                                        truth[scored]),
            "baseline": score(baseline, truth[scored]),
            "update_ms": float(np.median(update_ms)), "update_p90": float(
                np.quantile(update_ms, 0.9)),
            "recompute_ms": recompute_ms, "baseline_ms": baseline_ms, "changed": changed}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--conditions", nargs="+", default=[*NOISE, "dynamic"],
                    choices=[*NOISE, "dynamic"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    console = Console()
    console.print(hardware_line("cpu"))
    cam = default_camera(args.width, args.height)
    jobs: dict[str, Callable[[], tuple[list, Scene, np.ndarray]]] = {}
    demo = make_demo_scene()
    demo_traj = room_scan_trajectory(demo, args.frames)
    demo_visible = None

    def demo_job(noise: NoiseConfig) -> tuple[list, Scene, np.ndarray]:
        nonlocal demo_visible
        if demo_visible is None:
            demo_visible = visible_surface_points(demo, demo_traj, cam)
        return (list(iter_frames(demo, cam, demo_traj, noise=noise, color=False, seed=7)),
                demo, demo_visible)

    def dynamic_job() -> tuple[list, Scene, np.ndarray]:
        scene, traj = make_dynamic_scene(0, args.frames)
        last = scene.scene_at(2 * args.frames - 1)
        poses = traj.poses[args.frames:]
        return (list(iter_frames(scene, cam, traj, color=False)), last,
                visible_surface_points(last, poses, cam))

    for name in args.conditions:
        jobs[name] = (dynamic_job if name == "dynamic"
                      else (lambda n=name: demo_job(NOISE[n])))
    table = Table(title=f"ESDF vs analytic SDF, {VOXEL_M * 100:.0f} cm voxels, "
                        f"{args.width}x{args.height}, {args.frames} frames (per pass)")
    for col in ("condition", "method", "voxels", "mean err m", "mean |err| m", "p99 |err| m",
                "within diag", "long > diag", "time ms"):
        table.add_column(col, justify="right")
    for name, job in jobs.items():
        frames, scene, visible = job()
        r = run_condition(frames, scene, visible, args.threads)
        for method, key, ms in (("ESDF incremental", "esdf",
                                 f"{r['update_ms']:.1f} / frame (p90 {r['update_p90']:.1f})"),
                                ("exact EDT of obstacles", "baseline",
                                 f"{r['baseline_ms']:.0f} once")):
            s = r[key]
            table.add_row(name, method, str(r["voxels"]), f"{s['mean']:+.4f}",
                          f"{s['abs']:.4f}", f"{s['p99']:.4f}", f"{s['within'] * 100:.2f}%",
                          f"{s['long'] * 100:.3f}%", ms)
        table.add_row(name, "full recompute", "", "", "", "", "", "",
                      f"{r['recompute_ms']:.0f} once; {r['changed'] * 100:.3f}% voxels differ")
    console.print(table)


if __name__ == "__main__":
    main()
