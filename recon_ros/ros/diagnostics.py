"""The mapper node's status as a ``diagnostic_msgs/DiagnosticArray`` (``/diagnostics``).

:class:`MapperDiagnostics` turns the dict of :meth:`MapperNode.status()
<recon_ros.ros.mapper_node.MapperNode.status>` into one ``DiagnosticStatus`` for the map, one
per camera and one for TF. Following diagnostic_aggregator's convention their names are
``"<node>: map"``, ``"<node>: camera <camera>"`` and ``"<node>: tf"``, and ``hardware_id`` is the
node's name. ``values`` are the status entries flattened to strings, nested keys joined with
``/`` (``drops/queue overflow`` = ``3``); of the timing and latency statistics only the
median and 95th percentile are kept.

Levels compare each report with the previous one (the first with all counters at zero):

=========  ====================================================================================
level      when
=========  ====================================================================================
ERROR      camera: depth images arrived since the previous report, but none was integrated
WARN       camera: depth frames were dropped since the previous report (the message names the
           most frequent reason); or depth images stopped: none for ``depth_timeout_s`` after
           some had arrived. tf: transforms were refused since the previous report.
OK         otherwise; the map is always OK
=========  ====================================================================================

A camera of a color-only mode (its status's ``input`` is ``color``) is judged by its color
images the same way: those are the images that become frames ("integrated": handed to the
color pipeline, keyframe or not).

A camera that goes quiet is WARN, not STALE: STALE is what diagnostic_aggregator reports for a
status that is no longer *published*, while here the node is alive and knows its input
stopped (a paused bag or a stopped robot may do that on purpose). The silence is measured on
the caller's steady clock (``now_ns`` of :meth:`MapperDiagnostics.report`), so it means wall
time even under ``use_sim_time``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from recon_ros.ros.conversions import ns_to_time

__all__ = ["MapperDiagnostics", "flatten"]

#: Statistics of ``timings_ms`` / ``latency_ms`` entries that are reported.
_KEPT_STATS = ("median_ms", "p95_ms")
#: Top-level status entries that are not map figures (reported elsewhere, or the header).
_NOT_MAP = ("node", "stamp_ns", "cameras", "tf", "timings_ms", "latency_ms")

_Count = TypeVar("_Count", int, Counter)


def _text(value: Any) -> str:
    """A status value as a ``KeyValue`` string (floats to 3 decimals, booleans lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(round(value, 3))
    return str(value)


def flatten(values: Mapping[str, Any], prefix: str = "") -> list[KeyValue]:
    """Nested dicts -> ``KeyValue`` pairs, keys joined with ``/`` (``{"drops": {"queue
    overflow": 3}}`` -> ``drops/queue overflow`` = ``3``), in the dicts' order."""
    out = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(flatten(value, name + "/"))
        else:
            out.append(KeyValue(key=name, value=_text(value)))
    return out


def _since(now: _Count, before: _Count) -> _Count:
    """Growth of a count (or of each count of a ``Counter``) since the previous report; a
    count that went back (a reset) counts from zero."""
    return now - before if now >= before else now


def _top(counts: Counter[str]) -> str:
    """``'<reason>' x<n>`` of the most frequent reason."""
    reason, n = counts.most_common(1)[0]
    return f"'{reason}' x{n}"


@dataclass
class _Previous:
    """A camera's counters at the previous report."""

    received: int = 0
    integrated: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    last_image_ns: int | None = None  # caller's steady clock when images last arrived


class MapperDiagnostics:
    """Diagnostics of the mapper node, one report per status period.

    Args:
        node_name: the node's name: ``hardware_id`` and the prefix of every status name.
        depth_timeout_s: a camera that received depth images (color-only: color images) and
            then none for this long (seconds, steady clock) is WARN.
    """

    def __init__(self, node_name: str, depth_timeout_s: float = 5.0) -> None:
        self.node_name = node_name
        self.depth_timeout_ns = int(depth_timeout_s * 1e9)
        self._cameras: dict[str, _Previous] = {}
        self._tf_refused: Counter[str] = Counter()

    def report(self, status: Mapping[str, Any], now_ns: int) -> DiagnosticArray:
        """The ``DiagnosticArray`` of one :meth:`MapperNode.status()
        <recon_ros.ros.mapper_node.MapperNode.status>` dict; remembers its counters for the
        next report.

        Args:
            status: the node's status (``stamp_ns``, its ROS time, stamps the header).
            now_ns: steady-clock time of the report, nanoseconds (e.g.
                ``time.monotonic_ns()``; only differences are used).
        """
        msg = DiagnosticArray()
        msg.header.stamp = ns_to_time(status["stamp_ns"])
        msg.status = [self._map(status),
                      *(self._camera(name, camera, now_ns)
                        for name, camera in status["cameras"].items()),
                      self._tf(status["tf"])]
        return msg

    def _status(self, thing: str, level: bytes, message: str, values: Mapping[str, Any]
                ) -> DiagnosticStatus:
        return DiagnosticStatus(level=level, name=f"{self.node_name}: {thing}", message=message,
                                hardware_id=self.node_name, values=flatten(values))

    def _map(self, status: Mapping[str, Any]) -> DiagnosticStatus:
        values = {k: v for k, v in status.items() if k not in _NOT_MAP}
        for group in ("timings_ms", "latency_ms"):
            values[group] = {stage: {k: stats[k] for k in _KEPT_STATS if k in stats}
                             for stage, stats in status[group].items()}
        figures = status["map"]
        message = (f"{status['frames_integrated']} frames integrated, {figures['blocks']} "
                   f"blocks, {figures['memory_mb']:.1f} MB")
        if status["config_pending"]:
            message += ", configuration change pending"
        return self._status("map", DiagnosticStatus.OK, message, values)

    def _camera(self, name: str, camera: Mapping[str, Any], now_ns: int) -> DiagnosticStatus:
        before = self._cameras.setdefault(name, _Previous())
        kind = str(camera.get("input", "depth"))  # the images that become frames
        received = int(camera["received"].get(kind, 0))
        integrated = int(camera["integrated"])
        drops = Counter(camera["drops"])
        new_received = _since(received, before.received)
        new_integrated = _since(integrated, before.integrated)
        new_drops = _since(drops, before.drops)
        if new_received:
            before.last_image_ns = now_ns
        before.received, before.integrated, before.drops = received, integrated, drops

        values = dict(camera)
        problems: list[tuple[bytes, str]] = []
        if new_received and not new_integrated:
            problems.append((DiagnosticStatus.ERROR,
                             f"{new_received} {kind} images received, none integrated"))
        if new_drops:
            problems.append((DiagnosticStatus.WARN,
                             f"{new_drops.total()} {kind} frames dropped, most {_top(new_drops)}"))
        if before.last_image_ns is not None:
            silent_s = (now_ns - before.last_image_ns) / 1e9
            values[f"seconds since last {kind} image"] = silent_s
            if now_ns - before.last_image_ns >= self.depth_timeout_ns:
                problems.append((DiagnosticStatus.WARN, f"no {kind} image for {silent_s:.1f} s"))
        if problems:
            level = max(level for level, _ in problems)
            message = "; ".join(text for _, text in problems)
        elif before.last_image_ns is None:
            level, message = DiagnosticStatus.OK, f"waiting for the first {kind} image"
        else:
            level = DiagnosticStatus.OK
            message = f"integrated {new_integrated} of {new_received} new {kind} images"
        return self._status(f"camera {name}", level, message, values)

    def _tf(self, tf: Mapping[str, Any]) -> DiagnosticStatus:
        refused = Counter(tf["refused"])
        new = _since(refused, self._tf_refused)
        self._tf_refused = refused
        if new:
            level = DiagnosticStatus.WARN
            message = f"{new.total()} transforms refused, most {_top(new)}"
        else:
            level, message = DiagnosticStatus.OK, f"{tf['frames']} frames"
        return self._status("tf", level, message, tf)
