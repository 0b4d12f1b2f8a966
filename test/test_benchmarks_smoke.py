"""Smoke tests of the benchmark scripts in benchmarks/ and of ``recon-ros bench``: tiny
arguments, then the structure and sanity of the figures they print and return. No time is ever
asserted."""

from __future__ import annotations

import importlib.util
import itertools
import math
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch
from rich.console import Console

from recon_ros import bench
from recon_ros.core.frame import Frame
from recon_ros.core.mapper import Mapper
from recon_ros.io.synthetic import (
    Scene,
    default_camera,
    iter_frames,
    make_demo_scene,
    render_depth,
    room_scan_trajectory,
)
from recon_ros.models import bench_latent

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
GPU_CHECK = BENCHMARKS / "gpu_check.sh"


def load_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    return load_script("soak")


@pytest.fixture(scope="module")
def clearing_cost() -> ModuleType:
    return load_script("clearing_cost")


def test_clearing_cost_smoke(clearing_cost: ModuleType, capsys: pytest.CaptureFixture[str]
                             ) -> None:
    threads = torch.get_num_threads()
    out = clearing_cost.main(["--frames", "4", "--repeats", "2", "--width", "64",
                              "--height", "48", "--radius-m", "1.5"])
    assert torch.get_num_threads() == threads  # restored
    printed = capsys.readouterr().out
    assert "hardware:" in printed and "vs off" in printed
    results = out[5.0]
    assert list(results) == ["clearing off", "clearing on", "on + radius 1.5 m"]
    for name, r in results.items():
        assert name in printed
        assert r["frames"] == 8
        assert 0 < r["median_ms"] <= r["p90_ms"] < math.inf
        assert {"upload", "integrate", "free_space", "bound"} <= set(r["stage_ms"])
        assert r["blocks_updated"] > 0 and r["blocks"] > 0
    off, on, radius = results.values()
    # Same frames, same surface band; clearing adds the other allocated blocks in view.
    assert on["blocks_updated"] >= off["blocks_updated"]
    assert off["released"] == {"free_space": 0, "radius": 0, "memory": 0}
    assert on["released"]["radius"] == 0
    assert radius["released"]["radius"] > 0  # the demo room is larger than 1.5 m
    assert radius["blocks"] < on["blocks"]


def test_block_bound_covers_every_lattice_centre(soak: ModuleType) -> None:
    rng = np.random.default_rng(3)
    for radius_m, block_m in ((1.5, 0.4), (4.0, 0.4), (2.0, 0.16)):
        n = int(math.ceil(radius_m / block_m)) + 2
        lattice = np.array(list(itertools.product(range(-n, n + 1), repeat=3)), float) * block_m
        for point in rng.uniform(0.0, block_m, size=(5, 3)):
            inside = int((np.linalg.norm(lattice - point, axis=1) <= radius_m).sum())
            assert inside <= soak.max_blocks_within(radius_m, block_m)


def test_corridor_windowed_render_is_exact_and_path_is_free(soak: ModuleType) -> None:
    corridor = soak.Corridor(length_m=40.0)
    drive = soak.corridor_drive(soak.PAN_PERIOD_FRAMES, 0.4)  # a whole pan, 24 m
    camera = default_camera(40, 30)
    full = Scene(room=corridor.room, objects=corridor.objects)
    eyes = torch.as_tensor(drive.camera_positions)
    assert float(full.sdf(eyes).min()) > 0.3  # the camera never enters an object
    for i, frame in enumerate(soak.corridor_frames(corridor, drive, camera)):
        expected = render_depth(full, camera, drive.T_world_cam(i), max_range_m=soak.MAX_DEPTH_M)
        np.testing.assert_array_equal(frame.depth, expected)


def test_soak_bounded_by_radius_and_peer_grows(soak: ModuleType,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = soak.main(["--frames", "40", "--window", "10", "--width", "40", "--height", "30",
                     "--radius-m", "3", "--speed-m", "0.2", "--peer-frames", "30"])
    printed = capsys.readouterr().out
    assert "verdict:" in printed and "peer:" in printed
    assert out["bounded"].crash is None and out["peer"].crash is None
    assert out["bounded"].rss_end_mb > 0
    bounded, peer = out["bounded"].reports, out["peer"].reports
    assert [r.frame for r in bounded] == [10, 20, 30, 40]
    assert [r.frame for r in peer] == [10, 20, 30]
    assert out["block_bound"] == soak.max_blocks_within(3.0, 0.4)
    for r in bounded + peer:
        assert r.memory_mb > 0 and r.occupancy_mb > 0 and r.rss_mb > 0
        assert 0 < r.frame_ms < math.inf
        assert {"integrate", "free_space", "bound"} <= set(r.stage_ms)
        assert r.mesh_triangles > 0
    assert all(r.blocks <= out["block_bound"] for r in bounded)
    assert out["verdict"]["reached"] and bounded[-1].released["radius"] > 0
    # Without radius or budget nothing is dropped for distance and the map keeps growing.
    assert all(r.released["radius"] == r.released["memory"] == 0 for r in peer)
    assert out["peer_growth"]["rising"]
    assert peer[-1].blocks > peer[0].blocks and peer[-1].blocks > bounded[-1].blocks


def test_soak_reports_a_crash_with_its_frame(soak: ModuleType,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    mapper = Mapper(soak.soak_config(0.05, 3.0, 0.0))
    integrate = mapper.integrate

    def failing(frame: Frame) -> int:
        if mapper.frames_integrated == 3:
            raise IndexError("boom")
        return integrate(frame)

    monkeypatch.setattr(mapper, "integrate", failing)
    frames = soak.corridor_frames(soak.Corridor(length_m=20.0), soak.corridor_drive(10, 0.2),
                                  default_camera(40, 30))
    run = soak.soak(mapper, frames, window=2, mesh_every=0, emit=lambda r: None)
    assert run.crash is not None and run.crash.startswith("after 3 frames: IndexError: boom")
    assert [r.frame for r in run.reports] == [2, 3]  # the partial window is still reported


def test_soak_with_a_memory_budget_only(soak: ModuleType,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = soak.main(["--frames", "20", "--window", "10", "--width", "40", "--height", "30",
                     "--radius-m", "0", "--max-memory-mb", "1", "--speed-m", "0.2",
                     "--peer-frames", "0"])
    assert "no radius" in capsys.readouterr().out and "peer" not in out
    reports = out["bounded"].reports
    max_blocks = Mapper(soak.soak_config(0.05, 0.0, 1.0)).max_blocks()
    assert all(r.blocks <= max_blocks for r in reports)
    # The block index may keep the size a frame's peak needed until its next rehash (about
    # 1 % over the budget here); voxel storage itself is shrunk back to the budget.
    assert all(r.memory_mb <= 1.05 for r in reports)
    assert reports[-1].released["memory"] > 0 and reports[-1].released["radius"] == 0
    assert out["verdict"]["reached"]


def test_integrate_time_smoke() -> None:
    results = load_script("integrate_time").main(
        ["--frames", "4", "--width", "40", "--height", "30", "--voxel-cm", "10"])
    (r,) = results.values()
    assert r["frames"] == 8 and 0 < r["median_ms"] <= r["p90_ms"]


def _tiny_frames(n: int) -> list[Frame]:
    """``n`` 80x60 RGB-D frames of the demo room."""
    scene = make_demo_scene()
    return list(iter_frames(scene, default_camera(80, 60), room_scan_trajectory(scene, n)))


def _cell_number(cell: str) -> float:
    return float(cell.split()[0])


def test_bench_esdf_section(device: str) -> None:
    frames = _tiny_frames(4)
    cost = bench.esdf_cost(frames, 0.1, repeats=6, device=device, query_points=2000)
    assert cost.frame_size == (80, 60) and cost.voxel_size_m == 0.1
    per_frame = (cost.integrate_off_ms, cost.integrate_on_ms, cost.carve_ms, cost.update_ms,
                 cost.voxels_updated, cost.ratio)
    for a in per_frame:
        assert a.shape == (6,) and np.isfinite(a).all() and (a >= 0).all()
    # The carving is timed inside the ESDF-on integration of the same frame.
    assert (cost.carve_ms <= cost.integrate_on_ms).all()
    np.testing.assert_allclose(cost.ratio, (cost.carve_ms + cost.update_ms)
                               / cost.integrate_off_ms)
    assert cost.voxels_updated[0] > 0  # the first frame builds the field
    assert cost.known_voxels > 1000 and cost.recompute_voxels > 0
    assert 0 < cost.recompute_ms < math.inf and 0 < cost.query_points_per_s < math.inf
    assert cost.query_points == 2000 and 0 < cost.query_observed <= 1

    table = bench.esdf_table(cost)
    assert [c.header for c in table.columns] == ["quantity", "median", "p90"]
    rows = cost.rows()
    assert table.row_count == len(rows) == 9
    console = Console(record=True, width=250)
    console.print(table)
    text = console.export_text()
    assert "ESDF at 10 cm" in text and "80x60" in text
    assert "nvblox" in text and "RTX 3090" in text and "different hardware" in text
    labels = [r[0] for r in rows]
    for needle in ("ESDF off", "ESDF on", "carving ms", "update ms", "(carving + update)",
                   "voxels updated", "full recompute ms", "incremental update / full recompute",
                   "distance queries"):
        assert sum(needle in label for label in labels) == 1, needle
    for label, median, p90 in rows:
        assert label in text and math.isfinite(_cell_number(median)), label
        assert p90 == "-" or math.isfinite(_cell_number(p90)), label


def _write_frame_folder(folder: Path, frames: list[Frame]) -> None:
    """The 3DMatch layout that ``recon-ros bench --frames-dir`` reads."""
    folder.mkdir()
    np.savetxt(folder / "camera-intrinsics.txt", frames[0].camera.K)
    for i, f in enumerate(frames):
        stem = folder / f"frame-{i:06d}"
        cv2.imwrite(f"{stem}.depth.png", np.round(np.nan_to_num(f.depth) * 1000)
                    .astype(np.uint16))
        cv2.imwrite(f"{stem}.color.png", cv2.cvtColor(f.color, cv2.COLOR_RGB2BGR))
        np.savetxt(f"{stem}.pose.txt", f.T_world_cam)


def test_bench_prints_the_esdf_table(tmp_path: Path, device: str) -> None:
    _write_frame_folder(tmp_path / "frames", _tiny_frames(3))
    console = Console(record=True, width=250)
    bench.run_benchmarks(console, [0.1], tmp_path / "frames", repeats=3, device=device,
                         compile=False, growth_frames=0, latent=False, render=False,
                         poisson=False)
    text = console.export_text()
    assert "3 real frames from" in text and "TSDF + color integration" in text
    assert "Latent fusion" not in text and "render " not in text and "Poisson" not in text
    # Open3D on the same device, or a line saying why not (never silently on the CPU).
    o3d_device, note = bench.open3d_device(device)
    assert ("Open3D VoxelBlockGrid" in text) == (o3d_device is not None)
    assert note in text
    assert "ESDF at 5 cm: cost per 80x60 frame (3 frames" in text
    assert "(carving + update) / integrate off" in text and "nvblox" in text


def test_sync_audit_counts_every_frame(device: str) -> None:
    totals, ops, sites, _ = load_script("sync_audit").audit(3, 80, 60, 10.0, device)
    assert len(totals) == 3 and min(totals) > 0
    assert sum(ops.values()) == sum(totals[1:]) == sum(sites.values())
    assert any("boolean-mask indexing" in op for op in ops)
    assert all(site.startswith("recon_ros/") for site in sites)


def test_open3d_device_follows_the_torch_device() -> None:
    o3d = pytest.importorskip("open3d")
    assert bench.open3d_device("cpu") == ("CPU:0", "")
    device, note = bench.open3d_device("cuda:0")
    if o3d.core.cuda.is_available():
        assert device == "CUDA:0" and note.endswith("VoxelBlockGrid on CUDA:0")
    else:
        assert device is None
        assert "has no CUDA" in note and "not compared against Open3D on the CPU" in note
    assert bench.open3d_device("meta") == (
        None, "Open3D runs on CPU or CUDA, not meta: no comparison on meta")


def test_latent_bench_entry_point(device: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = bench_latent.main(["--device", device, "--width", "48", "--height", "36",
                                "--frames", "2"])
    printed = capsys.readouterr().out
    assert (result.width, result.height, result.frames, result.device) == (48, 36, 2, device)
    assert f"Latent fusion: ms per 48x36 frame (2 frames of the demo scene, {device})" in printed
    assert "hardware:" in printed
    for label, value in (("latent integrate", result.latent_integrate_ms),
                         ("latent decode", result.latent_decode_ms),
                         ("TSDF integrate", result.tsdf_integrate_ms)):
        assert label in printed and 0 < value < math.inf, label
    assert result.latent_integrate_ms <= result.latent_integrate_p95_ms
    assert result.integrate_ratio == result.latent_integrate_ms / result.tsdf_integrate_ms
    assert result.total_ratio == pytest.approx(
        result.integrate_ratio + result.latent_decode_ms / result.tsdf_integrate_ms)
    for label, ratio in (("latent integrate", result.integrate_ratio),
                         ("latent \\(integrate \\+ decode\\)", result.total_ratio)):
        assert re.search(rf"ratio {label} / TSDF integrate +│ +{ratio:.1f}x", printed), label


def _gpu_check(*args: str) -> subprocess.CompletedProcess[str]:
    """Run benchmarks/gpu_check.sh with this interpreter."""
    return subprocess.run(["bash", str(GPU_CHECK), "--python", sys.executable, *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_gpu_check_writes_every_section(tmp_path: Path, device: str) -> None:
    report = tmp_path / "check.md"
    _write_frame_folder(tmp_path / "frames", _tiny_frames(3))
    done = _gpu_check(
        "--device", device, "--out", str(report), "--tests", "test/core/test_block_hash.py",
        "--bench-args", "--voxel-sizes-cm 10 --repeats 2 --no-compile --growth-frames 0 "
                        "--no-esdf --no-latent --no-render --no-poisson --frames-dir "
                        + str(tmp_path / "frames"),
        "--latent-args", "--width 48 --height 36 --frames 2")
    assert done.returncode == 0, done.stdout + done.stderr
    text = report.read_text()
    assert text.startswith("# GPU check\n")
    assert f"- device under test: `{device}`" in text
    env = text.split("## Environment", 1)[1].split("\n## ", 1)[0]
    assert f"- torch {torch.__version__} " in env and "torch.cuda.is_available(): " in env
    assert "- open3d " in env
    assert re.search(r"Pytest result line: `\d+ passed in [0-9.]+s`", text), text
    bench_section = text.split("## recon-ros bench vs Open3D", 1)[1]
    assert "TSDF + color integration of 640x480 frames" in bench_section
    assert "recon_ros eager" in bench_section
    latent_section = text.split("## Latent fusion bench", 1)[1]
    assert "Latent fusion: ms per 48x36 frame (2 frames" in latent_section
    assert "latent decode" in latent_section
    summary = text.split("## Summary", 1)[1]
    for part in ("tests", "bench", "latent"):
        assert re.search(rf"^\| {part} \| passed \| \d+ \|$", summary, re.M), part
        assert (tmp_path / f"check.{part}.log").is_file()


def test_gpu_check_refuses_a_cuda_device_torch_cannot_see(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    report = tmp_path / "check.md"
    done = _gpu_check("--device", "cuda:0", "--out", str(report))
    assert done.returncode == 2
    assert "error: device cuda:0 requested but torch" in done.stderr
    assert "cannot see it" in done.stderr and "nothing was run" in done.stderr
    text = report.read_text()
    assert "## Environment" in text and "**error:** device cuda:0 requested" in text
    assert "## Tests" not in text and "## Summary" not in text


def test_plane_sweep_benchmark_smoke(device: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = load_script("plane_sweep").main(["--sizes", "160x120", "--frames", "40", "--refs",
                                            "2", "--every", "1", "--hypotheses", "32",
                                            "--device", device])
    assert len(rows) == 1 and rows[0]["refs"] == 2
    r = rows[0]
    assert 0.0 < r["coverage"] <= 1.0 and 0.0 <= r["frac_over_5cm"] <= 1.0
    assert 0.0 < r["median_cm"] <= r["p90_cm"] and r["ms_per_frame"] > 0
    assert "160x120" in capsys.readouterr().out


def test_stereo_mapping_benchmark_smoke(device: str, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    rows = load_script("stereo_mapping").main(["--sizes", "96x72", "--poses", "8", "--set",
                                               "num_depths=32", "--device", device])
    assert [r["method"] for r in rows] == ["stereo", "depth TSDF"]
    for r in rows:
        assert 0.0 <= r["f2"] <= r["f5"] <= 1.0 and r["accuracy_cm"] > 0
    assert rows[1]["f5"] > rows[0]["f5"]  # the exact depth is the ceiling
    assert "96x72" in capsys.readouterr().out


def test_meshers_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    rows = load_script("meshers").main(["--frames", "4", "--width", "64", "--height", "48",
                                        "--conditions", "clean"])
    assert sorted(r.method for r in rows) == ["marching cubes", "poisson"]
    for r in rows:
        assert 0.0 <= r.fscore[0.02] <= r.fscore[0.05] <= 1.0 and r.triangles > 0
    assert "Meshers vs ground truth" in capsys.readouterr().out


def test_render_benchmark_smoke() -> None:
    rows = load_script("render").main(["--frames", "6", "--every", "3", "--map-width", "80",
                                       "--map-height", "60", "--sizes", "64x48"])
    assert len(rows) == 1
    r = rows[0]
    assert r["ms"] > 0 and 0.0 < r["coverage"] <= 1.0 and 0.0 <= r["inliers"] <= 1.0
    assert 0.0 <= r["false_hits"] < 0.05 and r["median_err_m"] < 0.05


def test_bench_latent_render_and_poisson_sections(tmp_path: Path, device: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``recon-ros bench``'s latent, render and meshing sections (tiny sizes), in one run."""
    for name, value in (("LATENT_SIZE", (48, 36)), ("LATENT_FRAMES", 2), ("MAP_FRAMES", 6),
                        ("MAP_SIZE", (80, 60)), ("RENDER_SIZE", (64, 48)), ("RENDER_VIEWS", 2)):
        monkeypatch.setattr(bench, name, value)
    _write_frame_folder(tmp_path / "frames", _tiny_frames(2))
    console = Console(record=True, width=250)
    bench.run_benchmarks(console, [0.1], tmp_path / "frames", repeats=2, device=device,
                         compile=False, growth_frames=0, esdf=False)
    text = console.export_text()
    assert f"Latent fusion: ms per 48x36 frame (2 frames of the demo scene, {device})" in text
    ratio = re.search(r"ratio latent \(integrate \+ decode\) / TSDF integrate +│ +([0-9.]+)x",
                      text)
    assert ratio is not None and float(ratio.group(1)) > 0
    demo = r"the demo room mapped from 6 exact 80x60 frames \((\d+) blocks of 5 cm voxels\)"
    render = re.search(rf"render 64x48 of {demo}: median (\d+) ms per view \(2 views; "
                       r"([0-9.]+) samples/ray, depth within 5 cm on ([0-9.]+)% of the surface "
                       r"pixels, coverage ([0-9.]+)%\)", text)
    assert render is not None, text
    assert int(render.group(1)) > 0 and float(render.group(3)) > 1
    assert 50 < float(render.group(4)) <= 100 and 50 < float(render.group(5)) <= 100
    mesh = re.search(rf"mesh {demo}, whole map: marching cubes ([0-9.]+) s \((\d+) "
                     r"triangles\), screened Poisson ([0-9.]+) s \((\d+) triangles\), ratio "
                     r"(\d+)x", text)
    assert mesh is not None, text
    assert int(mesh.group(3)) > 100 and int(mesh.group(5)) > 100


def test_bench_map_sections_can_be_switched_off_one_by_one(device: str,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setattr(bench, "MAP_FRAMES", 4)
    monkeypatch.setattr(bench, "MAP_SIZE", (64, 48))
    console = Console(record=True, width=250)
    cost, times = bench.map_outputs_section(console, device, render=False, poisson=True)
    text = console.export_text()
    assert cost is None and times is not None and "render " not in text
    assert times.marching_cubes.num_faces > 0 and times.poisson_s > 0
    assert f"({times.poisson.num_faces} triangles)" in text


def test_refine_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    results = load_script("refine").main(["--frames", "3", "--width", "48", "--height", "36",
                                          "--conditions", "mult3", "--set", "steps=1"])
    assert list(results) == ["mult3"] and sorted(results["mult3"]) == ["off", "on"]
    for r in results["mult3"].values():
        assert 0.0 <= r["f2"] <= r["f5"] <= 1.0 and r["accuracy_m"] > 0
        assert r["render_mae_m"] >= 0 and r["render_median_m"] >= 0
    assert "Refinement off / on" in capsys.readouterr().out


def test_replay_many_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    out = load_script("replay_many").main(["--bags", "2", "--frames", "3", "--width", "48",
                                           "--height", "36", "--workers", "1", "2",
                                           "--voxel-size-m", "0.1"])
    assert [r["workers"] for r in out["runs"]] == [1, 2]
    for r in out["runs"]:
        assert r["ok"] == r["bags"] == 2
        assert r["bags_per_min"] > 0 and 0 < r["bag_median_s"] <= r["bag_max_s"]
        assert r["peak_rss_mb"] > 0
    assert "bags / min" in capsys.readouterr().out


def test_eval_rgb_cli_smoke(tmp_path: Path, shared_data: Path) -> None:
    """``recon-ros eval-rgb`` at tiny size: one fragment, one whole room of 12 poses and the
    real frames, every method per room / map in the tables and the JSON."""
    import json

    out = tmp_path / "eval_rgb.json"
    res = subprocess.run(
        [sys.executable, "-m", "recon_ros.cli", "eval-rgb", "--rooms", "1", "--map-rooms", "1",
         "--frames", "12", "--frames-dir", str(shared_data / "3dmatch-seq01"), "--json",
         str(out)], capture_output=True, text=True, timeout=900,
        env={**__import__("os").environ, "COLUMNS": "250"})
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert len(data["fragments"]["rooms"]) == 1
    assert [m["name"] for m in data["maps"]["maps"]] == ["room 3000000", "3dmatch-seq01"]
    for m in data["maps"]["maps"]:
        for method in ("rgb-average", "rgb-context", "plane-sweep", "depth-tsdf"):
            s = m["scores"][method]
            assert 0.0 <= s["fscore"]["0.05"] <= 1.0 and 0.0 <= s["marked_free"] <= 1.0
        # the ceiling: depth TSDF fusion (real frames: the reference is that depth, finer)
        assert m["scores"]["depth-tsdf"]["fscore"]["0.05"] > 0.8
    for row in data["fragments"]["rooms"]:
        assert set(row["marked_free"]) == {"atlas-average", "atlas-context", "plane-sweep",
                                           "depth-tsdf"}
    assert "whole maps" in res.stdout and "3dmatch-seq01" in res.stdout


def test_bench_rgb_section_smoke(monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    monkeypatch.setattr(bench, "COLOR_FRAMES", 10)
    console = Console(record=True, width=250)
    costs = bench.rgb_section(console, device)
    text = console.export_text()
    assert [c.method for c in costs] == ["plane-sweep", "atlas-average", "atlas-context"]
    for c in costs:
        assert c.keyframes == 10 and c.ms_per_keyframe > 0 and c.method in text
    # 8 keyframes per fragment, 4 shared: fragments at keyframes 8 and 10 (finish_color)
    assert [c.fragments for c in costs] == [0, 2, 2]


def test_occupancy_threshold_script_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script("occupancy_threshold")
    rows, chosen = script.main(["--rooms", "1", "--frames", "3", "--width", "48", "--height",
                                "36", "--thresholds", "0.1,0.5"])
    rules = {r.rule for r in rows}
    assert rules == {"TSDF fusion", "latent, TSDF sign rule", "p >= 0.1", "p >= 0.5"}
    assert len(rows) == len(script.CONDITIONS) * len(rules)
    for r in rows:
        for v in (r.obstacles_marked_free, r.free_marked_occupied, r.occupied_iou):
            assert 0.0 <= v <= 1.0
    # a lower threshold marks at least the voxels a higher one does: never more obstacles free
    by = {(r.condition, r.rule): r for r in rows}
    for cond in script.CONDITIONS:
        assert by[cond, "p >= 0.1"].obstacles_marked_free <= \
            by[cond, "p >= 0.5"].obstacles_marked_free + 1e-9
    assert chosen in (0.1, 0.5) and "chosen threshold" in capsys.readouterr().out


def test_occupancy_threshold_choice_rule() -> None:
    """The largest threshold as safe as TSDF fusion (+ margin) in every condition, else the
    smallest."""
    script = load_script("occupancy_threshold")
    Row = script.Row

    def rows(free_02_b: float) -> list:
        return [Row("a", "TSDF fusion", 0.02, 0.1, 0.5), Row("b", "TSDF fusion", 0.01, 0.1, 0.5),
                Row("a", "p >= 0.1", 0.01, 0.2, 0.4), Row("b", "p >= 0.1", 0.012, 0.2, 0.4),
                Row("a", "p >= 0.2", 0.02, 0.1, 0.5), Row("b", "p >= 0.2", free_02_b, 0.1, 0.5)]
    assert script.choose(rows(0.014), [0.1, 0.2], 0.005) == 0.2
    assert script.choose(rows(0.016), [0.1, 0.2], 0.005) == 0.1  # 0.2 unsafe in room b
    assert script.choose(rows(0.016), [0.1, 0.2], 0.0) == 0.1  # none qualifies: the smallest
