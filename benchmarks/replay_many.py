"""Scaling of ``recon-ros replay-many``: bags per minute with 1 and 2 Ray workers on the same
synthetic bags, and the cost of one bag, in one process run.

``--bags`` bags (random rooms, seeds 0.., ``--frames`` frames at ``--width`` x ``--height``,
exact depth, written once into a temporary folder) are mapped by
:func:`recon_ros.fleet.replay_many` (each bag exactly ``recon-ros replay`` with
``--quality-every 0 --render-views 0``, ``--voxel-size-m``) once per worker count, each run on
its own embedded local Ray instance (``ray.init(num_cpus=workers)``). Per run: wall time of
the whole call (Ray start and shutdown included), bags per minute from it, the median and
maximum of the per-bag replay time inside its task and the largest peak RSS of a task.

    .venv/bin/python benchmarks/replay_many.py [--bags 6] [--frames 24]
        [--width 320 --height 240] [--workers 1 2] [--voxel-size-m 0.05]

Times are wall clock on this machine; nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from recon_ros.bench import hardware_line
from recon_ros.core.config import MapperConfig
from recon_ros.fleet import ReplayOptions, replay_many
from recon_ros.io.synthetic import default_camera, make_random_scene, room_scan_trajectory
from recon_ros.io.synthetic_bag import write_scene_bag


def make_bags(root: Path, n: int, frames: int, width: int, height: int) -> list[Path]:
    """``n`` bags of random rooms (seeds ``0 .. n - 1``) under ``root``."""
    bags = []
    for seed in range(n):
        scene = make_random_scene(seed)
        bags.append(write_scene_bag(root / f"room{seed}", scene, default_camera(width, height),
                                    room_scan_trajectory(scene, frames)).path)
    return bags


def run(bags: list[Path], out: Path, workers: int, voxel_size_m: float) -> dict:
    """Map ``bags`` with ``workers`` workers; the figures of the run."""
    cfg = MapperConfig.from_dict({"volume": {"voxel_size_m": voxel_size_m}})
    start = time.perf_counter()
    outcomes = replay_many(bags, out, cfg, ReplayOptions(quality_every=0, render_views=0),
                           workers=workers)
    wall = time.perf_counter() - start
    per_bag = [o.wall_s for o in outcomes]
    return {"workers": workers, "bags": len(bags), "ok": sum(o.ok for o in outcomes),
            "wall_s": wall, "bags_per_min": 60.0 * len(bags) / wall,
            "bag_median_s": statistics.median(per_bag), "bag_max_s": max(per_bag),
            "peak_rss_mb": max(o.peak_rss_mb for o in outcomes)}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns ``{"hardware": str, "runs": [figures per worker count]}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bags", type=int, default=6)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--voxel-size-m", type=float, default=0.05)
    args = parser.parse_args(argv)
    console = Console()
    hardware = hardware_line("cpu")
    console.print(f"hardware: {hardware}")
    with tempfile.TemporaryDirectory(prefix="replay-many-bench-") as tmp:
        bags = make_bags(Path(tmp) / "bags", args.bags, args.frames, args.width, args.height)
        runs = [run(bags, Path(tmp) / f"out{w}", w, args.voxel_size_m) for w in args.workers]
    table = Table(title=f"replay-many: {args.bags} bags x {args.frames} frames "
                        f"{args.width}x{args.height}, {args.voxel_size_m * 100:g} cm voxels")
    for name in ("workers", "bags ok", "wall s", "bags / min", "per bag s median (max)",
                 "peak RSS MiB", "speed-up"):
        table.add_column(name, justify="right")
    for r in runs:
        table.add_row(str(r["workers"]), f"{r['ok']}/{r['bags']}", f"{r['wall_s']:.1f}",
                      f"{r['bags_per_min']:.1f}",
                      f"{r['bag_median_s']:.2f} ({r['bag_max_s']:.2f})",
                      f"{r['peak_rss_mb']:.0f}",
                      f"{r['bags_per_min'] / runs[0]['bags_per_min']:.2f}x")
    console.print(table)
    return {"hardware": hardware, "runs": runs}


if __name__ == "__main__":
    main()
