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
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from .core.config import MapperConfig
from .core.errors import ReconError
from .core.frame import Frame
from .core.mapper import Mapper
from .io.frame_folder import FrameFolder

TRUNCATION_VOXELS = 4.0
MAX_DEPTH_M = 4.0
DEFAULT_FRAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "3dmatch-seq01"


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


def _config(voxel_m: float, device: str, compile: bool) -> MapperConfig:
    return MapperConfig.from_dict({
        "volume": {"voxel_size_m": voxel_m, "device": device},
        "integration": {"truncation_voxels": TRUNCATION_VOXELS, "max_depth_m": MAX_DEPTH_M,
                        "compile": compile}})


class ReconRosRunner:
    """recon_ros's TSDF integration (upload + block search + fusion; the 2D free-space carving
    that Open3D has no equivalent of is timed separately)."""

    def __init__(self, frames: list[Frame], voxel_m: float, device: str, compile: bool) -> None:
        self.frames = frames
        self.mapper = Mapper(_config(voxel_m, device, compile))
        self.mapper.integrate(frames[0])  # warm-up (and compilation) outside the measurement
        self.mapper.reset()
        self.carve_ms: list[float] = []

    def integrate(self, i: int) -> float:
        m = self.mapper
        with m.timer("bench"):
            ft = m._to_device(self.frames[i % len(self.frames)])
            m.integrator.integrate(m.volume, ft)
        t0 = time.perf_counter()
        m.occupancy.carve(ft)
        self.carve_ms.append((time.perf_counter() - t0) * 1e3)
        return m.timer.samples["bench"][-1]

    def mesh(self) -> tuple[float, int]:
        t0 = time.perf_counter()
        mesh = self.mapper.mesh()
        return (time.perf_counter() - t0) * 1e3, mesh.num_faces

    def memory(self) -> tuple[float, int]:
        vol = self.mapper.volume
        return vol.bytes_per_voxel(), vol.num_blocks * vol.voxels_per_block


class Open3DRunner:
    """Open3D's tensor VoxelBlockGrid with the same truncation, block size and depth range."""

    def __init__(self, frames: list[Frame], voxel_m: float) -> None:
        import open3d as o3d
        import open3d.core as o3c

        self.o3d, self.o3c = o3d, o3c
        self.vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32), attr_channels=((1), (1), (3)),
            voxel_size=voxel_m, block_resolution=8, block_count=100_000,
            device=o3c.Device("CPU:0"))
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
        self.vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32), attr_channels=((1), (1), (3)),
            voxel_size=voxel_m, block_resolution=8, block_count=100_000,
            device=o3c.Device("CPU:0"))

    def integrate(self, i: int) -> float:
        depth, color, K, extrinsic = self.prepared[i % len(self.prepared)]
        t0 = time.perf_counter()
        coords = self.vbg.compute_unique_block_coordinates(depth, K, extrinsic, 1000.0,
                                                           MAX_DEPTH_M, TRUNCATION_VOXELS)
        if color is not None:
            self.vbg.integrate(coords, depth, color, K, K, extrinsic, 1000.0, MAX_DEPTH_M,
                               TRUNCATION_VOXELS)
        else:
            self.vbg.integrate(coords, depth, K, extrinsic, 1000.0, MAX_DEPTH_M,
                               TRUNCATION_VOXELS)
        return (time.perf_counter() - t0) * 1e3

    def mesh(self) -> tuple[float, int]:
        t0 = time.perf_counter()
        mesh = self.vbg.extract_triangle_mesh()
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
    if device == "cpu":
        try:
            runners["Open3D VoxelBlockGrid"] = Open3DRunner(frames, voxel_m)
        except ImportError:
            pass
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


def run_benchmarks(console: Console, voxel_sizes_m: list[float], frames_dir: Path | None,
                   repeats: int, device: str, compile: bool, growth_frames: int) -> None:
    frames, described = load_frames(frames_dir)
    if not frames:
        raise ReconError("no frames to benchmark")
    console.print(f"hardware: {hardware_line(device)}")
    console.print(f"frames: {described}; {repeats} integrations per voxel size; truncation "
                  f"{TRUNCATION_VOXELS:g} voxels, max depth {MAX_DEPTH_M:g} m, blocks of 8^3")
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
    console.print(table)
    if growth_frames > 0:
        g = map_growth(growth_frames, 0.05, device, compile)
        console.print(
            f"map growth (5 cm, {g['frames']} synthetic frames, {g['blocks']} blocks at the end):"
            f" integrate median {g['first_ms']:.2f} ms over the first frames vs "
            f"{g['last_ms']:.2f} ms over the last (ratio {g['last_ms'] / g['first_ms']:.2f})")
