"""``recon-ros bench``: integration and meshing speed against Open3D, in one process.

For each voxel size, the same 640x480 frames are integrated ``repeats`` times (cycling through
the frames) by recon_ros (eager, and fused with ``torch.compile`` when asked) and by Open3D's
tensor ``VoxelBlockGrid`` with the same truncation (4 voxels), block size (8) and depth range,
interleaved frame by frame so that a busy machine slows every system alike.
Reported: median ms per frame (TSDF + color integration, block allocation included; recon_ros's
2D free-space carving is reported on its own line), the ratio recon_ros / Open3D, full mesh
extraction time for both, and bytes per allocated voxel. A second run integrates a long
synthetic trajectory into one growing map and compares the cost of its first and last frames,
to show that the cost per frame does not grow with the map.

A third section measures the distance field (ESDF) at 5 cm on the same frames: two mappers
with the ESDF off and on integrate them interleaved; per frame, the whole ``Mapper.integrate``
without the ESDF, the ESDF's free-space carving inside ``integrate`` (its timer stage
``esdf_carve``), the incremental update after the frame (``Mapper.update_esdf``), their ratio
to the integration, and the voxels the update (re)assigned; then a full recompute of the final
field, and the throughput of distance queries at random points inside the map.

Four more sections, each with its own switch (``run_benchmarks``' ``latent``, ``render``,
``poisson`` and ``rgb``):

- latent fusion (:mod:`recon_ros.models.bench_latent`): integration and decode ms per
  :data:`LATENT_SIZE` frame of the demo scene and TSDF fusion of the same frames, with the
  ratios latent / TSDF, in this process;
- rendering (:func:`recon_ros.bench_maps.render_cost`): ms per :data:`RENDER_SIZE` view of the
  demo room mapped at 5 cm, and the rendered depth's agreement with the exact depth;
- meshing (:func:`recon_ros.bench_maps.mesher_times`): screened Poisson against marching cubes
  on that same map, whole map from scratch, seconds and triangles;
- color-only mapping (:func:`recon_ros.bench_maps.color_mode_costs`): plane-sweep stereo per
  keyframe and the Atlas network (average and context view fusion) per fragment and per
  keyframe, on the same :data:`COLOR_FRAMES` color images of :data:`COLOR_SIZE`.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from .bench_maps import (ColorModeCost, MesherTimes, RenderCost, color_mode_costs, demo_map,
                         mesher_times, render_cost)
from .core.config import MapperConfig
from .core.errors import ReconError
from .core.esdf import EsdfLayer
from .core.frame import Frame
from .core.mapper import Mapper
from .core.render import RenderOptions
from .io.frame_folder import FrameFolder
from .io.synthetic import default_camera
from .models.bench_latent import LatentBench, latent_fusion_ms_per_frame, latent_table

TRUNCATION_VOXELS = 4.0
MAX_DEPTH_M = 4.0
DEFAULT_FRAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "3dmatch-seq01"
ESDF_VOXEL_M = 0.05
ESDF_QUERY_POINTS = 100_000
ESDF_QUERY_REPEATS = 5
ESDF_RECOMPUTE_REPEATS = 3
#: nvblox's published ESDF update time, ms (5 cm, RTX 3090; design.md section 5).
NVBLOX_ESDF_MS = 0.8
#: Latent section: (width, height) and number of the timed frames.
LATENT_SIZE = (320, 240)
LATENT_FRAMES = 10
#: Render and meshing sections: the demo room mapped at 5 cm from MAP_FRAMES exact frames of
#: MAP_SIZE, rendered at RENDER_SIZE from RENDER_VIEWS recorded poses spread over the scan.
MAP_FRAMES = 30
MAP_SIZE = (320, 240)
RENDER_SIZE = (640, 480)
RENDER_VIEWS = 2
#: Color-only section: images of the demo room's scan at the Atlas training size (a few
#: seconds on 2 CPU cores).
COLOR_FRAMES = 16
COLOR_SIZE = (128, 96)


def hardware_line(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    line = f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__} " \
           f"({torch.get_num_threads()} threads)"
    if device.startswith("cuda") and torch.cuda.is_available():
        line += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return line


def _synthetic_frames(n: int) -> list[Frame]:
    from .io.synthetic import default_camera, iter_frames, make_demo_scene, room_scan_trajectory

    scene = make_demo_scene()
    return list(iter_frames(scene, default_camera(640, 480), room_scan_trajectory(scene, n)))


def load_frames(frames_dir: Path | None) -> tuple[list[Frame], str]:
    folder = frames_dir or (DEFAULT_FRAMES if DEFAULT_FRAMES.is_dir() else None)
    if folder is None:
        return _synthetic_frames(10), "10 synthetic 640x480 frames of the demo scene"
    frames = list(FrameFolder(folder))
    return frames, f"{len(frames)} real frames from {folder}"


def _config(voxel_m: float, device: str, compile: bool, esdf: bool = True) -> MapperConfig:
    return MapperConfig.from_dict({
        "volume": {"voxel_size_m": voxel_m, "device": device},
        "integration": {"truncation_voxels": TRUNCATION_VOXELS, "max_depth_m": MAX_DEPTH_M,
                        "compile": compile},
        "esdf": {"enabled": esdf},
        "timing": {"mode": "every_stage"}})  # every frame, each stage's whole cost


class ReconRosRunner:
    """recon_ros's TSDF integration (upload + block search + fusion; the 2D free-space carving
    that Open3D has no equivalent of is timed separately)."""

    def __init__(self, frames: list[Frame], voxel_m: float, device: str, compile: bool) -> None:
        self.frames = frames
        self.mapper = Mapper(_config(voxel_m, device, compile))
        with self.mapper.timer("bench_first"):  # warm-up (and compilation), not measured
            self.mapper.integrate(frames[0])
        #: The first frame's ms: with ``compile``, the compilation (or its on-disk cache).
        self.first_frame_ms = self.mapper.timer.samples["bench_first"][-1]
        self.mapper.reset()
        self.carve_ms: list[float] = []

    def integrate(self, i: int) -> float:
        m = self.mapper
        with m.timer("bench"):
            ft = m._to_device(self.frames[i % len(self.frames)])
            m.integrator.integrate(m.volume, ft)
        with m.timer("bench_carve"):  # the timer synchronises a CUDA device
            m.occupancy.carve(ft)
        self.carve_ms.append(m.timer.samples["bench_carve"][-1])
        return m.timer.samples["bench"][-1]

    def mesh(self) -> tuple[float, int]:
        t0 = time.perf_counter()
        mesh = self.mapper.mesh()
        return (time.perf_counter() - t0) * 1e3, mesh.num_faces

    def memory(self) -> tuple[float, int]:
        vol = self.mapper.volume
        return vol.bytes_per_voxel(), vol.num_blocks * vol.voxels_per_block


def open3d_device(device: str) -> tuple[str | None, str]:
    """The Open3D device that matches the torch ``device`` (``"CPU:0"``, ``"CUDA:<i>"``), or
    None when Open3D cannot run there; and a line for the bench output, empty on the CPU
    (where the Open3D comparison is the plain default)."""
    dev = torch.device(device)
    try:
        import open3d as o3d
    except ImportError:
        return None, "Open3D is not installed: no comparison with its VoxelBlockGrid"
    if dev.type == "cpu":
        return "CPU:0", ""
    if dev.type != "cuda":
        return None, f"Open3D runs on CPU or CUDA, not {dev.type}: no comparison on {device}"
    index = dev.index or 0
    if not o3d.core.cuda.is_available():
        return None, (f"Open3D {o3d.__version__} has no CUDA here "
                      "(open3d.core.cuda.is_available() is False): no comparison on "
                      f"{device} (not compared against Open3D on the CPU either)")
    if index >= o3d.core.cuda.device_count():
        return None, (f"Open3D sees {o3d.core.cuda.device_count()} CUDA device(s), not "
                      f"{device}: no comparison")
    return f"CUDA:{index}", f"Open3D {o3d.__version__} VoxelBlockGrid on CUDA:{index}"


class Open3DRunner:
    """Open3D's tensor VoxelBlockGrid with the same truncation, block size and depth range, on
    ``o3d_device`` (see :func:`open3d_device`). Like recon_ros, each timed integration uploads
    the frame's images to the device first (a no-op on the CPU); Open3D's CUDA kernels are
    asynchronous, so the device is synchronised before each clock is read."""

    def __init__(self, frames: list[Frame], voxel_m: float, o3d_device: str = "CPU:0") -> None:
        import open3d as o3d
        import open3d.core as o3c

        self.o3d, self.o3c = o3d, o3c
        self.device = o3c.Device(o3d_device)
        self.vbg = self._grid(voxel_m)
        self.prepared = []
        for f in frames:
            depth_mm = np.round(np.nan_to_num(np.asarray(f.depth)) * 1000).astype(np.uint16)
            self.prepared.append((
                o3d.t.geometry.Image(o3c.Tensor(depth_mm)),
                o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(f.color)))
                if f.color is not None else None,
                o3c.Tensor(f.camera.K, o3c.float64),
                o3c.Tensor(np.linalg.inv(f.T_world_cam), o3c.float64)))
        self.integrate(0)  # warm-up
        self.vbg = self._grid(voxel_m)

    def _grid(self, voxel_m: float) -> Any:
        """An empty grid (an ``open3d.t.geometry.VoxelBlockGrid``) on :attr:`device`."""
        o3c = self.o3c
        return self.o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32), attr_channels=((1), (1), (3)),
            voxel_size=voxel_m, block_resolution=8, block_count=100_000, device=self.device)

    def integrate(self, i: int) -> float:
        depth, color, K, extrinsic = self.prepared[i % len(self.prepared)]
        self.o3c.cuda.synchronize(self.device)  # no effect on the CPU
        t0 = time.perf_counter()
        depth = depth.to(self.device)
        color = color.to(self.device) if color is not None else None
        coords = self.vbg.compute_unique_block_coordinates(depth, K, extrinsic, 1000.0,
                                                           MAX_DEPTH_M, TRUNCATION_VOXELS)
        if color is not None:
            self.vbg.integrate(coords, depth, color, K, K, extrinsic, 1000.0, MAX_DEPTH_M,
                               TRUNCATION_VOXELS)
        else:
            self.vbg.integrate(coords, depth, K, extrinsic, 1000.0, MAX_DEPTH_M,
                               TRUNCATION_VOXELS)
        self.o3c.cuda.synchronize(self.device)
        return (time.perf_counter() - t0) * 1e3

    def mesh(self) -> tuple[float, int]:
        self.o3c.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        mesh = self.vbg.extract_triangle_mesh()
        self.o3c.cuda.synchronize(self.device)
        ms = (time.perf_counter() - t0) * 1e3
        return ms, int(mesh.triangle.indices.shape[0]) if "indices" in mesh.triangle else 0

    def memory(self) -> tuple[float, int]:
        # The float32 attributes configured above: TSDF 1 + weight 1 + color 3 channels.
        return 4.0 * (1 + 1 + 3), self.vbg.hashmap().size() * 512


def compare(frames: list[Frame], voxel_m: float, repeats: int, device: str, compile: bool
            ) -> dict[str, dict[str, float]]:
    """Integrate the same frames with every system, interleaved frame by frame so that all of
    them see the same machine load; returns per-system medians and sizes."""
    runners: dict = {"recon_ros eager": ReconRosRunner(frames, voxel_m, device, False)}
    if compile:
        runners["recon_ros compiled"] = ReconRosRunner(frames, voxel_m, device, True)
    o3d_device, _ = open3d_device(device)
    if o3d_device is not None:
        runners["Open3D VoxelBlockGrid"] = Open3DRunner(frames, voxel_m, o3d_device)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for i in range(repeats):
        for name, runner in runners.items():
            times[name].append(runner.integrate(i))
    out = {}
    for name, runner in runners.items():
        mesh_ms, faces = runner.mesh()
        bytes_per_voxel, voxels = runner.memory()
        out[name] = {"integrate_ms": float(np.median(times[name])), "mesh_ms": mesh_ms,
                     "faces": faces, "bytes_per_voxel": bytes_per_voxel, "voxels": voxels}
        if isinstance(runner, ReconRosRunner):
            out[name]["free_space_ms"] = float(np.median(runner.carve_ms))
            out[name]["first_frame_ms"] = runner.first_frame_ms
    return out


def map_growth(n_frames: int, voxel_m: float, device: str, compile: bool) -> dict[str, float]:
    """Per-frame integration cost at the start and the end of a long trajectory."""
    frames = _synthetic_frames(n_frames)
    mapper = Mapper(_config(voxel_m, device, compile))
    mapper.integrate(frames[0])
    mapper.reset()
    mapper.timer.clear()
    for f in frames:
        mapper.integrate(f)
    ms = np.asarray(mapper.timer.samples["integrate"])
    k = max(5, n_frames // 10)
    return {"first_ms": float(np.median(ms[:k])), "last_ms": float(np.median(ms[-k:])),
            "blocks": mapper.volume.num_blocks, "frames": n_frames}


@dataclass
class EsdfCost:
    """What the distance field costs, per frame and on the final map.

    Attributes:
        voxel_size_m: voxel edge, metres.
        frame_size: (width, height) of the frames, pixels.
        integrate_off_ms: (F,) ``Mapper.integrate`` per frame with the ESDF off, ms.
        integrate_on_ms: (F,) the same with the ESDF on (its carving included), ms.
        carve_ms: (F,) the ESDF's free-space carving inside ``integrate``, ms.
        update_ms: (F,) ``Mapper.update_esdf`` after each frame, ms.
        voxels_updated: (F,) voxel distance assignments of each update (``update_esdf``'s
            count: a voxel reassigned by several wave steps counts each time).
        recompute_ms: median of full recomputes (``EsdfLayer.recompute``) of the final map, ms.
        recompute_voxels: voxel distance assignments of one full recompute.
        known_voxels: observed voxels of the final field.
        query_points: points per distance query batch.
        query_points_per_s: median throughput of ``EsdfLayer.query``, points per second.
        query_observed: fraction of the query points with a distance (not NaN).
    """

    voxel_size_m: float
    frame_size: tuple[int, int]
    integrate_off_ms: np.ndarray
    integrate_on_ms: np.ndarray
    carve_ms: np.ndarray
    update_ms: np.ndarray
    voxels_updated: np.ndarray
    recompute_ms: float
    recompute_voxels: int
    known_voxels: int
    query_points: int
    query_points_per_s: float
    query_observed: float

    @property
    def ratio(self) -> np.ndarray:
        """(F,) (carving + update) / ESDF-off integration of the same frame."""
        return (self.carve_ms + self.update_ms) / self.integrate_off_ms

    def rows(self) -> list[tuple[str, str, str]]:
        """``(quantity, median, p90)`` rows of the ESDF table."""
        def stats(a: np.ndarray, fmt: str) -> tuple[str, str]:
            return format(float(np.median(a)), fmt), format(float(np.percentile(a, 90)), fmt)

        return [
            ("integrate ms, ESDF off", *stats(self.integrate_off_ms, ".2f")),
            ("integrate ms, ESDF on (carving included)", *stats(self.integrate_on_ms, ".2f")),
            ("ESDF carving ms (in integrate)", *stats(self.carve_ms, ".2f")),
            ("ESDF update ms (after each frame)", *stats(self.update_ms, ".2f")),
            ("(carving + update) / integrate off", *stats(self.ratio, ".2f")),
            ("voxels updated per frame (distance assignments)",
             *stats(self.voxels_updated, ".0f")),
            (f"full recompute ms, final map ({self.known_voxels} known voxels, "
             f"{self.recompute_voxels} assignments)", f"{self.recompute_ms:.2f}", "-"),
            ("incremental update / full recompute",
             f"{float(np.median(self.update_ms)) / self.recompute_ms:.3f}", "-"),
            (f"distance queries, M points/s ({self.query_points} random points in the map "
             f"bounds, {self.query_observed:.0%} observed)",
             f"{self.query_points_per_s / 1e6:.2f}", "-"),
        ]


def esdf_cost(frames: list[Frame], voxel_m: float, repeats: int, device: str,
              query_points: int = ESDF_QUERY_POINTS, seed: int = 0) -> EsdfCost:
    """Integrate ``repeats`` frames (cycling through ``frames``) with the ESDF off and on,
    interleaved frame by frame, updating the field after each frame; then time full recomputes
    and batches of ``query_points`` uniform random query points in the bounds of the known
    voxels (seeded)."""
    off, on = (Mapper(_config(voxel_m, device, False, esdf=esdf)) for esdf in (False, True))
    for m in (off, on):  # warm-up (the ESDF update included) outside the measurement
        m.integrate(frames[0])
        if m.esdf is not None:
            m.update_esdf()
        m.reset()
        m.timer.clear()
    voxels = []
    for i in range(repeats):
        frame = frames[i % len(frames)]
        for m in (off, on):
            with m.timer("bench_frame"):
                m.integrate(frame)
        voxels.append(on.update_esdf())
    esdf = cast(EsdfLayer, on.esdf)  # enabled by _config
    recompute_voxels = 0
    for _ in range(ESDF_RECOMPUTE_REPEATS):
        with on.timer("bench_recompute"):
            recompute_voxels = esdf.recompute()
    indices = torch.from_numpy(esdf.export()["indices"]).to(torch.float32)
    lo, hi = indices.min(dim=0).values, indices.max(dim=0).values
    gen = torch.Generator().manual_seed(seed)
    points = ((lo + (hi - lo) * torch.rand((query_points, 3), generator=gen)) * voxel_m
              ).to(esdf.device)
    for _ in range(ESDF_QUERY_REPEATS):
        with on.timer("bench_query"):
            result = esdf.query(points)
    s_off, s_on = off.timer.samples, on.timer.samples
    height, width = frames[0].depth.shape
    return EsdfCost(
        voxel_size_m=voxel_m, frame_size=(width, height),
        integrate_off_ms=np.asarray(s_off["bench_frame"]),
        integrate_on_ms=np.asarray(s_on["bench_frame"]),
        carve_ms=np.asarray(s_on["esdf_carve"]), update_ms=np.asarray(s_on["esdf"]),
        voxels_updated=np.asarray(voxels), recompute_ms=float(np.median(s_on["bench_recompute"])),
        recompute_voxels=recompute_voxels, known_voxels=int(indices.shape[0]),
        query_points=query_points,
        query_points_per_s=query_points / (float(np.median(s_on["bench_query"])) * 1e-3),
        query_observed=float(result.observed.float().mean()))


def esdf_table(cost: EsdfCost) -> Table:
    """The ESDF section as a rich table (``quantity``, ``median``, ``p90``), the reference
    in its caption."""
    (width, height), frames = cost.frame_size, len(cost.integrate_off_ms)
    table = Table(
        title=f"ESDF at {cost.voxel_size_m * 100:g} cm: cost per {width}x{height} frame "
              f"({frames} frames, median / p90 over frames)",
        caption=f"reference: nvblox reports {NVBLOX_ESDF_MS} ms per ESDF update at 5 cm on an "
                "RTX 3090 GPU (its published figure) - different hardware, not comparable to a "
                "CPU figure")
    table.add_column("quantity")
    for col in ("median", "p90"):
        table.add_column(col, justify="right")
    for row in cost.rows():
        table.add_row(*row)
    return table


def latent_section(console: Console, device: str) -> LatentBench:
    """Time latent fusion against TSDF fusion (:data:`LATENT_FRAMES` frames of
    :data:`LATENT_SIZE`) and print the table with the ratios."""
    result = latent_fusion_ms_per_frame(*LATENT_SIZE, LATENT_FRAMES, device)
    console.print(latent_table(result))
    return result


def map_outputs_section(console: Console, device: str, render: bool, poisson: bool
                        ) -> tuple[RenderCost | None, MesherTimes | None]:
    """Map the demo room (:data:`MAP_FRAMES` frames), then time renders of it
    (``render``) and both meshers on it (``poisson``); print one line each."""
    scene, traj, mapper = demo_map(MAP_FRAMES, *MAP_SIZE, device)
    vol = mapper.volume
    what = (f"the demo room mapped from {MAP_FRAMES} exact {MAP_SIZE[0]}x{MAP_SIZE[1]} frames "
            f"({vol.num_blocks} blocks of {vol.voxel_size_m * 100:g} cm voxels)")
    cost = times = None
    if render:
        poses = traj.poses[::MAP_FRAMES // RENDER_VIEWS][:RENDER_VIEWS]
        cost = render_cost(scene, mapper, default_camera(*RENDER_SIZE), poses,
                           RenderOptions(max_depth_m=mapper.config.integration.max_depth_m))
        console.print(
            f"render {RENDER_SIZE[0]}x{RENDER_SIZE[1]} of {what}: median {cost.median_ms:.0f} "
            f"ms per view ({len(poses)} views; {cost.samples_per_ray:.1f} samples/ray, "
            f"depth within 5 cm on {cost.inliers:.1%} of the surface pixels, coverage "
            f"{cost.coverage:.1%})")
    if poisson:
        times = mesher_times(mapper, mapper.config.mesh.poisson())
        console.print(
            f"mesh {what}, whole map: marching cubes {times.marching_cubes_s:.2f} s "
            f"({times.marching_cubes.num_faces} triangles), screened Poisson "
            f"{times.poisson_s:.2f} s ({times.poisson.num_faces} triangles), ratio "
            f"{times.poisson_s / times.marching_cubes_s:.0f}x")
    return cost, times


def rgb_section(console: Console, device: str) -> list[ColorModeCost]:
    """Time the color-only modes (:data:`COLOR_FRAMES` images of :data:`COLOR_SIZE`) and
    print their table."""
    costs = color_mode_costs(COLOR_FRAMES, *COLOR_SIZE, device)
    table = Table(title=f"color-only mapping, {COLOR_FRAMES} color images "
                        f"{COLOR_SIZE[0]}x{COLOR_SIZE[1]} of the demo room, 8 cm voxels "
                        "(depth / TSDF computation + fusion)")
    for col in ("method", "keyframes", "fragments", "ms per keyframe", "ms per fragment"):
        table.add_column(col, justify="right")
    for c in costs:
        table.add_row(c.method, str(c.keyframes), str(c.fragments) if c.fragments else "-",
                      f"{c.ms_per_keyframe:.0f}",
                      f"{c.ms_per_fragment:.0f}" if c.fragments else "-")
    console.print(table)
    return costs


def run_benchmarks(console: Console, voxel_sizes_m: list[float], frames_dir: Path | None,
                   repeats: int, device: str, compile: bool, growth_frames: int,
                   esdf: bool = True, latent: bool = True, render: bool = True,
                   poisson: bool = True, rgb: bool = True) -> None:
    frames, described = load_frames(frames_dir)
    if not frames:
        raise ReconError("no frames to benchmark")
    console.print(f"hardware: {hardware_line(device)}")
    console.print(f"frames: {described}; {repeats} integrations per voxel size; truncation "
                  f"{TRUNCATION_VOXELS:g} voxels, max depth {MAX_DEPTH_M:g} m, blocks of 8^3")
    _, open3d_note = open3d_device(device)
    if open3d_note:
        console.print(open3d_note)
    table = Table(title="TSDF + color integration of 640x480 frames (median ms per frame)")
    for col in ("voxel", "system", "integrate ms", "vs Open3D", "mesh ms (faces)",
                "bytes/voxel", "voxels"):
        table.add_column(col, justify="right")
    for voxel in voxel_sizes_m:
        runs = compare(frames, voxel, repeats, device, compile)
        reference = runs.get("Open3D VoxelBlockGrid")
        for name, r in runs.items():
            ratio = r["integrate_ms"] / reference["integrate_ms"] if reference else float("nan")
            table.add_row(f"{voxel * 100:g} cm", name, f"{r['integrate_ms']:.2f}",
                          f"{ratio:.2f}x", f"{r['mesh_ms']:.0f} ({r['faces']})",
                          f"{r['bytes_per_voxel']:.0f}", str(r["voxels"]))
        console.print(f"{voxel * 100:g} cm: recon_ros 2D free-space carving "
                      f"{runs['recon_ros eager']['free_space_ms']:.2f} ms per frame (extra, "
                      "not in the integrate column; Open3D has no equivalent)")
        if "recon_ros compiled" in runs:
            console.print(f"{voxel * 100:g} cm: recon_ros compiled, first frame "
                          f"{runs['recon_ros compiled']['first_frame_ms'] / 1e3:.1f} s "
                          "(compilation, or loading it from Inductor's on-disk cache)")
    console.print(table)
    if growth_frames > 0:
        g = map_growth(growth_frames, 0.05, device, compile)
        console.print(
            f"map growth (5 cm, {g['frames']} synthetic frames, {g['blocks']} blocks at the end):"
            f" integrate median {g['first_ms']:.2f} ms over the first frames vs "
            f"{g['last_ms']:.2f} ms over the last (ratio {g['last_ms'] / g['first_ms']:.2f})")
    if esdf:
        console.print(esdf_table(esdf_cost(frames, ESDF_VOXEL_M, repeats, device)))
    if latent:
        latent_section(console, device)
    if render or poisson:
        map_outputs_section(console, device, render, poisson)
    if rgb:
        rgb_section(console, device)
