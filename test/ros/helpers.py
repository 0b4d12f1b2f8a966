"""Process and DDS harness of the ROS tests: nodes run as real processes over Fast DDS on
loopback, each test module in its own ROS_DOMAIN_ID; the test talks to them through an
in-process rclpy node (:class:`Harness`) spinning in a background thread."""

from __future__ import annotations

import itertools
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import rclpy
from map_msgs.msg import OccupancyGridUpdate
from nav_msgs.msg import OccupancyGrid
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node, NodeNameNonExistentError
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from recon_ros.core.frame import Frame
from recon_ros.ros.conversions import (
    MARKER_DELETE,
    MARKER_DELETEALL,
    HeldGrid,
    camera_info_msg,
    color_msg,
    depth_msg,
    stamp_ns,
    tf_message,
)

T = TypeVar("T")


def _scripts_dir() -> Path:
    """Where the package's console scripts are: ``<prefix>/lib/recon_ros`` of an ament
    (colcon) install found through the ament index, else next to the interpreter (the venv's
    ``bin/``, as ``pip install -e`` puts them)."""
    beside_python = Path(sys.executable).parent
    try:
        from ament_index_python.packages import get_package_prefix
    except ImportError:
        return beside_python
    try:
        installed = Path(get_package_prefix("recon_ros")) / "lib" / "recon_ros"
    except (OSError, LookupError):  # no AMENT_PREFIX_PATH; package not in the index
        return beside_python
    return installed if (installed / "recon_mapper").is_file() else beside_python


#: The directory of the console scripts the tests start (``colcon test`` or the venv).
VENV_BIN = _scripts_dir()
_DOMAIN_COUNTER = itertools.count()

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


#: Domain ids whose default DDS ports are valid on Linux.
DOMAIN_IDS = [*range(1, 102), *range(215, 233)]


def next_domain_id(probe_s: float = 0.5) -> int:
    """A ROS_DOMAIN_ID for one test module: derived from the pid (so concurrent test runs on
    one machine start apart), skipping domains where other participants are discovered within
    ``probe_s`` (another test run or a demo on this machine)."""
    start = (os.getpid() * 7 + next(_DOMAIN_COUNTER) * 11) % len(DOMAIN_IDS)
    for k in range(len(DOMAIN_IDS)):
        domain = DOMAIN_IDS[(start + k) % len(DOMAIN_IDS)]
        if not _domain_in_use(domain, probe_s):
            return domain
    raise RuntimeError("every ROS domain id is in use on this machine")


def _domain_in_use(domain: int, probe_s: float) -> bool:
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        node = Node("test_domain_probe", context=context)
        deadline = time.monotonic() + probe_s
        while time.monotonic() < deadline:
            if len(node.get_node_names()) > 1:
                return True
            time.sleep(0.05)
        return False
    finally:
        rclpy.try_shutdown(context=context)


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
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(self.cmd, env=env, cwd=cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; returns its exit code."""
        rc = self.proc.wait(timeout)
        self._log.close()
        return int(rc)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Signal the process and wait for it; returns its exit code."""
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not self._log.closed:
            self._log.close()
        return int(self.proc.returncode)


@dataclass
class CameraPublishers:
    """A camera namespace's publishers (what a driver publishes)."""

    depth: Any
    depth_info: Any
    color: Any
    color_info: Any


class Harness:
    """The test's side of the DDS graph: publishes camera data and TF like a driver and a
    localiser, and records what the mapper publishes.

    Args:
        domain_id: ROS domain of the processes under test.
        mapper: fully qualified name of the mapper node.
        camera: the camera namespace to publish in.
    """

    def __init__(self, domain_id: int, mapper: str = "/recon_mapper") -> None:
        self.mapper = mapper
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("test_harness", context=self.context)
        self._lock = threading.Lock()
        self.status_msgs: list[dict[str, Any]] = []
        self.mesh_msgs: list[bytes] = []  # raw CDR: parsed on demand (parse_marker_array)
        #: the grids held after each map or map_updates message (an update applied to
        #: the grid before it, stamped like the update), as Nav2's StaticLayer holds them
        self.grid_msgs: list[OccupancyGrid] = []
        self._held_grid = HeldGrid()
        self.cloud_msgs: list[PointCloud2] = []
        n = self.node
        n.create_subscription(String, f"{mapper}/status", self._on_status, RELIABLE)
        n.create_subscription(MarkerArray, f"{mapper}/mesh", self._record(self.mesh_msgs),
                              RELIABLE, raw=True)
        #: the grid's topic: ``map`` in the mapper's namespace
        self.grid_topic = f"{mapper.rpartition('/')[0]}/map"
        n.create_subscription(OccupancyGrid, self.grid_topic, self._on_grid, LATCHED)
        n.create_subscription(OccupancyGridUpdate, f"{self.grid_topic}_updates", self._on_grid,
                              RELIABLE)
        n.create_subscription(PointCloud2, f"{mapper}/occupied_voxels",
                              self._record(self.cloud_msgs), RELIABLE)
        self.tf_pub = n.create_publisher(TFMessage, "/tf", RELIABLE)
        self.tf_static_pub = n.create_publisher(TFMessage, "/tf_static", LATCHED)
        self._cameras: dict[str, CameraPublishers] = {}
        self._param_clients: dict[str, AsyncParameterClient] = {}
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(n)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ recording

    def _on_status(self, msg: String) -> None:
        with self._lock:
            self.status_msgs.append(json.loads(msg.data))

    def _on_grid(self, msg: OccupancyGrid | OccupancyGridUpdate) -> None:
        with self._lock:
            self.grid_msgs.extend(self._held_grid.add(msg))

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

    def wait_mesh_settled(self, timeout: float = 60.0) -> list[bytes]:
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

    def held_grid(self, frames: int, timeout: float = 30.0) -> OccupancyGrid:
        """The grid subscribers hold once the node projected ``frames`` integrated frames into
        it (an unchanged grid is not sent again: the status names the stamp of the message
        that carries it)."""
        stamp = self.wait_status(lambda s: s["occupancy_frames_integrated"] == frames, timeout,
                                 f"the grid of {frames} frames")["grid_stamp_ns"]

        def find() -> OccupancyGrid | None:
            with self._lock:
                return next((g for g in reversed(self.grid_msgs)
                             if stamp_ns(g.header.stamp) == stamp), None)
        return wait_for(find, timeout, f"the grid stamped {stamp}")

    def graph(self, node_name: str, kind: str) -> set[str]:
        """Topic (``publisher``/``subscriber``) or ``service`` names of a node in the graph
        (empty while the node is not discovered yet)."""
        query = {"publisher": self.node.get_publisher_names_and_types_by_node,
                 "subscriber": self.node.get_subscriber_names_and_types_by_node,
                 "service": self.node.get_service_names_and_types_by_node}[kind]
        try:
            return {name for name, _ in query(node_name, "/")}
        except NodeNameNonExistentError:
            return set()

    # ------------------------------------------------------------------ calls

    def call(self, service: str, srv_type: Any = Trigger, request: Any = None,
             timeout: float = 60.0) -> Any:
        """Call the mapper's ``service`` of type ``srv_type`` with ``request`` (default: an
        empty one); returns the response."""
        future = self.call_async(service, srv_type, request, timeout)
        wait_for(future.done, timeout, f"{service} response")
        return future.result()

    def call_async(self, service: str, srv_type: Any = Trigger, request: Any = None,
                   timeout: float = 60.0) -> Any:
        """Send a call (as :meth:`call`) once the service is up; returns its future."""
        request = srv_type.Request() if request is None else request
        client = self.node.create_client(srv_type, f"{self.mapper}/{service}")
        wait_for(lambda: client.service_is_ready(), timeout, f"service {service}")
        return client.call_async(request)  # the client lives as long as the harness

    def _params(self, node: str | None, timeout: float) -> AsyncParameterClient:
        """A parameter client of ``node`` (default: the mapper) whose services are up."""
        name = node or self.mapper
        if name not in self._param_clients:
            self._param_clients[name] = AsyncParameterClient(self.node, name)
        client = self._param_clients[name]
        wait_for(client.services_are_ready, timeout, f"parameter services of {name}")
        return client

    def set_parameters(self, params: dict[str, Any], timeout: float = 30.0,
                       node: str | None = None) -> list[Any]:
        """``SetParametersResult`` of each parameter (set one by one)."""
        future = self._params(node, timeout).set_parameters(
            [Parameter(k, value=v) for k, v in params.items()])
        wait_for(future.done, timeout, "set_parameters response")
        return list(future.result().results)

    def get_parameters(self, names: list[str], timeout: float = 30.0) -> dict[str, Any]:
        future = self._params(None, timeout).get_parameters(names)
        wait_for(future.done, timeout, "get_parameters response")
        return {n: parameter_value_to_python(v)
                for n, v in zip(names, future.result().values, strict=True)}

    def list_parameters(self, timeout: float = 30.0) -> list[str]:
        future = self._params(None, timeout).list_parameters()
        wait_for(future.done, timeout, "list_parameters response")
        return list(future.result().result.names)

    # ------------------------------------------------------------------ publishing

    def publish_static(self, transforms: Sequence[Any]) -> None:
        self.tf_static_pub.publish(tf_message(transforms))

    def camera(self, ns: str = "camera") -> CameraPublishers:
        """The publishers of camera namespace ``ns`` (created on first use)."""
        if ns not in self._cameras:
            n = self.node
            self._cameras[ns] = CameraPublishers(
                depth=n.create_publisher(Image, f"{ns}/depth/image_raw", RELIABLE),
                depth_info=n.create_publisher(CameraInfo, f"{ns}/depth/camera_info", RELIABLE),
                color=n.create_publisher(Image, f"{ns}/color/image_raw", RELIABLE),
                color_info=n.create_publisher(CameraInfo, f"{ns}/color/camera_info", RELIABLE))
        return self._cameras[ns]

    def publish_frame(self, frame: Frame, stamp: int, tf: Sequence[Any] | None = None, *,
                      depth: Image | None = None, info: CameraInfo | None = None,
                      color: bool = True, encoding: str = "16UC1", camera: str = "camera",
                      frame_id: str | None = None) -> None:
        """TF (if given) first, then camera_info + depth (+ color) of ``frame`` at ``stamp``
        in namespace ``camera``; ``depth`` / ``info`` replace the generated messages
        (bad-input tests), ``frame_id`` the frame's."""
        if tf is not None:
            self.tf_pub.publish(tf_message(tf))
        pubs = self.camera(camera)
        fid = frame_id or frame.frame_id
        info = info or camera_info_msg(frame.camera, stamp, fid)
        pubs.depth_info.publish(info)
        if color and frame.color is not None:
            pubs.color_info.publish(info)
            pubs.color.publish(color_msg(frame.color, stamp, fid))
        pubs.depth.publish(depth or depth_msg(frame.depth, stamp, fid, encoding))

    def wait_subscribed(self, timeout: float = 30.0, camera: str = "camera") -> None:
        """Until the mapper's subscriptions to the camera's topics and TF are matched."""
        pubs = self.camera(camera)
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in (
            pubs.depth, pubs.depth_info, pubs.color, self.tf_pub)), timeout,
            "the mapper to subscribe")

    def destroy_subscription(self, sub: Any, timeout: float = 10.0) -> None:
        """Destroy ``sub`` on the executor's own thread, between two waits.

        Destroying it from the test's thread races the executor building its wait set: rclpy
        then raises ``InvalidHandle`` in the spin thread, which dies, and every later callback
        of this harness is lost (seen in CI: the tests after it timed out)."""
        task = self._executor.create_task(self.node.destroy_subscription, sub)
        wait_for(task.done, timeout, "the harness to destroy a subscription")

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(10)


@dataclass
class ParsedMarker:
    """What the tests read of a mesh marker."""

    id: int
    action: int
    corners: np.ndarray  # (T, 3, 3) float64
    colors: np.ndarray | None  # (T * 3, 4) float32 RGBA, None if the marker has none


class _CdrReader:
    """Little-endian CDR reader (alignment counted after the 4-byte header)."""

    def __init__(self, raw: bytes) -> None:
        self.buf = memoryview(raw)
        self.pos = 4

    def align(self, n: int) -> None:
        self.pos += (-(self.pos - 4)) % n

    def unpack(self, fmt: str, size: int) -> tuple[Any, ...]:
        self.align(size)
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def skip_bool(self) -> None:
        self.pos += 1

    def string(self) -> str:
        (n,) = self.unpack("I", 4)
        text = bytes(self.buf[self.pos:self.pos + n - 1]).decode()
        self.pos += n
        return text

    def array(self, dtype: str, width: int, align: int) -> np.ndarray:
        (n,) = self.unpack("I", 4)
        if n:
            self.align(align)
        out = np.frombuffer(self.buf, dtype, n * width, self.pos).reshape(n, width)
        self.pos += out.nbytes
        return out


def parse_marker_array(raw: bytes) -> list[ParsedMarker]:
    """The markers of a serialised ``visualization_msgs/MarkerArray`` (numpy, fast: the
    rclpy message would build one Python object per vertex)."""
    r = _CdrReader(raw)
    (count,) = r.unpack("I", 4)
    out = []
    for _ in range(count):
        r.unpack("iI", 4)  # header stamp
        r.string()  # frame_id
        r.string()  # ns
        marker_id, _type, action = r.unpack("iii", 4)
        r.unpack("7d", 8)  # pose
        r.unpack("3d", 8)  # scale
        r.unpack("4f", 4)  # color
        r.unpack("iI", 4)  # lifetime
        r.skip_bool()  # frame_locked
        points = r.array("<f8", 3, 8)
        colors = r.array("<f4", 4, 4)
        r.string()  # texture_resource
        r.unpack("iI", 4)  # texture.header.stamp
        r.string()  # texture.header.frame_id
        r.string()  # texture.format
        r.array("u1", 1, 1)  # texture.data
        r.array("<f4", 2, 4)  # uv_coordinates
        r.string()  # text
        r.string()  # mesh_resource
        r.string()  # mesh_file.filename
        r.array("u1", 1, 1)  # mesh_file.data
        r.skip_bool()  # mesh_use_embedded_materials
        out.append(ParsedMarker(int(marker_id), int(action), points.reshape(-1, 3, 3).copy(),
                                colors.copy() if len(colors) else None))
    return out


def mesh_state(messages: Sequence[bytes]) -> dict[int, np.ndarray]:
    """Apply serialised marker messages in order (ADD/DELETE/DELETEALL): marker id ->
    (T, 3, 3) triangles as RViz would show them."""
    state: dict[int, np.ndarray] = {}
    for raw in messages:
        for m in parse_marker_array(raw):
            if m.action == MARKER_DELETEALL:
                state.clear()
            elif m.action == MARKER_DELETE:
                state.pop(m.id, None)
            else:
                state[m.id] = m.corners
    return state


def mesh_vertices(state: dict[int, np.ndarray]) -> np.ndarray:
    """(N, 3) every triangle corner of a :func:`mesh_state`."""
    if not state:
        return np.zeros((0, 3))
    return np.concatenate([t.reshape(-1, 3) for t in state.values()])
