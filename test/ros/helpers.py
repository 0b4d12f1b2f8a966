"""Process and DDS harness of the ROS tests: nodes run as real processes over Fast DDS on
loopback, each test module in its own ROS_DOMAIN_ID; the test talks to them through an
in-process rclpy node (:class:`Harness`) spinning in a background thread."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import rclpy
from nav_msgs.msg import OccupancyGrid
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from recon_ros.core.frame import Frame
from recon_ros.ros.conversions import (
    MARKER_DELETE,
    MARKER_DELETEALL,
    camera_info_msg,
    color_msg,
    depth_msg,
    iter_marker_triangles,
    tf_message,
)

T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent
_DOMAIN_COUNTER = itertools.count()

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def next_domain_id() -> int:
    """A ROS_DOMAIN_ID (1..100) unique within this run and unlikely to clash with a
    concurrent run (derived from the pid)."""
    return 1 + (os.getpid() * 7 + next(_DOMAIN_COUNTER)) % 100


def child_env(domain_id: int, log_dir: Path) -> dict[str, str]:
    """Environment of a node process: this venv's ROS, loopback-only discovery, own domain."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=str(log_dir), AMENT_PREFIX_PATH=sys.prefix,
               RCUTILS_LOGGING_BUFFERED_STREAM="0", PYTHONUNBUFFERED="1")
    return env


def wait_for(predicate: Callable[[], T], timeout: float, what: str,
             on_timeout: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}\n{extra}")
        time.sleep(0.02)


class Process:
    """A node process whose output goes to a log file; stopped with SIGINT."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str], log_path: Path,
                 cwd: Path | None = None) -> None:
        self.cmd = list(cmd)
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(self.cmd, env=env, cwd=cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Signal the process and wait for it; returns its exit code."""
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)


class Harness:
    """The test's side of the DDS graph: publishes camera data and TF like a driver and a
    localiser, and records what the mapper publishes.

    Args:
        domain_id: ROS domain of the processes under test.
        mapper: fully qualified name of the mapper node.
        camera: the camera namespace to publish in.
    """

    def __init__(self, domain_id: int, mapper: str = "/recon_mapper", camera: str = "camera"
                 ) -> None:
        self.mapper = mapper
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("test_harness", context=self.context)
        self._lock = threading.Lock()
        self.status_msgs: list[dict[str, Any]] = []
        self.mesh_msgs: list[MarkerArray] = []
        self.grid_msgs: list[OccupancyGrid] = []
        self.cloud_msgs: list[PointCloud2] = []
        n = self.node
        n.create_subscription(String, f"{mapper}/status", self._on_status, RELIABLE)
        n.create_subscription(MarkerArray, f"{mapper}/mesh", self._record(self.mesh_msgs),
                              RELIABLE)
        n.create_subscription(OccupancyGrid, f"{mapper}/map", self._record(self.grid_msgs),
                              LATCHED)
        n.create_subscription(PointCloud2, f"{mapper}/occupied_voxels",
                              self._record(self.cloud_msgs), RELIABLE)
        self.tf_pub = n.create_publisher(TFMessage, "/tf", RELIABLE)
        self.tf_static_pub = n.create_publisher(TFMessage, "/tf_static", LATCHED)
        self.depth_pub = n.create_publisher(Image, f"{camera}/depth/image", RELIABLE)
        self.depth_info_pub = n.create_publisher(CameraInfo, f"{camera}/depth/camera_info",
                                                 RELIABLE)
        self.color_pub = n.create_publisher(Image, f"{camera}/color/image", RELIABLE)
        self.compressed_pub = n.create_publisher(CompressedImage,
                                                 f"{camera}/color/image/compressed", RELIABLE)
        self.color_info_pub = n.create_publisher(CameraInfo, f"{camera}/color/camera_info",
                                                 RELIABLE)
        self.params = AsyncParameterClient(n, mapper)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(n)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ recording

    def _on_status(self, msg: String) -> None:
        with self._lock:
            self.status_msgs.append(json.loads(msg.data))

    def _record(self, into: list[Any]) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            with self._lock:
                into.append(msg)
        return callback

    def status(self) -> dict[str, Any] | None:
        with self._lock:
            return self.status_msgs[-1] if self.status_msgs else None

    def camera_status(self, camera: str = "camera") -> dict[str, Any]:
        status = self.status()
        return status["cameras"][camera] if status else {}

    def wait_status(self, predicate: Callable[[dict[str, Any]], bool], timeout: float,
                    what: str) -> dict[str, Any]:
        """The first status (received from now on or the latest) satisfying ``predicate``."""
        def check() -> dict[str, Any] | None:
            s = self.status()
            return s if s is not None and predicate(s) else None
        return wait_for(check, timeout, what,
                        lambda: "last status: " + json.dumps(self.status(), indent=1)[:4000])

    def wait_integrated(self, n: int, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait_status(lambda s: s["frames_integrated"] >= n, timeout,
                                f"{n} frames integrated")

    def wait_mesh_settled(self, timeout: float = 60.0) -> list[MarkerArray]:
        """Wait until the mesh of every integrated frame was published and received; returns
        the marker messages received so far."""
        s = self.wait_status(lambda s: s["mesh"]["frames_integrated"] == s["frames_integrated"]
                             and s["mesh"]["messages"] > 0, timeout, "mesh published")
        count = s["mesh"]["messages"]
        wait_for(lambda: len(self.mesh_msgs) >= count, timeout, f"{count} marker messages")
        with self._lock:
            return list(self.mesh_msgs)

    def latest_grid(self, timeout: float = 30.0, after: int = 0) -> OccupancyGrid:
        """The latest grid, once more than ``after`` grids have been received."""
        wait_for(lambda: len(self.grid_msgs) > after, timeout, "an occupancy grid")
        with self._lock:
            return self.grid_msgs[-1]

    # ------------------------------------------------------------------ calls

    def call(self, service: str, timeout: float = 60.0) -> Trigger.Response:
        client = self.node.create_client(Trigger, f"{self.mapper}/{service}")
        try:
            wait_for(lambda: client.service_is_ready(), timeout, f"service {service}")
            future = client.call_async(Trigger.Request())
            wait_for(future.done, timeout, f"{service} response")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, params: dict[str, Any], timeout: float = 30.0) -> list[Any]:
        """``SetParametersResult`` of each parameter (set one by one)."""
        wait_for(self.params.services_are_ready, timeout, "parameter services")
        future = self.params.set_parameters([Parameter(k, value=v) for k, v in params.items()])
        wait_for(future.done, timeout, "set_parameters response")
        return list(future.result().results)

    def get_parameters(self, names: list[str], timeout: float = 30.0) -> dict[str, Any]:
        wait_for(self.params.services_are_ready, timeout, "parameter services")
        future = self.params.get_parameters(names)
        wait_for(future.done, timeout, "get_parameters response")
        return {n: parameter_value_to_python(v)
                for n, v in zip(names, future.result().values, strict=True)}

    def list_parameters(self, timeout: float = 30.0) -> list[str]:
        wait_for(self.params.services_are_ready, timeout, "parameter services")
        future = self.params.list_parameters()
        wait_for(future.done, timeout, "list_parameters response")
        return list(future.result().result.names)

    # ------------------------------------------------------------------ publishing

    def publish_static(self, transforms: Sequence[Any]) -> None:
        self.tf_static_pub.publish(tf_message(transforms))

    def publish_frame(self, frame: Frame, stamp: int, tf: Sequence[Any] | None = None, *,
                      depth: Image | None = None, info: CameraInfo | None = None,
                      color: bool = True, encoding: str = "16UC1") -> None:
        """TF (if given) first, then camera_info + depth (+ color) of ``frame`` at ``stamp``;
        ``depth`` / ``info`` replace the generated messages (bad-input tests)."""
        if tf is not None:
            self.tf_pub.publish(tf_message(tf))
        fid = frame.frame_id
        info = info or camera_info_msg(frame.camera, stamp, fid)
        self.depth_info_pub.publish(info)
        if color and frame.color is not None:
            self.color_info_pub.publish(info)
            self.color_pub.publish(color_msg(frame.color, stamp, fid))
        self.depth_pub.publish(depth or depth_msg(frame.depth, stamp, fid, encoding))

    def wait_subscribed(self, timeout: float = 30.0) -> None:
        """Until the mapper's subscriptions to our camera topics and TF are matched."""
        pubs = (self.depth_pub, self.depth_info_pub, self.tf_pub)
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), timeout,
                 "the mapper to subscribe")

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(10)


def mesh_state(messages: Sequence[MarkerArray]) -> dict[int, np.ndarray]:
    """Apply marker messages in order (ADD/DELETE/DELETEALL): marker id -> (T, 3, 3)
    triangles as RViz would show them."""
    state: dict[int, np.ndarray] = {}
    for msg in messages:
        for marker_id, action, triangles in iter_marker_triangles(msg):
            if action == MARKER_DELETEALL:
                state.clear()
            elif action == MARKER_DELETE:
                state.pop(marker_id, None)
            else:
                state[marker_id] = triangles
    return state


def mesh_vertices(state: dict[int, np.ndarray]) -> np.ndarray:
    """(N, 3) every triangle corner of a :func:`mesh_state`."""
    if not state:
        return np.zeros((0, 3))
    return np.concatenate([t.reshape(-1, 3) for t in state.values()])
