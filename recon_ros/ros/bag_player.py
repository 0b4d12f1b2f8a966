"""Play a rosbag2 bag into ROS 2 with ``/clock``, where ``ros2 bag play`` is not installed.

:func:`play` reads the bag with the pure-Python ``rosbags`` package and publishes every
message's stored CDR bytes unchanged (``Publisher.publish(bytes)``) on its topic, at the bag's
log times scaled by ``rate``, while ``/clock`` (``rosgraph_msgs/Clock``) carries the playback
time at ``clock_hz``, so nodes started with ``use_sim_time:=true`` see the bag's time.

QoS: ``/tf_static`` (and any topic the bag recorded with transient-local durability) is
published transient-local and reliable, keeping every message of the topic for late joiners;
everything else reliable, volatile, depth 100. ``/clock`` is reliable, depth 1 (rclpy and
rclcpp subscribe best-effort, which matches).

Before the first message the player publishes ``/clock`` at the bag's start time and waits up
to :data:`DISCOVERY_TIMEOUT_S` for a subscriber on any of its topics, then
:data:`DISCOVERY_SETTLE_S` more so the remaining endpoints match (as ``ros2 bag play
--delay``): messages published before a subscriber is matched are lost, as with any ROS
publisher. A topic whose message type has no Python package here is skipped with a warning.
"""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import rclpy
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosbags.highlevel import AnyReaderError
from rosbags.interfaces import QosDurability
from rosgraph_msgs.msg import Clock

from recon_ros.core.errors import ReconError
from recon_ros.io.rosbag_source import open_bag

from .conversions import ns_to_time
from .runtime import stop_on_signals

__all__ = ["DISCOVERY_SETTLE_S", "DISCOVERY_TIMEOUT_S", "play"]

NODE_NAME = "recon_bag_player"
DISCOVERY_TIMEOUT_S = 5.0
DISCOVERY_SETTLE_S = 0.5
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130


def _message_class(msgtype: str) -> Any | None:
    """``"sensor_msgs/msg/Image"`` -> the rclpy message class, or None if not installed."""
    package, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        return None


def _latched(connection: Any) -> bool:
    """Whether the bag recorded the topic as transient-local (e.g. /tf_static)."""
    if connection.topic == "/tf_static":
        return True
    qos = getattr(connection.ext, "offered_qos_profiles", None) or []
    return any(q.durability == QosDurability.TRANSIENT_LOCAL for q in qos)


def _publishers(node: Node, connections: list[Any]) -> dict[int, Publisher]:
    """One publisher per topic (keyed by connection id); unknown types are skipped."""
    by_topic: dict[str, Publisher] = {}
    out: dict[int, Publisher] = {}
    for conn in connections:
        if conn.topic not in by_topic:
            klass = _message_class(conn.msgtype)
            if klass is None:
                node.get_logger().warning(
                    f"skipping {conn.topic}: message type {conn.msgtype} is not installed")
                continue
            if _latched(conn):
                qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, conn.msgcount),
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            else:
                qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.VOLATILE)
            by_topic[conn.topic] = node.create_publisher(klass, conn.topic, qos)
        out[conn.id] = by_topic[conn.topic]
    return out


def play(bag: Path, rate: float = 1.0, clock_hz: float = 100.0, loop: bool = False,
         topics: list[str] | None = None) -> int:
    """Publish a bag's messages on their topics, with ``/clock``, in real time x ``rate``.

    Args:
        bag: rosbag2 directory, ``.db3`` or ``.mcap`` file.
        rate: playback speed (1 = real time, 2 = twice as fast); > 0.
        clock_hz: rate of ``/clock`` messages (0 = no ``/clock``).
        loop: start again from the beginning at the end (time jumps back; ``recon_mapper``
            then clears its dynamic TF and queues).
        topics: only these topics (default: every topic of the bag).

    Returns:
        0 when the bag was played, 130 if interrupted (SIGINT/SIGTERM), 1 on an error
        (unreadable bag, bad arguments, none of the topics present).
    """
    logger = rclpy.logging.get_logger(NODE_NAME)
    if not rate > 0 or not clock_hz >= 0:
        logger.error(f"need rate > 0 and clock_hz >= 0, got rate={rate} clock_hz={clock_hz}")
        return EXIT_ERROR
    try:
        reader = open_bag(bag)
        reader.open()
    except (ReconError, AnyReaderError, OSError) as err:
        logger.error(f"cannot open bag {bag}: {err}")
        return EXIT_ERROR
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node(NODE_NAME)
    try:
        with stop_on_signals() as stop:
            return _play(node, reader, rate, clock_hz, loop, topics, stop)
    finally:
        reader.close()
        node.destroy_node()
        rclpy.try_shutdown()


class _ClockPublisher:
    """``/clock`` at the playback time, never backwards within one pass of the bag."""

    def __init__(self, node: Node, hz: float) -> None:
        self.period_s = 1.0 / hz if hz > 0 else math.inf
        self._pub = node.create_publisher(Clock, "/clock", QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self._msg = Clock()
        self._last_ns = 0

    def restart(self, t_ns: int) -> None:
        """Start a pass at ``t_ns`` (time may jump back when looping)."""
        self._last_ns = t_ns
        self.publish(t_ns)

    def publish(self, t_ns: int) -> None:
        if math.isinf(self.period_s):
            return
        self._last_ns = max(self._last_ns, t_ns)
        self._msg.clock = ns_to_time(self._last_ns)
        self._pub.publish(self._msg)


def _play(node: Node, reader: Any, rate: float, clock_hz: float, loop: bool,
          topics: list[str] | None, stop: threading.Event) -> int:
    logger = node.get_logger()
    connections = [c for c in reader.connections if topics is None or c.topic in topics]
    publishers = _publishers(node, connections)
    if not publishers:
        logger.error(f"nothing to play: topics {topics} not in the bag (it has "
                     f"{sorted({c.topic for c in reader.connections})})")
        return EXIT_ERROR
    clock = _ClockPublisher(node, clock_hz)
    start_ns = reader.start_time
    clock.restart(start_ns)
    _wait_for_subscribers(list(publishers.values()), stop)
    counts: Counter[str] = Counter()
    while not stop.is_set():
        wall0 = time.monotonic()
        clock.restart(start_ns)
        next_clock = wall0
        for conn, t_ns, raw in reader.messages(connections=connections):
            pub = publishers.get(conn.id)
            if pub is None:
                continue
            due = wall0 + (t_ns - start_ns) / 1e9 / rate
            while not stop.is_set():  # sleep until due, ticking /clock on the way
                now = time.monotonic()
                if now >= next_clock:
                    clock.publish(start_ns + int((now - wall0) * rate * 1e9))
                    next_clock = now + clock.period_s
                if now >= due:
                    break
                time.sleep(max(0.0, min(due, next_clock) - now))
            if stop.is_set():
                break
            clock.publish(t_ns)
            pub.publish(bytes(raw))
            counts[conn.topic] += 1
        if not loop or stop.is_set():
            break
        logger.info("end of bag, looping")
    if not stop.is_set():
        clock.publish(reader.end_time)
    summary = ", ".join(f"{topic} x{n}" for topic, n in sorted(counts.items()))
    logger.info(f"published {sum(counts.values())} messages: {summary}")
    return EXIT_INTERRUPTED if stop.is_set() else EXIT_OK


def _wait_for_subscribers(publishers: list[Publisher], stop: threading.Event) -> None:
    """Up to DISCOVERY_TIMEOUT_S for a first subscriber, then DISCOVERY_SETTLE_S more."""
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        if any(p.get_subscription_count() for p in publishers):
            time.sleep(DISCOVERY_SETTLE_S)
            return
        time.sleep(0.05)
