"""Median ``Mapper.integrate`` time of one recon_ros checkout, to compare versions.

Versions cannot share a process, so each runs in its own: check the other version out with
``git worktree add /tmp/before <commit>`` and run this script once per checkout, back to back
(repeat and alternate to see the spread)::

    .venv/bin/python benchmarks/integrate_time.py --repo /tmp/before
    .venv/bin/python benchmarks/integrate_time.py --repo .

Frames: synthetic 640x480 RGB-D frames of the demo room (a room scan), integrated twice into
one map with the default configuration except truncation 4 voxels and max depth 4 m (the
settings of ``benchmarks/clearing_cost.py``); eager CPU, one torch thread. Uses only API that
every version has (``Mapper``, ``MapperConfig``, ``recon_ros.io.synthetic``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def measure(frames: int, width: int, height: int, voxel_cm: float) -> dict[str, float]:
    """Median and p90 ms of ``Mapper.integrate`` over two passes of ``frames`` frames."""
    import torch

    from recon_ros.core import Mapper, MapperConfig
    from recon_ros.io.synthetic import (
        default_camera,
        iter_frames,
        make_demo_scene,
        room_scan_trajectory,
    )

    torch.set_num_threads(1)
    scene = make_demo_scene()
    seq = list(iter_frames(scene, default_camera(width, height),
                           room_scan_trajectory(scene, frames)))
    mapper = Mapper(MapperConfig.from_dict({
        "volume": {"voxel_size_m": voxel_cm / 100},
        "integration": {"truncation_voxels": 4.0, "max_depth_m": 4.0}}))
    mapper.integrate(seq[0])  # warm-up (allocations, kernel selection)
    mapper.reset()
    ms = []
    for frame in seq + seq:
        t0 = time.perf_counter()
        mapper.integrate(frame)
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "frames": len(ms)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                        help="checkout whose recon_ros is measured (default: this one)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--voxel-cm", type=float, nargs="+", default=[5.0, 2.0])
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.repo.resolve()))
    import recon_ros

    results = {}
    for voxel in args.voxel_cm:
        r = measure(args.frames, args.width, args.height, voxel)
        results[f"{voxel:g} cm"] = r
        print(f"{Path(recon_ros.__file__).parents[1]} {voxel:g} cm: median "
              f"{r['median_ms']:.2f} ms, p90 {r['p90_ms']:.2f} ms ({r['frames']} frames)",
              flush=True)
    return results


if __name__ == "__main__":
    main()
