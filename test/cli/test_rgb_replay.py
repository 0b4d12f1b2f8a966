"""``recon-ros replay`` with ``fusion.method: rgb``: a color-only bag (real bag file, real
subprocess) mapped by Atlas fragments writes the usual map directory."""

from pathlib import Path

from recon_ros.core.mapper import Mapper
from recon_ros.io.map_files import read_nav2_map, read_ply
from recon_ros.io.synthetic import default_camera, make_random_scene, room_scan_trajectory
from recon_ros.io.synthetic_bag import COLOR_TOPIC, DEPTH_TOPIC, write_scene_bag
from recon_ros.models.data import EVALUATION_SEED_BASE

from .test_cli import run

FRAMES = 24
#: The shipped weights' voxel size; keyframes every 0.2 m or 7.5 deg (the defaults).
RGB_YAML = "volume: {voxel_size_m: 0.08}\nfusion: {method: rgb}\n"


def test_replay_maps_a_color_only_bag_with_atlas_fragments(tmp_path: Path) -> None:
    scene = make_random_scene(EVALUATION_SEED_BASE + 1)
    info = write_scene_bag(tmp_path / "bag", scene, default_camera(160, 120),
                           room_scan_trajectory(scene, 2 * FRAMES), storage="mcap",
                           depth=False)
    assert COLOR_TOPIC in info.topics and DEPTH_TOPIC not in info.topics
    config = tmp_path / "rgb.yaml"
    config.write_text(RGB_YAML)
    out = tmp_path / "map"
    result = run("replay", str(info.path), "--out", str(out), "--config", str(config),
                 "--max-frames", "1000")
    summary = result.stdout
    assert "color messages" in summary and "depth messages" not in summary
    assert "rgb: fragments predicted" in summary
    for name in ("mesh.ply", "map.yaml", "map.pgm", "map.pt", "config.yaml", "preview.png",
                 "esdf.npz", "renders.png"):
        assert (out / name).is_file(), name
    mapper = Mapper.load(out / "map.pt")
    assert mapper.config.fusion.method == "rgb" and mapper.rgb is not None
    # every keyframe was merged as part of a fragment (the last ones by finish_color)
    assert mapper.frames_integrated >= 8
    assert read_ply(out / "mesh.ply").num_faces > 0
    grid = read_nav2_map(out / "map.yaml")
    # the grid follows the merged TSDF: some free and some occupied cells (its quality is
    # measured by `recon-ros eval-rgb`)
    assert (grid.data == 0).any() and (grid.data == 100).any()
