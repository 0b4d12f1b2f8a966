"""``recon_mapper``: the live ROS 2 mapping node.

Inputs (per camera namespace ``<ns>`` of the ``cameras`` parameter, relative and remappable;
sensor-data QoS):

- ``<ns>/<depth_image_topic>`` (``sensor_msgs/Image``, 16UC1 mm / mono16 / 32FC1 m) and
  ``<ns>/<depth_info_topic>`` (``CameraInfo``);
- ``<ns>/<color_image_topic>`` (``Image`` rgb8/bgr8/rgba8/bgra8/mono8) or
  ``<ns>/<color_image_topic>/compressed`` (``CompressedImage``) and ``<ns>/<color_info_topic>``;
- ``/tf`` and ``/tf_static`` (``tf2_msgs/TFMessage``, the latter transient-local) into the
  project's :class:`~recon_ros.io.tf_buffer.TfBuffer`: the pose of each depth image and, with
  ``robot_frame`` set, the robot position (centre of the map's clearing radius and memory
  eviction) at its stamp.

Color-only modes (``fusion.method`` in :data:`~recon_ros.core.mapper.COLOR_METHODS`:
``stereo``, ``rgb``): no depth topic is subscribed; each camera's color image (raw, or
compressed with ``color_transport: compressed``) and color camera_info are, and each color
image, posed by TF at its stamp like a depth image, goes to
:meth:`~recon_ros.core.mapper.Mapper.integrate_color`; the map (and every output) changes when
the color pipeline fuses something (a keyframe's depth: with ``stereo.reference_delay`` newer
keyframes, later than the keyframe's own image). A save (``~/save_map``, ``~/save_map_as``)
writes a copy of the map whose pending keyframes were flushed
(:meth:`~recon_ros.core.mapper.Mapper.finish_color`), while the live map keeps them waiting
for their newer source views; autosave at shutdown flushes the live map (the stream ended).
The input kind (depth or color-only) is fixed at start-up: a parameter change or
``~/load_map`` of a map of the other kind is refused.

Outputs (map frame): ``map`` (``nav_msgs/OccupancyGrid``, transient-local, in the node's
namespace: the name Nav2's StaticLayer and map_saver use) with ``map_updates``
(``map_msgs/OccupancyGridUpdate``: the box of changed cells while the grid keeps its size and
origin); node-private: ``~/mesh`` (``visualization_msgs/MarkerArray``, one TRIANGLE_LIST
marker per voxel block, only changed blocks; a DELETE when a block's surface is gone or the
block was released), ``~/mesh_blocks`` (``recon_ros_interfaces/Mesh``: the same blocks as
indexed meshes, float32 vertices, uint32 triangles, uint8 colors), ``~/occupied_voxels``
(``PointCloud2``), ``~/esdf_slice`` (``PointCloud2`` with a ``distance`` field),
``~/costmap`` and ``~/local_costmap`` (Nav2-style costmaps as ``OccupancyGrid``,
transient-local), ``~/status`` (``std_msgs/String`` holding JSON) and ``/diagnostics``
(``diagnostic_msgs/DiagnosticArray``: map, cameras, TF). A publisher of incremental outputs
sends everything again to a new subscriber (:mod:`~recon_ros.ros.subscriber_watch`).
Services: ``~/save_map_as`` (``recon_ros_interfaces/SaveMap``) and ``~/load_map_from``
(``LoadMap``) with a path in the request, ``~/save_map`` and ``~/load_map``
(``std_srvs/Trigger``: the same on the ``map_dir`` parameter), ``~/reset`` (Trigger),
``~/render`` (``recon_ros_interfaces/Render``: the map's depth and color seen from a TF frame
or the latest camera pose, at most one per ``render_min_interval_s``). Every
``quality_every_frames``-th frame is scored before it is fused (how much of it the map
already explains, :meth:`~recon_ros.core.mapper.Mapper.frame_agreement`): ``quality`` in the
status.

Map sharing (``map_sharing.*``, :mod:`~recon_ros.ros.map_sharing`): with
``map_sharing.publish_deltas`` the changed blocks of the node's own map go out as
``recon_ros_interfaces/MapDelta`` on ``map_deltas`` (in the node's namespace); with
``map_sharing.peer_topics`` other robots' deltas are merged, each peer block counted once
(:mod:`~recon_ros.core.shared_map`), into the map every output above shows and every save
writes; ``map_sharing`` in the status counts what was sent, received and rejected.

Threads: the input subscriptions live on an internal node spun in its own thread
(:class:`~recon_ros.ros.intake.IntakeThread`); they only queue messages
(:class:`~recon_ros.ros.camera_stream.CameraStream`) and feed TF, so images and TF keep
flowing whatever the map work does. The node itself is spun by a two-thread executor: the
integration tick, the output timers, ``~/reset``, ``~/render`` and the parameter changes' map
rebuild share one mutually exclusive group (and hold the map lock); the save and load services
have their own group: a save copies the map under the lock (milliseconds) and writes the copy
while integration goes on, a load reads the file first and swaps the map in under the lock. Timers
run on the steady clock, so processing continues when simulated time (``use_sim_time``)
pauses; stamps and TF use message time.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from map_msgs.msg import OccupancyGridUpdate
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.executors import Executor, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.timer import Timer
from recon_ros_interfaces.msg import Mesh
from recon_ros_interfaces.srv import LoadMap, Render, SaveMap
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from recon_ros.core.block_hash import unpack_keys
from recon_ros.core.errors import ConfigError, ReconError
from recon_ros.core.frame import Frame, PinholeCamera
from recon_ros.core.mapper import COLOR_METHODS, Mapper
from recon_ros.core.occupancy_grid import OccupancyGrid2D
from recon_ros.core.render import RayStatus, RenderOptions, render
from recon_ros.core.rgb_mapping import FragmentTsdf
from recon_ros.io.image_codec import COMPRESSED_IMAGE
from recon_ros.io.rosbag_source import ColorFrame
from recon_ros.io.tf_buffer import TfBuffer
from recon_ros.offline import CHECKPOINT_FILE, MeshExport, write_map_outputs

from . import parameters as P
from .camera_stream import IMAGE, AssembledFrame, AssemblySettings, CameraStream
from .conversions import (
    BlockTriangles,
    IndexedBlock,
    add_tf_message,
    color_msg,
    depth_msg,
    distance_slice_msg,
    grid_update_msg,
    mesh_marker_array_cdr,
    mesh_msg,
    occupancy_grid_msg,
    point_cloud_msg,
)
from .diagnostics import MapperDiagnostics
from .intake import IntakeThread
from .map_sharing import MapSharing, SharingSettings
from .runtime import run_node
from .subscriber_watch import SubscriberWatch

__all__ = ["MapperNode", "main", "scaled_camera"]

NODE_NAME = "recon_mapper"
MESH_NS = "mesh"
#: How much lower the CPU priority of a save's file writing is than the map work's.
SAVE_NICENESS = 10
#: Python's GIL switch interval in the node's process (default 5 ms), seconds.
GIL_SWITCH_INTERVAL_S = 0.0005
#: Map outputs (mesh, grid, planner outputs) wait while a camera queue is at least half full,
#: so that integration catches up first, but never longer than this, seconds.
OUTPUT_MAX_DEFER_S = 2.0
T = TypeVar("T")

TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)


def _input_qos(kind: str, depth: int) -> QoSProfile:
    """Keep-last ``depth``, volatile; best effort for ``sensor_data``, else reliable."""
    reliability = (qos_profile_sensor_data.reliability if kind == "sensor_data"
                   else ReliabilityPolicy.RELIABLE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def _stats_ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples, dtype=np.float64)
    return {"count": int(a.size), "median_ms": float(np.median(a)),
            "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max())}


class _View(NamedTuple):
    """Where the latest integrated image was taken: ``~/render``'s default view."""

    camera: PinholeCamera
    T_world_cam: np.ndarray
    stamp_ns: int
    frame_id: str


class _Refused(Exception):
    """A ``~/render`` call that is not served: ``str()`` says why, ``reason`` is its key in the
    status's ``render`` counts."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def scaled_camera(camera: PinholeCamera, width: int, height: int, max_pixels: int
                  ) -> PinholeCamera:
    """``camera``'s intrinsics for an image of ``width`` x ``height`` of the same view (0 and 0:
    the camera's size; one of them 0: it follows the camera's aspect ratio), scaled down
    uniformly to at most ``max_pixels`` pixels. Pixel ``(u, v)`` maps to ``(u s_x, v s_y)`` as
    :meth:`PinholeCamera.strided` does for ``s = 1 / stride``."""
    if not width and not height:
        width, height = camera.width, camera.height
    elif not height:
        height = round(width * camera.height / camera.width)
    elif not width:
        width = round(height * camera.width / camera.height)
    if width * height > max_pixels:
        shrink = math.sqrt(max_pixels / (width * height))
        width, height = int(width * shrink), int(height * shrink)
    width, height = max(1, width), max(1, height)
    K = np.diag([width / camera.width, height / camera.height, 1.0]) @ camera.K
    return PinholeCamera(K, width, height)


def _finite_or_none(value: float) -> float | None:
    """A figure for the JSON status: NaN (nothing to compare) as null."""
    return value if math.isfinite(value) else None


def _lower_priority(niceness: int) -> None:
    """Lower the calling thread's CPU priority by ``niceness`` (Linux: per thread; elsewhere
    nothing)."""
    if hasattr(os, "setpriority"):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def run_niced(work: Callable[[], T], niceness: int) -> T:
    """``work()`` in a new thread whose CPU priority is lowered by ``niceness``; its result
    is returned, its exception raised."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="recon_mapper_save",
                            initializer=_lower_priority, initargs=(niceness,)) as pool:
        return pool.submit(work).result()


class MapperNode(Node):
    """The mapping node (see the module docstring for its interface).

    Raises:
        ConfigError: the parameters given at start-up are invalid.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for p in P.PARAMETERS:
            descriptor = ParameterDescriptor(
                description=p.description + (f" [{p.units}]" if p.units else ""),
                read_only=p.read_only)
            self.declare_parameter(p.name, p.default, descriptor)
        values = self._values()
        self._config_target = P.validate(values)  # raises ConfigError
        if values["cpu_threads"] > 0:
            torch.set_num_threads(int(values["cpu_threads"]))
        # Threads (intake, map work, a save) take turns holding the GIL: a thread that wants
        # it waits up to the switch interval, 5 ms by default, each time; the map work
        # releases it around each of its ~1,000 torch ops per frame.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        if values["load_map_on_start"]:
            try:
                path, self.mapper = self._read_map(Path(str(values["load_map_on_start"])))
            except (OSError, ReconError) as err:
                raise ConfigError(f"cannot load map {values['load_map_on_start']} "
                                  f"(load_map_on_start): {err}") from err
            self._mirror_config()
            self.get_logger().info(f"load_map_on_start: loaded {path} "
                                   f"({self.mapper.frames_integrated} frames)")
        else:
            self.mapper = Mapper(self._config_target)
        #: Color images only, no depth (fusion.method of the map, loaded or new): fixed for
        #: the node's life, as its subscriptions are.
        self.color_only = self.mapper.config.fusion.method in COLOR_METHODS
        P.check_color_input(self.mapper.config.fusion.method, values["color_transport"])
        self._map_frame = str(values["map_frame"]).removeprefix("/")
        # Held by every callback that touches the map (the map group) and by a save while it
        # copies the map, or a load while it swaps one in.
        self._map_lock = threading.RLock()

        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._tf_lock = threading.Lock()
        self._tf = TfBuffer(cache_time_s=float(values["tf_cache_s"]))
        self._tf_refused: Counter[str] = Counter()
        self._drop_lock = threading.Lock()
        self._drop_totals: Counter[str] = Counter()

        self._map_group = MutuallyExclusiveCallbackGroup()
        self._file_group = MutuallyExclusiveCallbackGroup()
        self._intake = IntakeThread(self)
        self.streams = [self._subscribe_camera(ns, values) for ns in values["cameras"]]
        self._intake.subscribe(TFMessage, "/tf", lambda m: self._on_tf(m, False), TF_QOS)
        self._intake.subscribe(TFMessage, "/tf_static", lambda m: self._on_tf(m, True),
                               TF_STATIC_QOS)

        group = self._map_group
        self._mesh_watch = SubscriberWatch(self, MarkerArray, "~/mesh", RELIABLE_QOS, group)
        self._blocks_watch = SubscriberWatch(self, Mesh, "~/mesh_blocks", RELIABLE_QOS, group)
        self._grid_watch = SubscriberWatch(self, OccupancyGrid, "map", LATCHED_QOS, group)
        self._mesh_pub = self._mesh_watch.publisher
        self._blocks_pub = self._blocks_watch.publisher
        self._grid_pub = self._grid_watch.publisher
        self._grid_update_pub = self.create_publisher(OccupancyGridUpdate, "map_updates",
                                                      RELIABLE_QOS)
        self._cloud_pub = self.create_publisher(PointCloud2, "~/occupied_voxels", RELIABLE_QOS)
        self._slice_pub = self.create_publisher(PointCloud2, "~/esdf_slice", RELIABLE_QOS)
        self._costmap_pub = self.create_publisher(OccupancyGrid, "~/costmap", LATCHED_QOS)
        self._local_costmap_pub = self.create_publisher(OccupancyGrid, "~/local_costmap",
                                                        LATCHED_QOS)
        self._status_pub = self.create_publisher(String, "~/status", RELIABLE_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics",
                                                      RELIABLE_QOS)
        self._diagnostics = MapperDiagnostics(self.get_name())
        for srv_type, name, service, group in (
                (SaveMap, "~/save_map_as", self._srv_save_as, self._file_group),
                (LoadMap, "~/load_map_from", self._srv_load_from, self._file_group),
                (Trigger, "~/save_map", self._srv_save, self._file_group),
                (Trigger, "~/load_map", self._srv_load, self._file_group),
                (Trigger, "~/reset", self._exclusive(self._srv_reset), self._map_group),
                (Render, "~/render", self._exclusive(self._srv_render), self._map_group)):
            self.create_service(srv_type, name, service, callback_group=group)
        self._sharing = MapSharing(
            self, self.mapper, SharingSettings.from_values(values,
                                                           self.get_fully_qualified_name()),
            self._map_frame, self._map_group, self._steady, self._exclusive,
            self._header_stamp, self._throttle_s)

        # Mesh bookkeeping: marker id per block key with a surface (fresh ids for blocks that
        # reappear, so the table stays as small as the mesh), subscribers seen, latencies.
        self._marker_ids: dict[int, int] = {}
        self._new_marker_ids = itertools.count(1)
        self._mesh_messages = 0
        self._meshed_frames = 0
        self._occupancy_frames = -1
        self._occupancy_version = -1  # MapSharing.version() of the last grid
        # Grid bookkeeping: the cells `map` subscribers hold (last full grid + updates).
        self._sent_grid: OccupancyGrid2D | None = None
        self._sent_grid_stamp_ns = 0
        self._planning_frames = -1
        self._planning_version = -1
        # outputs waiting for integration to catch up: from this many queued depth images,
        # since when, and how often
        self._defer_from_queued = max(1, int(values["queue_size"]) // 2)
        self._deferred_since: dict[str, float] = {}
        self._deferrals: Counter[str] = Counter()
        # map-frame (x, y) of the robot (robot_frame, else the camera) at the newest frame,
        # metres: the centre of ~/local_costmap
        self._robot_xy: tuple[float, float] | None = None
        self._last_stamp_ns = 0
        self._unmeshed_stamps: list[int] = []
        self._latency: dict[str, list[float]] = defaultdict(list)
        self._node_times: dict[str, list[float]] = defaultdict(list)
        # map quality: frames scored and failed since start, the latest scored frame's figures
        self._quality: dict[str, Any] = {"scored": 0, "failed": 0}
        # ~/render: the default view, when the last render started (steady, s), outcomes
        self._last_view: _View | None = None
        self._last_render_s = -math.inf
        self._renders: Counter[str] = Counter()

        self._rate_timers: dict[str, Timer] = {}
        for key, callback in (("tick_rate_hz", self._tick), ("mesh_rate_hz", self._publish_mesh),
                              ("occupancy_rate_hz", self._publish_occupancy),
                              ("esdf_rate_hz", self._publish_planning),
                              ("status_rate_hz", self._publish_status)):
            self._rate_timers[key] = self.create_timer(
                1.0, self._exclusive(callback), callback_group=self._map_group,
                clock=self._steady)
            self._set_rate(key, float(values[key]))
        if hasattr(self, "add_post_set_parameters_callback"):  # Iron and newer
            self.add_on_set_parameters_callback(self._validate_parameters)
            self.add_post_set_parameters_callback(self._apply_parameters)
        else:  # Humble: one callback, before the new values are set
            self.add_on_set_parameters_callback(self._validate_and_apply)
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1),
                          on_clock_change=False),
            post_callback=self._on_time_jump)
        self._intake.start()
        inputs = (f"color images only (fusion.method {self.mapper.config.fusion.method})"
                  if self.color_only else "depth images")
        self.get_logger().info(
            f"mapping {len(self.streams)} camera(s) {list(values['cameras'])} into frame "
            f"'{self._map_frame}' at {self.mapper.config.volume.voxel_size_m:g} m voxels on "
            f"{self.mapper.device} from {inputs}")

    def _exclusive(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        """``callback`` holding the map lock while it runs."""
        def locked(*args: Any) -> Any:
            with self._map_lock:
                return callback(*args)
        return locked

    # ------------------------------------------------------------------ parameters

    def _values(self) -> dict[str, Any]:
        """Current values of every table parameter."""
        return {p.name: self.get_parameter(p.name).value for p in P.PARAMETERS}

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        values = self._values()
        values.update({p.name: p.value for p in params if p.name in values})
        refusal = self._input_kind_refusal(str(values["fusion.method"]), "fusion.method")
        if refusal:
            return SetParametersResult(successful=False, reason=refusal)
        try:
            P.validate(values)
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        except (TypeError, ValueError) as err:
            return SetParametersResult(successful=False, reason=f"invalid value: {err}")
        return SetParametersResult(successful=True)

    def _input_kind_refusal(self, method: str, what: str) -> str:
        """Why ``method`` (from ``what``) cannot be the node's fusion method: it maps another
        input (depth vs color only) than the node subscribed at start-up; "" if it can."""
        if (method in COLOR_METHODS) == self.color_only:
            return ""
        return (f"{what}: fusion.method={method!r} maps "
                f"{'color images only' if method in COLOR_METHODS else 'depth images'}, "
                f"but this node subscribed {'color' if self.color_only else 'depth'} images at "
                "start-up; restart it with that fusion.method")

    def _validate_and_apply(self, params: list[Parameter]) -> SetParametersResult:
        """Humble's set-parameters path (no post-set callback): validate, then apply the new
        values on top of the current ones (they are not set yet inside this callback)."""
        result = self._validate_parameters(params)
        if result.successful:
            self._apply_parameters(params)
        return result

    def _apply_parameters(self, params: list[Parameter]) -> None:
        values = self._values()
        values.update({p.name: p.value for p in params if p.name in values})
        for p in params:
            if p.name in self._rate_timers:
                self._set_rate(p.name, float(p.value))
        self._config_target = P.core_config(values)
        if self._config_target != self.mapper.config:
            self.get_logger().info(
                "map parameters changed: they take effect at the next ~/reset (or now, if the "
                "map is still empty)")

    def _set_rate(self, key: str, rate_hz: float) -> None:
        timer = self._rate_timers[key]
        if rate_hz <= 0.0:
            timer.cancel()
            return
        timer.timer_period_ns = int(1e9 / rate_hz)
        timer.reset()

    def _setting(self, name: str) -> Any:
        return self.get_parameter(name).value

    # ------------------------------------------------------------------ inputs

    def _subscribe_camera(self, ns: str, values: dict[str, Any]) -> CameraStream:
        """The inputs of camera namespace ``ns``: depth image and camera_info unless
        :attr:`color_only`, color image (per ``color_transport``) and camera_info."""
        transport = values["color_transport"]
        stream = CameraStream(ns, int(values["queue_size"]), transport != "none",
                              on_drop=self._on_drop, color_optional=transport == "auto",
                              color_only=self.color_only)
        # The DDS history only buffers bursts until the callbacks run; the node's queue (and
        # its counted overflow) is the policy, so the history is deeper than the queue.
        qos = _input_qos(values["input_qos"], 2 * int(values["queue_size"]))
        info_qos = _input_qos(values["input_qos"], 5)
        subscribe = self._intake.subscribe
        if not self.color_only:
            subscribe(Image, f"{ns}/{values['depth_image_topic']}", stream.push_depth, qos)
            subscribe(CameraInfo, f"{ns}/{values['depth_info_topic']}", stream.set_depth_info,
                      info_qos)
        if transport in ("raw", "auto"):
            subscribe(Image, f"{ns}/{values['color_image_topic']}",
                      lambda m: stream.push_color(m, IMAGE), qos)
        elif transport == "compressed":
            subscribe(CompressedImage, f"{ns}/{values['color_image_topic']}/compressed",
                      lambda m: stream.push_color(m, COMPRESSED_IMAGE), qos)
        if transport != "none":
            subscribe(CameraInfo, f"{ns}/{values['color_info_topic']}", stream.set_color_info,
                      info_qos)
        return stream

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        with self._tf_lock:
            refused = add_tf_message(self._tf, msg, static)
        if refused:
            with self._drop_lock:
                self._tf_refused.update(refused)
            self.get_logger().warning(f"TF refused: {refused[0]}",
                                      throttle_duration_sec=self._throttle_s())

    def _lookup(self, target: str, source: str, stamp: int) -> np.ndarray:
        with self._tf_lock:
            return self._tf.lookup(target, source, stamp)

    def _on_time_jump(self, jump: TimeJump) -> None:
        """Time jumped back (a bag restarted or looped): forget dynamic TF and queued frames
        (their stamps would look like going backwards), keep static TF and the map. Runs in
        the /clock callback, before the new pass's messages are handled."""
        with self._tf_lock:
            self._tf.clear(keep_static=True)
        for stream in self.streams:
            stream.clear()
        self.get_logger().warning(
            f"time jumped back by {-jump.delta.nanoseconds / 1e9:.3f} s: dynamic TF and queued "
            "frames cleared", throttle_duration_sec=self._throttle_s())

    def _throttle_s(self) -> float:
        return float(self._setting("drop_log_period_s"))

    def _on_drop(self, camera: str, kind: str, reason: str, detail: str) -> None:
        """Log a dropped frame: each reason's first occurrence in full, then a throttled
        summary of the counts. A frame integrated without its robot position is no drop: that
        warning is logged in full, throttled."""
        if kind == "robot":
            self.get_logger().warning(f"[{camera}] {detail}",
                                      throttle_duration_sec=self._throttle_s())
            return
        key = f"{camera}: {kind}: {reason}"
        with self._drop_lock:
            self._drop_totals[key] += 1
            first = self._drop_totals[key] == 1
            summary = ", ".join(f"{k} x{n}" for k, n in self._drop_totals.most_common())
        what = (f"dropped {'color image' if self.color_only else 'depth frame'}"
                if kind == "frame" else "integrating without color")
        if first:
            self.get_logger().warning(f"[{camera}] {what}: {detail}")
        else:
            self.get_logger().warning(f"frames dropped so far: {summary}",
                                      throttle_duration_sec=self._throttle_s())

    # ------------------------------------------------------------------ integration

    def _settings(self) -> AssemblySettings:
        ic = self.mapper.config.integration
        return AssemblySettings(
            map_frame=self._map_frame,
            timeout_ns=int(float(self._setting("tf_timeout_s")) * 1e9),
            max_color_offset_ns=int(float(self._setting("color_max_offset_s")) * 1e9),
            min_depth_m=ic.min_depth_m, max_depth_m=ic.max_depth_m,
            robot_frame=str(self._setting("robot_frame")).removeprefix("/"))

    def _tick(self) -> None:
        """Integrate every ready frame, for at most one tick period."""
        if self.mapper.frames_integrated == 0 and self._config_target != self.mapper.config:
            self._rebuild_map("map parameters applied")
        budget_ns = self._rate_timers["tick_rate_hz"].timer_period_ns
        start = self._steady.now().nanoseconds
        settings = self._settings()
        progress = True
        while progress and self._steady.now().nanoseconds - start < budget_ns:
            progress = False
            for stream in self.streams:
                t0 = time.perf_counter()
                ready = stream.next_frame(self._lookup, settings, self._steady.now().nanoseconds)
                if ready is not None:
                    self._node_times["assemble"].append((time.perf_counter() - t0) * 1e3)
                    self._integrate(stream, ready)
                    progress = True

    def _integrate(self, stream: CameraStream, ready: AssembledFrame) -> None:
        """Hand ``ready`` to the map (:meth:`_fuse`); a core error drops it (counted). The
        image becomes ``~/render``'s default view and the robot's position; the stamp of
        what was fused (color-only: possibly an earlier keyframe's) is owed a mesh update."""
        image = ready.frame
        try:
            fused = self._fuse(ready)
        except ReconError as err:  # e.g. a pose far outside the volume's index range
            stream.record_drop("integration failed", str(err))
            return
        self._last_stamp_ns = max(self._last_stamp_ns, image.stamp_ns)
        self._last_view = _View(image.camera, image.T_world_cam, image.stamp_ns, image.frame_id)
        robot = image.T_world_cam[:3, 3] if ready.robot_position_m is None \
            else ready.robot_position_m
        self._robot_xy = (float(robot[0]), float(robot[1]))
        if fused is not None:
            self._unmeshed_stamps.append(fused.stamp_ns)
            self._latency["integrated"].append(self._age_ms(fused.stamp_ns))

    def _fuse(self, ready: AssembledFrame) -> Frame | FragmentTsdf | None:
        """A depth frame: scored (``quality_every_frames``), then integrated; returned. A
        posed color image: offered to the color pipeline
        (:meth:`~recon_ros.core.mapper.Mapper.integrate_color`); returns what it fused (stereo:
        a keyframe's depth frame; rgb: a fragment), or None (not a keyframe, or keyframes
        waiting for newer ones).

        Raises:
            ReconError: the core refused the frame.
        """
        if isinstance(ready.frame, ColorFrame):
            image = ready.frame
            return self.mapper.integrate_color(image.color, image.camera, image.T_world_cam,
                                               image.stamp_ns, image.frame_id,
                                               ready.robot_position_m)
        self._score_quality(ready.frame)
        self.mapper.integrate(ready.frame, ready.robot_position_m)
        return ready.frame

    def _score_quality(self, frame: Frame) -> None:
        """Before ``frame`` is fused, if it is a ``quality_every_frames``-th frame and the map
        holds a block: how well the map explains it (:meth:`Mapper.frame_agreement`, stage
        ``quality`` of the timings), kept for the status. A core error is counted as
        ``failed`` and logged (throttled); the frame is integrated all the same."""
        if not self.mapper.agreement_due(int(self._setting("quality_every_frames"))):
            return
        try:
            agreement = self.mapper.frame_agreement(frame)
        except ReconError as err:
            self._quality["failed"] += 1
            self.get_logger().warning(f"map quality of the frame stamped {frame.stamp_ns} not "
                                      f"scored: {err}", throttle_duration_sec=self._throttle_s())
            return
        self._quality.update(
            scored=self._quality["scored"] + 1, frame_stamp_ns=frame.stamp_ns,
            explained=_finite_or_none(agreement.explained),
            inlier_ratio=_finite_or_none(agreement.inlier_ratio),
            mean_abs_error_m=_finite_or_none(agreement.mean_abs_error_m),
            unknown=_finite_or_none(agreement.unknown), pixels=agreement.pixels)

    def _age_ms(self, stamp: int) -> float:
        return (self.get_clock().now().nanoseconds - stamp) / 1e6

    def _rebuild_map(self, why: str) -> bool:
        """A new, empty map with the current parameters; False (old map kept) if the core
        cannot build it (e.g. missing latent-fusion weights)."""
        try:
            mapper = Mapper(self._config_target)
        except (ReconError, OSError) as err:
            self.get_logger().error(f"{why}: cannot build a map with the new parameters, "
                                    f"keeping the old one: {err}",
                                    throttle_duration_sec=self._throttle_s())
            return False
        self.mapper = mapper
        self._sharing.rebase(mapper)
        self._resend_outputs()
        self.get_logger().info(f"{why}: empty map, {self.mapper.config.volume.voxel_size_m:g} m "
                               f"voxels on {self.mapper.device}")
        return True

    # ------------------------------------------------------------------ outputs

    def _resend_outputs(self) -> None:
        """The map was replaced (reset, load): every output is sent again in full."""
        self._marker_ids.clear()
        self._mesh_watch.request_full()
        self._blocks_watch.request_full()
        self._occupancy_frames = self._occupancy_version = -1
        self._sent_grid = None
        self._planning_frames = self._planning_version = -1
        self._unmeshed_stamps.clear()

    def _header_stamp(self) -> int:
        return self._last_stamp_ns or self.get_clock().now().nanoseconds

    def _map(self) -> Mapper:
        """The map the outputs (mesh, grid, planner outputs, ~/render, saves) show: the own
        map, or with ``map_sharing.peer_topics`` the own map merged with the peers' latest
        blocks (:meth:`MapSharing.output`). Map lock held."""
        return self._sharing.output()

    def _defer_output(self, output: str) -> bool:
        """True if ``output`` should wait for integration to catch up: a camera queue is at
        least half full and the output was last sent (or deferred first) less than
        :data:`OUTPUT_MAX_DEFER_S` ago. Deferrals are counted per output in the status."""
        now = time.monotonic()
        if any(stream.queued() >= self._defer_from_queued for stream in self.streams):
            since = self._deferred_since.setdefault(output, now)
            if now - since < OUTPUT_MAX_DEFER_S:
                self._deferrals[output] += 1
                return True
        self._deferred_since.pop(output, None)
        return False

    def _publish_mesh(self) -> None:
        """Publish the blocks whose mesh changed on ``~/mesh`` (markers) and ``~/mesh_blocks``
        (indexed meshes), each only while it has subscribers; everything (after a clear) to a
        publisher with a new subscriber, and after a reset or a load."""
        watches = {"markers": self._mesh_watch, "blocks": self._blocks_watch}
        wanted = {output: watch.subscribed() for output, watch in watches.items()}
        resend = {output: watch.take_full() and wanted[output]
                  for output, watch in watches.items()}
        if not any(wanted.values()):
            self._unmeshed_stamps.clear()
            return
        if self._defer_output("mesh"):
            for output, watch in watches.items():  # still owed at the next update
                if resend[output]:
                    watch.request_full()
            return
        t0 = time.perf_counter()
        mapper = self._map()
        changed = mapper.update_mesh()
        self._meshed_frames = mapper.frames_integrated
        sent = False
        if wanted["markers"] and (resend["markers"] or changed.numel()):
            sent |= self._send_mesh_markers(mapper, changed, resend["markers"])
        if wanted["blocks"] and (resend["blocks"] or changed.numel()):
            sent |= self._send_mesh_blocks(mapper, changed, resend["blocks"])
        if not sent:
            return
        self._node_times["mesh_publish"].append((time.perf_counter() - t0) * 1e3)
        for stamp in self._unmeshed_stamps:
            self._latency["mesh"].append(self._age_ms(stamp))
        self._unmeshed_stamps.clear()

    def _send_mesh_markers(self, mapper: Mapper, changed: torch.Tensor, resend_all: bool
                           ) -> bool:
        """``~/mesh``: one marker per changed block of ``mapper`` (every block after a
        DELETEALL with ``resend_all``); False if there was nothing to send."""
        if resend_all:
            self._marker_ids.clear()
        keys, counts, corners, colors = mapper.mesher.block_triangles(
            None if resend_all else changed, with_colors=mapper.has_color)
        blocks: list[BlockTriangles] = []
        start = 0
        for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
            end = start + count
            if count:
                marker_id = self._marker_ids.get(key)
                if marker_id is None:
                    marker_id = self._marker_ids[key] = next(self._new_marker_ids)
                blocks.append((marker_id, corners[start:end],
                               None if colors is None else colors[start:end]))
            elif key in self._marker_ids:  # the block's surface is gone, or it was released
                blocks.append((self._marker_ids.pop(key), None, None))
            start = end
        if not blocks and not resend_all:
            return False
        self._send_markers(blocks, delete_all_first=resend_all)
        return True

    def _send_mesh_blocks(self, mapper: Mapper, changed: torch.Tensor, resend_all: bool
                          ) -> bool:
        """``~/mesh_blocks``: the changed blocks of ``mapper`` as indexed meshes (every block
        with a surface and ``clear`` set with ``resend_all``); False if there was nothing to
        send."""
        keys, n_vertices, n_triangles, vertices, triangles, colors = \
            mapper.mesher.block_indexed(None if resend_all else changed,
                                        with_colors=mapper.has_color)
        if keys.size == 0 and not resend_all:
            return False
        blocks: list[IndexedBlock] = []
        if keys.size:
            index = unpack_keys(torch.from_numpy(keys)).numpy()
            v_split, t_split = np.cumsum(n_vertices)[:-1], np.cumsum(n_triangles)[:-1]
            per_block_colors = (np.split(colors, v_split) if colors is not None
                                else [None] * keys.size)
            blocks = list(zip(index, np.split(vertices, v_split), np.split(triangles, t_split),
                              per_block_colors, strict=True))
        volume = mapper.config.volume
        self._blocks_pub.publish(mesh_msg(self._map_frame, self._header_stamp(),
                                          volume.voxel_size_m * volume.block_size, blocks,
                                          clear=resend_all))
        self._mesh_messages += 1
        return True

    def _send_markers(self, blocks: list[BlockTriangles], delete_all_first: bool) -> None:
        self._mesh_pub.publish(mesh_marker_array_cdr(
            self._map_frame, self._header_stamp(), MESH_NS, blocks,
            delete_all_first=delete_all_first))
        self._mesh_messages += 1

    def _publish_occupancy(self) -> None:
        """Publish the 2D grid and the occupied voxels if the map changed since last time, and
        the full grid again when ``map`` has a new subscriber (its transient-local copy may be
        older than the updates sent since)."""
        newcomer = self._grid_watch.take_full()
        mapper = self._map()
        changed = (mapper.frames_integrated, self._sharing.version()) != \
            (self._occupancy_frames, self._occupancy_version)
        if not (changed or newcomer):
            return
        if self._defer_output("occupancy"):
            if newcomer:  # still owed at the next update
                self._grid_watch.request_full()
            return
        t0 = time.perf_counter()
        self._occupancy_frames = mapper.frames_integrated
        self._occupancy_version = self._sharing.version()
        stamp = self._header_stamp()
        self._send_grid(mapper.occupancy_grid(), stamp, full=newcomer)
        if changed:
            self._cloud_pub.publish(point_cloud_msg(mapper.occupied_voxels(),
                                                    self._map_frame, stamp))
        self._node_times["occupancy_publish"].append((time.perf_counter() - t0) * 1e3)

    def _send_grid(self, grid: OccupancyGrid2D, stamp: int, full: bool) -> None:
        """``grid`` on ``map``, or only its changed cells on ``map_updates`` when it has
        the geometry (size, resolution, origin, height) of the grid subscribers hold and
        ``full`` is False (nothing at all if no cell changed)."""
        sent = self._sent_grid
        if full or sent is None or (sent.data.shape, sent.resolution_m, sent.origin_xy,
                                    sent.min_height_m) != (grid.data.shape, grid.resolution_m,
                                                           grid.origin_xy, grid.min_height_m):
            self._grid_pub.publish(occupancy_grid_msg(grid, self._map_frame, stamp))
        else:
            update = grid_update_msg(sent.data, grid, self._map_frame, stamp)
            if update is None:
                return
            self._grid_update_pub.publish(update)
        # a copy: the core may reuse its buffer for the next grid
        self._sent_grid = OccupancyGrid2D(grid.data.copy(), grid.resolution_m, grid.origin_xy,
                                          grid.min_height_m, grid.max_height_m)
        self._sent_grid_stamp_ns = stamp

    def _publish_planning(self) -> None:
        """Publish the ESDF slice (if ``esdf.enabled``), the global costmap and the local
        costmap around the robot (if ``costmap.local_size_m`` > 0) if the map changed since
        last time. A core error is logged (throttled) and the outputs are tried again at the
        next change."""
        mapper = self._map()
        if (mapper.frames_integrated, self._sharing.version()) == \
                (self._planning_frames, self._planning_version):
            return
        if self._defer_output("planning"):
            return
        t0 = time.perf_counter()
        self._planning_frames = mapper.frames_integrated
        self._planning_version = self._sharing.version()
        stamp = self._header_stamp()
        config = mapper.config
        try:
            if config.esdf.enabled:
                self._slice_pub.publish(distance_slice_msg(mapper.esdf_slice(),
                                                           self._map_frame, stamp))
            self._costmap_pub.publish(occupancy_grid_msg(mapper.costmap(),
                                                         self._map_frame, stamp))
            size_m = config.costmap.local_size_m
            if size_m > 0.0 and self._robot_xy is not None:
                self._local_costmap_pub.publish(occupancy_grid_msg(
                    mapper.costmap(self._robot_xy, size_m), self._map_frame, stamp))
        except ReconError as err:
            self.get_logger().error(f"planner outputs (ESDF slice, costmaps) not published: "
                                    f"{err}", throttle_duration_sec=self._throttle_s())
            return
        self._node_times["planning_publish"].append((time.perf_counter() - t0) * 1e3)

    def status(self) -> dict[str, Any]:
        """Everything the status topic reports (timings and latencies of the last period)."""
        timings = self.mapper.timer.summary()
        timings.update({k: _stats_ms(v) for k, v in self._node_times.items() if v})
        with self._drop_lock:
            tf_refused = dict(self._tf_refused)
        with self._tf_lock:
            tf_frames = len(self._tf.frames())
        return {
            "node": self.get_fully_qualified_name(),
            "stamp_ns": self.get_clock().now().nanoseconds,
            "frames_integrated": self.mapper.frames_integrated,
            "config_pending": self._config_target != self.mapper.config,
            "map": self.mapper.stats(),
            "mesh": {"marker_ids": len(self._marker_ids), "messages": self._mesh_messages,
                     "frames_integrated": self._meshed_frames},
            "occupancy_frames_integrated": self._occupancy_frames,
            "grid_stamp_ns": self._sent_grid_stamp_ns,
            "planning_frames_integrated": self._planning_frames,
            "outputs_deferred": dict(self._deferrals),
            "quality": dict(self._quality),
            "render": dict(self._renders),
            "map_sharing": self._sharing.status(),
            "cameras": {s.name: s.status() for s in self.streams},
            "color_pipeline": self.mapper.color_input_counts(),
            "tf": {"frames": tf_frames, "refused": tf_refused},
            "timings_ms": timings,
            "latency_ms": {k: _stats_ms(v) for k, v in self._latency.items() if v},
        }

    def _publish_status(self) -> None:
        """``~/status`` (JSON) and ``/diagnostics`` from the same counters."""
        status = self.status()
        msg = String()
        msg.data = json.dumps(status)
        self._status_pub.publish(msg)
        self._diagnostics_pub.publish(self._diagnostics.report(status, time.monotonic_ns()))
        self.mapper.timer.clear()
        self._node_times.clear()
        self._latency.clear()

    # ------------------------------------------------------------------ services

    def save_map(self, directory: Path) -> tuple[dict[str, Path], int, MeshExport]:
        """Replace the map directory (checkpoint, config, Nav2 map, distance field, mesh PLY
        by ``mesh.method``, preview) exactly as ``recon-ros replay`` does, all files in one
        step, so a save cut short keeps the previous map
        (:func:`~recon_ros.offline.write_map_outputs`); returns (name -> path, frames
        integrated into the saved map, the mesh written with its mesher and time).

        The map is copied under the map lock (a deep copy of its tensors: the map's memory
        once more on its device while the files are written) and the files are written from
        the copy, so integration goes on while they are written, by a thread of lower CPU
        priority (nice +:data:`SAVE_NICENESS`) so that integration keeps the cores it needs.
        In a color-only mode that thread first flushes the copy's color pipeline
        (:meth:`_finish_color`): the saved map holds every keyframe seen, while the live map's
        pending keyframes keep waiting for their newer source views. (With
        ``map_sharing.peer_topics`` the copy is the shared view, which holds no pending
        keyframes: they are not in the save.)"""
        with self._map_lock:
            snapshot = copy.deepcopy(self._map())

        def write() -> tuple[dict[str, Path], MeshExport]:
            self._finish_color(snapshot)
            return write_map_outputs(snapshot, directory)

        paths, export = run_niced(write, SAVE_NICENESS)
        return paths, snapshot.frames_integrated, export

    def _finish_color(self, mapper: Mapper) -> None:
        """In a color-only mode, fuse the keyframes ``mapper``'s color pipeline still holds
        back (:meth:`~recon_ros.core.mapper.Mapper.finish_color`), logged; a core error is
        logged and the map saved without them."""
        if not self.color_only:
            return
        before = mapper.frames_integrated
        try:
            mapper.finish_color()
        except ReconError as err:
            self.get_logger().error(f"pending keyframes not fused before the save: {err}")
            return
        self.get_logger().info(f"fused {mapper.frames_integrated - before} pending keyframe(s) "
                               "into the saved map")

    def _directory(self, path: str) -> Path:
        """A request's path, or the ``map_dir`` parameter if it is empty."""
        return Path(path or str(self._setting("map_dir"))).expanduser()

    def _save(self, path: str) -> tuple[bool, str, Path | None]:
        """Save into ``path`` (empty: ``map_dir``): (success, message, absolute directory)."""
        directory = self._directory(path)
        start = time.perf_counter()
        try:
            paths, frames, export = self.save_map(directory)
        except (OSError, ReconError) as err:
            message = f"cannot save map to {directory}: {err}"
            self.get_logger().error(message)
            return False, message, None
        directory = directory.resolve()
        message = (f"saved {frames} frames' map to {directory} in "
                   f"{time.perf_counter() - start:.2f} s (mesh: {export.method}, "
                   f"{export.mesh.num_faces} triangles in {export.seconds:.2f} s): "
                   + ", ".join(p.name for p in paths.values()))
        self.get_logger().info(message)
        return True, message, directory

    @staticmethod
    def _read_map(path: Path, device: str | None = None) -> tuple[Path, Mapper]:
        """The map saved in directory ``path`` (or the checkpoint file ``path``): (absolute
        checkpoint path, map).

        Raises:
            ReconError, OSError: no map there, or an unreadable one.
        """
        checkpoint = path.expanduser()
        if checkpoint.is_dir():
            checkpoint = checkpoint / CHECKPOINT_FILE
        checkpoint = checkpoint.resolve()
        return checkpoint, Mapper.load(checkpoint, device=device)

    def _mirror_config(self) -> None:
        """The map brings its own configuration: make the parameters say so."""
        results = self.set_parameters([Parameter(name, value=value) for name, value
                                       in P.config_values(self.mapper.config).items()])
        for result in results:
            if not result.successful:
                self.get_logger().warning(f"loaded map's config not mirrored: {result.reason}")
        self._config_target = self.mapper.config

    def _load(self, path: str) -> tuple[bool, str, Path | None, int]:
        """Replace the map with the one in ``path`` (empty: ``map_dir``): (success, message,
        absolute checkpoint path, frames integrated into the loaded map). The file is read
        while integration goes on; the map is swapped in under the map lock."""
        directory = self._directory(path)
        try:
            checkpoint, mapper = self._read_map(directory,
                                                device=self._config_target.volume.device)
            refusal = self._input_kind_refusal(mapper.config.fusion.method, "the map's config")
            if refusal:
                raise ConfigError(refusal)
        except (OSError, ReconError) as err:
            message = f"cannot load map {directory}: {err}"
            self.get_logger().error(message)
            return False, message, None, 0
        with self._map_lock:
            self.mapper = mapper
            self._sharing.rebase(mapper)
            self._mirror_config()
            self._resend_outputs()
        frames = mapper.frames_integrated
        message = f"loaded {checkpoint} ({frames} frames, {mapper.volume.num_blocks} blocks)"
        self.get_logger().info(message)
        return True, message, checkpoint, frames

    def _srv_save_as(self, request: SaveMap.Request, response: SaveMap.Response
                     ) -> SaveMap.Response:
        response.success, response.message, directory = self._save(request.path)
        response.path = "" if directory is None else str(directory)
        return response

    def _srv_load_from(self, request: LoadMap.Request, response: LoadMap.Response
                       ) -> LoadMap.Response:
        response.success, response.message, checkpoint, response.frames_integrated = \
            self._load(request.path)
        response.path = "" if checkpoint is None else str(checkpoint)
        return response

    def _srv_save(self, request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        response.success, response.message, _ = self._save("")
        return response

    def _srv_load(self, request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        response.success, response.message, _, _ = self._load("")
        return response

    def _srv_reset(self, request: Trigger.Request, response: Trigger.Response
                   ) -> Trigger.Response:
        if not self._rebuild_map("reset"):
            response.success, response.message = False, "cannot build a map with the current " \
                "parameters (see the log); the old map is kept"
            return response
        self._last_stamp_ns = 0
        self._send_markers([], delete_all_first=True)
        self._mesh_watch.take_full()  # that DELETEALL was everything: the map is empty
        self._meshed_frames = 0
        self._publish_occupancy()
        response.success, response.message = True, "map cleared"
        return response

    def _srv_render(self, request: Render.Request, response: Render.Response
                    ) -> Render.Response:
        """``~/render`` (map group, map lock held): see :meth:`_render`. A refused call
        answers ``success`` False with the reason, is counted and logged (throttled)."""
        try:
            response.depth, response.color, response.message = self._render(request)
        except _Refused as refusal:
            self._renders[refusal.reason] += 1
            response.success, response.message = False, str(refusal)
            self.get_logger().warning(f"~/render refused: {refusal}",
                                      throttle_duration_sec=self._throttle_s())
            return response
        self._renders["rendered"] += 1
        response.success = True
        return response

    def _render(self, request: Render.Request) -> tuple[Image, Image, str]:
        """The map's depth (32FC1 metres, 0 = no hit) and color (rgb8; shaded grey when the
        map has no color) seen from ``request.frame_id`` (a TF frame taken as an optical
        frame, at the latest time TF has; empty: the latest integrated frame's pose) with the
        latest integrated frame's intrinsics scaled to the requested size
        (:func:`scaled_camera`), and a message saying what was rendered.

        Raises:
            _Refused: no frame integrated yet, sooner than ``render_min_interval_s`` after
                the previous render, the frame cannot be looked up, or the core failed.
        """
        view = self._last_view
        if view is None:
            raise _Refused("no camera yet", "no depth frame integrated yet: no camera "
                           "intrinsics to render with")
        interval_s = float(self._setting("render_min_interval_s"))
        wait_s = self._last_render_s + interval_s - time.monotonic()
        if wait_s > 0.0:
            raise _Refused("too soon", f"at most one render per render_min_interval_s="
                           f"{interval_s:g} s: try again in {wait_s:.2f} s")
        frame_id, stamp, T_world_cam = view.frame_id, view.stamp_ns, view.T_world_cam
        if request.frame_id:
            frame_id = request.frame_id.removeprefix("/")
            try:
                with self._tf_lock:
                    stamp = self._tf.latest_common_time(self._map_frame, frame_id)
                    T_world_cam = self._tf.lookup(self._map_frame, frame_id, stamp)
            except ReconError as err:
                raise _Refused("tf lookup failed", f"cannot render from frame '{frame_id}': "
                               f"{err}") from err
            stamp = stamp or self._header_stamp()  # 0: static transforms only
        camera = scaled_camera(view.camera, request.width, request.height,
                               int(self._setting("render_max_pixels")))
        self._last_render_s = time.monotonic()
        t0 = time.perf_counter()
        mapper = self._map()
        ic = mapper.config.integration
        try:
            mapper.decode()
            result = render(mapper.volume, camera, T_world_cam,
                            RenderOptions(min_depth_m=ic.min_depth_m, max_depth_m=ic.max_depth_m))
        except ReconError as err:
            raise _Refused("render failed", f"cannot render from frame '{frame_id}': "
                           f"{err}") from err
        rgb = result.color if mapper.has_color else result.shaded[..., None].expand(-1, -1, 3)
        hit = float((result.status == RayStatus.HIT).float().mean())
        depth = depth_msg(result.depth.cpu().numpy(), stamp, frame_id, "32FC1")
        color = color_msg(rgb.cpu().numpy(), stamp, frame_id)
        ms = (time.perf_counter() - t0) * 1e3
        self._node_times["render"].append(ms)
        return depth, color, (f"rendered {camera.width}x{camera.height} from '{frame_id}' in "
                              f"{ms:.0f} ms: {hit:.0%} of the pixels hit the map")

    # ------------------------------------------------------------------ shutdown

    def finish(self) -> None:
        """At shutdown, after the executor stopped: stop the intake, then autosave."""
        self._intake.shutdown()
        self.autosave()

    def destroy_node(self) -> None:
        intake = getattr(self, "_intake", None)  # None: the constructor failed before it
        if intake is not None:
            intake.shutdown()
        super().destroy_node()

    def autosave(self) -> None:
        """Save the map into ``autosave_dir`` if that parameter is set (at shutdown).

        The checkpoint (what reloads the map) is committed first and the other files are added
        after it, so when the launch system escalates (SIGTERM 5 s after SIGINT, SIGKILL after
        10 s) during a slow save, the most important file is already there; the log says when
        the checkpoint was in place and how long the whole save took.
        """
        setting = str(self._setting("autosave_dir"))
        if not setting:
            return
        directory = Path(setting).expanduser().resolve()
        self.get_logger().info(f"autosaving the map to {directory} (checkpoint first)")
        start = time.perf_counter()
        self._finish_color(self.mapper)  # the stream ended: fuse what the live map holds back

        def checkpoint_in_place(path: Path) -> None:
            self.get_logger().info(f"autosave: checkpoint {path} in place after "
                                   f"{time.perf_counter() - start:.2f} s")

        try:
            paths, _ = write_map_outputs(self._map(), directory, checkpoint_first=True,
                                         on_checkpoint=checkpoint_in_place)
        except (OSError, ReconError) as err:
            self.get_logger().error(f"autosave to {directory} failed after "
                                    f"{time.perf_counter() - start:.2f} s: {err}")
            return
        self.get_logger().info(f"autosaved the map to {directory} in "
                               f"{time.perf_counter() - start:.2f} s: "
                               + ", ".join(p.name for p in paths.values()))


def map_executor(node: Node) -> Executor:
    """The executor of the node itself (its inputs spin on the intake thread): two threads, so
    that a save or load (file group) runs beside the map work (map group)."""
    executor = MultiThreadedExecutor(num_threads=2, context=node.context)
    executor.add_node(node)
    return executor


def main(args: list[str] | None = None) -> int:
    """Console script ``recon_mapper``: run the node until SIGINT/SIGTERM, then autosave.
    The inputs spin on the executor :mod:`recon_ros.ros.executors` picks (events executor
    where rclpy has one, else single-threaded; ``RECON_ROS_EXECUTOR`` overrides), the map
    work on :func:`map_executor`.

    Returns:
        0 after a clean shutdown, 2 if the parameters, ``load_map_on_start`` or
        ``RECON_ROS_EXECUTOR`` are invalid.
    """
    return run_node(NODE_NAME, MapperNode, args, on_shutdown=lambda node: node.finish(),
                    executor_factory=map_executor)
