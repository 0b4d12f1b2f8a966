"""Frame assembly of one camera from queued rclpy messages (no DDS): waiting for TF and
color, pairing color by stamp, the robot position, and the drop reasons the process tests do
not reach."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from .conftest import ROS_SKIP_REASON

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from recon_ros.core.frame import PinholeCamera
from recon_ros.io.image_codec import COMPRESSED_IMAGE
from recon_ros.io.tf_buffer import TfBuffer
from recon_ros.ros.camera_stream import IMAGE, AssembledFrame, AssemblySettings, CameraStream
from recon_ros.ros.conversions import (
    camera_info_msg,
    color_msg,
    compressed_msg,
    depth_msg,
)

MS = 1_000_000
T = 1_000_000 * MS
CAM = PinholeCamera(np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]]), 16, 12)
SETTINGS = AssemblySettings(map_frame="map", timeout_ns=100 * MS, max_color_offset_ns=20 * MS,
                            min_depth_m=0.1, max_depth_m=5.0, robot_frame="")
DEPTH = np.full((12, 16), 2.0, np.float32)
RGB = np.full((12, 16, 3), 200, np.uint8)


class Rig:
    """A stream, a TF buffer and a clock under the test's control."""

    def __init__(self, color: bool = True, color_optional: bool = False) -> None:
        self.tf = TfBuffer()
        self.tf.set_transform("map", "cam", 0, [0, 0, 1], [0, 0, 0, 1], static=True)
        self.drops: list[tuple[str, str]] = []
        self.stream = CameraStream("cam", 4, color,
                                   on_drop=lambda c, kind, reason, d: self.drops.append(
                                       (kind, reason)), color_optional=color_optional)
        self.stream.set_depth_info(camera_info_msg(CAM, T, "cam"))
        self.stream.set_color_info(camera_info_msg(CAM, T, "cam"))
        self.now = 0

    def next(self, advance_ms: int = 0, settings: AssemblySettings = SETTINGS
             ) -> AssembledFrame | None:
        self.now += advance_ms * MS
        return self.stream.next_frame(self.tf.lookup, settings, self.now)


def test_color_paired_by_nearest_stamp() -> None:
    rig = Rig()
    rig.stream.push_color(color_msg(RGB // 2, T - 15 * MS, "cam"), IMAGE)
    rig.stream.push_color(color_msg(RGB, T + 5 * MS, "cam"), IMAGE)
    rig.stream.push_depth(depth_msg(DEPTH, T, "cam"))
    ready = rig.next()
    np.testing.assert_array_equal(ready.frame.color, RGB)
    assert ready.robot_position_m is None  # no robot_frame: the core uses the camera's
    assert rig.stream.color_drops == {} and rig.stream.queue_depths()["color"] == 0


def test_depth_waits_for_color_then_goes_without() -> None:
    rig = Rig()
    rig.stream.push_color(color_msg(RGB, T - 100 * MS, "cam"), IMAGE)  # color flows
    rig.stream.push_depth(depth_msg(DEPTH, T, "cam"))
    assert rig.next() is None  # a color image may still come
    assert rig.next(advance_ms=15) is None  # still within color_max_offset (20 ms)
    ready = rig.next(advance_ms=10)  # waited 25 ms: integrate without color, counted
    assert ready is not None and ready.frame.color is None
    assert rig.stream.color_drops == {"no color image within 20 ms": 1}

    rig.stream.push_color(color_msg(RGB, T + 300 * MS, "cam"), IMAGE)  # newer than depth
    rig.stream.push_depth(depth_msg(DEPTH, T + 100 * MS, "cam"))
    ready = rig.next()  # no wait: the matching color cannot come any more
    assert ready is not None and ready.frame.color is None


@pytest.mark.parametrize("optional", [True, False])
def test_no_wait_for_color_before_the_first_color_image(optional: bool) -> None:
    """A depth-only camera (or a wrong color topic): frames never wait for color; counted as
    missing color only when color is expected (color_transport raw/compressed, not auto)."""
    rig = Rig(color_optional=optional)
    for i in range(3):
        rig.stream.push_depth(depth_msg(DEPTH, T + i * 33 * MS, "cam"))
        ready = rig.next()  # at once: no steady time passes
        assert ready is not None and ready.frame.color is None
    assert rig.stream.color_drops == ({} if optional else {"no color image received": 3})
    assert rig.stream.drops == {}
    # Once color arrives it is used.
    rig.stream.push_color(color_msg(RGB, T + 99 * MS, "cam"), IMAGE)
    rig.stream.push_depth(depth_msg(DEPTH, T + 99 * MS, "cam"))
    np.testing.assert_array_equal(rig.next().frame.color, RGB)


def test_compressed_color_and_bad_color_encoding() -> None:
    rig = Rig()
    rig.stream.push_color(compressed_msg(RGB, T, "cam", "png"), COMPRESSED_IMAGE)
    rig.stream.push_depth(depth_msg(DEPTH, T, "cam"))
    np.testing.assert_array_equal(rig.next().frame.color, RGB)
    bad = color_msg(RGB, T + 100 * MS, "cam")
    bad.encoding = "yuv422"
    rig.stream.push_color(bad, IMAGE)
    rig.stream.push_depth(depth_msg(DEPTH, T + 100 * MS, "cam"))
    ready = rig.next()
    assert ready is not None and ready.frame.color is None  # integrated without color
    assert rig.stream.color_drops == {"unsupported encoding yuv422": 1}


def test_waits_for_tf_within_the_timeout() -> None:
    rig = Rig(color=False)
    rig.stream.push_depth(depth_msg(DEPTH, T, "optical"))
    assert rig.next() is None
    rig.tf.set_transform("cam", "optical", 0, [0, 0, 0], [0, 0, 0, 1], static=True)
    assert rig.next(advance_ms=50) is not None  # arrived in time
    rig.stream.push_depth(depth_msg(DEPTH, T + 100 * MS, "elsewhere"))
    assert rig.next() is None
    assert rig.next(advance_ms=150) is None
    assert rig.stream.drops == {"TF lookup failed: frame 'elsewhere' does not exist": 1}


def test_extrapolation_into_the_past_is_dropped_at_once() -> None:
    rig = Rig(color=False)
    rig.tf.set_transform("map", "odom", T + 10 * MS, [0, 0, 0], [0, 0, 0, 1])
    rig.tf.set_transform("odom", "base", 0, [0, 0, 0], [0, 0, 0, 1], static=True)
    rig.stream.push_depth(depth_msg(DEPTH, T, "base"))
    assert rig.next() is None  # dropped without waiting: older TF will not arrive
    assert list(rig.stream.drops) == [
        "TF lookup failed: extrapolation into the past on edge 'map' -> 'odom'"]


def test_missing_camera_info_and_zero_stamp() -> None:
    rig = Rig(color=False)
    stream = CameraStream("cam", 4, False)
    stream.push_depth(depth_msg(DEPTH, 0, "cam"))
    stream.push_depth(depth_msg(DEPTH, T, "cam"))
    assert stream.next_frame(rig.tf.lookup, SETTINGS, 0) is None  # waits for camera_info
    assert stream.next_frame(rig.tf.lookup, SETTINGS, 200 * MS) is None
    assert stream.drops == {"header stamp is 0": 1, "no camera_info received": 1}


def test_queue_overflow_drops_the_oldest() -> None:
    rig = Rig(color=False)
    for k in range(6):
        rig.stream.push_depth(depth_msg(DEPTH, T + k * MS, "cam"))
    assert rig.stream.drops == {"queue overflow": 2}
    assert [rig.next().frame.stamp_ns for _ in range(4)] == [T + k * MS for k in range(2, 6)]
    assert rig.drops == [("frame", "queue overflow")] * 2


def test_robot_position_waits_like_the_pose_then_falls_back_to_the_camera() -> None:
    rig = Rig(color=False)
    robot = dataclasses.replace(SETTINGS, robot_frame="base_link")
    rig.tf.set_transform("map", "base_link", T, [3, 4, 0], [0, 0, 0, 1])
    rig.stream.push_depth(depth_msg(DEPTH, T, "cam"))
    ready = rig.next(settings=robot)
    np.testing.assert_allclose(ready.robot_position_m, [3, 4, 0])

    # The robot's TF lags behind the image: the frame waits for it, as for its pose ...
    rig.stream.push_depth(depth_msg(DEPTH, T + 100 * MS, "cam"))
    assert rig.next(settings=robot) is None
    rig.tf.set_transform("map", "base_link", T + 200 * MS, [5, 4, 0], [0, 0, 0, 1])
    np.testing.assert_allclose(rig.next(advance_ms=50, settings=robot).robot_position_m,
                               [4, 4, 0])  # interpolated at the image stamp
    # ... up to the timeout; then it is integrated centred on the camera, not dropped.
    rig.stream.push_depth(depth_msg(DEPTH, T + 300 * MS, "cam"))
    assert rig.next(settings=robot) is None
    ready = rig.next(advance_ms=150, settings=robot)
    assert ready is not None and ready.robot_position_m is None
    # An unknown frame does not hold frames back.
    rig.stream.push_depth(depth_msg(DEPTH, T + 400 * MS, "cam"))
    ready = rig.next(settings=dataclasses.replace(SETTINGS, robot_frame="base_lnik"))
    assert ready is not None and ready.robot_position_m is None

    assert rig.stream.drops == {} and rig.stream.integrated == 4
    assert rig.stream.robot_frame_fallbacks == {
        "TF lookup failed: extrapolation into the future on edge 'map' -> 'base_link'": 1,
        "TF lookup failed: frame 'base_lnik' does not exist": 1}
    assert [kind for kind, _ in rig.drops] == ["robot", "robot"]
