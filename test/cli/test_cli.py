"""The recon-ros command line end to end, as a user runs it (real subprocesses, real files)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recon_ros.core.mapper import Mapper
from recon_ros.io.map_files import (
    EsdfMap,
    ply_has_faces,
    read_esdf,
    read_nav2_map,
    read_ply,
    read_points,
)

EXE = [sys.executable, "-m", "recon_ros.cli"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=900, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"recon-ros {' '.join(args)} failed (exit code {out.returncode}, "
                             f"negative: killed by that signal):\n{out.stdout}\n{out.stderr}")
    return out


def check_esdf_file(map_dir: Path) -> EsdfMap:
    """``map_dir/esdf.npz`` must exist and hold, at every voxel centre, the distance that the
    map saved next to it (``map.pt``) returns; returns the file's contents."""
    esdf = read_esdf(map_dir / "esdf.npz")  # FileNotFoundError: a missing file fails the test
    assert esdf.num_voxels > 1000 and esdf.obstacle.any() and not esdf.obstacle.all()
    mapper = Mapper.load(map_dir / "map.pt")
    assert esdf.voxel_size_m == mapper.config.volume.voxel_size_m
    query = mapper.distance(esdf.centers())
    assert bool(query.observed.all())
    np.testing.assert_allclose(query.distance.numpy(), esdf.distance, atol=1e-4)
    assert np.isfinite(esdf.slice.distance).sum() > 100
    return esdf


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "demo"
    run("synth", str(out), "--frames", "24", "--width", "320", "--height", "240",
        "--storage", "mcap", "--kinect-noise")
    return out


def test_synth_writes_bag_and_ground_truth(dataset):
    assert (dataset / "bag" / "metadata.yaml").is_file()
    assert any(p.suffix == ".mcap" for p in (dataset / "bag").iterdir())
    points = dataset / "ground_truth" / "points.ply"
    assert not ply_has_faces(points) and len(read_points(points)) > 1000
    assert read_nav2_map(dataset / "ground_truth" / "map.yaml").data.size > 0
    meta = json.loads((dataset / "scene.json").read_text())
    assert meta["frames"] == 24 and meta["noise"]["kinect_axial"] is True


def test_replay_then_eval_scores_the_map_against_ground_truth(dataset, tmp_path):
    maps = tmp_path / "maps"
    out = run("replay", str(dataset / "bag"), "--out", str(maps), "--voxel-size-m", "0.04")
    assert "frames integrated" in out.stdout
    for name in ("mesh.ply", "map.yaml", "map.pgm", "map.pt", "config.yaml", "preview.png",
                 "esdf.npz"):
        assert (maps / name).is_file(), name
    check_esdf_file(maps)
    assert "ESDF memory MiB / distance assignments" in out.stdout
    mesh = read_ply(maps / "mesh.ply")
    assert mesh.num_faces > 1000 and mesh.colors is not None
    metrics_file = tmp_path / "metrics.json"
    out = run("eval", str(maps / "mesh.ply"), "--gt", str(dataset / "ground_truth" / "points.ply"),
              "--thresholds-cm", "8", "--gt-map", str(dataset / "ground_truth" / "map.yaml"),
              "--pred-map", str(maps / "map.yaml"), "--json-out", str(metrics_file))
    metrics = json.loads(metrics_file.read_text())
    # F-score at 2 voxels (8 cm) against the exact surface.
    assert float(metrics["mesh"]["F-score @ 8 cm"]) >= 0.95, out.stdout
    assert metrics["grid"]["occupied_iou"] > 0.6
    assert metrics["grid"]["obstacles_marked_free"] < 0.05


def test_demo_writes_and_announces_the_esdf(tmp_path):
    out = run("demo", "--out", str(tmp_path / "demo"), "--frames", "4")
    esdf = check_esdf_file(tmp_path / "demo" / "map")
    announced = re.search(r"distance field esdf\.npz: (\d+) observed voxels \((\d+) obstacle\)",
                          out.stdout)
    assert announced, out.stdout
    assert int(announced[1]) == esdf.num_voxels
    assert int(announced[2]) == int(esdf.obstacle.sum())


def test_errors_are_one_clear_line_and_exit_code_2(tmp_path):
    out = run("replay", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), check=False)
    assert out.returncode == 2 and "error" in out.stderr.lower()
    assert "Traceback" not in out.stderr
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("volume:\n  voxel_size_m: -1\n")
    out = run("replay", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(cfg),
              check=False)
    assert out.returncode == 2 and "volume.voxel_size_m" in out.stderr


def test_replay_of_a_bag_without_images_lists_its_topics(shared_data, tmp_path):
    out = run("replay", str(shared_data / "rosbags" / "nav2_turtlebot.mcap"), "--out",
              str(tmp_path / "o"), check=False)
    assert out.returncode == 2
    assert "/amcl_pose" in out.stderr and "/tf" in out.stderr


@pytest.fixture(scope="module")
def dynamic_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "dynamic"
    run("synth", str(out), "--scene", "dynamic", "--frames", "72", "--width", "160",
        "--height", "120", "--kinect-noise")
    return out


def _replay_and_score(dataset: Path, out: Path, config: dict | None = None) -> tuple[str, dict]:
    args = ["replay", str(dataset / "bag"), "--out", str(out / "maps")]
    out.mkdir(parents=True, exist_ok=True)
    if config:
        cfg = out / "config.yaml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        args += ["--config", str(cfg)]
    summary = run(*args).stdout
    gt = dataset / "ground_truth"
    metrics_file = out / "metrics.json"
    run("eval", str(out / "maps" / "mesh.ply"), "--gt", str(gt / "points.ply"),
        "--thresholds-cm", "5", "--pred-map", str(out / "maps" / "map.yaml"),
        "--changes", str(gt), "--json-out", str(metrics_file))
    return summary, json.loads(metrics_file.read_text())["changes"]


def test_replay_of_a_changing_scene_clears_what_left(dynamic_dataset, tmp_path):
    """Objects stand during the first of two identical passes and are gone in the second;
    a crate arrives in the second. Scored by `recon-ros eval --changes` against the exact
    ground truth, next to the same replay without free-space clearing (the old behaviour)."""
    summary, changes = _replay_and_score(dynamic_dataset, tmp_path / "clearing")
    assert float(changes["removed surface kept @ 5 cm"]) < 0.05
    assert float(changes["removed footprint still occupied"]) < 0.05
    assert float(changes["added surface recall @ 5 cm"]) > 0.85
    assert float(changes["static F-score @ 5 cm"]) >= 0.95
    assert "blocks released" in summary and "2D cells cleared" in summary
    cleared = next(line for line in summary.splitlines() if "2D cells cleared" in line)
    assert int(cleared.split()[-2]) > 0
    _, baseline = _replay_and_score(dynamic_dataset, tmp_path / "no_clearing",
                                    {"integration": {"clear_free_space": False}})
    assert float(baseline["removed surface kept @ 5 cm"]) > 0.3
    assert float(baseline["removed footprint still occupied"]) > 0.3
