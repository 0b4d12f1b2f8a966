"""recon_ros_interfaces and the rebuilt diagnostic_msgs in the venv (scripts/build_msgs.sh):
they import, a SaveMap service answers across two nodes (service_msgs generation), and
``mesh_msg`` survives rclpy's serialisation round trip value for value."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import ROS_SKIP_REASON

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message
from recon_ros_interfaces.msg import Mesh, MeshBlock
from recon_ros_interfaces.srv import LoadMap, Render, SaveMap

from recon_ros.ros.conversions import mesh_msg

from .helpers import next_domain_id

STAMP = 1_700_000_000_123_456_789


def test_messages_and_constants() -> None:
    assert (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
            DiagnosticStatus.STALE) == (b"\x00", b"\x01", b"\x02", b"\x03")
    array = DiagnosticArray(status=[DiagnosticStatus(
        level=DiagnosticStatus.WARN, name="n", values=[KeyValue(key="k", value="v")])])
    assert deserialize_message(serialize_message(array), DiagnosticArray) == array
    assert LoadMap.Response(frames_integrated=7).frames_integrated == 7
    reply = Render.Response(success=True)
    reply.depth.encoding = "32FC1"
    assert deserialize_message(serialize_message(reply), Render.Response).depth.encoding == \
        "32FC1"
    assert MeshBlock().index.shape == (3,)


def test_save_map_service_between_nodes() -> None:
    context = Context()
    rclpy.init(context=context, domain_id=next_domain_id())
    try:
        server = Node("test_map_server", context=context)
        client_node = Node("test_map_client", context=context)
        asked = []

        def save(request: SaveMap.Request, response: SaveMap.Response) -> SaveMap.Response:
            asked.append(request.path)
            response.success, response.message = True, "saved"
            response.path = "/abs/" + request.path
            return response

        server.create_service(SaveMap, "save_map", save)
        client = client_node.create_client(SaveMap, "/save_map")
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(server)
        executor.add_node(client_node)
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(SaveMap.Request(path="maps/a"))
        executor.spin_until_future_complete(future, timeout_sec=10.0)
        response = future.result()
        assert asked == ["maps/a"]
        assert response is not None and response.success
        assert (response.message, response.path) == ("saved", "/abs/maps/a")
        executor.shutdown()
    finally:
        rclpy.try_shutdown(context=context)


def test_mesh_msg_round_trip() -> None:
    rng = np.random.default_rng(0)
    vertices = rng.uniform(-2, 2, (500, 3)).astype(np.float32)
    triangles = rng.integers(0, 500, (900, 3))  # int64, as IncrementalMesher.block_indexed
    colors = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    gone = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), None)
    msg = mesh_msg("map", STAMP, 0.4, [((-1, 2, 3), vertices, triangles, colors),
                                       (np.array([5, -6, 7]), *gone),
                                       ((0, 0, 0), vertices[:3], triangles[:1] % 3, None)],
                   clear=True)
    back = deserialize_message(serialize_message(msg), Mesh)
    assert back.header.frame_id == "map"
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert back.block_size_m == pytest.approx(0.4) and back.clear
    assert [b.index.tolist() for b in back.blocks] == [[-1, 2, 3], [5, -6, 7], [0, 0, 0]]
    full, empty, bare = back.blocks
    np.testing.assert_array_equal(np.asarray(full.vertices).reshape(-1, 3), vertices)
    np.testing.assert_array_equal(np.asarray(full.triangles).reshape(-1, 3), triangles)
    np.testing.assert_array_equal(np.asarray(full.colors, np.uint8).reshape(-1, 3), colors)
    assert len(empty.vertices) == len(empty.triangles) == len(empty.colors) == 0
    assert len(bare.vertices) == 9 and len(bare.colors) == 0
    assert not mesh_msg("map", STAMP, 0.4, []).clear
