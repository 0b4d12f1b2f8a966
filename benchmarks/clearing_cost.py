"""Cost of free-space clearing per frame: eager CPU, peer mappers in one process.

The peers get the same synthetic RGB-D frames of the demo room (``--width`` x ``--height``,
default 640 x 480, a room scan of ``--frames`` poses driven ``--repeats`` times into the same
map), interleaved frame by frame so that machine load hits all of them alike:

- ``clearing off``: ``integration.clear_free_space: false`` (only blocks near the measured
  surface are updated);
- ``clearing on``: ``integration.clear_free_space: true`` (every allocated block in view is
  updated; in-view blocks left holding free space only are released);
- ``on + radius R m``: as ``clearing on`` plus ``map.clearing_radius_m: R``, one peer per
  ``--radius-m`` value.

Reported per peer and voxel size: median and p90 of the whole ``Mapper.integrate`` call per
frame (ms), its ratio to ``clearing off``, the median of the ``Mapper.timer`` stages (upload,
integrate, free_space = 2D carving, bound), the median blocks updated per frame, the blocks at
the end and the blocks released by reason. A warm-up frame per peer is not measured.

    .venv/bin/python benchmarks/clearing_cost.py [--frames 60] [--repeats 2]
        [--voxel-cm 5 [2 ...]] [--radius-m 3 [5 ...]] [--threads 1]

Times are wall clock on this machine; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from recon_ros.bench import hardware_line
from recon_ros.core.config import MapperConfig
from recon_ros.core.frame import Frame
from recon_ros.core.mapper import Mapper
from recon_ros.io.synthetic import (
    default_camera,
    iter_frames,
    make_demo_scene,
    room_scan_trajectory,
)

#: Truncation and depth range of ``recon-ros bench``.
TRUNCATION_VOXELS, MAX_DEPTH_M = 4.0, 4.0
STAGES = ("upload", "integrate", "free_space", "bound")
BASELINE = "clearing off"


class Peer:
    """One mapper under test, warmed up on one frame and then reset.

    Args:
        config: its configuration.
        warm_up: a frame integrated (and forgotten) before measuring.
    """

    def __init__(self, config: MapperConfig, warm_up: Frame) -> None:
        self.mapper = Mapper(config)
        self.mapper.integrate(warm_up)
        self.mapper.reset()
        self.mapper.timer.clear()
        self.blocks_updated: list[int] = []
        self.frame_ms: list[float] = []

    def integrate(self, frame: Frame) -> None:
        t0 = time.perf_counter()
        self.mapper.integrate(frame)
        self.frame_ms.append((time.perf_counter() - t0) * 1e3)
        self.blocks_updated.append(self.mapper.last_integration.blocks_updated)

    def summary(self) -> dict[str, Any]:
        """Per-frame medians and p90, stage medians, blocks and releases."""
        ms = np.asarray(self.frame_ms)
        stages = self.mapper.timer.summary()
        stats = self.mapper.stats()
        return {
            "frames": int(ms.size), "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)),
            "stage_ms": {s: stages[s]["median_ms"] for s in STAGES if s in stages},
            "blocks_updated": float(np.median(self.blocks_updated)),
            "blocks": int(stats["blocks"]),
            "released": {k: int(stats[f"blocks_released_{k}"])
                         for k in ("free_space", "radius", "memory")},
        }


def peer_configs(voxel_m: float, radii_m: Sequence[float]) -> dict[str, MapperConfig]:
    """The peers' configurations at ``voxel_m``: clearing off, on, on with each radius."""
    base = {"volume": {"voxel_size_m": voxel_m},
            "integration": {"truncation_voxels": TRUNCATION_VOXELS, "max_depth_m": MAX_DEPTH_M},
            "timing": {"mode": "every_stage"}}  # stage medians over every frame
    cfg = MapperConfig.from_dict(base)
    on = cfg.with_overrides(integration={"clear_free_space": True})
    return {
        BASELINE: cfg.with_overrides(integration={"clear_free_space": False}),
        "clearing on": on,
        **{f"on + radius {r:g} m": on.with_overrides(map={"clearing_radius_m": r})
           for r in radii_m},
    }


def compare(frames: list[Frame], voxel_m: float, repeats: int, radii_m: Sequence[float]
            ) -> dict[str, dict[str, Any]]:
    """Feed ``frames`` ``repeats`` times to every peer, interleaved frame by frame."""
    peers = {name: Peer(cfg, frames[0]) for name, cfg in peer_configs(voxel_m, radii_m).items()}
    for _ in range(repeats):
        for frame in frames:
            for peer in peers.values():
                peer.integrate(frame)
    return {name: peer.summary() for name, peer in peers.items()}


def table(voxel_cm: float, results: dict[str, dict[str, Any]]) -> Table:
    t = Table(title=f"{voxel_cm:g} cm: Mapper.integrate per frame (ms) with and without "
                    "free-space clearing")
    for col in ("peer", "median", "p90", "vs off", *[f"{s} (med)" for s in STAGES],
                "blocks updated/frame", "blocks (end)", "released free / radius"):
        t.add_column(col, justify="right")
    off = results[BASELINE]["median_ms"]
    for name, r in results.items():
        t.add_row(name, f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}",
                  f"{r['median_ms'] / off:.2f}x",
                  *[f"{r['stage_ms'].get(s, float('nan')):.2f}" for s in STAGES],
                  f"{r['blocks_updated']:.0f}", str(r["blocks"]),
                  f"{r['released']['free_space']} / {r['released']['radius']}")
    return t


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60, help="poses of the room scan")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the scan")
    parser.add_argument("--voxel-cm", type=float, nargs="+", default=[5.0],
                        help="voxel sizes, e.g. 5 2")
    parser.add_argument("--radius-m", type=float, nargs="+", default=[3.0],
                        help="map.clearing_radius_m of the peers with a radius, e.g. 3 5")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, as the node's cpu_threads)")
    args = parser.parse_args(argv)
    if min(args.frames, args.repeats, args.width, args.height, args.threads) < 1:
        parser.error("--frames, --repeats, --width, --height and --threads must be >= 1")
    if min(args.radius_m) <= 0:
        parser.error("--radius-m must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict[float, dict[str, dict[str, Any]]]:
    """Measure, print a table per voxel size and return ``{voxel_cm: {peer: summary}}``."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        console = Console(width=200)
        scene = make_demo_scene()
        frames = list(iter_frames(scene, default_camera(args.width, args.height),
                                  room_scan_trajectory(scene, args.frames)))
        console.print(f"hardware: {hardware_line('cpu')}")
        console.print(f"frames: {args.frames} synthetic {args.width}x{args.height} RGB-D frames "
                      f"of the demo room, {args.repeats} passes into one map; truncation "
                      f"{TRUNCATION_VOXELS:g} voxels, max depth {MAX_DEPTH_M:g} m, eager")
        out = {}
        for voxel_cm in args.voxel_cm:
            out[voxel_cm] = compare(frames, voxel_cm / 100.0, args.repeats, args.radius_m)
            console.print(table(voxel_cm, out[voxel_cm]))
        return out
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
