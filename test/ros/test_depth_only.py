"""A depth-only camera with the default settings (``color_transport: auto``): no frame waits
for a color image that never comes, so a real-time stream is integrated in full.

Before color was optional, each frame of such a stream waited ``tf_timeout_s`` (0.5 s) for
color and 7 of 120 frames at 15 Hz were integrated. The rate here is 10 Hz: on the 2-core CI
machine one 160x120 frame with free-space clearing and the ESDF costs about 30 ms of the node's
single thread, and the test's publisher shares the cores, so 30 Hz is not sustained here for
reasons that have nothing to do with color."""

from __future__ import annotations

import time

import pytest

from .conftest import ROS_SKIP_REASON, SynthSequence

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

#: The product's default output rates (the other node tests run faster ones).
DEFAULT_RATES = {"mesh_rate_hz": "2.0", "occupancy_rate_hz": "1.0", "status_rate_hz": "1.0",
                 "tick_rate_hz": "30.0"}
pytestmark = pytest.mark.parametrize("mapper_run", [DEFAULT_RATES], indirect=True,
                                     ids=["defaults"])

T0 = 1_710_000_000_000_000_000
RATE_HZ = 10.0
FRAMES = 40


def test_depth_only_stream_is_integrated_without_drops(
        mapper_run, sequence: SynthSequence) -> None:
    h = mapper_run.harness
    h.wait_subscribed()
    h.publish_static(sequence.tf_static(T0))
    period_ns = int(1e9 / RATE_HZ)
    start = time.monotonic()
    for k in range(FRAMES):
        stamp = T0 + k * period_ns
        i = k % len(sequence)
        h.publish_frame(sequence.frames[i], stamp, sequence.tf(i, stamp), color=False)
        # real-time pacing of the stimulus (as a driver publishes), not synchronisation
        time.sleep(max(0.0, start + (k + 1) / RATE_HZ - time.monotonic()))
    status = h.wait_integrated(FRAMES)
    cam = status["cameras"]["camera"]
    assert status["frames_integrated"] == FRAMES
    assert cam["drops"] == {} and cam["color_drops"] == {}, cam
    assert cam["received"].get("color", 0) == 0
