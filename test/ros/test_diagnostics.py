"""MapperDiagnostics: the node's status dict as a DiagnosticArray; levels from the counters'
growth between reports, flattened values."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import ROS_SKIP_REASON

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from diagnostic_msgs.msg import DiagnosticStatus

from recon_ros.ros.diagnostics import MapperDiagnostics, flatten

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
S = 1_000_000_000  # ns per second


def camera(received: int = 0, integrated: int = 0, **drops: int) -> dict[str, Any]:
    """A CameraStream.status() dict (drops given as keyword arguments, '_' for ' ')."""
    return {"received": {"depth": received, "color": received, "depth_info": 1},
            "integrated": integrated, "queue": {"depth": 0, "color": 1},
            "drops": {k.replace("_", " "): v for k, v in drops.items()},
            "color_drops": {"no color in time": 2}, "robot_frame_fallbacks": {},
            "invalid_depth_pixels": 5}


def status(cameras: dict[str, dict[str, Any]], refused: dict[str, int] | None = None
           ) -> dict[str, Any]:
    """A MapperNode.status() dict."""
    return {
        "node": "/recon_mapper", "stamp_ns": 1_700_000_000 * S + 5,
        "frames_integrated": 42, "config_pending": False,
        "map": {"blocks": 310, "memory_mb": 12.34567, "mesh_triangles": 900},
        "mesh": {"marker_ids": 3, "messages": 7, "frames_integrated": 40},
        "occupancy_frames_integrated": 40, "grid_stamp_ns": None,
        "planning_frames_integrated": 38, "cameras": cameras,
        "tf": {"frames": 4, "refused": dict(refused or {})},
        "timings_ms": {"integrate": {"count": 9, "median_ms": 4.5, "mean_ms": 5.0,
                                     "p95_ms": 9.25, "total_ms": 45.0}},
        "latency_ms": {"depth_to_integrated": {"count": 9, "median_ms": 30.0, "p95_ms": 41.0,
                                               "max_ms": 50.0}},
    }


def by_name(diag: MapperDiagnostics, st: dict[str, Any], now_ns: int
            ) -> dict[str, DiagnosticStatus]:
    return {s.name: s for s in diag.report(st, now_ns).status}


def test_flatten() -> None:
    kv = flatten({"a": 1, "b": {"queue overflow": 3, "c": {"d": True}}, "e": 0.123456,
                  "f": None})
    assert [(k.key, k.value) for k in kv] == [
        ("a", "1"), ("b/queue overflow", "3"), ("b/c/d", "true"), ("e", "0.123"), ("f", "None")]


def test_report_layout_and_values() -> None:
    diag = MapperDiagnostics("recon_mapper")
    msg = diag.report(status({"front": camera(), "/rig/back": camera()}), 0)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 5)
    assert [s.name for s in msg.status] == [
        "recon_mapper: map", "recon_mapper: camera front", "recon_mapper: camera /rig/back",
        "recon_mapper: tf"]
    assert {s.hardware_id for s in msg.status} == {"recon_mapper"}
    map_status, front, _, tf = msg.status
    values = {kv.key: kv.value for kv in map_status.values}
    assert values["frames_integrated"] == "42" and values["config_pending"] == "false"
    assert values["map/memory_mb"] == "12.346" and values["mesh/messages"] == "7"
    assert values["timings_ms/integrate/median_ms"] == "4.5"
    assert values["latency_ms/depth_to_integrated/p95_ms"] == "41.0"
    assert not any(k.endswith(("mean_ms", "count", "total_ms", "max_ms")) for k in values)
    assert not any(k.startswith(("cameras", "tf", "node", "stamp_ns")) for k in values)
    assert map_status.level == OK and map_status.message == \
        "42 frames integrated, 310 blocks, 12.3 MB"
    cam = {kv.key: kv.value for kv in front.values}
    assert cam["received/depth"] == "0" and cam["color_drops/no color in time"] == "2"
    assert cam["queue/color"] == "1" and cam["invalid_depth_pixels"] == "5"
    assert front.level == OK and front.message == "waiting for the first depth image"
    assert tf.level == OK and tf.message == "4 frames"
    assert {kv.key: kv.value for kv in tf.values} == {"frames": "4"}

    pending = status({})
    pending["config_pending"] = True
    assert diag.report(pending, 0).status[0].message.endswith(", configuration change pending")


def test_camera_levels_follow_the_counters() -> None:
    diag = MapperDiagnostics("recon_mapper", depth_timeout_s=5.0)
    name = "recon_mapper: camera front"

    def step(cam: dict[str, Any], t_s: float) -> DiagnosticStatus:
        return by_name(diag, status({"front": cam}), int(t_s * S))[name]

    assert step(camera(), 0).level == OK
    ok = step(camera(10, 10), 1)
    assert (ok.level, ok.message) == (OK, "integrated 10 of 10 new depth images")
    # frames dropped since the previous report: WARN naming the top reason
    warn = step(camera(20, 17, queue_overflow=1, **{"TF lookup failed: late": 2}), 2)
    assert warn.level == WARN
    assert warn.message == "3 depth frames dropped, most 'TF lookup failed: late' x2"
    assert {kv.key: kv.value for kv in warn.values}["drops/queue overflow"] == "1"
    # images arrived, none integrated: ERROR (the old drops do not count again)
    error = step(camera(25, 17, queue_overflow=1, **{"TF lookup failed: late": 2}), 3)
    assert (error.level, error.message) == (ERROR, "5 depth images received, none integrated")
    drops = {"queue_overflow": 1, "TF lookup failed: late": 2}
    assert step(camera(30, 22, **drops), 4).level == OK
    # quiet, but within the timeout; then past it: WARN
    quiet = step(camera(30, 22, **drops), 8.9)
    assert quiet.level == OK
    assert {kv.key: kv.value for kv in quiet.values}["seconds since last depth image"] == "4.9"
    stale = step(camera(30, 22, **drops), 9.5)
    assert (stale.level, stale.message) == (WARN, "no depth image for 5.5 s")
    assert step(camera(31, 23, **drops), 10).level == OK
    # several problems: the worst level, every message
    both = step(camera(35, 23, queue_overflow=5, **{"TF lookup failed: late": 2}), 11)
    assert both.level == ERROR
    assert both.message == ("4 depth images received, none integrated; "
                            "4 depth frames dropped, most 'queue overflow' x4")
    # counters that went back (stream reset) count from zero
    reset = step(camera(2, 2), 12)
    assert (reset.level, reset.message) == (OK, "integrated 2 of 2 new depth images")


def test_cameras_are_tracked_apart() -> None:
    diag = MapperDiagnostics("m", depth_timeout_s=1.0)
    by_name(diag, status({"a": camera(5, 5), "b": camera(5, 5)}), 0)
    out = by_name(diag, status({"a": camera(5, 5), "b": camera(9, 5)}), 2 * S)
    assert (out["m: camera a"].level, out["m: camera a"].message) == (
        WARN, "no depth image for 2.0 s")
    assert out["m: camera b"].level == ERROR


def test_tf_refusals_warn_once() -> None:
    diag = MapperDiagnostics("recon_mapper")
    refused = {"older than the TF cache window": 1, "invalid quaternion": 3}
    tf = diag.report(status({}, refused), 0).status[-1]
    assert (tf.level, tf.message) == (WARN, "4 transforms refused, most 'invalid quaternion' x3")
    assert {kv.key: kv.value for kv in tf.values}["refused/invalid quaternion"] == "3"
    assert diag.report(status({}, refused), S).status[-1].level == OK
    refused["older than the TF cache window"] = 3
    assert diag.report(status({}, refused), 2 * S).status[-1].message == \
        "2 transforms refused, most 'older than the TF cache window' x2"
