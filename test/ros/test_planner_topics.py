"""recon_mapper's planner outputs as a process over DDS, read the way Nav2 and RViz read them:
``map`` + ``map_updates`` (StaticLayer QoS, late joiners included), ``~/costmap`` and
``~/local_costmap`` (Nav2 costs of that grid), ``~/esdf_slice`` (distance field points),
``esdf.enabled: false`` (no slice, costmaps still published, no errors), and the Nav2 example
(config/nav2_costmap.yaml, docs/nav2.md) against the running node.

One pass of the synthetic room: the grid grows during the first frames (full maps), then keeps
its size while the last frames still change cells (updates only)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import yaml

from .conftest import ROS_SKIP_REASON, SynthSequence

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from map_msgs.msg import OccupancyGridUpdate
from nav_msgs.msg import OccupancyGrid
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField

from recon_ros.core.costmap import INSCRIBED, LETHAL, UNKNOWN, costmap
from recon_ros.core.occupancy_grid import OCCUPIED, OccupancyGrid2D
from recon_ros.ros import parameters as P
from recon_ros.ros.conversions import HeldGrid, cloud_fields, grid_from_msg, stamp_ns

from .helpers import RELIABLE, VENV_BIN, Harness, Process, child_env, next_domain_id, wait_for
from .launch_spec import REPO, mapper_command, module_constants

#: What Nav2's StaticLayer subscribes the map with (map_subscribe_transient_local: true).
STATIC_LAYER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: The same, keeping every map until the test has read it.
EVERY_MAP_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
LOCAL_SIZE_M = 2.0
EXTRA = {"esdf_rate_hz": "5.0", "costmap.local_size_m": str(LOCAL_SIZE_M)}
#: One mapper process for the module's tests that take ``mapper_run``.
PLANNER = pytest.mark.parametrize("mapper_run", [EXTRA], indirect=True, ids=["planner"])
T0 = 1_700_000_000_000_000_000
DEFAULTS = P.defaults()
MAPPER_NAME = module_constants(REPO / "launch/mapping.launch.py")["MAPPER_NAME"]
#: docs/nav2.md's alternative 2: the grid under another name.
REMAP_GRID = ["-r", "map:=recon_map", "-r", "map_updates:=recon_map_updates"]


class Recorder:
    """Messages of one mapper topic, received by a subscription of the harness's node."""

    def __init__(self, h: Harness, topic: str, msg_type: type, qos: QoSProfile,
                 log: list[Any] | None = None) -> None:
        self.topic = topic
        self.msgs: list[Any] = []
        self._log = log
        self._lock = threading.Lock()
        name = topic if topic.startswith("/") else f"{h.mapper}/{topic}"
        self.sub = h.node.create_subscription(msg_type, name, self._on_msg, qos)

    def _on_msg(self, msg: Any) -> None:
        with self._lock:
            self.msgs.append(msg)
            if self._log is not None:
                self._log.append(msg)

    def matched(self) -> bool:
        return self.sub.get_publisher_count() > 0

    def stamped(self, stamp: int, timeout: float = 30.0) -> Any:
        """The latest message whose header stamp is ``stamp`` (waits for it)."""
        def find() -> Any:
            with self._lock:
                return next((m for m in reversed(self.msgs) if stamp_ns(m.header.stamp) == stamp),
                            None)
        return wait_for(find, timeout, f"{self.topic} stamped {stamp}")


@pytest.fixture(scope="module")
def grid_log() -> list[Any]:
    """~/map and ~/map_updates messages in the order the test received them."""
    return []


@pytest.fixture(scope="module")
def recorders(mapper_run, grid_log: list[Any]) -> dict[str, Recorder]:
    """Subscriptions made before any frame is sent (a map that never missed an update)."""
    h = mapper_run.harness
    out = {
        "map": Recorder(h, h.grid_topic, OccupancyGrid, EVERY_MAP_QOS, grid_log),
        "map_updates": Recorder(h, f"{h.grid_topic}_updates", OccupancyGridUpdate, RELIABLE,
                                grid_log),
        "esdf_slice": Recorder(h, "esdf_slice", PointCloud2, RELIABLE),
        "local_costmap": Recorder(h, "local_costmap", OccupancyGrid, STATIC_LAYER_QOS),
    }
    wait_for(lambda: all(r.matched() for r in out.values()), 30, "the planner topics")
    return out


@pytest.fixture(scope="module")
def mapped(mapper_run, recorders: dict[str, Recorder], sequence: SynthSequence,
           grid_log: list[Any]) -> list[int]:
    """One pass of the room, a frame at a time; returns the stamps once every output of the
    last frame is published."""
    h = mapper_run.harness
    h.wait_subscribed()
    h.publish_static(sequence.tf_static(T0))
    stamps = []
    for i in range(len(sequence)):
        stamp = T0 + i * 100_000_000
        h.publish_frame(sequence.frames[i], stamp, sequence.tf(i, stamp))
        stamps.append(stamp)
        h.wait_integrated(i + 1)
    n = len(sequence)
    status = h.wait_status(lambda s: s["occupancy_frames_integrated"] == n
                           and s["planning_frames_integrated"] == n, 60,
                           "every output of the pass")
    # The status and the grid travel on different topics, and so do the map and its updates
    # (an update can overtake the map it applies to): wait until what a subscriber holds is
    # the final grid before anyone reads the log.
    final = status["grid_stamp_ns"]
    wait_for(lambda: _holds(grid_log, final), 30, f"the grid stamped {final} held")
    return stamps


def _holds(log: list[Any], stamp: int) -> bool:
    """Whether a subscriber fed ``log`` holds the grid stamped ``stamp``."""
    held = HeldGrid()
    for msg in list(log):
        held.add(msg)
    return held.msg is not None and stamp_ns(held.msg.header.stamp) == stamp


def _held_grid(log: list[Any]) -> tuple[OccupancyGrid, np.ndarray, int]:
    """What a subscriber of ~/map and ~/map_updates holds (conversions.HeldGrid, fed in
    arrival order): the last full map, the cells held now, and how many updates were applied
    in all."""
    held = HeldGrid()
    base: OccupancyGrid | None = None
    applied = 0
    for msg in list(log):
        for grid in held.add(msg):
            if grid is msg:
                base = grid
            else:
                applied += 1
    assert base is not None and held.msg is not None, "no map received"
    return base, grid_from_msg(held.msg).data, applied


def _as_grid(base: OccupancyGrid, cells: np.ndarray) -> OccupancyGrid2D:
    """The grid the node holds: ``cells`` on ``base``'s geometry, at the node's resolution
    (the message carries it as float32)."""
    grid = grid_from_msg(base)
    assert grid.resolution_m == pytest.approx(DEFAULTS["volume.voxel_size_m"])
    return OccupancyGrid2D(cells, DEFAULTS["volume.voxel_size_m"], grid.origin_xy,
                           grid.min_height_m, grid.max_height_m)


def _nav2_costs(grid: OccupancyGrid2D, center_xy: tuple[float, float] | None = None,
                size_m: float | None = None) -> OccupancyGrid2D:
    return costmap(grid, DEFAULTS["esdf.robot_radius_m"], DEFAULTS["esdf.inflation_radius_m"],
                   DEFAULTS["esdf.cost_scaling_factor"], center_xy, size_m)


@PLANNER
def test_map_updates_reproduce_the_full_map(mapper_run, mapped: list[int],
                                            recorders: dict[str, Recorder],
                                            grid_log: list[Any]) -> None:
    h = mapper_run.harness
    base, cells, applied = _held_grid(grid_log)
    # frames that changed cells without growing the grid came as updates (when the last
    # frames grew it, the last full map is newer than them). On a loaded machine the node may
    # publish the grid only a few times in the pass, each time after growth: then no update
    # was owed, and every full map of a new stamp must have a new size or origin.
    geometry: dict[int, tuple] = {}
    for m in grid_log:
        if isinstance(m, OccupancyGrid):
            geometry.setdefault(stamp_ns(m.header.stamp),
                                (m.info.width, m.info.height, m.info.origin.position.x,
                                 m.info.origin.position.y))
    shapes = list(geometry.values())
    assert applied >= 1 or all(a != b for a, b in zip(shapes, shapes[1:])), \
        [type(m).__name__ for m in grid_log]
    updates = [m for m in grid_log if isinstance(m, OccupancyGridUpdate)]
    assert all(0 < u.width * u.height == len(u.data) for u in updates)

    # A late joiner with the StaticLayer's QoS gets the transient-local map at once, and the
    # node sends the full map again for it: what a subscriber holding map + updates holds.
    late = Recorder(h, h.grid_topic, OccupancyGrid, STATIC_LAYER_QOS)
    full = late.stamped(mapped[-1])
    assert (full.info.width, full.info.height) == (base.info.width, base.info.height)
    assert full.info.origin == base.info.origin and full.info.resolution == base.info.resolution
    np.testing.assert_array_equal(grid_from_msg(full).data, cells)
    # the other subscribers got that full map too: it replaces what they hold
    wait_for(lambda: any(isinstance(m, OccupancyGrid) and stamp_ns(m.header.stamp) == mapped[-1]
                         for m in grid_log), 30, "the full map on the first subscription")


@PLANNER
def test_global_costmap_is_nav2_inflation_of_the_map(mapper_run, mapped: list[int],
                                                     grid_log: list[Any]) -> None:
    base, cells, _ = _held_grid(grid_log)
    late = Recorder(mapper_run.harness, "costmap", OccupancyGrid, STATIC_LAYER_QOS)
    msg = wait_for(lambda: late.msgs and late.msgs[-1], 30, "the latched costmap")
    assert stamp_ns(msg.header.stamp) == mapped[-1] and msg.header.frame_id == "map"
    assert msg.info.origin == base.info.origin and msg.info.resolution == base.info.resolution
    received = grid_from_msg(msg).data
    assert received.shape == cells.shape
    np.testing.assert_array_equal(received, _nav2_costs(_as_grid(base, cells)).data)
    assert np.array_equal(received == LETHAL, cells == OCCUPIED)
    values = set(np.unique(received).tolist())
    assert {UNKNOWN, 0, INSCRIBED, LETHAL} <= values and values <= {UNKNOWN, *range(101)}
    assert any(0 < v < INSCRIBED for v in values)  # inflated cells


@PLANNER
def test_local_costmap_is_a_window_around_the_camera(
        mapper_run, mapped: list[int], recorders: dict[str, Recorder],
        grid_log: list[Any], sequence: SynthSequence) -> None:
    base, cells, _ = _held_grid(grid_log)
    grid = _as_grid(base, cells)
    msg = recorders["local_costmap"].stamped(mapped[-1])
    local = grid_from_msg(msg)
    res = grid.resolution_m
    cells_per_edge = round(LOCAL_SIZE_M / res)
    assert (msg.info.width, msg.info.height) == (cells_per_edge, cells_per_edge)
    assert local.resolution_m == pytest.approx(res)
    # robot_frame is "": centred on the last camera position, on the map's cell lattice
    camera_xy = sequence.frames[-1].T_world_cam[:2, 3]
    for axis in range(2):
        steps = (local.origin_xy[axis] - grid.origin_xy[axis]) / res
        assert steps == pytest.approx(round(steps), abs=1e-3)
        centre = local.origin_xy[axis] + LOCAL_SIZE_M / 2
        assert abs(centre - camera_xy[axis]) <= res / 2 + 1e-4
    expected = _nav2_costs(grid, (float(camera_xy[0]), float(camera_xy[1])), LOCAL_SIZE_M)
    np.testing.assert_array_equal(local.data, expected.data)


@PLANNER
def test_esdf_slice_points(mapper_run, mapped: list[int], recorders: dict[str, Recorder],
                           sequence: SynthSequence) -> None:
    msg = recorders["esdf_slice"].stamped(mapped[-1])
    assert msg.header.frame_id == "map"
    assert [(f.name, f.datatype, f.count) for f in msg.fields] == [
        (n, PointField.FLOAT32, 1) for n in ("x", "y", "z", "distance")]
    values = cloud_fields(msg, ("x", "y", "z", "distance"))
    assert len(values) > 1000
    xyz, distance = values[:, :3], values[:, 3]
    voxel = DEFAULTS["volume.voxel_size_m"]
    truncation = DEFAULTS["integration.truncation_voxels"] * voxel
    assert np.all(np.isfinite(values))
    assert distance.min() >= -truncation - 1e-6
    assert distance.max() <= DEFAULTS["esdf.max_distance_m"] + 1e-6
    assert np.ptp(xyz[:, 2]) == 0
    assert abs(xyz[0, 2] - DEFAULTS["esdf.slice_height_m"]) <= voxel / 2
    # the points are where the room is: distances agree with the scene's true distance
    err = np.abs(distance - sequence.scene.sdf_np(xyz.astype(np.float64)))
    assert np.median(err) < voxel, np.median(err)


@PLANNER
def test_nav2_example_subscribes_the_node_topics(mapper_run) -> None:
    config = yaml.safe_load((REPO / "config/nav2_costmap.yaml").read_text())
    published = wait_for(lambda: mapper_run.harness.graph(MAPPER_NAME, "publisher"), 30,
                         "the mapper's publishers")
    # alternative 1's topics
    assert {f"/{MAPPER_NAME}/costmap", f"/{MAPPER_NAME}/local_costmap"} <= published
    assert DEFAULTS["occupancy.resolution_m"] == 0  # the grid has the voxel size
    for node in ("global_costmap", "local_costmap"):
        params = config[node][node]["ros__parameters"]
        layer = params["static_layer"]
        assert layer["plugin"] == "nav2_costmap_2d::StaticLayer"
        assert layer["map_topic"] == "/map" and layer["map_topic"] in published
        assert layer["map_subscribe_transient_local"] is True
        assert layer["subscribe_to_updates"] is True
        assert layer["map_topic"] + "_updates" in published
        assert params["track_unknown_space"] is True
        assert params["global_frame"] == DEFAULTS["map_frame"]
        assert params["resolution"] == DEFAULTS["volume.voxel_size_m"]
        assert params["robot_radius"] == DEFAULTS["esdf.robot_radius_m"]
        inflation = params["inflation_layer"]
        assert inflation["plugin"] == "nav2_costmap_2d::InflationLayer"
        assert inflation["inflation_radius"] == DEFAULTS["esdf.inflation_radius_m"]
        assert inflation["cost_scaling_factor"] == DEFAULTS["esdf.cost_scaling_factor"]
    local = config["local_costmap"]["local_costmap"]["ros__parameters"]
    assert local["rolling_window"] is True
    assert local["width"] == local["height"] == DEFAULTS["costmap.local_size_m"]


def test_remapped_grid_topic(tmp_path) -> None:
    """The command line of docs/nav2.md's alternative 2 (also in config/nav2_costmap.yaml)
    moves the grid and its updates off Nav2's default /map and /map_updates."""
    args = " ".join(REMAP_GRID)
    assert args in (REPO / "config/nav2_costmap.yaml").read_text()
    assert args in " ".join((REPO / "docs/nav2.md").read_text().split())
    domain = next_domain_id()
    proc = Process(mapper_command(VENV_BIN) + REMAP_GRID,
                   child_env(domain, tmp_path / "log"), tmp_path / "mapper.log", cwd=tmp_path)
    harness = Harness(domain)
    try:
        topics = wait_for(lambda: {"/recon_map", "/recon_map_updates"} <= harness.graph(
            MAPPER_NAME, "publisher") and harness.graph(MAPPER_NAME, "publisher"), 60,
            "/recon_map and /recon_map_updates", lambda: proc.log()[-3000:])
        assert "/map" not in topics and "/map_updates" not in topics
        assert f"/{MAPPER_NAME}/costmap" in topics  # the other outputs keep their names
    finally:
        harness.close()
        proc.stop()


@PLANNER
def test_esdf_off_publishes_no_slice_and_still_the_costmaps(
        mapper_run, mapped: list[int], recorders: dict[str, Recorder],
        sequence: SynthSequence) -> None:
    h = mapper_run.harness
    (result,) = h.set_parameters({"esdf.enabled": False})
    assert result.successful, result.reason
    assert h.call("reset").success
    h.wait_status(lambda s: not s["config_pending"] and s["frames_integrated"] == 0, 30,
                  "the map rebuilt without ESDF")
    slices = len(recorders["esdf_slice"].msgs)
    t1 = mapped[-1] + 10**9
    for k in range(2):
        stamp = t1 + k * 100_000_000
        h.publish_frame(sequence.frames[k], stamp, sequence.tf(k, stamp))
        h.wait_integrated(k + 1)
    h.wait_status(lambda s: s["planning_frames_integrated"] == 2, 30, "the planner outputs")
    recorders["local_costmap"].stamped(t1 + 100_000_000)
    assert len(recorders["esdf_slice"].msgs) == slices
    assert "planner outputs" not in mapper_run.proc.log()
    assert mapper_run.proc.alive()
