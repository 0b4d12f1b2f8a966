"""``recon_sim_camera``: a synthetic RGB-D camera on a robot driving around a scene.

Publishes, at ``rate_hz`` and stamped with the node's clock, what a depth camera driver and a
localisation stack would:

- in the order a driver with registered depth sends a frame: ``color/camera_info``,
  ``color/image_raw`` (rgb8) or ``color/image_raw/compressed`` (jpeg), then
  ``depth/camera_info``, ``depth/image_raw`` (16UC1 mm or 32FC1 m): relative names, so run it
  in the camera's namespace (``--ros-args -r __ns:=/camera``); color is registered to depth
  (same optical frame);
- ``/tf`` (map -> odom -> base_link) and ``/tf_static`` (base_link -> camera_link ->
  camera_depth_optical_frame, transient-local). With ``tf_rate_hz`` 0, ``/tf`` goes out just
  before each frame at its stamp; otherwise from its own timer at that rate, as a localisation
  stack does, stamped with the current time and the pose interpolated between frames, so a
  frame's TF may arrive after its images. Frame ``k`` is then stamped on a fixed schedule
  (``k / rate_hz`` after the first, re-anchored when the rate changes): its capture time, a
  little before it is sent.

The scene is :func:`recon_ros.io.synthetic.make_scene` ``(scene, scene_seed)`` and the path
:func:`~recon_ros.io.synthetic.room_scan_trajectory` with ``frames_per_loop`` poses, looped.
All images are rendered and encoded at start-up, so publishing costs only serialisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from tf2_msgs.msg import TFMessage

from recon_ros.core.errors import ConfigError
from recon_ros.io.synthetic import (
    NoiseConfig,
    default_camera,
    iter_frames,
    make_scene,
    room_scan_trajectory,
)

from .conversions import (
    camera_info_msg,
    color_msg,
    compressed_msg,
    depth_msg,
    ns_to_time,
    tf_message,
)
from .runtime import run_node

__all__ = ["SimCameraNode", "main"]

NODE_NAME = "recon_sim_camera"

IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)

#: name -> (default, description); all start-up only except ``rate_hz``.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "scene": ("demo", "Synthetic scene name (demo, random)."),
    "scene_seed": (0, "Seed of random scenes."),
    "width": (320, "Image width [px]."),
    "height": (240, "Image height [px]."),
    "rate_hz": (10.0, "Publishing rate [Hz] (settable at run time)."),
    "frames_per_loop": (60, "Poses on one loop around the room (rendered at start-up)."),
    "max_frames": (0, "Stop publishing after this many frames (0 = loop forever)."),
    "depth_encoding": ("16UC1", "Depth encoding: 16UC1 (mm) or 32FC1 (m)."),
    "color_transport": ("raw", "raw (rgb8 Image), compressed (jpeg) or none."),
    "kinect_noise": (False, "Add Kinect-like axial depth noise."),
    "tf_rate_hz": (0.0, "Rate of /tf from its own timer [Hz]; 0 = with each frame."),
}


class SimCameraNode(Node):
    """Publishes pre-rendered frames of a synthetic scene with TF (see the module docstring).

    Raises:
        ConfigError: invalid parameters.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=name != "rate_hz"))
        v = {name: self.get_parameter(name).value for name in PARAMETERS}
        if v["color_transport"] not in ("raw", "compressed", "none"):
            raise ConfigError(f"color_transport={v['color_transport']!r} is invalid: must be "
                              "raw, compressed or none")
        if (not v["rate_hz"] > 0 or v["frames_per_loop"] < 1 or v["max_frames"] < 0
                or v["tf_rate_hz"] < 0):
            raise ConfigError("rate_hz must be > 0, frames_per_loop >= 1, max_frames >= 0, "
                              "tf_rate_hz >= 0")
        scene = make_scene(v["scene"], int(v["scene_seed"]))
        camera = default_camera(int(v["width"]), int(v["height"]))
        self.trajectory = room_scan_trajectory(scene, int(v["frames_per_loop"]))
        frame_id = self.trajectory.rig.optical_frame
        color = v["color_transport"] != "none"
        noise = NoiseConfig(kinect_axial=bool(v["kinect_noise"]))
        self._depth: list[Image] = []
        self._color: list[Image | CompressedImage] = []
        for frame in iter_frames(scene, camera, self.trajectory, noise=noise, color=color):
            self._depth.append(depth_msg(np.asarray(frame.depth), 0, frame_id,
                                         v["depth_encoding"]))
            if frame.color is not None:
                rgb = np.asarray(frame.color)
                self._color.append(compressed_msg(rgb, 0, frame_id)
                                   if v["color_transport"] == "compressed"
                                   else color_msg(rgb, 0, frame_id))
        self._info = camera_info_msg(camera, 0, frame_id)
        self._max_frames = int(v["max_frames"])
        self.published = 0

        self._depth_pub = self.create_publisher(Image, "depth/image_raw", IMAGE_QOS)
        self._depth_info_pub = self.create_publisher(CameraInfo, "depth/camera_info", IMAGE_QOS)
        self._color_pub = None
        if v["color_transport"] == "raw":
            self._color_pub = self.create_publisher(Image, "color/image_raw", IMAGE_QOS)
        elif v["color_transport"] == "compressed":
            self._color_pub = self.create_publisher(CompressedImage, "color/image_raw/compressed",
                                                    IMAGE_QOS)
        self._color_info_pub = (self.create_publisher(CameraInfo, "color/camera_info", IMAGE_QOS)
                                if color else None)
        self._tf_pub = self.create_publisher(TFMessage, "/tf", TF_QOS)
        static_pub = self.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        now = self.get_clock().now().nanoseconds
        static_pub.publish(tf_message([(p, c, now, t, q) for p, c, _, t, q
                                       in self.trajectory.tf_static()]))
        self._static_pub = static_pub  # keep the latched publisher alive
        self._timer = self.create_timer(1.0 / float(v["rate_hz"]), self._publish)
        # frame schedule (tf_rate_hz > 0): frame k is stamped anchor + (k - anchor_k) / rate
        self._rate_hz = float(v["rate_hz"])
        self._anchor = (0, now + self._timer.timer_period_ns)
        self._tf_timer = (self.create_timer(1.0 / float(v["tf_rate_hz"]), self._publish_tf)
                          if v["tf_rate_hz"] > 0 else None)
        self.add_on_set_parameters_callback(self._on_set)
        self.get_logger().info(
            f"publishing {len(self._depth)} pre-rendered {camera.width}x{camera.height} frames "
            f"of scene '{scene.name}' at {v['rate_hz']:g} Hz in a loop")

    def _on_set(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == "rate_hz":
                if not (isinstance(p.value, float) and p.value > 0):
                    return SetParametersResult(successful=False, reason="rate_hz must be > 0")
                self._timer.timer_period_ns = int(1e9 / p.value)
                self._rate_hz = p.value
                self._anchor = (self.published, self.get_clock().now().nanoseconds
                                + self._timer.timer_period_ns)
        return SetParametersResult(successful=True)

    def _frame_position(self, stamp_ns: int) -> float:
        """The (fractional) frame index the schedule puts at ``stamp_ns``."""
        k, anchor_ns = self._anchor
        return k + (stamp_ns - anchor_ns) * self._rate_hz / 1e9

    def _publish_tf(self) -> None:
        stamp = self.get_clock().now().nanoseconds
        self._tf_pub.publish(tf_message(self.trajectory.tf_dynamic_at(
            self._frame_position(stamp), stamp)))

    def _publish(self) -> None:
        if self._max_frames and self.published >= self._max_frames:
            self._timer.cancel()
            self.get_logger().info(f"published {self.published} frames, stopping")
            return
        i = self.published % len(self._depth)
        if self._tf_timer is None:
            stamp = self.get_clock().now().nanoseconds
            self._tf_pub.publish(tf_message(self.trajectory.tf_dynamic_at(i, stamp)))
        else:  # the scheduled capture time of frame `published`
            k, anchor_ns = self._anchor
            stamp = anchor_ns + round((self.published - k) * 1e9 / self._rate_hz)
        header_stamp = ns_to_time(stamp)
        self._info.header.stamp = header_stamp
        if self._color_pub is not None and self._color_info_pub is not None:
            self._color_info_pub.publish(self._info)
            color = self._color[i]
            color.header.stamp = header_stamp
            self._color_pub.publish(color)
        self._depth_info_pub.publish(self._info)
        depth = self._depth[i]
        depth.header.stamp = header_stamp
        self._depth_pub.publish(depth)
        self.published += 1


def main(args: list[str] | None = None) -> int:
    """Console script ``recon_sim_camera``, spinning the executor :mod:`recon_ros.ros.executors`
    picks; returns 0 after SIGINT/SIGTERM, 2 on bad parameters or ``RECON_ROS_EXECUTOR``."""
    return run_node(NODE_NAME, SimCameraNode, args)
