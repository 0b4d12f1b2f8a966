"""``recon-ros replay`` scores the map against every n-th frame before fusing it (map quality:
rendered depth vs measured depth), in the summary, quality.csv and quality.png (real bag, real
subprocess, files read back)."""

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from recon_ros.io.quality_report import COLUMNS
from recon_ros.io.synthetic import default_camera, make_demo_scene, room_scan_trajectory
from recon_ros.io.synthetic.trajectory import Trajectory
from recon_ros.io.synthetic_bag import write_scene_bag

from .test_cli import run

FRAMES = 16


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo room scanned twice round (the second loop revisits what the first mapped)."""
    scene = make_demo_scene()
    loop = room_scan_trajectory(scene, FRAMES // 2)
    twice = Trajectory(np.concatenate((loop.base_xy_yaw, loop.base_xy_yaw)),
                       np.concatenate((loop.pitch_rad, loop.pitch_rad)),
                       np.arange(FRAMES, dtype=np.int64) * 100_000_000, loop.rig)
    return write_scene_bag(tmp_path_factory.mktemp("bag") / "bag", scene,
                           default_camera(160, 120), twice).path


def test_replay_writes_the_map_quality_of_every_nth_frame(bag: Path, tmp_path: Path) -> None:
    summary = run("replay", str(bag), "--out", str(tmp_path), "--voxel-size-m", "0.08",
                  "--quality-every", "2").stdout
    assert "map quality, 7 frames" in summary, summary  # frames 2, 4, ..., 14 (0: empty map)
    with open(tmp_path / "quality.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    assert [int(r["frame"]) for r in rows] == list(range(2, FRAMES, 2))
    explained = [float(r["explained"]) for r in rows]
    assert all(0.0 <= e <= 1.0 for e in explained)
    # the second loop sees exactly what the first one mapped: the map explains most of it
    # (noise-free renders) and more than it explained of the first loop's new views
    second = explained[len(explained) // 2:]
    assert min(second) > 0.8 and sum(second) / len(second) > sum(explained[:3]) / 3
    inliers = [float(r["inlier_ratio"]) for r in rows[len(rows) // 2:]]
    assert min(inliers) > 0.85  # (the rest: depth edges, where the first hit differs)
    plot = cv2.imread(str(tmp_path / "quality.png"))
    assert plot is not None and plot.shape == (240, 640, 3)
    # renders.png: 4 recorded poses (color) above 4 orbit views (shaded), 160x120 tiles
    renders = cv2.imread(str(tmp_path / "renders.png"))
    assert renders is not None and renders.shape == (240, 640, 3)
    surface = renders.any(axis=2)
    assert surface[:120].mean() > 0.6  # the map explains the recorded views
    assert surface[120:].mean() > 0.2  # and shows surfaces from the orbit

def test_quality_can_be_switched_off_and_a_stale_report_goes(bag: Path, tmp_path: Path
                                                             ) -> None:
    run("replay", str(bag), "--out", str(tmp_path), "--voxel-size-m", "0.08", "--max-frames",
        "4", "--quality-every", "1")
    assert (tmp_path / "quality.csv").exists()
    summary = run("replay", str(bag), "--out", str(tmp_path), "--voxel-size-m", "0.08",
                  "--quality-every", "0", "--max-frames", "4").stdout  # the same map dir
    assert "map quality" not in summary
    assert not (tmp_path / "quality.csv").exists() and not (tmp_path / "quality.png").exists()
    summary = run("replay", str(bag), "--out", str(tmp_path), "--voxel-size-m", "0.08",
                  "--render-views", "0", "--max-frames", "4").stdout
    assert not (tmp_path / "renders.png").exists()
