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

import torch
from rich.console import Console
from rich.table import Table

from recon_ros.bench import hardware_line
from recon_ros.bench_maps import demo_map, render_cost
from recon_ros.core.render import RenderOptions
from recon_ros.io.synthetic import default_camera


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
    scene, traj, mapper = demo_map(args.frames, args.map_width, args.map_height)
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
        c = render_cost(scene, mapper, default_camera(w, h), poses, opt)
        table.add_row(size, f"{c.median_ms:.0f}", f"{c.samples_per_ray:.1f}",
                      f"{c.skips_per_ray:.1f}", f"{c.median_err_m:.4f}",
                      f"{c.inliers * 100:.2f}%", f"{c.coverage * 100:.2f}%",
                      f"{c.false_hits * 100:.3f}%")
        rows.append({"ms": c.median_ms, "median_err_m": c.median_err_m, "inliers": c.inliers,
                     "coverage": c.coverage, "false_hits": c.false_hits})
    console.print(table)
    return rows


if __name__ == "__main__":
    main()
