"""Cost and depth agreement of the TSDF ray marcher (``recon_ros.core.render``) on the demo room.

The demo room is mapped with the default :class:`~recon_ros.core.Mapper` (5 cm voxels) from
``--frames`` exact ray-cast RGB-D frames (``--map-width`` x ``--map-height``) along the room
scan; then every ``--every``-th recorded pose is rendered from the map at each size and
compared with the exact ray-cast depth of the scene at that pose:

- ms: median wall-clock time of one render (``--threads`` CPU threads);
- samples/ray: trilinear TSDF samples per pixel (march and secant refinement);
- skips/ray: march steps per pixel that jumped over an unallocated block;
- med |err|: median absolute depth error over pixels where both have a surface, metres;
- in 5 cm: share of ground-truth surface pixels rendered with |err| < 5 cm;
- coverage: share of ground-truth surface pixels that get a hit at all;
- false hits: share of pixels with a hit where the ground truth has none.

    .venv/bin/python benchmarks/render.py [--frames 60] [--every 10] [--threads 1]
        [--sizes 320x240 640x480] [--distance-step 0.5]

Nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from recon_ros.bench import hardware_line
from recon_ros.core import Mapper, MapperConfig
from recon_ros.core.render import RenderOptions, render
from recon_ros.io.synthetic import (
    default_camera,
    iter_frames,
    make_demo_scene,
    render_depth,
    room_scan_trajectory,
)


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Print the table; returns its rows (ms, accuracy and coverage per size)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--every", type=int, default=10, help="render every n-th recorded pose")
    ap.add_argument("--map-width", type=int, default=320)
    ap.add_argument("--map-height", type=int, default=240)
    ap.add_argument("--sizes", nargs="+", default=["320x240", "640x480"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--distance-step", type=float, default=RenderOptions.distance_step,
                    help="RenderOptions.distance_step (0 = fixed half-voxel steps)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    console.print(hardware_line("cpu"))
    scene = make_demo_scene()
    traj = room_scan_trajectory(scene, args.frames)
    mapper = Mapper(MapperConfig())
    for frame in iter_frames(scene, default_camera(args.map_width, args.map_height), traj):
        mapper.integrate(frame)
    vol = mapper.volume
    opt = RenderOptions(max_depth_m=mapper.config.integration.max_depth_m,
                        distance_step=args.distance_step)
    poses = traj.poses[::args.every]
    table = Table(title=f"TSDF render of the demo room ({vol.num_blocks} blocks, "
                        f"{vol.voxel_size_m * 100:.0f} cm voxels, {args.frames} frames mapped), "
                        f"{len(poses)} recorded poses, {args.threads} thread(s), "
                        f"distance_step {opt.distance_step}")
    for col in ("size", "ms", "samples/ray", "skips/ray", "med |err| m", "in 5 cm", "coverage",
                "false hits"):
        table.add_column(col, justify="right")
    rows = []
    for size in args.sizes:
        w, h = (int(x) for x in size.split("x"))
        cam = default_camera(w, h)
        render(vol, cam, poses[0], opt)  # warm-up
        ms, samples, skips, errs = [], 0, 0, []
        inliers = coverage = false_hits = surface = pixels = 0
        for T in poses:
            t0 = time.perf_counter()
            res = render(vol, cam, T, opt)
            ms.append((time.perf_counter() - t0) * 1e3)
            samples, skips = samples + res.samples, skips + res.block_skips
            depth = res.depth.cpu().numpy()
            truth = render_depth(scene, cam, T, max_range_m=opt.max_depth_m)
            gt, hit = truth > 0, depth > 0
            err = np.abs(depth - truth)[gt & hit]
            errs.append(err)
            inliers += int((err < 0.05).sum())
            coverage += int((gt & hit).sum())
            false_hits += int((hit & ~gt).sum())
            surface += int(gt.sum())
            pixels += gt.size
        table.add_row(size, f"{np.median(ms):.0f}", f"{samples / pixels:.1f}",
                      f"{skips / pixels:.1f}", f"{np.median(np.concatenate(errs)):.4f}",
                      f"{inliers / surface * 100:.2f}%", f"{coverage / surface * 100:.2f}%",
                      f"{false_hits / pixels * 100:.3f}%")
        rows.append({"ms": float(np.median(ms)), "median_err_m": float(np.median(
            np.concatenate(errs))), "inliers": inliers / surface, "coverage": coverage / surface,
            "false_hits": false_hits / pixels})
    console.print(table)
    return rows


if __name__ == "__main__":
    main()
