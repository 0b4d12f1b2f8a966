"""recon_mapper in a changing world, as a process over DDS: an obstacle that goes away leaves
the grid (its cells turn free) and the mesh (its markers are deleted); ``robot_frame`` centres
``map.clearing_radius_m`` on the robot, and a robot frame without TF falls back to the camera
without losing frames.

The scene is a wall 2 m in front of a camera looking along map +x at 0.5 m height, and a box
whose front face is 1 m in front of it. The box straddles the optical axis, so only its front
face is visible and the depth images are exact: 2 m everywhere, 1 m on the face.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from .conftest import ROS_SKIP_REASON

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from nav_msgs.msg import OccupancyGrid

from recon_ros.core.frame import Frame
from recon_ros.core.occupancy_grid import FREE, OCCUPIED
from recon_ros.io.synthetic import default_camera
from recon_ros.io.tf_buffer import transform_from_xyzw
from recon_ros.ros.conversions import MARKER_DELETE, TfTuple, grid_from_msg

from .helpers import Harness, mesh_state, mesh_vertices, parse_marker_array

WIDTH, HEIGHT = 160, 120
T0 = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000
CAMERA_FRAME = "camera_optical"
#: Camera in the map frame: optical z (forward) = map +x, x (right) = map -y, y (down) = map -z.
CAMERA_XYZ = (0.0, 0.0, 0.5)
CAMERA_XYZW = (-0.5, 0.5, -0.5, 0.5)
WALL_X_M = 2.0
BOX_FRONT_X_M = 1.0
BOX_HALF_WIDTH_M = 0.3  # |map y| of the box
BOX_TOP_M = 0.8  # the box stands on z = 0 (there is no floor)
#: Vertices nearer than this to the camera belong to the box.
BOX_MESH_MAX_X_M = 1.5


def _wall_frame(box: bool) -> Frame:
    """The exact depth (and a gray image) of the wall, with or without the box."""
    camera = default_camera(WIDTH, HEIGHT)
    (fx, _, cx), (_, fy, cy) = camera.K[:2]
    depth = np.full((HEIGHT, WIDTH), WALL_X_M, np.float32)
    if box:  # where each pixel's ray crosses the plane of the box's front face
        y = -(np.arange(WIDTH) - cx) / fx * BOX_FRONT_X_M
        z = CAMERA_XYZ[2] - (np.arange(HEIGHT) - cy) / fy * BOX_FRONT_X_M
        on_face = ((z[:, None] >= 0.0) & (z[:, None] <= BOX_TOP_M)
                   & (np.abs(y)[None, :] <= BOX_HALF_WIDTH_M))
        depth[on_face] = BOX_FRONT_X_M
    return Frame(depth=depth, camera=camera, color=np.full((HEIGHT, WIDTH, 3), 128, np.uint8),
                 frame_id=CAMERA_FRAME,
                 T_world_cam=transform_from_xyzw(np.array(CAMERA_XYZ), np.array(CAMERA_XYZW)))


def _camera_tf(stamp: int) -> list[TfTuple]:
    return [("map", CAMERA_FRAME, stamp, CAMERA_XYZ, CAMERA_XYZW)]


def _with_robot_tf(x_m: float) -> Callable[[int], list[TfTuple]]:
    """TF of the camera and of base_link at map (x_m, 0, 0)."""
    return lambda stamp: [*_camera_tf(stamp),
                          ("map", "base_link", stamp, (x_m, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))]


def _publish(h: Harness, frame: Frame, stamps: list[int],
             tf: Callable[[int], list[TfTuple]]) -> dict[str, Any]:
    """Publish ``frame`` at each stamp with the TF ``tf(stamp)``, one at a time (each waits
    until integrated); returns the status that counts the last one."""
    h.wait_subscribed()
    status: dict[str, Any] = {}
    for stamp in stamps:
        done = h.status()["frames_integrated"]
        h.publish_frame(frame, stamp, tf(stamp))
        status = h.wait_integrated(done + 1)
    return status


def _box_cells(msg: OccupancyGrid) -> np.ndarray:
    """Values of the two columns of grid cells on and just behind the box's front face (x =
    1.0 and 1.05 m), at least 7 cm in from its sides."""
    grid = grid_from_msg(msg)
    res, (ox, oy) = grid.resolution_m, grid.origin_xy
    x = ox + (np.arange(grid.width) + 0.5) * res
    y = oy + (np.arange(grid.height) + 0.5) * res
    inside = ((np.abs(x - BOX_FRONT_X_M - 0.025)[None, :] <= 0.035)
              & (np.abs(y)[:, None] <= BOX_HALF_WIDTH_M - 0.07))
    return grid.data[inside]


def _box_marker_ids(state: dict[int, np.ndarray]) -> set[int]:
    return {i for i, tri in state.items() if (tri.reshape(-1, 3)[:, 0] < BOX_MESH_MAX_X_M).any()}


# 4 px at 160 x 120 samples free space as densely as the default 16 px at 640 x 480.
@pytest.mark.parametrize("mapper_run", [{"occupancy.free_space_stride_px": "4"}],
                         indirect=True, ids=["clearing"])
def test_removed_obstacle_leaves_grid_and_mesh(mapper_run) -> None:
    h = mapper_run.harness
    with_box = [T0 + k * PERIOD_NS for k in range(4)]
    _publish(h, _wall_frame(box=True), with_box, _camera_tf)
    cells = _box_cells(h.held_grid(len(with_box)))
    assert cells.size == 18 and np.all(cells == OCCUPIED), cells
    before = h.wait_mesh_settled()
    box_ids = _box_marker_ids(mesh_state(before))
    assert box_ids, "the box has no mesh"

    without_box = [with_box[-1] + (k + 1) * PERIOD_NS for k in range(4)]
    status = _publish(h, _wall_frame(box=False), without_box, _camera_tf)
    cells = _box_cells(h.held_grid(len(with_box) + len(without_box)))
    assert np.all(cells == FREE), cells
    after = h.wait_mesh_settled()
    deleted = {m.id for raw in after[len(before):] for m in parse_marker_array(raw)
               if m.action == MARKER_DELETE}
    assert box_ids <= deleted, (box_ids, deleted)
    state = mesh_state(after)
    assert not _box_marker_ids(state) and len(mesh_vertices(state)) > 1000
    # the wall behind the box, seen now, is meshed
    assert np.abs(mesh_vertices(state)[:, 0] - WALL_X_M).max() < 0.05

    # the grid (computed when published) counts the cleared cells
    stats = h.wait_status(lambda s: s["occupancy_frames_integrated"] == 8, 30,
                          "the status after the last grid")["map"]
    assert stats["blocks_released_free_space"] > 0 and stats["grid_cells_cleared"] >= cells.size
    assert stats["blocks_released_radius"] == stats["blocks_released_memory"] == 0
    assert stats["blocks"] > 0 and stats["memory_mb"] > 0
    assert status["cameras"]["camera"]["drops"] == {}


@pytest.mark.parametrize("mapper_run", [{"map.clearing_radius_m": "4.0",
                                         "robot_frame": "base_link"}],
                         indirect=True, ids=["robot_frame"])
def test_robot_frame_centres_the_clearing_radius(mapper_run) -> None:
    h, frame = mapper_run.harness, _wall_frame(box=False)
    stamps = iter(T0 + k * PERIOD_NS for k in range(100))

    def publish(n: int, robot_x_m: float | None) -> dict[str, Any]:
        """n frames with the robot at map x = robot_x_m (None: no robot TF)."""
        tf = _camera_tf if robot_x_m is None else _with_robot_tf(robot_x_m)
        return _publish(h, frame, [next(stamps) for _ in range(n)], tf)

    # Robot under the camera: the whole wall (at most 3 m away) stays.
    near = publish(2, 0.0)
    assert near["map"]["blocks"] > 0 and near["map"]["blocks_released_radius"] == 0, near["map"]
    # Robot 6 m behind the camera: every block is beyond the radius, released after each frame.
    far = publish(2, -6.0)
    assert far["map"]["blocks"] == 0, far["map"]
    assert far["map"]["blocks_released_radius"] >= near["map"]["blocks"]
    assert far["cameras"]["camera"]["robot_frame_fallbacks"] == {}

    # The robot's TF stops: each frame waits tf_timeout_s for it, then is integrated centred on
    # the camera (the wall is kept again), counted and logged.
    lagging = publish(2, None)
    camera = lagging["cameras"]["camera"]
    assert camera["drops"] == {} and camera["integrated"] == 6
    assert camera["robot_frame_fallbacks"] == {
        "TF lookup failed: extrapolation into the future on edge 'map' -> 'base_link'": 2}
    assert lagging["map"]["blocks"] > 0
    assert lagging["map"]["blocks_released_radius"] == far["map"]["blocks_released_radius"]
    assert "robot_frame 'base_link' not available at " in mapper_run.proc.log()
    assert ": clearing radius centred on the camera" in mapper_run.proc.log()

    # A frame that does not exist falls back at once (it would not arrive by waiting).
    (result,) = h.set_parameters({"robot_frame": "base_lnik"})
    assert result.successful, result.reason
    unknown = publish(1, 0.0)["cameras"]["camera"]
    assert unknown["integrated"] == 7
    assert unknown["robot_frame_fallbacks"]["TF lookup failed: frame 'base_lnik' does not "
                                            "exist"] == 1

    # Map bounds are map parameters: an invalid one is refused with the core's reason.
    for name, value, reason in [
            ("map.max_memory_mb", -1.0, "map.max_memory_mb=-1.0 is invalid: must be 0 (off) "
             "or >= 1"),
            ("integration.clearing_weight_factor", 0.0,
             "integration.clearing_weight_factor=0.0 is invalid: must be in (0, 1]")]:
        (result,) = h.set_parameters({name: value})
        assert not result.successful and reason in result.reason, (name, result.reason)
    assert not h.wait_status(lambda s: True, 30, "a status")["config_pending"]
