"""recon_mapper as a process, fed synthetic frames and TF over DDS: mesh, occupancy,
incremental updates, save/load/reset, parameter validation, shutdown with autosave."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from .conftest import ROS_SKIP_REASON, SynthSequence, surface_distance

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from recon_ros.core.mapper import Mapper
from recon_ros.core.occupancy_grid import FREE, OCCUPIED, UNKNOWN
from recon_ros.io.map_files import read_nav2_map, read_ply
from recon_ros.io.synthetic import backproject_depth, gt_occupancy_grid
from recon_ros.offline import CHECKPOINT_FILE, CONFIG_FILE, GRID_FILE, MESH_FILE
from recon_ros.ros import parameters as P
from recon_ros.ros.conversions import grid_from_msg, points_from_cloud, stamp_ns

from .helpers import mesh_state, mesh_vertices, wait_for
from .launch_spec import REPO, module_constants

EXTRA = {"map_dir": "maps", "autosave_dir": "autosave"}
pytestmark = pytest.mark.parametrize("mapper_run", [EXTRA], indirect=True, ids=["mapper"])


def _dilate(a: np.ndarray) -> np.ndarray:
    p = np.pad(a, 1)
    h, w = a.shape
    return np.logical_or.reduce([p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                                 for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def _publish_pass(run, seq: SynthSequence, indices: list[int], t0: int) -> list[int]:
    """Publish frames ``indices`` at stamps t0, t0 + 0.1 s, ...; returns the stamps."""
    h = run.harness
    h.wait_subscribed()
    h.publish_static(seq.tf_static(t0))
    stamps = []
    done = h.status()["frames_integrated"]
    for k, i in enumerate(indices):
        stamp = t0 + k * 100_000_000
        h.publish_frame(seq.frames[i], stamp, seq.tf(i, stamp))
        stamps.append(stamp)
        # one frame at a time keeps the queue short and the test independent of speed
        h.wait_integrated(done + k + 1)
    return stamps


T0 = 1_700_000_000_000_000_000


def test_parameters_declared_from_the_table(mapper_run) -> None:
    names = set(mapper_run.harness.list_parameters())
    table = P.by_name()
    assert set(table) <= names, f"not declared: {sorted(set(table) - names)}"
    values = mapper_run.harness.get_parameters(sorted(table))
    from .conftest import FAST
    expected = P.defaults()
    expected.update({k: type(expected[k])(v) for k, v in FAST.items()})
    expected.update(EXTRA)
    assert values == expected


def test_outputs_are_the_rviz_config_topics(mapper_run) -> None:
    import yaml

    name = module_constants(REPO / "launch/mapping.launch.py")["MAPPER_NAME"]
    h = mapper_run.harness
    published = wait_for(lambda: h.graph(name, "publisher"), 30, "the mapper's publishers")
    rviz = yaml.safe_load((REPO / "config/recon_ros.rviz").read_text())
    topics = {d[key]["Value"] for d in rviz["Visualization Manager"]["Displays"]
              for key in ("Topic", "Update Topic") if key in d}
    assert topics and topics <= published, (topics, published)
    services = h.graph(name, "service")
    assert {f"/{name}/{s}" for s in ("save_map", "load_map", "reset")} <= services


def test_maps_synthetic_frames(mapper_run, sequence: SynthSequence) -> None:
    h = mapper_run.harness
    stamps = _publish_pass(mapper_run, sequence, list(range(len(sequence))), T0)
    status = h.wait_integrated(len(sequence))
    cam = status["cameras"]["camera"]
    assert cam["drops"] == {} and cam["color_drops"] == {}, cam

    state = mesh_state(h.wait_mesh_settled())
    vertices = mesh_vertices(state)
    assert len(state) > 100 and len(vertices) > 10_000
    err = surface_distance(sequence.scene, vertices)
    assert np.median(err) < 0.01 and np.percentile(err, 99) < 0.05, (
        np.median(err), np.percentile(err, 99))

    # Occupancy: the grid of all frames against ground truth.
    msg = h.held_grid(len(sequence))
    assert msg.header.frame_id == "map"
    grid = grid_from_msg(msg)
    res, (ox, oy) = grid.resolution_m, grid.origin_xy
    gt = gt_occupancy_grid(sequence.scene, res, grid.min_height_m,
                           P.defaults()["occupancy.max_height_m"],
                           bounds=(ox, oy, ox + grid.width * res, oy + grid.height * res))
    occupied, free = grid.data == OCCUPIED, grid.data == FREE
    gt_occupied = gt.data == OCCUPIED
    assert occupied.sum() > 500 and free.sum() > 2000
    assert _dilate(gt_occupied)[occupied].mean() > 0.97  # occupied cells are real obstacles
    solid_inside = gt_occupied & ~_dilate(~gt_occupied)  # obstacle cells away from edges
    assert (free & solid_inside).sum() == 0  # no obstacle is marked free

    cloud = wait_for(lambda: h.cloud_msgs and stamp_ns(h.cloud_msgs[-1].header.stamp)
                     == stamps[-1] and h.cloud_msgs[-1], 30, "the occupied-voxel cloud")
    points = points_from_cloud(cloud)
    assert len(points) > 1000
    # occupied voxels lie in solid space (up to the truncation band behind the surface)
    assert np.percentile(sequence.scene.sdf_np(points.astype(np.float64)), 99) < 0.05


def test_second_pass_resends_only_changed_blocks(mapper_run, sequence: SynthSequence) -> None:
    h = mapper_run.harness
    before = h.wait_mesh_settled()
    state_before = mesh_state(before)
    i = 3
    _publish_pass(mapper_run, sequence, [i], T0 + 10 * 10**9)
    after = h.wait_mesh_settled()
    new = after[len(before):]
    assert new, "no marker update after the second pass"
    changed = mesh_state(new)
    assert 0 < len(changed) < 0.6 * len(state_before), (len(changed), len(state_before))
    assert set(changed) <= set(state_before)  # same blocks, same (stable) marker ids
    # every re-sent block is near what the new frame saw: within a block diagonal plus the
    # truncation band of its surface points (the -x/-y/-z neighbours of a changed block are
    # re-meshed too)
    frame = sequence.frames[i]
    seen = backproject_depth(frame.depth, frame.camera, frame.T_world_cam)[::5]
    d = P.defaults()
    reach = (d["volume.voxel_size_m"] * (d["volume.block_size"] * 3**0.5
                                         + d["integration.truncation_voxels"]))
    for triangles in changed.values():
        corners = triangles.reshape(-1, 3)[::3]
        gap = np.min(np.linalg.norm(seen[:, None, :] - corners[None], axis=2))
        assert gap < reach, (gap, reach)
    # the markers not re-sent keep their triangles
    state_after = mesh_state(after)
    for marker_id in set(state_before) - set(changed):
        np.testing.assert_array_equal(state_after[marker_id], state_before[marker_id])


def test_save_reset_load(mapper_run) -> None:
    h, workdir = mapper_run.harness, mapper_run.workdir
    state_before = mesh_state(h.wait_mesh_settled())
    n_frames = h.status()["frames_integrated"]
    grid_before = grid_from_msg(h.latest_grid())

    response = h.call("save_map")
    assert response.success, response.message
    directory = workdir / "maps"
    for name in [MESH_FILE, GRID_FILE, CHECKPOINT_FILE, CONFIG_FILE, "map.pgm"]:
        assert (directory / name).is_file(), name
    ply = read_ply(directory / MESH_FILE)
    _assert_same_points(ply.vertices, mesh_vertices(state_before))
    nav2 = read_nav2_map(directory / GRID_FILE)  # map_server's trinary rule
    np.testing.assert_array_equal(nav2.data, grid_before.data)
    assert nav2.origin_xy == pytest.approx(grid_before.origin_xy)
    offline = Mapper.load(directory / CHECKPOINT_FILE)
    assert offline.frames_integrated == n_frames
    _assert_same_points(offline.mesh().vertices, ply.vertices)

    n_mesh, n_grid = len(h.mesh_msgs), len(h.grid_msgs)
    assert h.call("reset").success
    h.wait_status(lambda s: s["frames_integrated"] == 0 and s["map"]["blocks"] == 0, 30,
                  "an empty map")
    wait_for(lambda: len(h.mesh_msgs) > n_mesh, 30, "the DELETEALL marker")
    assert mesh_state(h.mesh_msgs) == {}
    empty = grid_from_msg(h.latest_grid(after=n_grid))
    assert np.all(empty.data == UNKNOWN)

    n_grid = len(h.grid_msgs)
    response = h.call("load_map")
    assert response.success, response.message
    h.wait_status(lambda s: s["frames_integrated"] == n_frames, 30, "the loaded map")
    _assert_same_points(mesh_vertices(mesh_state(h.wait_mesh_settled())),
                        mesh_vertices(state_before))
    loaded = grid_from_msg(h.latest_grid(after=n_grid))
    np.testing.assert_array_equal(loaded.data, grid_before.data)


def _assert_same_points(a: np.ndarray, b: np.ndarray, tol: float = 1e-5) -> None:
    """Equal as sets of points (order and duplicates aside)."""
    ua = np.unique(np.round(np.asarray(a, np.float64) / tol).astype(np.int64), axis=0)
    ub = np.unique(np.round(np.asarray(b, np.float64) / tol).astype(np.int64), axis=0)
    assert ua.shape == ub.shape and np.array_equal(ua, ub), (ua.shape, ub.shape)


def test_invalid_parameters_are_rejected(mapper_run) -> None:
    h = mapper_run.harness
    bad = {
        "volume.voxel_size_m": (-1.0, "volume.voxel_size_m=-1.0 is invalid"),
        "integration.max_depth_m": (0.05, "must be > min_depth_m"),
        "integration.weighting": ("median", "must be one of"),
        "mesh_rate_hz": (-1.0, "mesh_rate_hz=-1.0 is invalid"),
        "tf_timeout_s": (float("nan"), "tf_timeout_s=nan is invalid"),
        "queue_size": ("ten", ""),  # wrong type: rejected by rclpy
        "color_transport": ("compressed", "read-only"),
    }
    for name, (value, reason) in bad.items():
        (result,) = h.set_parameters({name: value})
        assert not result.successful, name
        assert reason in result.reason, (name, result.reason)
    values = h.get_parameters(sorted(bad))
    assert values == {k: v for k, v in P.defaults().items() if k in bad} | {
        "mesh_rate_hz": 5.0}

    # A valid change of a map parameter waits for the next reset, then reaches the core.
    (result,) = h.set_parameters({"occupancy.max_height_m": 1.0})
    assert result.successful, result.reason
    h.wait_status(lambda s: s["config_pending"], 30, "config_pending")
    assert h.call("reset").success
    h.wait_status(lambda s: not s["config_pending"], 30, "the new config applied")
    assert h.call("save_map").success
    import yaml
    config = yaml.safe_load((mapper_run.workdir / "maps" / CONFIG_FILE).read_text())
    assert config["occupancy"]["max_height_m"] == 1.0
    (result,) = h.set_parameters({"mesh_rate_hz": 4.0})  # node parameters apply at once
    assert result.successful


def test_sigint_stops_cleanly_and_autosaves(mapper_run) -> None:
    assert mapper_run.proc.alive()
    rc = mapper_run.proc.stop(signal.SIGINT)
    assert rc == 0, mapper_run.proc.log()[-3000:]
    for name in (MESH_FILE, GRID_FILE, CHECKPOINT_FILE, CONFIG_FILE):
        assert (mapper_run.workdir / "autosave" / name).is_file(), name
    assert "Traceback" not in mapper_run.proc.log()
