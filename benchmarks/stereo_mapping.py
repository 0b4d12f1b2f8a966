"""Colour-only mapping (``fusion.method: stereo``) against depth TSDF fusion of the same poses.

    .venv/bin/python benchmarks/stereo_mapping.py [--sizes 160x120 320x240] [--poses 30]
        [--set image_scale=1.0 --set reference_delay=0 ...] [--device cpu]

Frames: noise-free synthetic renders of the demo room along its room scan, 5 cm voxels. Each
run maps the colour images with plane-sweep stereo (``Mapper.integrate_color``) and, as the
ceiling, the renderer's exact depth at the same poses (``Mapper.integrate``); both meshes are
scored against the surface the camera saw (``recon_ros.evaluation.mesh_metrics``: accuracy and
completeness as mean distances, precision / recall / F-score at 2 and 5 cm). Prints one row per
method and size with the stereo keyframe counts and wall time.
"""

from __future__ import annotations

import argparse
import time

import torch

from recon_ros.core.config import MapperConfig
from recon_ros.core.frame import Frame
from recon_ros.core.mapper import Mapper
from recon_ros.evaluation import mesh_metrics
from recon_ros.io.synthetic import (
    default_camera,
    make_demo_scene,
    render,
    room_scan_trajectory,
    visible_surface_points,
)

THRESHOLDS_M = (0.02, 0.05)


def measure(width: int, height: int, poses: int, stereo: dict[str, float], device: str
            ) -> list[dict[str, float | str]]:
    """Rows (stereo, then depth fusion) for one image size."""
    scene = make_demo_scene()
    camera = default_camera(width, height)
    trajectory = room_scan_trajectory(scene, poses)
    renders = [render(scene, camera, T) for T in trajectory.poses]
    truth = visible_surface_points(scene, trajectory, camera, stride=2, max_range_m=5.0)
    volume = {"volume": {"device": device}}
    rows = []
    mapper = Mapper(MapperConfig.from_dict({**volume, "fusion": {"method": "stereo"},
                                            "stereo": stereo}))
    start = time.perf_counter()
    for i, (T, r) in enumerate(zip(trajectory.poses, renders)):
        mapper.integrate_color(r.color, camera, T, i * 100_000_000)
    mapper.finish_color()
    seconds = time.perf_counter() - start
    rows.append(_row("stereo", width, height, mapper, truth, seconds,
                     f"{mapper.stereo.depth_frames}/{mapper.stereo.keyframes}"))
    ceiling = Mapper(MapperConfig.from_dict(volume))
    start = time.perf_counter()
    for i, (T, r) in enumerate(zip(trajectory.poses, renders)):
        ceiling.integrate(Frame(depth=r.depth, camera=camera, T_world_cam=T, color=r.color,
                                stamp_ns=i * 100_000_000))
    rows.append(_row("depth TSDF", width, height, ceiling, truth,
                     time.perf_counter() - start, "-"))
    return rows


def _row(method: str, width: int, height: int, mapper: Mapper, truth, seconds: float,
         keyframes: str) -> dict[str, float | str]:
    m = mesh_metrics(mapper.mesh(), truth, THRESHOLDS_M)
    return {"method": method, "size": f"{width}x{height}", "keyframes": keyframes,
            "seconds": seconds, "accuracy_cm": m.accuracy_m * 100,
            "completeness_cm": m.completeness_m * 100, "precision5": m.precision[0.05],
            "recall5": m.recall[0.05], "f5": m.fscore[0.05], "f2": m.fscore[0.02]}


def main(argv: list[str] | None = None) -> list[dict[str, float | str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["160x120", "320x240"])
    parser.add_argument("--poses", type=int, default=30, help="poses of the room scan")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a stereo config field (repeatable), e.g. reference_delay=0")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stereo = {}
    for item in args.set:
        field, _, value = item.partition("=")
        stereo[field] = float(value) if "." in value else int(value)
    print(f"demo room, {args.poses} poses, 5 cm, stereo settings {stereo or 'default'}")
    print(f"{'method':>10} {'size':>8} {'depth maps':>10} {'s':>6} {'acc cm':>7} {'comp cm':>7} "
          f"{'P@5':>5} {'R@5':>5} {'F@5':>5} {'F@2':>5}")
    rows = []
    for size in args.sizes:
        w, h = (int(x) for x in size.lower().split("x"))
        for r in measure(w, h, args.poses, stereo, args.device):
            rows.append(r)
            print(f"{r['method']:>10} {r['size']:>8} {r['keyframes']:>10} {r['seconds']:>6.1f} "
                  f"{r['accuracy_cm']:>7.2f} {r['completeness_cm']:>7.2f} "
                  f"{r['precision5']:>5.2f} {r['recall5']:>5.2f} {r['f5']:>5.3f} "
                  f"{r['f2']:>5.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
