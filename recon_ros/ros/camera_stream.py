"""Per-camera bounded queues and the assembly of posed frames from them.

Subscription callbacks only *push* messages here (:meth:`CameraStream.push_depth` etc.); the
node's integration tick *pulls* ready frames (:meth:`CameraStream.next_frame`). A depth
message at the head of the queue becomes a :class:`~recon_ros.core.frame.Frame` when its
camera_info and its pose in the map frame (TF at the image stamp) are available; the head
*waits* for them up to ``timeout_ns`` (steady clock) from the first time the tick tried it, so
time spent queued behind other frames does not count; everything else is decided at once.

A *color-only* stream (``color_only``: the node's color-only fusion methods, e.g.
``fusion.method: stereo``) has no depth: its queue is the color images, and the head becomes a
posed color image (:class:`~recon_ros.io.rosbag_source.ColorFrame`: RGB, the intrinsics of the
color camera_info, the pose of the image's optical frame in the map frame at its stamp) by
the same rules: the same waits for camera_info and TF, the same drop reasons (the encoding is
a color one, the sizes are compared with the color camera_info; there is no depth check).

Color is optional per frame. Until the stream's first color image arrives, frames do not wait
for color at all (a depth-only camera, a wrong color topic, a color stream that starts late).
Once color flows, the head waits for a color image within ``max_color_offset_ns`` of its stamp
at most ``max_color_offset_ns`` of steady time (and not at all once a color image newer than
that window has arrived), then goes without color. With ``color_optional`` (the node's
``color_transport: auto``) frames before the first color image are not counted as missing
color.

With a ``robot_frame`` set, the origin of that frame in the map frame at the image stamp is
looked up too (the centre of the core's clearing radius and memory eviction). It waits like
the camera pose while that frame's TF has not reached the stamp yet (extrapolation into the
future), up to the same timeout; when it is unknown, not connected, older than the cache or
late, the frame is *not* dropped: it is integrated with the camera's position as the centre,
and the reason is counted in :attr:`CameraStream.robot_frame_fallbacks`. An unknown frame does
not make frames wait (a misconfigured name would otherwise hold every frame for the timeout and
overflow the queue).

Every depth message (color-only: color message) that does not become a frame is counted in
:attr:`CameraStream.drops` under a short, stable reason (the detail goes to the ``on_drop``
callback for logging):

==========================================  =================================================
reason                                      cause
==========================================  =================================================
``queue overflow``                          more messages than ``queue_size`` were waiting
``header stamp is 0``                       a driver that does not stamp its images
``stamp not newer than the last frame``     stamps going backwards (or repeated)
``empty frame_id``                          no frame to look the pose up for
``unsupported encoding X``                  not 16UC1 / mono16 / 32FC1 (color-only: not
                                            rgb8 / bgr8 / rgba8 / bgra8 / mono8)
``undecodable compressed image``            color-only: a CompressedImage that is not jpeg
                                            or png
``malformed image (...)``                   step or data length inconsistent with the size
``no camera_info received``                 none within the timeout
``camera_info K is all zero``               an uncalibrated camera
``depth size differs from camera_info``     image and camera_info disagree (color-only:
                                            ``color size ...``)
``invalid camera_info``                     e.g. a negative focal length
``TF lookup failed: <tf reason>``           TF missing, or late (not there within the
                                            timeout), or older than the TF cache
``no valid depth pixels``                   every pixel is 0, NaN, Inf, negative or outside
                                            [min_depth_m, max_depth_m]
``invalid frame``                           the assembled frame failed the core's checks
``integration failed``                      the core refused the frame (counted by the node,
                                            :meth:`CameraStream.record_drop`)
==========================================  =================================================

NaN, Inf and negative depths are not a reason to drop a frame: those pixels are set to 0 (no
measurement, as 16UC1 drivers report) and counted in :attr:`CameraStream.invalid_pixels`; the
frame is dropped only if no valid pixel remains. Color problems (bad encoding, no color in
time, color camera_info or TF missing) never drop the frame: it is integrated without color
and the reason is counted in :attr:`CameraStream.color_drops`.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from recon_ros.core.errors import FrameError
from recon_ros.core.frame import Frame, PinholeCamera
from recon_ros.io.image_codec import (
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    CameraInfoError,
    ImageDecodeError,
    camera_from_info,
    decode_color,
    decode_depth,
)
from recon_ros.io.rosbag_source import ColorFrame
from recon_ros.io.tf_buffer import ExtrapolationError, TfLookupError, format_stamp

from .conversions import stamp_ns

__all__ = ["AssembledFrame", "AssemblySettings", "CameraStream", "DropCallback", "LookupFn"]

#: ``lookup(target, source, stamp_ns) -> T_target_source (4, 4)``; raises TfLookupError.
LookupFn = Callable[[str, str, int], np.ndarray]
#: ``on_drop(camera, kind, reason, detail)``; kind is ``"frame"`` (a depth image, color-only: a
#: color image, dropped), ``"color"`` (integrated without color) or ``"robot"`` (integrated
#: centred on the camera: robot_frame not available).
DropCallback = Callable[[str, str, str, str], None]

IMAGE = "sensor_msgs/msg/Image"
#: ``(rgb (H, W, 3) uint8, color camera, T_depth_color (4, 4))`` or None (no color).
ColorResult = tuple[np.ndarray, PinholeCamera, np.ndarray] | None


@dataclass(frozen=True)
class AssemblySettings:
    """How frames are assembled.

    Attributes:
        map_frame: frame the poses are looked up in.
        timeout_ns: how long a queued image waits for camera_info and TF.
        max_color_offset_ns: largest |color stamp - depth stamp| for pairing, and the
            longest (steady time) a depth image waits for its color once color flows.
        min_depth_m, max_depth_m: the valid depth range (the core's integration range).
        robot_frame: frame whose origin is the robot position (``""``: none, the core uses
            the camera position).
    """

    map_frame: str
    timeout_ns: int
    max_color_offset_ns: int
    min_depth_m: float
    max_depth_m: float
    robot_frame: str


@dataclass(frozen=True)
class AssembledFrame:
    """A frame ready for integration.

    Attributes:
        frame: the posed depth frame, or of a color-only stream the posed color image
            (``T_world_cam``: its optical frame in the map frame, metres).
        robot_position_m: (3,) origin of ``robot_frame`` in the map frame at the frame's
            stamp, metres; None without a robot frame or when it was not available (then the
            core centres the clearing radius and memory eviction on the camera).
    """

    frame: Frame | ColorFrame
    robot_position_m: np.ndarray | None


@dataclass(frozen=True)
class _RobotFallback:
    """Why the robot position of a frame is not available (counted once the frame is out)."""

    reason: str
    detail: str


@dataclass
class _Queued:
    msg: Any
    msgtype: str
    stamp_ns: int
    first_try_ns: int | None = None  # when it first reached the head of the queue
    color_wait_ns: int | None = None  # when it first waited for its color image


class _Drop(Exception):
    """Internal: the head message is dropped for ``reason``."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or reason


class _Wait(Exception):
    """Internal: the head message waits for data that may still arrive."""


def _clean(frame_id: str) -> str:
    return frame_id.removeprefix("/")


class CameraStream:
    """Queues, latest camera_infos and counters of one camera namespace (thread-safe).

    Args:
        name: the camera namespace (used in drop reports).
        queue_size: depth and color messages kept; the oldest is dropped when full.
        color: whether color is used (paired to depth by stamp).
        on_drop: called for every dropped frame and every frame integrated without color,
            with a detailed message.
        color_optional: frames before the first color image go without color uncounted
            (color may never come).
        color_only: frames are posed color images, no depth (see the module docstring);
            ``color`` and ``color_optional`` do not apply.

    Attributes:
        input: ``"depth"`` or, color-only, ``"color"``: the images that become frames.
    """

    def __init__(self, name: str, queue_size: int, color: bool,
                 on_drop: DropCallback | None = None, color_optional: bool = False,
                 color_only: bool = False) -> None:
        self.name = name
        self.queue_size = int(queue_size)
        self.color_only = color_only
        self.input = "color" if color_only else "depth"
        self.color_enabled = color and not color_only
        self.color_optional = color_optional
        self._color_seen = False
        self._on_drop = on_drop
        self._lock = threading.RLock()
        self._depth: deque[_Queued] = deque()
        self._color: deque[_Queued] = deque()
        self._frames = self._color if color_only else self._depth  # what becomes frames
        self._depth_info: Any = None
        self._color_info: Any = None
        self.last_stamp_ns = -1
        self.received: Counter[str] = Counter()
        self.integrated = 0
        self.drops: Counter[str] = Counter()
        self.color_drops: Counter[str] = Counter()
        self.robot_frame_fallbacks: Counter[str] = Counter()
        self.invalid_pixels = 0

    # --------------------------------------------------------------------------- input

    def _push(self, queue: deque[_Queued], item: _Queued, drops: Counter[str], kind: str
              ) -> None:
        with self._lock:
            self.received[kind] += 1
            queue.append(item)
            if len(queue) > self.queue_size:
                old = queue.popleft()
                drops["queue overflow"] += 1
                detail = (f"queue overflow: {kind} image stamped {format_stamp(old.stamp_ns)} "
                          f"dropped, more than queue_size={self.queue_size} waiting (the node "
                          "integrates slower than the camera publishes)")
            else:
                return
        self._report("frame" if queue is self._frames else kind, "queue overflow", detail)

    def push_depth(self, msg: Any) -> None:
        """Queue a depth ``Image`` (callback side)."""
        self._push(self._depth, _Queued(msg, IMAGE, stamp_ns(msg.header.stamp)), self.drops,
                   "depth")

    def push_color(self, msg: Any, msgtype: str) -> None:
        """Queue a color ``Image`` or ``CompressedImage`` (``msgtype`` says which)."""
        self._color_seen = True
        self._push(self._color, _Queued(msg, msgtype, stamp_ns(msg.header.stamp)),
                   self.drops if self.color_only else self.color_drops, "color")

    def set_depth_info(self, msg: Any) -> None:
        """Keep the latest depth ``CameraInfo``."""
        with self._lock:
            self.received["depth_info"] += 1
            self._depth_info = msg

    def set_color_info(self, msg: Any) -> None:
        """Keep the latest color ``CameraInfo``."""
        with self._lock:
            self.received["color_info"] += 1
            self._color_info = msg

    def queued(self) -> int:
        """Images waiting to become frames (depth; color-only: color)."""
        with self._lock:
            return len(self._frames)

    def clear(self) -> None:
        """Forget queued messages and the last stamp (after a backwards jump of time)."""
        with self._lock:
            self._depth.clear()
            self._color.clear()
            self.last_stamp_ns = -1

    def queue_depths(self) -> dict[str, int]:
        with self._lock:
            return {"depth": len(self._depth), "color": len(self._color)}

    # ------------------------------------------------------------------------ assembly

    def next_frame(self, lookup: LookupFn, settings: AssemblySettings, now_ns: int
                   ) -> AssembledFrame | None:
        """The next frame ready for integration, or None if the queue is empty or its head
        is still waiting. Heads that can never become frames are dropped (and counted) on
        the way. The returned frame's stamp becomes :attr:`last_stamp_ns`."""
        while True:
            with self._lock:
                if not self._frames:
                    return None
                head = self._frames[0]
                try:
                    frame, robot = self._assemble(head, lookup, settings, now_ns)
                except _Wait:
                    return None
                except _Drop as drop:
                    self._frames.popleft()
                    self.drops[drop.reason] += 1
                    report = ("frame", drop.reason, drop.detail)
                else:
                    self._frames.popleft()
                    self.last_stamp_ns = frame.stamp_ns
                    self.integrated += 1
                    if isinstance(robot, _RobotFallback):
                        self.robot_frame_fallbacks[robot.reason] += 1
                    break
            self._report(*report)
        if isinstance(robot, _RobotFallback):
            self._report("robot", robot.reason, robot.detail)
            return AssembledFrame(frame, None)
        return AssembledFrame(frame, robot)

    def record_drop(self, reason: str, detail: str) -> None:
        """Count a frame dropped after assembly (e.g. the core refused it) and report it."""
        with self._lock:
            self.integrated -= 1
            self.drops[reason] += 1
        self._report("frame", reason, detail)

    def _report(self, kind: str, reason: str, detail: str) -> None:
        if self._on_drop is not None:
            self._on_drop(self.name, kind, reason, detail)

    def _assemble(self, q: _Queued, lookup: LookupFn, s: AssemblySettings, now_ns: int
                  ) -> tuple[Frame | ColorFrame, np.ndarray | _RobotFallback | None]:
        """The frame of the head message and its robot position (see :meth:`_robot_position`).

        Raises:
            _Wait: camera_info, TF or color may still arrive.
            _Drop: the message cannot become a frame.
        """
        if q.first_try_ns is None:
            q.first_try_ns = now_ns
        expired = now_ns - q.first_try_ns > s.timeout_ns
        frame_id = self._check_header(q)
        if self.color_only:
            return self._assemble_color(q, frame_id, lookup, s, expired)
        return self._assemble_depth(q, frame_id, lookup, s, now_ns, expired)

    def _check_header(self, q: _Queued) -> str:
        """The head message's frame id, after the checks of its header.

        Raises:
            _Drop: a zero stamp, a stamp not newer than the last frame's, no frame id.
        """
        stamp = q.stamp_ns
        if stamp == 0:
            raise _Drop("header stamp is 0")
        if stamp <= self.last_stamp_ns:
            raise _Drop("stamp not newer than the last frame",
                        f"{self.input} stamp {format_stamp(stamp)} is not newer than the last "
                        f"integrated frame's {format_stamp(self.last_stamp_ns)}")
        frame_id = _clean(str(q.msg.header.frame_id))
        if not frame_id:
            raise _Drop("empty frame_id")
        return frame_id

    def _pose(self, info: Any, frame_id: str, stamp: int, lookup: LookupFn,
              s: AssemblySettings, expired: bool
              ) -> tuple[np.ndarray, np.ndarray | _RobotFallback | None]:
        """``(T_map_cam (4, 4), robot position)`` of the head image at ``stamp``, once its
        camera_info ``info`` is there.

        Raises:
            _Wait: camera_info or TF may still arrive (within the timeout).
            _Drop: no camera_info or no TF within the timeout, or TF older than the cache.
        """
        if info is None:
            if expired:
                raise _Drop("no camera_info received",
                            f"no {self.input} camera_info within {s.timeout_ns / 1e9:g} s")
            raise _Wait
        try:
            T_map_cam = lookup(s.map_frame, frame_id, stamp)
        except ExtrapolationError as err:
            if err.direction == "past" or expired:
                raise _Drop(f"TF lookup failed: {err.reason}", str(err)) from err
            raise _Wait from err
        except TfLookupError as err:
            if expired:
                raise _Drop(f"TF lookup failed: {err.reason}",
                            f"{err} (waited {s.timeout_ns / 1e9:g} s)") from err
            raise _Wait from err
        return T_map_cam, self._robot_position(stamp, lookup, s, expired)

    def _assemble_depth(self, q: _Queued, frame_id: str, lookup: LookupFn,
                        s: AssemblySettings, now_ns: int, expired: bool
                        ) -> tuple[Frame, np.ndarray | _RobotFallback | None]:
        """:meth:`_assemble` of a depth image (with its color, if paired)."""
        msg, stamp = q.msg, q.stamp_ns
        if str(msg.encoding) not in DEPTH_ENCODINGS:
            raise _Drop(f"unsupported encoding {msg.encoding}",
                        f"depth encoding '{msg.encoding}' is not one of "
                        f"{sorted(DEPTH_ENCODINGS)}")
        info = self._depth_info
        T_map_cam, robot = self._pose(info, frame_id, stamp, lookup, s, expired)
        try:
            depth = decode_depth(msg)
            camera = camera_from_info(info.k, info.width, info.height, depth.shape[1],
                                      depth.shape[0], "depth")
        except ImageDecodeError as err:  # CameraInfoError included
            raise _Drop(err.reason, str(err)) from err
        depth = self._sanitize(depth, s)
        color = self._pair_color(q, frame_id, lookup, s, now_ns)
        try:
            frame = Frame(depth=depth, camera=camera, T_world_cam=T_map_cam,
                          color=color[0] if color else None,
                          color_camera=color[1] if color else None,
                          T_cam_color=color[2] if color else np.eye(4),
                          stamp_ns=stamp, frame_id=frame_id)
        except FrameError as err:
            raise _Drop("invalid frame", str(err)) from err
        return frame, robot

    def _assemble_color(self, q: _Queued, frame_id: str, lookup: LookupFn,
                        s: AssemblySettings, expired: bool
                        ) -> tuple[ColorFrame, np.ndarray | _RobotFallback | None]:
        """:meth:`_assemble` of a color-only stream's color image."""
        if q.msgtype == IMAGE and str(q.msg.encoding) not in COLOR_ENCODINGS:
            raise _Drop(f"unsupported encoding {q.msg.encoding}",
                        f"color encoding '{q.msg.encoding}' is not one of "
                        f"{sorted(COLOR_ENCODINGS)}")
        info = self._color_info
        T_map_cam, robot = self._pose(info, frame_id, q.stamp_ns, lookup, s, expired)
        try:
            rgb = decode_color(q.msg, q.msgtype)
            camera = camera_from_info(info.k, info.width, info.height, rgb.shape[1],
                                      rgb.shape[0], "color")
        except ImageDecodeError as err:  # CameraInfoError included
            raise _Drop(err.reason, str(err)) from err
        return ColorFrame(rgb, camera, T_map_cam, q.stamp_ns, frame_id), robot

    @staticmethod
    def _robot_position(stamp: int, lookup: LookupFn, s: AssemblySettings, expired: bool
                        ) -> np.ndarray | _RobotFallback | None:
        """(3,) origin of ``s.robot_frame`` in the map frame at ``stamp``; None without a
        robot frame; a :class:`_RobotFallback` when it is not available (the frame is
        integrated centred on the camera; counted by the caller once the frame is out, as
        the head may still wait for color).

        Raises:
            _Wait: the robot frame's TF has not reached ``stamp`` yet and may still arrive.
        """
        if not s.robot_frame:
            return None
        try:
            return lookup(s.map_frame, s.robot_frame, stamp)[:3, 3].copy()
        except ExtrapolationError as err:
            if err.direction == "future" and not expired:
                raise _Wait from err
            failure: TfLookupError = err
        except TfLookupError as err:
            failure = err
        return _RobotFallback(
            f"TF lookup failed: {failure.reason}",
            f"robot_frame '{s.robot_frame}' not available at {format_stamp(stamp)}: clearing "
            f"radius centred on the camera ({failure})")

    def _sanitize(self, depth: np.ndarray, s: AssemblySettings) -> np.ndarray:
        """NaN/Inf/negative pixels -> 0 (counted); drops the frame if nothing valid is left."""
        bad = ~np.isfinite(depth) | (depth < 0)
        n_bad = int(bad.sum())
        if n_bad:
            depth = np.where(bad, np.float32(0.0), depth)
            self.invalid_pixels += n_bad
        if not np.any((depth >= s.min_depth_m) & (depth <= s.max_depth_m) & (depth > 0)):
            raise _Drop("no valid depth pixels",
                        f"no pixel of the {depth.shape[1]}x{depth.shape[0]} depth image is in "
                        f"[{s.min_depth_m:g}, {s.max_depth_m:g}] m ({n_bad} NaN/Inf/negative)")
        return depth

    def _pair_color(self, q: _Queued, depth_frame: str, lookup: LookupFn,
                    s: AssemblySettings, now_ns: int) -> ColorResult:
        """(rgb, color camera, T_depth_color) for the depth message ``q``, or None (reason
        counted unless color is optional and none has come yet).

        Raises _Wait while a matching color image may still arrive (at most
        ``max_color_offset_ns`` of steady time).
        """
        if not self.color_enabled:
            return None
        if not self._color_seen:
            return None if self.color_optional else self._no_color("no color image received")
        stamp, queue = q.stamp_ns, self._color
        best = min(queue, key=lambda c: abs(c.stamp_ns - stamp), default=None)
        if best is None or abs(best.stamp_ns - stamp) > s.max_color_offset_ns:
            newer = any(c.stamp_ns > stamp + s.max_color_offset_ns for c in queue)
            if q.color_wait_ns is None:
                q.color_wait_ns = now_ns
            waited = now_ns - q.color_wait_ns > s.max_color_offset_ns
            if not (newer or waited):
                raise _Wait
            self._drop_old_colors(stamp - s.max_color_offset_ns)
            return self._no_color(f"no color image within "
                                  f"{s.max_color_offset_ns / 1e6:g} ms")
        self._drop_old_colors(best.stamp_ns + 1)
        try:
            rgb = decode_color(best.msg, best.msgtype)
        except ImageDecodeError as err:
            return self._no_color(err.reason, str(err))
        info = self._color_info
        if info is None:
            return self._no_color("no color camera_info received")
        try:
            camera = camera_from_info(info.k, info.width, info.height, rgb.shape[1],
                                      rgb.shape[0], "color")
        except CameraInfoError as err:
            return self._no_color(err.reason, str(err))
        color_frame = _clean(str(best.msg.header.frame_id)) or depth_frame
        if color_frame == depth_frame:
            return rgb, camera, np.eye(4)
        try:
            return rgb, camera, lookup(depth_frame, color_frame, stamp)
        except TfLookupError as err:
            return self._no_color(f"TF lookup failed: {err.reason}", str(err))

    def _drop_old_colors(self, before_ns: int) -> None:
        while self._color and self._color[0].stamp_ns < before_ns:
            self._color.popleft()

    def _no_color(self, reason: str, detail: str | None = None) -> ColorResult:
        """Count why the frame goes without color; returns None (no color) for the caller."""
        self.color_drops[reason] += 1
        self._report("color", reason, detail or reason)
        return None

    # -------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """Counters and queue depths for the status topic."""
        with self._lock:
            return {
                "input": self.input,
                "received": dict(self.received),
                "integrated": self.integrated,
                "queue": {"depth": len(self._depth), "color": len(self._color)},
                "drops": dict(self.drops),
                "color_drops": dict(self.color_drops),
                "robot_frame_fallbacks": dict(self.robot_frame_fallbacks),
                "invalid_depth_pixels": self.invalid_pixels,
            }
