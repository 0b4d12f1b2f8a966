"""rclpy message conversions: the hand-written MarkerArray CDR against rclpy's own
serialisation, images through the shared decoders, grids, grid updates, clouds and the ESDF
slice both ways; the locally built message packages carry upstream's type hashes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROS_SKIP_REASON

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from ament_index_python.packages import get_package_share_directory
from geometry_msgs.msg import Point
from map_msgs.msg import OccupancyGridUpdate
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from recon_ros.core.distance_slice import DistanceSlice
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
    HeldGrid,
    add_tf_message,
    apply_grid_update,
    camera_info_msg,
    cloud_fields,
    color_msg,
    compressed_msg,
    depth_msg,
    distance_slice_msg,
    grid_from_msg,
    grid_update_msg,
    mesh_marker_array_cdr,
    occupancy_grid_msg,
    point_cloud_msg,
    points_from_cloud,
    stamp_ns,
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


def test_distance_slice_cloud_has_every_known_cell() -> None:
    distance = np.array([[0.5, np.nan, -0.1], [2.0, 1.25, np.nan]], dtype=np.float32)
    piece = DistanceSlice(distance, 0.1, (-1.0, 3.0), 0.475, 2.0)
    msg = deserialize_message(serialize_message(distance_slice_msg(piece, "map", STAMP)),
                              PointCloud2)
    assert msg.header.frame_id == "map" and (msg.header.stamp.sec, msg.header.stamp.nanosec) \
        == divmod(STAMP, 10**9)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1), ("distance", 12, PointField.FLOAT32, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 4, 16, 64)
    assert msg.is_dense and not msg.is_bigendian
    expected = np.array([[-0.95, 3.05, 0.475, 0.5], [-0.75, 3.05, 0.475, -0.1],
                         [-0.95, 3.15, 0.475, 2.0], [-0.85, 3.15, 0.475, 1.25]], np.float32)
    np.testing.assert_allclose(cloud_fields(msg, ("x", "y", "z", "distance")), expected,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="no float32 field"):
        cloud_fields(point_cloud_msg(np.zeros((2, 3)), "map", STAMP), ["distance"])


def test_grid_update_is_the_box_of_changed_cells() -> None:
    before = np.full((6, 8), -1, dtype=np.int8)
    after = before.copy()
    after[2, 5], after[4, 3], after[3, 4] = 100, 0, 0
    grid = OccupancyGrid2D(after, 0.05, (1.0, 2.0), 0.05, 1.5)
    update = grid_update_msg(before, grid, "map", STAMP)
    update = deserialize_message(serialize_message(update), OccupancyGridUpdate)
    assert (update.x, update.y, update.width, update.height) == (3, 2, 3, 3)
    assert update.header.frame_id == "map"
    np.testing.assert_array_equal(np.asarray(update.data, np.int8).reshape(3, 3),
                                  after[2:5, 3:6])
    np.testing.assert_array_equal(apply_grid_update(before, update), after)
    assert grid_update_msg(after, grid, "map", STAMP) is None
    with pytest.raises(ValueError, match="same size"):
        grid_update_msg(before[:, :7], grid, "map", STAMP)
    with pytest.raises(ValueError, match="exceeds"):
        apply_grid_update(before[:, :5], update)


def _grid(data: np.ndarray, origin_y: float, stamp: int) -> OccupancyGrid:
    return occupancy_grid_msg(OccupancyGrid2D(data, 0.1, (0.0, origin_y), 0.05, 1.5), "map",
                              stamp)


def test_held_grid_applies_updates_and_repairs_overtaken_maps() -> None:
    small = np.zeros((2, 3), np.int8)
    grown = np.zeros((4, 3), np.int8)  # grew by two rows at -y: the origin moved
    grown[0, 0] = 100
    changed = grown.copy()
    changed[3, 2] = changed[1, 1] = 100
    update = grid_update_msg(grown, OccupancyGrid2D(changed, 0.1, (0.0, -0.2), 0.05, 1.5),
                             "map", STAMP + 2)  # box x=1 y=1 2x3: does not fit the small map
    held = HeldGrid()
    assert held.add(update) == [] and held.msg is None  # no map yet
    assert held.add(_grid(small, 0.0, STAMP)) == [held.msg]  # still waits for its map
    grown_msg = _grid(grown, -0.2, STAMP + 1)
    out = held.add(grown_msg)
    assert [stamp_ns(g.header.stamp) for g in out] == [STAMP + 1, STAMP + 2]
    np.testing.assert_array_equal(grid_from_msg(held.msg).data, changed)
    assert held.msg.info == grown_msg.info
    # an update in another frame is ignored; a full map again (same stamp as the update, as
    # sent to a new subscriber) re-applies the update, which changes nothing
    stray = grid_update_msg(changed, OccupancyGrid2D(grown, 0.1, (0.0, -0.2), 0.05, 1.5),
                            "odom", STAMP + 3)
    assert held.add(stray) == []
    again = _grid(changed, -0.2, STAMP + 2)
    assert [g.header.stamp for g in held.add(again)] == [again.header.stamp] * 2
    np.testing.assert_array_equal(grid_from_msg(held.msg).data, changed)


def test_local_message_packages_have_upstream_type_hashes() -> None:
    """tf2_msgs, map_msgs and diagnostic_msgs are built here from their definitions
    (scripts/build_msgs.sh); their RIHS01 type hashes must be upstream's, or a real ROS 2 graph
    would not match them. The hashes are those a ROS 2 install reports (``ros2 topic info -v``;
    diagnostic_msgs': upstream's generated ``diagnostic_array__description.c``)."""
    upstream = {
        ("tf2_msgs", "TFMessage"):
            "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
        ("map_msgs", "OccupancyGridUpdate"):
            "RIHS01_c4095b0be2e4363f8978a1570e0293ee093436f1e1c61d99b48502ac317025e8",
        ("diagnostic_msgs", "DiagnosticArray"):
            "RIHS01_5a8a36efb05fb25070fa0fb3810290c0e6cd4862b54a8fb975a1ee8dc55a333e",
        ("diagnostic_msgs", "DiagnosticStatus"):
            "RIHS01_b0e3e692ea2d54a8af2f4ef1930e81556a2db55216b771f8a7d2724ed47bf0e4",
        ("diagnostic_msgs", "KeyValue"):
            "RIHS01_d68081eaa540288c5440753baecef0c4e16e81a5f78ad68902ded5100413bb42",
    }
    for (package, name), expected in upstream.items():
        path = Path(get_package_share_directory(package)) / "msg" / f"{name}.json"
        hashes = json.loads(path.read_text())["type_hashes"]
        assert hashes[0] == {"type_name": f"{package}/msg/{name}", "hash_string": expected}
