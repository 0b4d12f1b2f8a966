"""``recon-ros bench``: integration and meshing speed against Open3D, in one process.

For each voxel size, the same 640x480 frames are integrated ``repeats`` times (cycling through
the frames) by recon_ros (eager, and fused with ``torch.compile`` when asked) and by Open3D's
tensor ``VoxelBlockGrid`` with the same truncation (4 voxels), block size (8) and depth range.
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


def time_recon_ros(frames: list[Frame], voxel_m: float, repeats: int, device: str,
                   compile: bool) -> dict[str, float]:
    mapper = Mapper(_config(voxel_m, device, compile))
    mapper.integrate(frames[0])  # warm-up (and compilation) outside the measurement
    mapper.reset()
    mapper.timer.clear()
    for i in range(repeats):
        mapper.integrate(frames[i % len(frames)])
    s = mapper.timer.summary()
    t0 = time.perf_counter()
    mesh = mapper.mesh()
    mesh_ms = (time.perf_counter() - t0) * 1e3
    return {"integrate_ms": s["upload"]["median_ms"] + s["integrate"]["median_ms"],
            "free_space_ms": s["free_space"]["median_ms"], "mesh_ms": mesh_ms,
            "faces": mesh.num_faces, "bytes_per_voxel": mapper.volume.bytes_per_voxel(),
            "voxels": mapper.volume.num_blocks * mapper.volume.voxels_per_block}


def time_open3d(frames: list[Frame], voxel_m: float, repeats: int) -> dict[str, float] | None:
    try:
        import open3d as o3d
        import open3d.core as o3c
    except ImportError:
        return None
    dev = o3c.Device("CPU:0")
    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"),
        attr_dtypes=(o3c.float32, o3c.float32, o3c.float32), attr_channels=((1), (1), (3)),
        voxel_size=voxel_m, block_resolution=8, block_count=100_000, device=dev)
    prepared = []
    for f in frames:
        depth_mm = np.round(np.nan_to_num(np.asarray(f.depth)) * 1000).astype(np.uint16)
        prepared.append((o3d.t.geometry.Image(o3c.Tensor(depth_mm)),
                         o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(f.color)))
                         if f.color is not None else None,
                         o3c.Tensor(f.camera.K, o3c.float64),
                         o3c.Tensor(np.linalg.inv(f.T_world_cam), o3c.float64)))
    times = []
    for i in range(repeats + 1):
        depth, color, K, extrinsic = prepared[i % len(prepared)]
        t0 = time.perf_counter()
        coords = vbg.compute_unique_block_coordinates(depth, K, extrinsic, 1000.0, MAX_DEPTH_M,
                                                      TRUNCATION_VOXELS)
        if color is not None:
            vbg.integrate(coords, depth, color, K, K, extrinsic, 1000.0, MAX_DEPTH_M,
                          TRUNCATION_VOXELS)
        else:
            vbg.integrate(coords, depth, K, extrinsic, 1000.0, MAX_DEPTH_M, TRUNCATION_VOXELS)
        if i > 0:  # the first call is a warm-up
            times.append((time.perf_counter() - t0) * 1e3)
    t0 = time.perf_counter()
    mesh = vbg.extract_triangle_mesh()
    mesh_ms = (time.perf_counter() - t0) * 1e3
    n_blocks = vbg.hashmap().size()
    return {"integrate_ms": float(np.median(times)), "mesh_ms": mesh_ms,
            "faces": int(mesh.triangle.indices.shape[0]) if "indices" in mesh.triangle else 0,
            "bytes_per_voxel": 4.0 * (1 + 1 + 3),  # the float32 attributes configured above
            "voxels": n_blocks * 512}


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
        runs = {"recon_ros eager": time_recon_ros(frames, voxel, repeats, device, False)}
        if compile:
            runs["recon_ros compiled"] = time_recon_ros(frames, voxel, repeats, device, True)
        reference = time_open3d(frames, voxel, repeats) if device == "cpu" else None
        if reference:
            runs["Open3D VoxelBlockGrid"] = reference
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
