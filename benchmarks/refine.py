"""Test-time refinement (``refine.enabled``) on and off, on noisy synthetic scans.

Per condition, ``--frames`` noisy ray-cast RGB-D frames (``--width`` x ``--height``) of a scene
along :func:`room_scan_trajectory` are fused by two :class:`Mapper` (5 cm voxels, defaults
otherwise), one with ``refine.enabled: false`` and one with ``refine.enabled: true`` (the
``refine`` defaults, changed by ``--set field=value``), fed the same frames. Scored:

- accuracy and completeness (mean distances, metres) and F-score at 2 and 5 cm of the
  marching-cubes mesh against the observed part of the true surface
  (:func:`recon_ros.evaluation.mesh_metrics`, back-projected noise-free renders of the same
  poses, every ``--gt-stride``-th pixel);
- render vs truth: the final map rendered at every ``--every``-th recorded pose (every
  ``--render-stride``-th pixel) against the noise-free depth there: mean and median
  ``|err|`` over pixels where both have depth, metres;
- render vs sensor: the same against the noisy frame that was fused there;
- ms per frame of the ``refine`` stage and of ``integrate`` (wall clock, one torch thread).

Conditions: ``mult1`` / ``mult3`` (the demo room, multiplicative depth noise with sigma 1 % /
3 %), ``kinect`` (the demo room, Kinect axial noise), ``random3`` (``make_scene("random",
3)``, multiplicative 3 %).

    .venv/bin/python benchmarks/refine.py [--frames 20] [--width 160 --height 120]
        [--conditions mult1 mult3 kinect random3] [--set steps=5 ...]

Nothing here asserts a number.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.table import Table

from recon_ros.bench import hardware_line
from recon_ros.core import Mapper, MapperConfig
from recon_ros.core.frame import Frame
from recon_ros.core.render import RayStatus, RenderOptions, render
from recon_ros.evaluation import mesh_metrics
from recon_ros.io.synthetic import (
    NoiseConfig,
    Scene,
    default_camera,
    iter_frames,
    make_demo_scene,
    make_scene,
    render_depth,
    room_scan_trajectory,
    visible_surface_points,
)

VOXEL_M = 0.05
THRESHOLDS_M = (0.02, 0.05)
CONDITIONS: dict[str, tuple[Callable[[], Scene], NoiseConfig]] = {
    "mult1": (make_demo_scene, NoiseConfig(multiplicative_sigma=0.01)),
    "mult3": (make_demo_scene, NoiseConfig(multiplicative_sigma=0.03)),
    "kinect": (make_demo_scene, NoiseConfig(kinect_axial=True)),
    "random3": (lambda: make_scene("random", 3), NoiseConfig(multiplicative_sigma=0.03)),
}


def depth_errors(mapper: Mapper, frames: list[Frame], truth: list[np.ndarray], stride: int
                 ) -> dict[str, float]:
    """Mean / median ``|rendered - truth|`` and mean ``|rendered - sensor|`` over the pixels
    where both have depth, metres, pooled over ``frames``."""
    vs_truth, vs_sensor = [], []
    for frame, true_depth in zip(frames, truth):
        ic = mapper.config.integration
        r = render(mapper.volume, frame.camera.strided(stride), frame.T_world_cam,
                   RenderOptions(max_depth_m=ic.max_depth_m, min_depth_m=ic.min_depth_m))
        hit = (r.status == RayStatus.HIT).numpy()
        rendered = r.depth.numpy()
        for ref, out in ((true_depth, vs_truth), (np.asarray(frame.depth), vs_sensor)):
            ref = ref[::stride, ::stride]
            both = hit & (ref >= ic.min_depth_m) & (ref <= ic.max_depth_m)
            out.append(np.abs(rendered - ref)[both])
    t, s = np.concatenate(vs_truth), np.concatenate(vs_sensor)
    return {"render_mae_m": float(t.mean()), "render_median_m": float(np.median(t)),
            "render_vs_sensor_mae_m": float(s.mean())}


def run_condition(name: str, args: argparse.Namespace, refine: dict[str, Any]
                  ) -> dict[str, dict[str, float]]:
    """Map condition ``name`` with refinement off and on; figures of both."""
    make, noise = CONDITIONS[name]
    scene = make()
    cam = default_camera(args.width, args.height)
    traj = room_scan_trajectory(scene, args.frames)
    base = {"volume": {"voxel_size_m": VOXEL_M}, "timing": {"mode": "every_stage"}}
    mappers = {"off": Mapper(MapperConfig.from_dict(base)),
               "on": Mapper(MapperConfig.from_dict({**base, "refine": {**refine,
                                                                       "enabled": True}}))}
    frames = list(iter_frames(scene, cam, traj, noise=noise, seed=7))
    for frame in frames:
        for mapper in mappers.values():
            mapper.integrate(frame)
    gt = visible_surface_points(scene, traj, cam, stride=args.gt_stride)
    picked = frames[::args.every]
    truth = [render_depth(scene, cam, f.T_world_cam) for f in picked]
    out = {}
    for key, mapper in mappers.items():
        m = mesh_metrics(mapper.mesh(), gt, THRESHOLDS_M)
        samples = mapper.timer.samples
        out[key] = {"accuracy_m": m.accuracy_m, "completeness_m": m.completeness_m,
                    **{f"f{t * 100:g}": m.fscore[t] for t in THRESHOLDS_M},
                    **depth_errors(mapper, picked, truth, args.render_stride),
                    "refine_ms": float(np.mean(samples["refine"])) if samples["refine"]
                    else 0.0,
                    "integrate_ms": float(np.mean(samples["integrate"]))}
    return out


def _value(text: str) -> Any:
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Print the table; returns ``{condition: {"off" | "on": {figure: value}}}``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS),
                    choices=list(CONDITIONS))
    ap.add_argument("--gt-stride", type=int, default=2)
    ap.add_argument("--every", type=int, default=4, help="score renders at every n-th pose")
    ap.add_argument("--render-stride", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="refine section overrides, e.g. steps=10 eikonal_weight=0")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    refine = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    console = Console()
    try:
        console.print(hardware_line("cpu"))
        results = {name: run_condition(name, args, refine) for name in args.conditions}
    finally:
        torch.set_num_threads(threads)
    table = Table(title=f"Refinement off / on, {VOXEL_M * 100:.0f} cm voxels, "
                        f"{args.width}x{args.height}, {args.frames} frames"
                        + (f", refine {refine}" if refine else ""))
    cols = ("condition", "refine", "accuracy mm", "completeness mm",
            *(f"F @ {t * 100:g} cm" for t in THRESHOLDS_M), "render vs truth mm (mean)",
            "(median)", "render vs sensor mm", "refine ms/frame", "integrate ms/frame")
    for col in cols:
        table.add_column(col, justify="right")
    for name, pair in results.items():
        for key, r in pair.items():
            table.add_row(name, key, f"{1e3 * r['accuracy_m']:.1f}",
                          f"{1e3 * r['completeness_m']:.1f}",
                          *(f"{r[f'f{t * 100:g}']:.4f}" for t in THRESHOLDS_M),
                          f"{1e3 * r['render_mae_m']:.2f}", f"{1e3 * r['render_median_m']:.2f}",
                          f"{1e3 * r['render_vs_sensor_mae_m']:.2f}", f"{r['refine_ms']:.0f}",
                          f"{r['integrate_ms']:.0f}")
    console.print(table)
    return results


if __name__ == "__main__":
    main()
