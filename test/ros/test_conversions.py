"""rclpy message conversions: the hand-written MarkerArray CDR against rclpy's own
serialisation, images through the shared decoders, grids and clouds both ways."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import ROS_SKIP_REASON

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from geometry_msgs.msg import Point
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from recon_ros.core.frame import PinholeCamera
from recon_ros.core.occupancy_grid import OccupancyGrid2D
from recon_ros.io.image_codec import (
    COMPRESSED_IMAGE,
    camera_from_info,
    decode_color,
    decode_depth,
)
from recon_ros.io.tf_buffer import TfBuffer
from recon_ros.ros.conversions import (
    MARKER_ADD,
    MARKER_DELETE,
    MARKER_DELETEALL,
    add_tf_message,
    camera_info_msg,
    color_msg,
    compressed_msg,
    depth_msg,
    grid_from_msg,
    mesh_marker_array_cdr,
    occupancy_grid_msg,
    point_cloud_msg,
    points_from_cloud,
    tf_message,
)

from .helpers import parse_marker_array

STAMP = 1_700_000_000_123_456_789


def _reference_marker(marker_id: int, action: int, corners: np.ndarray | None = None,
                      colors: np.ndarray | None = None) -> Marker:
    """The marker built field by field with rclpy objects (what the CDR must decode to)."""
    m = Marker()
    m.header.frame_id = "map"
    m.header.stamp.sec, m.header.stamp.nanosec = divmod(STAMP, 10**9)
    m.ns, m.id, m.type, m.action = "mesh", marker_id, Marker.TRIANGLE_LIST, action
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = 1.0
    m.color.r = m.color.g = m.color.b = float(np.float32(0.8))
    m.color.a = 1.0
    if corners is not None:
        for i, (x, y, z) in enumerate(corners.reshape(-1, 3).tolist()):
            m.points.append(Point(x=x, y=y, z=z))
            if colors is not None:
                r, g, b = (float(v) for v in colors.reshape(-1, 3)[i].astype(np.float32) / 255)
                m.colors.append(ColorRGBA(r=r, g=g, b=b, a=1.0))
    return m


@pytest.mark.parametrize("colored", [True, False])
def test_marker_cdr_decodes_to_the_rclpy_message(colored: bool) -> None:
    rng = np.random.default_rng(0)
    corners = rng.random((3, 3, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (3, 3, 3)).astype(np.uint8) if colored else None
    blocks = [(7, corners, colors), (9, None, None), (3, np.zeros((0, 3, 3)), None)]
    raw = mesh_marker_array_cdr("map", STAMP, "mesh", blocks, delete_all_first=True)
    expected = MarkerArray(markers=[
        _reference_marker(0, MARKER_DELETEALL), _reference_marker(7, MARKER_ADD, corners, colors),
        _reference_marker(9, MARKER_DELETE), _reference_marker(3, MARKER_DELETE)])
    assert deserialize_message(raw, MarkerArray) == expected
    # the tests' numpy reader agrees with rclpy's serialiser and with ours
    for data in (raw, serialize_message(expected)):
        parsed = parse_marker_array(data)
        assert [(m.id, m.action) for m in parsed] == [(0, 3), (7, 0), (9, 2), (3, 2)]
        np.testing.assert_allclose(parsed[1].corners, corners, rtol=1e-7)
        assert (parsed[1].colors is not None) == colored


def test_empty_marker_array() -> None:
    assert deserialize_message(mesh_marker_array_cdr("map", 0, "mesh", []),
                               MarkerArray) == MarkerArray()


@pytest.mark.parametrize("encoding, bigendian", [("16UC1", False), ("32FC1", False),
                                                 ("32FC1", True)])
def test_depth_round_trip(encoding: str, bigendian: bool) -> None:
    depth = np.random.default_rng(1).uniform(0.2, 4.0, (12, 16)).astype(np.float32)
    depth[0, 0] = 0.0
    msg = depth_msg(depth, STAMP, "cam", encoding, bigendian)
    tol = 5e-4 if encoding == "16UC1" else 0.0
    np.testing.assert_allclose(decode_depth(msg), depth, atol=tol)


def test_color_round_trip_raw_and_compressed() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (12, 16, 3)).astype(np.uint8)
    for encoding in ("rgb8", "bgr8"):
        np.testing.assert_array_equal(decode_color(color_msg(rgb, STAMP, "c", encoding),
                                                   "sensor_msgs/msg/Image"), rgb)
    png = compressed_msg(rgb, STAMP, "c", "png")
    np.testing.assert_array_equal(decode_color(png, COMPRESSED_IMAGE), rgb)


def test_camera_info_round_trip() -> None:
    cam = PinholeCamera(np.array([[100.0, 0, 7.5], [0, 100.0, 5.5], [0, 0, 1]]), 16, 12)
    info = camera_info_msg(cam, STAMP, "cam")
    back = camera_from_info(info.k, info.width, info.height, 16, 12, "depth")
    np.testing.assert_array_equal(back.K, cam.K)


def test_grid_and_cloud_round_trip() -> None:
    data = np.array([[-1, 0, 100], [100, 0, -1]], dtype=np.int8)
    grid = OccupancyGrid2D(data, 0.05, (-1.0, 2.0), 0.05, 1.5)
    back = grid_from_msg(occupancy_grid_msg(grid, "map", STAMP))
    np.testing.assert_array_equal(back.data, data)
    assert back.origin_xy == (-1.0, 2.0) and back.resolution_m == pytest.approx(0.05)
    points = np.random.default_rng(3).random((50, 3)).astype(np.float32)
    np.testing.assert_array_equal(points_from_cloud(point_cloud_msg(points, "map", STAMP)),
                                  points)


def test_tf_message_into_the_buffer() -> None:
    buffer = TfBuffer()
    q = [0.0, 0.0, np.sin(0.25), np.cos(0.25)]
    msg = tf_message([("map", "odom", 10, [1.0, 2.0, 0.0], q),
                      ("odom", "odom", 10, [0.0, 0.0, 0.0], [0, 0, 0, 1])])
    refused = add_tf_message(buffer, msg, static=False)
    assert len(refused) == 1  # a frame cannot be its own parent
    np.testing.assert_allclose(buffer.lookup("map", "odom", 10)[:3, 3], [1.0, 2.0, 0.0])
