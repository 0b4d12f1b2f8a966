"""End-to-end throughput of the live node: recon_sim_camera -> DDS -> recon_mapper.

Both nodes run as processes exactly as demo.launch.py / mapping.launch.py start them (the
mapper with config/mapper.yaml unchanged except the given voxel size and device). The camera
publishes pre-rendered 640 x 480 depth (16UC1) + color (rgb8) + camera_info + TF of the demo
room at increasing rates; for each rate the mapper's status topic gives the frames received,
integrated and dropped, and the latency from a frame's stamp to its integration and to the
publication of the mesh that contains it.

    .venv/bin/python benchmarks/node_throughput.py [--rates 5 10 15 20 30] [--seconds 10]
        [--voxel 0.05] [--device cpu] [--input-qos sensor_data|reliable]
        [--transport shm|default] [--tf-rate HZ] [--frames N] [--no-clearing] [--no-esdf]
        [--quality-every N]
        [--json out.json]

With ``--frames N`` each rate is instead one real-time sequence of exactly N frames from a
camera started for it (``max_frames``), counted from start to end after the node has drained
its queue: integrated / N is exact, whatever the timing of the shared cores (a camera that
falls behind catches up in bursts, which makes the windowed counts above noisy).

The camera sends each frame as a driver with registered depth does (color, then depth); with
``--tf-rate 100`` TF comes from its own 100 Hz timer, as from a localisation stack, and a
frame's TF can arrive after its images (``0``: TF just before each frame, the ideal case).

A rate is *sustained* when nothing was dropped and at least 95 % of the frames the camera
published in the window were integrated. Times are wall-clock on this machine; the camera
shares the CPU with the mapper. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test harness (test/ros) drives the processes

from test.ros.helpers import (  # noqa: E402
    VENV_BIN,
    Harness,
    Process,
    child_env,
    next_domain_id,
    wait_for,
)
from test.ros.launch_spec import (  # noqa: E402
    LAUNCH_DIR,
    mapper_command,
    node_command,
    node_specs,
    write_overlay,
)

GOAL_CPU_HZ = 15.0
#: Environment of every process per ``--transport``: ``default`` is what the tests use (Fast
#: DDS's own transports, discovery on localhost); ``shm`` is config/fastdds_shm.xml (shared
#: memory large enough for whole images), which needs SUBNET discovery (with LOCALHOST the RMW
#: replaces the profile's transports; this VM has no network neighbours).
TRANSPORTS = {
    "default": {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
    "shm": {"FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_shm.xml"),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"},
}


def _window(statuses: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    """Count-weighted median of the per-period medians, and the worst period's p95."""
    periods = [s["latency_ms"][key] for s in statuses if key in s["latency_ms"]]
    if not periods:
        return None
    weighted = np.repeat([p["median_ms"] for p in periods], [p["count"] for p in periods])
    return {"median_ms": float(np.median(weighted)),
            "p95_ms": max(p["p95_ms"] for p in periods),
            "count": sum(p["count"] for p in periods)}


def _stage_ms(statuses: list[dict[str, Any]]) -> dict[str, float]:
    """Median per-stage time over the window (median of the per-period medians)."""
    stages: dict[str, list[float]] = {}
    for s in statuses:
        for stage, t in s["timings_ms"].items():
            stages.setdefault(stage, []).append(t["median_ms"])
    return {k: sorted(v)[len(v) // 2] for k, v in stages.items()}


def _between(start: dict[str, Any], end: dict[str, Any], window: list[dict[str, Any]]
             ) -> dict[str, Any]:
    """What the node did between two of its statuses: depth images received, frames
    integrated and dropped (with reasons), and latencies and stage times over ``window``
    (the statuses in between)."""
    c0, c1 = start["cameras"]["camera"], end["cameras"]["camera"]
    return {
        "received": c1["received"].get("depth", 0) - c0["received"].get("depth", 0),
        "integrated": end["frames_integrated"] - start["frames_integrated"],
        "dropped": sum(c1["drops"].values()) - sum(c0["drops"].values()),
        "drop_reasons": {k: v - c0["drops"].get(k, 0) for k, v in c1["drops"].items()
                         if v != c0["drops"].get(k, 0)},
        "latency_integrated": _window(window, "integrated"),
        "latency_mesh": _window(window, "mesh"),
        "stage_ms": _stage_ms(window),
    }


def measure(h: Harness, rate: float, seconds: float, warmup_s: float) -> dict[str, Any]:
    """Report the window after ``warmup_s`` of the camera publishing at ``rate``."""
    time.sleep(warmup_s)
    start = h.wait_status(lambda s: True, 10, "a status")
    n0 = len(h.status_msgs)
    t0 = time.monotonic()
    time.sleep(seconds)
    end = h.wait_status(lambda s: True, 10, "a status")
    elapsed = time.monotonic() - t0
    counts = _between(start, end, h.status_msgs[n0:])
    expected = rate * elapsed
    return {
        "rate_hz": rate, "seconds": round(elapsed, 2), "published": round(expected), **counts,
        "integrated_hz": round(counts["integrated"] / elapsed, 2),
        "sustained": counts["dropped"] == 0 and counts["integrated"] >= 0.95 * expected,
    }


def measure_sequence(h: Harness, start_camera: Any, rate: float, frames: int
                     ) -> dict[str, Any]:
    """Start a camera sending ``frames`` frames at ``rate``; once it has stopped and the
    node's queue is empty, count what the node received, integrated and dropped. The rate
    is *sustained* when at least 99 % of the frames were integrated."""
    before = h.wait_status(lambda s: True, 10, "a status")
    camera = start_camera(rate, frames)
    try:
        wait_for(lambda: f"published {frames} frames, stopping" in camera.log(),
                 120 + 2 * frames / rate, "the camera's last frame")
    finally:
        camera.stop()
    c0 = before["cameras"]["camera"]

    def drained(s: dict[str, Any]) -> bool:
        c = s["cameras"]["camera"]
        arrived = c["received"].get("depth", 0) - c0["received"].get("depth", 0)
        return c["queue"]["depth"] == 0 and (
            arrived == frames or s["stamp_ns"] - before["stamp_ns"] > 60e9)

    end = h.wait_status(drained, 120, "the node to take and drain every frame")
    counts = _between(before, end, [m for m in h.status_msgs
                                    if m["stamp_ns"] > before["stamp_ns"]])
    return {
        "rate_hz": rate, "published": frames, **counts,
        "integrated_hz": rate * counts["integrated"] / frames,
        "sustained": counts["integrated"] >= 0.99 * frames,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[5, 10, 15, 20, 30])
    parser.add_argument("--seconds", type=float, default=10.0, help="window per rate")
    parser.add_argument("--warmup", type=float, default=3.0, help="settling time per rate")
    parser.add_argument("--voxel", type=float, default=0.05)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--input-qos", default="sensor_data",
                        choices=["sensor_data", "reliable"], help="the mapper's image QoS")
    parser.add_argument("--transport", default="shm", choices=sorted(TRANSPORTS),
                        help="Fast DDS transports of every process (see TRANSPORTS)")
    parser.add_argument("--tf-rate", type=float, default=0.0,
                        help="TF from its own timer at this rate (0: with each frame)")
    parser.add_argument("--queue-size", type=int, default=0,
                        help="the mapper's queue_size (0: config/mapper.yaml's)")
    parser.add_argument("--frames", type=int, default=0,
                        help="one sequence of this many frames per rate (0: windows)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-clearing", action="store_true",
                        help="integration.clear_free_space false (the behaviour before clearing)")
    parser.add_argument("--no-esdf", action="store_true",
                        help="esdf.enabled false (no 3D distance field: the cost of the ESDF)")
    parser.add_argument("--quality-every", type=int, default=None,
                        help="the node's quality_every_frames (map quality scoring; 0 = off; "
                        "default: the node's)")
    args = parser.parse_args()

    work = REPO / "build" / "bench_node"
    work.mkdir(parents=True, exist_ok=True)
    domain = next_domain_id()
    env = child_env(domain, work / "ros_log")
    env.update(TRANSPORTS[args.transport])
    os.environ.update(TRANSPORTS[args.transport])  # the harness's participant, in this process
    # Core (dotted) parameters go in an overlay params file: rcl ignores `-p section.field`
    # when a params file sets the section (see test/ros/launch_spec.write_overlay).
    overlay = write_overlay(work / "overlay.yaml", {
        "volume.voxel_size_m": args.voxel, "volume.device": args.device,
        "integration.clear_free_space": not args.no_clearing,
        "esdf.enabled": not args.no_esdf})
    extra = {"input_qos": args.input_qos}
    if args.queue_size:
        extra["queue_size"] = str(args.queue_size)
    if args.quality_every is not None:
        extra["quality_every_frames"] = str(args.quality_every)
    mapper = Process(mapper_command(VENV_BIN, overlay=overlay, extra=extra),
                     env, work / "mapper.log", cwd=work)
    (camera_spec,) = [s for s in node_specs(LAUNCH_DIR / "demo.launch.py")
                      if s.executable == "recon_sim_camera"]

    def start_camera(rate: float, max_frames: int, log: str = "sim_camera.log") -> Process:
        return Process(node_command(VENV_BIN, camera_spec, {
            "rate_hz": str(float(rate)), "width": str(args.width), "height": str(args.height),
            "frames_per_loop": "60", "tf_rate_hz": str(args.tf_rate),
            "max_frames": str(max_frames)}), env, work / log)

    h = Harness(domain)
    camera_node = f"/{camera_spec.namespace}/{camera_spec.name}"
    results = []
    camera = None
    try:
        h.wait_status(lambda s: True, 120, "the mapper")
        if args.frames:
            for rate in args.rates:
                results.append(measure_sequence(
                    h, lambda r, n: start_camera(r, n, f"sim_camera_{r:g}hz.log"),
                    float(rate), args.frames))
                r = results[-1]
                print(f"{rate:5.1f} Hz: {r['integrated']} of {r['published']} frames "
                      f"integrated, dropped {r['dropped']}", flush=True)
        else:
            camera = start_camera(1.0, 0)
            h.wait_status(lambda s: s["frames_integrated"] > 3, 180,
                          "the camera's first frames")
        for rate in [] if args.frames else args.rates:
            (res,) = h.set_parameters({"rate_hz": float(rate)}, node=camera_node)
            assert res.successful, res.reason
            results.append(measure(h, float(rate), args.seconds, args.warmup))
            r = results[-1]
            print(f"{rate:5.1f} Hz: integrated {r['integrated_hz']:.1f} Hz, "
                  f"dropped {r['dropped']}", flush=True)
    finally:
        if camera is not None:
            camera.stop()
        mapper.stop()
        h.close()
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "load_avg": os.getloadavg(), "results": results},
                                        indent=1))
    return 0


def _fmt(lat: dict[str, float] | None) -> str:
    return "-" if lat is None else f"{lat['median_ms']:.0f} / {lat['p95_ms']:.0f}"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nrecon_mapper end to end: {args.width}x{args.height} depth+color, voxel "
          f"{args.voxel} m, {args.device}, input_qos {args.input_qos}, transport "
          f"{args.transport}, TF {f'{args.tf_rate:g} Hz' if args.tf_rate else 'with frames'}, "
          f"queue_size {args.queue_size or 'default'}, "
          f"clearing {'off' if args.no_clearing else 'on'}, "
          f"ESDF {'off' if args.no_esdf else 'on'}, "
          f"{os.cpu_count()} cores, "
          f"load avg "
          f"{os.getloadavg()[0]:.1f}")
    print("| rate Hz | published | received | integrated | dropped | sustained | "
          "stamp->integrated ms median / p95 | stamp->mesh ms median / p95 | "
          "integrate+free ms | mesh ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        st = r["stage_ms"]
        integ = st.get("integrate", 0) + st.get("free_space", 0) + st.get("upload", 0)
        print(f"| {r['rate_hz']:g} | {r['published']} | {r['received']} | {r['integrated']} | "
              f"{r['dropped']} | {'yes' if r['sustained'] else 'no'} | "
              f"{_fmt(r['latency_integrated'])} | {_fmt(r['latency_mesh'])} | {integ:.0f} | "
              f"{st.get('mesh', 0):.0f} |")
    sustained = [r["rate_hz"] for r in results if r["sustained"]]
    best = max(sustained, default=0.0)
    print(f"\nhighest rate sustained without drops: {best:g} Hz "
          f"({best / GOAL_CPU_HZ:.2f} x the {GOAL_CPU_HZ:g} Hz CPU goal)")
    for r in results:
        print(f"  {r['rate_hz']:g} Hz: integrated/published = "
              f"{r['integrated'] / max(1, r['published']):.3f}"
              + (f", drops {r['drop_reasons']}" if r["drop_reasons"] else ""))


if __name__ == "__main__":
    sys.exit(main())
