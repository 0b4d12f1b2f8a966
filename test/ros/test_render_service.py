"""recon_mapper's map quality and ``~/render`` as a process over DDS (issue 12, items 3a and
3b): the status (and ``/diagnostics``) carry how well the map explained the latest scored
frame; ``~/render`` draws the map from the latest camera pose or a TF frame, agreeing with the
synthetic camera's exact depth there, and refuses an unknown frame or a call too soon after the
previous render without harm to the node."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from recon_ros.core.frame import PinholeCamera

from .conftest import ROS_SKIP_REASON, SynthSequence

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from recon_ros_interfaces.srv import Render  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from recon_ros.ros.mapper_node import scaled_camera  # noqa: E402

from .helpers import RELIABLE, wait_for  # noqa: E402

#: Every 3rd frame scored; renders not rate-limited until the test says so.
EXTRA = {"quality_every_frames": "3", "render_min_interval_s": "0.0"}
T0 = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000


def _depth(msg: Image) -> np.ndarray:
    assert msg.encoding == "32FC1" and msg.step == 4 * msg.width
    return np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.width)


def _rgb(msg: Image) -> np.ndarray:
    assert msg.encoding == "rgb8" and msg.step == 3 * msg.width
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


def _check_against(response: Render.Response, measured: np.ndarray) -> None:
    """The rendered depth agrees with the camera's exact depth where both have one, and
    covers most of what the camera saw; the color image has the depth's size."""
    assert response.success, response.message
    rendered = _depth(response.depth)
    assert rendered.shape == measured.shape
    assert _rgb(response.color).shape == (*measured.shape, 3)
    assert _rgb(response.color).any()
    both = (rendered > 0) & (measured > 0)
    assert both.sum() > 0.8 * (measured > 0).sum(), response.message
    assert np.median(np.abs(rendered[both] - measured[both])) < 0.05


def test_scaled_camera_keeps_the_view() -> None:
    camera = PinholeCamera(np.array([[200.0, 0, 80], [0, 200, 60], [0, 0, 1]]), 160, 120)
    same = scaled_camera(camera, 0, 0, 10**6)
    assert (same.width, same.height) == (160, 120) and np.allclose(same.K, camera.K)
    half = scaled_camera(camera, 80, 0, 10**6)
    assert (half.width, half.height) == (80, 60)
    assert np.allclose(half.K, camera.strided(2).K)
    capped = scaled_camera(camera, 0, 0, 4800)
    assert (capped.width, capped.height) == (80, 60)


@pytest.mark.parametrize("mapper_run", [EXTRA], indirect=True, ids=["render"])
def test_quality_status_and_render(mapper_run, sequence: SynthSequence) -> None:
    h, proc = mapper_run.harness, mapper_run.proc
    diagnostics: list[DiagnosticArray] = []
    h.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, RELIABLE)
    h.wait_subscribed()
    h.publish_static(sequence.tf_static(T0))
    stamps = [T0 + k * PERIOD_NS for k in range(len(sequence))]
    for k, stamp in enumerate(stamps):
        h.publish_frame(sequence.frames[k], stamp, sequence.tf(k, stamp))
        time.sleep(PERIOD_NS / 1e9)
    h.wait_integrated(len(sequence))

    # frames 3, 6, 9 were scored before they were fused
    quality = h.wait_status(lambda s: s["quality"]["scored"] == 3, 30,
                            "three frames scored")["quality"]
    assert quality["failed"] == 0 and quality["frame_stamp_ns"] == stamps[9], quality
    assert 0.0 < quality["explained"] <= 1.0 and 0.0 < quality["inlier_ratio"] <= 1.0
    assert math.isfinite(quality["mean_abs_error_m"]) and quality["mean_abs_error_m"] < 0.5
    assert 0.0 <= quality["unknown"] < 1.0 and quality["pixels"] > 0

    def map_values() -> dict[str, str] | None:
        for array in reversed(diagnostics):
            for status in array.status:
                if status.name.endswith(": map"):
                    values = {kv.key: kv.value for kv in status.values}
                    return values if values.get("quality/scored") == "3" else None
        return None
    values = wait_for(map_values, 30, "the quality on /diagnostics")
    assert 0.0 < float(values["quality/explained"]) <= 1.0

    # the latest camera pose (frame 11), half size: the camera's image at every 2nd pixel
    last = sequence.frames[-1]
    measured = np.asarray(last.depth, np.float32)
    response = h.call("render", Render, Render.Request(width=80, height=60))
    _check_against(response, measured[::2, ::2])
    assert response.depth.header.frame_id == last.frame_id
    # the same pose as a TF frame, at the camera's size
    response = h.call("render", Render, Render.Request(frame_id=last.frame_id))
    _check_against(response, measured)

    response = h.call("render", Render, Render.Request(frame_id="no_such_frame"))
    assert not response.success
    assert "no_such_frame" in response.message and "does not exist" in response.message
    assert h.set_parameters({"render_min_interval_s": 60.0})[0].successful
    response = h.call("render", Render)
    assert not response.success and "render_min_interval_s=60" in response.message

    status = h.wait_status(lambda s: sum(s["render"].values()) == 4, 30, "renders counted")
    assert status["render"] == {"rendered": 2, "tf lookup failed": 1, "too soon": 1}
    assert proc.alive()
