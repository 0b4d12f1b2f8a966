"""``recon-ros replay`` with ``fusion.method: stereo``: color-only bags (sqlite3 and MCAP),
a bag whose depth is ignored, and a bag without color (real bag files, real subprocesses)."""

from pathlib import Path

import pytest

from recon_ros.core.mapper import Mapper
from recon_ros.evaluation import mesh_metrics
from recon_ros.io.map_files import read_nav2_map, read_ply
from recon_ros.io.synthetic import (
    default_camera,
    make_demo_scene,
    room_scan_trajectory,
    visible_surface_points,
)
from recon_ros.io.synthetic_bag import COLOR_TOPIC, DEPTH_TOPIC, write_scene_bag

from .test_cli import run

FRAMES = 20
STEREO_YAML = "fusion: {method: stereo}\nstereo: {image_scale: 1.0}\n"


def write_bag(path: Path, storage: str, depth: bool, color: bool) -> Path:
    scene = make_demo_scene()
    info = write_scene_bag(path, scene, default_camera(160, 120),
                           room_scan_trajectory(scene, FRAMES), storage=storage, depth=depth,
                           color=color)
    assert (DEPTH_TOPIC in info.topics) == depth and (COLOR_TOPIC in info.topics) == color
    return info.path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "stereo.yaml"
    path.write_text(STEREO_YAML)
    return path


@pytest.mark.parametrize("storage, depth", [("sqlite3", False), ("mcap", False),
                                            ("sqlite3", True)])
def test_replay_maps_a_bag_from_its_color_images(tmp_path: Path, config: Path, storage: str,
                                                 depth: bool) -> None:
    bag = write_bag(tmp_path / "bag", storage, depth=depth, color=True)
    out = tmp_path / "map"
    result = run("replay", str(bag), "--out", str(out), "--config", str(config))
    summary = result.stdout
    assert "color messages" in summary and "depth messages" not in summary
    assert f"{FRAMES} / {FRAMES}" in summary  # posed images / keyframes
    for name in ("mesh.ply", "map.yaml", "map.pgm", "map.pt", "config.yaml", "preview.png",
                 "esdf.npz"):
        assert (out / name).is_file(), name
    mapper = Mapper.load(out / "map.pt")
    assert mapper.config.fusion.method == "stereo"
    assert mapper.frames_integrated >= FRAMES - 3
    assert (read_nav2_map(out / "map.yaml").data >= 0).sum() > 100
    scene = make_demo_scene()
    truth = visible_surface_points(scene, room_scan_trajectory(scene, FRAMES),
                                   default_camera(160, 120), stride=4, max_range_m=5.0)
    metrics = mesh_metrics(read_ply(out / "mesh.ply"), truth, (0.05,))
    # a sanity bound (the quality is measured in test/core/test_stereo_mode.py): 20 frames
    # going round the room, measured F@5cm 0.51, precision 0.72
    assert metrics.fscore[0.05] >= 0.4 and metrics.precision[0.05] >= 0.65, metrics


def test_replay_of_a_bag_without_color_in_stereo_mode_fails_clearly(tmp_path: Path,
                                                                    config: Path) -> None:
    bag = write_bag(tmp_path / "bag", "sqlite3", depth=True, color=False)
    result = run("replay", str(bag), "--out", str(tmp_path / "map"), "--config", str(config),
                 check=False)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "no color image topic in bag" in message
    assert "fusion.method: stereo" in message and DEPTH_TOPIC in message  # lists the topics
    assert not (tmp_path / "map").exists()
