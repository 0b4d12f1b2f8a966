"""Long synthetic soak of the mapping core: does memory stay bounded and per-frame time flat?

A robot drives down a long corridor (a pillar, a box and every third period a ball, repeating
every few metres with varied sizes and yaws) at ``--speed-m`` metres per frame, weaving slightly
and panning its camera from wall to wall, so that every frame sees new space. Small depth images
(default 160 x 120, no color) are ray-cast exactly by :mod:`recon_ros.io.synthetic`, with only
the objects within the depth range passed to the renderer, so that rendering costs the same at
frame 10 and at frame 10,000. The map uses ``map.clearing_radius_m`` (and ``map.max_memory_mb``
when given; the centre is the camera, as in a replay) and is meshed every ``--mesh-every``
frames, as the node does at 2 Hz.

Every ``--window`` frames a line gives the frame index, blocks, ``memory_mb`` (from
``Mapper.stats()``: voxel storage capacity and block index), the 2D occupancy layers' size, the
process RSS, the per-frame ``Mapper.integrate`` time (median over the window) with its stage
split, the mesh time and size, and the blocks released so far by reason. After each run: the
RSS, and the RSS once glibc's ``malloc_trim(0)`` has handed freed heap back (telling retained
allocator memory from live data). A verdict compares the last window with the window in which
the radius (or the memory budget) first released blocks. A peer run without radius or budget
(``--peer-frames``, shorter, run afterwards in the same process so that RSS growth of the
bounded run is not hidden) shows the unbounded growth. An exception of the mapper ends a run
with a ``CRASHED`` line (the frame count and the traceback's last frames) and the script's exit
status 1: on a soak a crash is a result.

    .venv/bin/python benchmarks/soak.py [--frames 10000] [--window 500] [--radius-m 4]
        [--max-memory-mb 0] [--peer-frames 2000] [--width 160 --height 120] [--voxel-cm 5]
        [--speed-m 0.05] [--mesh-every 5] [--threads 1]

Times are wall clock on this machine; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from recon_ros.bench import hardware_line
from recon_ros.core.config import MapperConfig
from recon_ros.core.frame import Frame, PinholeCamera
from recon_ros.core.mapper import Mapper
from recon_ros.io.synthetic import (
    Box,
    Cylinder,
    Room,
    Scene,
    Shape,
    Sphere,
    Trajectory,
    default_camera,
    render_depth,
)

#: Depth range of the sensor and of the map (``integration.max_depth_m``), metres.
MAX_DEPTH_M = 5.0
#: Storage is allocated for this many blocks up front (then doubles), so that ``memory_mb``
#: follows the map instead of sitting at the default 4096-block (40 MiB at 5 cm) allocation.
INITIAL_CAPACITY_BLOCKS = 256
#: Frames per second of sensor time (stamps only).
RATE_HZ = 10.0
#: The path weaves +-WEAVE_M across the corridor with this wavelength, metres.
WEAVE_M, WEAVE_WAVELENGTH_M = 0.4, 20.0
#: The camera pans +-PAN_DEG about the driving direction once every PAN_PERIOD_FRAMES.
PAN_DEG, PAN_PERIOD_FRAMES = 45.0, 60
PITCH_DEG = 15.0
#: Verdict thresholds (last window / window where the bound first acted).
FLAT_MEMORY_RATIO, FLAT_TIME_RATIO = 1.10, 1.25
RELEASE_REASONS = ("free_space", "radius", "memory", "decay")


@dataclass(frozen=True)
class Corridor:
    """A straight corridor along +x with objects repeating every ``period_m``.

    Attributes:
        length_m: length of the corridor, metres (from ``start_x_m``).
        width_m: wall to wall (y in ``[-width_m / 2, width_m / 2]``), metres.
        height_m: floor to ceiling, metres.
        period_m: length of one repeating unit, metres.
        start_x_m: x of the end wall behind the start of the path.
    """

    length_m: float
    width_m: float = 4.0
    height_m: float = 2.5
    period_m: float = 3.0
    start_x_m: float = -2.0

    @cached_property
    def room(self) -> Room:
        return Room(size_xy=(self.length_m, self.width_m), height=self.height_m,
                    center_xy=(self.start_x_m + 0.5 * self.length_m, 0.0))

    def period_objects(self, k: int) -> list[Shape]:
        """Objects of period ``k`` (x from ``k * period_m``): a floor-to-ceiling pillar near
        one wall, a box near the other (sides alternate), a ball every third period; sizes
        and yaws vary with ``k``. All keep >= 0.5 m from the path (|y| <= WEAVE_M)."""
        x0, side, wall = k * self.period_m, 1.0 if k % 2 == 0 else -1.0, 0.5 * self.width_m
        box_half_z = 0.3 + 0.1 * (k % 4)
        objects: list[Shape] = [
            Cylinder(center=(x0 + 0.5, side * (wall - 0.5), 0.5 * self.height_m),
                     radius=0.2 + 0.05 * (k % 3), half_height=0.5 * self.height_m),
            Box(center=(x0 + 1.8, -side * (wall - 0.5), box_half_z),
                half_extents=(0.35, 0.3, box_half_z), yaw_rad=math.radians(20.0 * (k % 5))),
        ]
        if k % 3 == 0:
            objects.append(Sphere(center=(x0 + 2.6, side * 1.2, 0.3), radius=0.3))
        return objects

    @cached_property
    def objects(self) -> list[Shape]:
        """Every object of the corridor, period by period."""
        return [o for k in range(int(self.length_m // self.period_m))
                for o in self.period_objects(k)]

    @cached_property
    def _x_extent(self) -> np.ndarray:
        """(N, 2) x interval of each of :attr:`objects`."""
        return np.array([[o.aabb()[0][0], o.aabb()[1][0]] for o in self.objects]).reshape(-1, 2)

    def scene_near(self, x_m: float, behind_m: float, ahead_m: float) -> Scene:
        """The corridor with only the objects overlapping ``[x_m - behind_m, x_m + ahead_m]``
        in x: renders exactly like the whole corridor from a camera that sees no point
        outside that interval."""
        near = (self._x_extent[:, 1] >= x_m - behind_m) & (self._x_extent[:, 0] <= x_m + ahead_m)
        return Scene(room=self.room, objects=[self.objects[i] for i in np.flatnonzero(near)],
                     name="corridor")


def corridor_drive(n_frames: int, speed_m: float) -> Trajectory:
    """A robot driving ``speed_m`` per frame along the corridor, weaving across it, with its
    camera panning from side to side and pitched down by PITCH_DEG."""
    i = np.arange(n_frames)
    x = i * speed_m
    k = 2.0 * math.pi / WEAVE_WAVELENGTH_M
    y = WEAVE_M * np.sin(k * x)
    heading = np.arctan(WEAVE_M * k * np.cos(k * x))
    yaw = heading + math.radians(PAN_DEG) * np.sin(2.0 * math.pi * i / PAN_PERIOD_FRAMES)
    return Trajectory.from_base_poses(np.stack((x, y, yaw), axis=1), math.radians(PITCH_DEG),
                                      rate_hz=RATE_HZ)


def corridor_frames(corridor: Corridor, trajectory: Trajectory, camera: PinholeCamera
                    ) -> Iterator[Frame]:
    """Depth frames of the drive, rendered lazily (one at a time)."""
    # Farthest visible point: z-depth MAX_DEPTH_M along the ray of the image's widest corner.
    reach_m = MAX_DEPTH_M * math.hypot(1.0, max(camera.cx, camera.width - 1 - camera.cx)
                                       / camera.fx,
                                       max(camera.cy, camera.height - 1 - camera.cy) / camera.fy)
    for i in range(len(trajectory)):
        T = trajectory.T_world_cam(i)
        # Every pixel's ray points forwards (at most PAN_DEG plus the weave plus half the
        # horizontal field of view, < 90 deg, away from +x): objects wholly behind the camera
        # are invisible (1 m of margin).
        scene = corridor.scene_near(float(T[0, 3]), behind_m=1.0, ahead_m=reach_m)
        yield Frame(depth=render_depth(scene, camera, T, max_range_m=MAX_DEPTH_M), camera=camera,
                    T_world_cam=T, stamp_ns=int(trajectory.stamps_ns[i]),
                    frame_id=trajectory.rig.optical_frame)


def rss_mb() -> float:
    """Resident set size of this process, MiB (psutil, else /proc/self/status)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/status") as f:
            kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
        return kb / 1024.0
    return psutil.Process().memory_info().rss / 2**20


def trimmed_rss_mb() -> float | None:
    """RSS after glibc's ``malloc_trim(0)`` hands freed heap memory back to the system (what
    the process really holds); None without glibc. Trimming changes later RSS readings, so
    it is only done at the end of a run."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return rss_mb()


def max_blocks_within(radius_m: float, block_m: float) -> int:
    """Upper bound on the blocks whose centre lies within ``radius_m`` of any point: block
    cells of those centres fit in a ball of ``radius_m`` plus half a block diagonal."""
    r = radius_m + 0.5 * math.sqrt(3.0) * block_m
    return math.floor(4.0 / 3.0 * math.pi * r**3 / block_m**3)


@dataclass
class WindowReport:
    """The state of a soak at the end of one window.

    Attributes:
        frame: frames integrated so far.
        blocks: allocated blocks.
        memory_mb: ``Mapper.stats()["memory_mb"]`` (what ``map.max_memory_mb`` bounds).
        occupancy_mb: ``Mapper.stats()["occupancy_bytes"]`` (2D layers, not bounded by
            ``map.max_memory_mb``), MiB.
        rss_mb: resident set size of the process, MiB.
        frame_ms: median ``Mapper.integrate`` wall time over the window, ms.
        stage_ms: median time per ``Mapper.timer`` stage over the window, ms.
        mesh_triangles: triangles of the incremental mesh.
        released: blocks released since the start, by reason.
    """

    frame: int
    blocks: int
    memory_mb: float
    occupancy_mb: float
    rss_mb: float
    frame_ms: float
    stage_ms: dict[str, float]
    mesh_triangles: int
    released: dict[str, int] = field(default_factory=dict)


@dataclass
class SoakRun:
    """One soak: its window reports and how it ended.

    Attributes:
        reports: one per window (the last one may be shorter).
        crash: ``"after N frames: Error: message"`` when the mapper raised, else None.
        rss_end_mb: RSS after the last frame, MiB.
        rss_trimmed_mb: RSS after ``malloc_trim(0)`` at the end (None without glibc).
    """

    reports: list[WindowReport]
    crash: str | None = None
    rss_end_mb: float = math.nan
    rss_trimmed_mb: float | None = None


#: Printed columns: header, width, and how a report fills them.
COLUMNS: list[tuple[str, int, Callable[[WindowReport], str]]] = [
    ("frame", 6, lambda r: str(r.frame)),
    ("blocks", 6, lambda r: str(r.blocks)),
    ("mem MiB", 7, lambda r: f"{r.memory_mb:.1f}"),
    ("occ MiB", 7, lambda r: f"{r.occupancy_mb:.1f}"),
    ("RSS MiB", 7, lambda r: f"{r.rss_mb:.0f}"),
    ("frame ms", 8, lambda r: f"{r.frame_ms:.2f}"),
    ("integ", 6, lambda r: f"{r.stage_ms.get('integrate', math.nan):.2f}"),
    ("carve", 5, lambda r: f"{r.stage_ms.get('free_space', math.nan):.2f}"),
    ("bound", 5, lambda r: f"{r.stage_ms.get('bound', math.nan):.2f}"),
    ("mesh ms", 7, lambda r: f"{r.stage_ms.get('mesh', math.nan):.1f}"),
    ("tris", 7, lambda r: str(r.mesh_triangles)),
    *[(f"rel {k}", max(7, len(k) + 4), (lambda r, k=k: str(r.released[k])))
      for k in RELEASE_REASONS],
]


def format_row(cells: Sequence[str]) -> str:
    return " ".join(c.rjust(w) for c, (_, w, _) in zip(cells, COLUMNS))


def soak_config(voxel_m: float, radius_m: float, max_memory_mb: float) -> MapperConfig:
    """The configuration of a soak run (defaults elsewhere, free-space clearing on)."""
    return MapperConfig.from_dict({
        "volume": {"voxel_size_m": voxel_m, "initial_capacity_blocks": INITIAL_CAPACITY_BLOCKS},
        "integration": {"max_depth_m": MAX_DEPTH_M},
        "map": {"clearing_radius_m": radius_m, "max_memory_mb": max_memory_mb},
        "timing": {"mode": "every_stage"}})  # stage medians over every frame of a window


def window_report(mapper: Mapper, frame: int, times_ms: list[float]) -> WindowReport:
    """The mapper's state after ``frame`` frames, ``times_ms`` being the window's frame times."""
    stats = mapper.stats()
    return WindowReport(
        frame=frame, blocks=int(stats["blocks"]), memory_mb=float(stats["memory_mb"]),
        occupancy_mb=float(stats["occupancy_bytes"]) / 2**20, rss_mb=rss_mb(),
        frame_ms=float(np.median(times_ms)),
        stage_ms={k: v["median_ms"] for k, v in mapper.timer.summary().items()},
        mesh_triangles=int(stats["mesh_triangles"]),
        released={k: int(stats[f"blocks_released_{k}"]) for k in RELEASE_REASONS})


def soak(mapper: Mapper, frames: Iterable[Frame], window: int, mesh_every: int,
         emit: Callable[[WindowReport], None]) -> SoakRun:
    """Integrate ``frames``, meshing every ``mesh_every`` frames (0 = never); report (and
    ``emit``) every ``window`` frames and after the last one. The mapper's timer is cleared
    after each window, as the node does at each status, so that it does not grow. An
    exception of the mapper ends the soak; it is a finding, returned with the frame count."""
    run = SoakRun(reports=[])
    times: list[float] = []

    def report() -> None:
        run.reports.append(window_report(mapper, mapper.frames_integrated, times))
        emit(run.reports[-1])
        times.clear()
        mapper.timer.clear()

    try:
        for i, frame in enumerate(frames, start=1):
            t0 = time.perf_counter()
            mapper.integrate(frame)
            times.append((time.perf_counter() - t0) * 1e3)
            if mesh_every and i % mesh_every == 0:
                mapper.update_mesh()
            if i % window == 0:
                report()
    except Exception as exc:  # noqa: BLE001 - reported, not hidden (see the docstring)
        run.crash = (f"after {mapper.frames_integrated} frames: {type(exc).__name__}: {exc}\n"
                     + "".join(traceback.format_exc(limit=-3)))
    if times:
        report()
    run.rss_end_mb = rss_mb()
    run.rss_trimmed_mb = trimmed_rss_mb()
    return run


def ratios(first: WindowReport, last: WindowReport) -> dict[str, float]:
    """``last / first`` of memory, blocks, RSS and per-frame time."""
    return {"memory": last.memory_mb / first.memory_mb,
            "blocks": last.blocks / max(first.blocks, 1),
            "rss": last.rss_mb / first.rss_mb, "frame_ms": last.frame_ms / first.frame_ms}


def bounded_verdict(reports: list[WindowReport]) -> dict[str, Any]:
    """The last window against the first one in which the radius or the memory budget
    released blocks (``reached`` is False when they never did)."""
    first = next((r for r in reports if r.released["radius"] or r.released["memory"]), None)
    if first is None:
        return {"reached": False}
    r = ratios(first, reports[-1])
    return {"reached": True, "first_frame": first.frame, "last_frame": reports[-1].frame, **r,
            "memory_flat": r["memory"] <= FLAT_MEMORY_RATIO,
            "time_flat": r["frame_ms"] <= FLAT_TIME_RATIO}


def growth(reports: list[WindowReport]) -> dict[str, Any]:
    """The last window against the first, and whether blocks rose in every window."""
    blocks = [r.blocks for r in reports]
    return {"first_frame": reports[0].frame, "last_frame": reports[-1].frame,
            **ratios(reports[0], reports[-1]),
            "rising": all(b > a for a, b in zip(blocks, blocks[1:]))}


def describe_ratios(r: dict[str, Any]) -> str:
    return (f"memory {r['memory']:.2f}x, blocks {r['blocks']:.2f}x, RSS {r['rss']:.2f}x, "
            f"frame time {r['frame_ms']:.2f}x")


def run(label: str, config: MapperConfig, n_frames: int, args: argparse.Namespace) -> SoakRun:
    """One soak of ``n_frames`` down the corridor, printing a line per window and how it
    ended (crash, RSS before and after trimming)."""
    corridor = Corridor(length_m=n_frames * args.speed_m + MAX_DEPTH_M + 5.0)
    frames = corridor_frames(corridor, corridor_drive(n_frames, args.speed_m),
                             default_camera(args.width, args.height))
    print(f"\n{label}: {n_frames} frames, corridor {corridor.length_m:.0f} x "
          f"{corridor.width_m:g} x {corridor.height_m:g} m, map section {config.map}", flush=True)
    print(format_row([name for name, _, _ in COLUMNS]), flush=True)
    mapper = Mapper(config)
    result = soak(mapper, frames, args.window, args.mesh_every,
                  lambda r: print(format_row([cell(r) for _, _, cell in COLUMNS]), flush=True))
    del mapper, frames
    gc.collect()
    if result.crash:
        print(f"CRASHED {result.crash}", flush=True)
    trimmed = "n/a" if result.rss_trimmed_mb is None else f"{result.rss_trimmed_mb:.0f} MiB"
    print(f"RSS at the end {result.rss_end_mb:.0f} MiB; after malloc_trim(0) {trimmed}",
          flush=True)
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000, help="frames of the bounded run")
    parser.add_argument("--window", type=int, default=500, help="frames per report line")
    parser.add_argument("--radius-m", type=float, default=4.0, help="map.clearing_radius_m")
    parser.add_argument("--max-memory-mb", type=float, default=0.0,
                        help="map.max_memory_mb (0 = no budget)")
    parser.add_argument("--peer-frames", type=int, default=None,
                        help="frames of the unbounded peer (default frames / 5; 0 = no peer)")
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--voxel-cm", type=float, default=5.0)
    parser.add_argument("--speed-m", type=float, default=0.05, help="metres driven per frame")
    parser.add_argument("--mesh-every", type=int, default=5,
                        help="update the mesh every this many frames (0 = never)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, as the node's cpu_threads)")
    args = parser.parse_args(argv)
    if args.peer_frames is None:
        args.peer_frames = args.frames // 5
    if min(args.frames, args.window, args.width, args.height, args.threads) < 1 \
            or args.peer_frames < 0:
        parser.error("--frames, --window, --width, --height, --threads must be >= 1, "
                     "--peer-frames >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the bounded soak and its unbounded peer; print and return the figures
    (``bounded``/``peer``: :class:`SoakRun`, ``block_bound``: the most blocks the radius
    allows, ``verdict``/``peer_growth``: the ratios printed on the verdict lines)."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return soak_and_peer(args)
    finally:
        torch.set_num_threads(threads)


def soak_and_peer(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`main` once the arguments are parsed and the threads set."""
    voxel_m = args.voxel_cm / 100.0
    base = soak_config(voxel_m, 0.0, 0.0)
    bounded_cfg = soak_config(voxel_m, args.radius_m, args.max_memory_mb)
    block_m = base.volume.block_size_m
    bound = max_blocks_within(args.radius_m, block_m) if args.radius_m > 0 else 0
    print(f"hardware: {hardware_line('cpu')}")
    within = f"at most {bound} blocks fit within the radius" if bound else "no radius"
    print(f"soak: {args.width}x{args.height} depth frames (no color), {args.voxel_cm:g} cm "
          f"voxels, {args.speed_m:g} m per frame, mesh every {args.mesh_every} frames; {within}",
          flush=True)
    bounded = run("bounded", bounded_cfg, args.frames, args)
    verdict = bounded_verdict(bounded.reports)
    if verdict["reached"]:
        print(f"verdict: frame {verdict['last_frame']} vs frame {verdict['first_frame']} "
              f"(first window where the bound released blocks): {describe_ratios(verdict)} -> "
              f"memory {'bounded' if verdict['memory_flat'] else 'GROWING'}, frame time "
              f"{'flat' if verdict['time_flat'] else 'GROWING'}", flush=True)
    else:
        print("verdict: the radius / memory budget never released a block (run longer)")
    out: dict[str, Any] = {"bounded": bounded, "block_bound": bound, "verdict": verdict}
    if args.peer_frames:
        peer = run("peer without radius or budget", base, args.peer_frames, args)
        out["peer"] = peer
        if peer.reports:
            g = out["peer_growth"] = growth(peer.reports)
            rose = "rose" if g["rising"] else "did NOT rise"
            print(f"peer: frame {g['last_frame']} vs frame {g['first_frame']}: "
                  f"{describe_ratios(g)}; blocks {rose} in every window", flush=True)
    return out


if __name__ == "__main__":
    figures = main()
    sys.exit(1 if any(figures[k].crash for k in ("bounded", "peer") if k in figures) else 0)
