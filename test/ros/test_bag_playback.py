"""A rosbag2 played with ``recon-ros play`` (/clock) into recon_mapper with use_sim_time maps
the same scene as the offline replay of the same bag (``recon-ros replay``'s pipeline)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROS_SKIP_REASON, SynthSequence

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from recon_ros.core.config import MapperConfig
from recon_ros.io.map_files import read_nav2_map, read_ply
from recon_ros.io.synthetic_bag import write_scene_bag
from recon_ros.offline import CONFIG_FILE, GRID_FILE, MESH_FILE, replay_bag

from .helpers import Process, child_env
from .launch_spec import LAUNCH_DIR, module_constants

pytestmark = pytest.mark.parametrize(
    "mapper_run", [{"use_sim_time": "true", "map_dir": "live"}], indirect=True,
    ids=["mapper"])


def _shared(a: np.ndarray, b: np.ndarray, tol_m: float = 1e-3) -> float:
    """Fraction of the points of ``a`` that ``b`` also has (both rounded to ``tol_m``)."""
    qa = {tuple(p) for p in np.round(a / tol_m).astype(np.int64)}
    qb = {tuple(p) for p in np.round(b / tol_m).astype(np.int64)}
    return len(qa & qb) / max(1, len(qa))


def test_bag_playback_maps_like_offline_replay(mapper_run, sequence: SynthSequence,
                                               tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    info = write_scene_bag(bag, sequence.scene, sequence.camera, sequence.trajectory,
                           rate_hz=10.0)
    player = module_constants(LAUNCH_DIR / "bag_mapping.launch.py")["PLAYER_COMMAND"]
    cmd = [str(Path(sys.executable).parent / player[0]), *player[1:], str(bag),
           "--rate", "2.0"]
    h = mapper_run.harness
    h.wait_subscribed()
    proc = Process(cmd, child_env(mapper_run.domain_id, tmp_path / "log"),
                   tmp_path / "player.log")
    try:
        status = h.wait_status(lambda s: s["frames_integrated"] == info.n_frames, 120,
                               "every frame of the bag integrated")
        rc = proc.wait(60)  # the player exits by itself at the end of the bag
    finally:
        if proc.alive():
            proc.stop()
    log = proc.log()
    assert rc == 0, log[-3000:]
    assert f"published {info.n_frames * 4 + info.n_frames + 1} messages" in log, log[-3000:]
    cam = status["cameras"]["camera"]
    assert cam["drops"] == {} and cam["color_drops"] == {}, cam
    # the node's clock is the bag's (/clock), not the wall clock
    first, last = info.stamps_ns
    assert first <= status["stamp_ns"] <= last + 10**9

    assert h.call("save_map").success
    live = mapper_run.workdir / "live"
    offline = replay_bag(bag, tmp_path / "offline", MapperConfig.from_yaml(live / CONFIG_FILE))
    assert offline.frames_used == info.n_frames
    live_mesh = read_ply(live / MESH_FILE)
    offline_mesh = read_ply(tmp_path / "offline" / MESH_FILE)
    assert live_mesh.num_faces > 10_000
    assert abs(live_mesh.num_faces - offline_mesh.num_faces) <= 0.01 * offline_mesh.num_faces
    assert _shared(live_mesh.vertices, offline_mesh.vertices) > 0.99
    assert _shared(offline_mesh.vertices, live_mesh.vertices) > 0.99
    live_grid = read_nav2_map(live / GRID_FILE)
    offline_grid = read_nav2_map(tmp_path / "offline" / GRID_FILE)
    assert live_grid.data.shape == offline_grid.data.shape
    assert np.mean(live_grid.data == offline_grid.data) > 0.99


def test_looping_playback_restarts_time_and_keeps_mapping(mapper_run, sequence: SynthSequence,
                                                         tmp_path: Path) -> None:
    """``--loop``: /clock jumps back at every pass; the node clears TF and its queues (its
    stamps would otherwise go backwards) and integrates every pass again."""
    bag = tmp_path / "bag"
    info = write_scene_bag(bag, sequence.scene, sequence.camera, sequence.trajectory,
                           rate_hz=10.0)
    player = module_constants(LAUNCH_DIR / "bag_mapping.launch.py")["PLAYER_COMMAND"]
    cmd = [str(Path(sys.executable).parent / player[0]), *player[1:], str(bag),
           "--rate", "1.0", "--loop"]  # (2x: the known late-message race, docs/ros_node.md)
    h = mapper_run.harness
    before = h.status()["frames_integrated"]
    proc = Process(cmd, child_env(mapper_run.domain_id, tmp_path / "log"),
                   tmp_path / "player.log")
    try:
        h.wait_status(lambda s: s["frames_integrated"] >= before + 2 * info.n_frames + 2, 120,
                      "two more passes integrated")
    finally:
        rc = proc.stop()
    assert rc == 130, proc.log()[-2000:]  # interrupted, as a looping player is
    assert "time jumped back by" in mapper_run.proc.log()
