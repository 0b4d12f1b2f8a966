"""Host syncs per ``Mapper.integrate`` frame: the ops that would make Python wait for a CUDA
device (``recon_ros.core.sync_audit``), counted on any device.

    .venv/bin/python benchmarks/sync_audit.py [--frames 30] [--width 640] [--height 480]
        [--voxel-cm 5] [--device cpu] [--sites 15]

Frames: synthetic RGB-D frames of the demo room (a room scan), default configuration
(clearing and the distance field's carving on). Prints the count per frame (first frame and
the rest, which is the steady state), the ops by kind and the package lines that issue most
of them. The count does not depend on the device (the same ops run everywhere); what they
cost does.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from recon_ros.core import Mapper, MapperConfig
from recon_ros.core.block_hash import fixed_probing
from recon_ros.core.sync_audit import SyncOpCounter
from recon_ros.io.synthetic import (
    default_camera,
    iter_frames,
    make_demo_scene,
    room_scan_trajectory,
)


def audit(frames: int, width: int, height: int, voxel_cm: float, device: str
          ) -> tuple[list[int], Counter, Counter, list[int]]:
    """Integrate ``frames`` frames of the demo room; returns the sync count of every frame,
    the ops and package lines of all frames after the first, summed, and every frame's count
    of dispatched torch ops (syncing or not)."""
    torch.set_num_threads(1)
    scene = make_demo_scene()
    sequence = list(iter_frames(scene, default_camera(width, height),
                                room_scan_trajectory(scene, frames)))
    mapper = Mapper(MapperConfig.from_dict({"volume": {"voxel_size_m": voxel_cm / 100,
                                                       "device": device}}))
    totals, ops, sites, dispatched = [], Counter(), Counter(), []
    for frame in sequence:
        with fixed_probing(), SyncOpCounter("cuda", sites=True) as counter:
            mapper.integrate(frame)
        totals.append(counter.total)
        dispatched.append(counter.dispatched)
        if len(totals) > 1:
            ops.update(counter.ops)
            sites.update(counter.sites)
    return totals, ops, sites, dispatched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--voxel-cm", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sites", type=int, default=15, help="how many lines to list")
    args = parser.parse_args()

    totals, ops, sites, dispatched = audit(args.frames, args.width, args.height,
                                           args.voxel_cm, args.device)
    steady = np.asarray(totals[1:])
    print(f"host syncs per integrate(): {args.width}x{args.height}, {args.voxel_cm:g} cm, "
          f"{args.frames} frames, device {args.device}")
    print(f"  first frame {totals[0]}; then median {np.median(steady):.0f}, "
          f"min {steady.min()}, max {steady.max()}")
    print(f"torch ops dispatched per steady-state frame: median "
          f"{np.median(dispatched[1:]):.0f}, min {min(dispatched[1:])}, "
          f"max {max(dispatched[1:])}")
    print("\nper steady-state frame, by op:")
    for op, n in ops.most_common():
        print(f"  {n / len(steady):6.1f}  {op}")
    print(f"\nper steady-state frame, top {args.sites} lines:")
    for site, n in sites.most_common(args.sites):
        print(f"  {n / len(steady):6.1f}  {site}")


if __name__ == "__main__":
    main()
