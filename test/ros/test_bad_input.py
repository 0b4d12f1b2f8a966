"""Bad input into a running recon_mapper: each kind is dropped with its own counted reason,
the node keeps running and mapping, and the map stays correct."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import ROS_SKIP_REASON, SynthSequence, surface_distance

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from recon_ros.ros.conversions import camera_info_msg, depth_msg, tf_message

from .helpers import mesh_state, mesh_vertices, wait_for

TIMEOUT_S = 0.3
QUEUE = 4
pytestmark = pytest.mark.parametrize(
    "mapper_run", [{"tf_timeout_s": str(TIMEOUT_S), "queue_size": str(QUEUE)}],
    indirect=True, ids=["mapper"])

T0 = 1_700_000_000_000_000_000
STEP = 100_000_000


class Feeder:
    """Publishes frames of the sequence with increasing stamps and checks the counters."""

    def __init__(self, run, seq: SynthSequence) -> None:
        self.h, self.seq = run.harness, seq
        self.proc = run.proc
        self.k = 0
        self.h.wait_subscribed()
        self.h.publish_static(seq.tf_static(T0))

    def stamp(self) -> int:
        self.k += 1
        return T0 + self.k * STEP

    def good(self, i: int | None = None) -> int:
        """A valid frame (with its TF); waits until it is integrated."""
        n = self.h.status()["frames_integrated"]
        stamp = self.stamp()
        i = self.k % len(self.seq) if i is None else i
        self.h.publish_frame(self.seq.frames[i], stamp, self.seq.tf(i, stamp))
        self.h.wait_integrated(n + 1)
        return stamp

    def drops(self) -> dict[str, int]:
        return self.h.camera_status()["drops"]

    def expect_drop(self, reason: str, publish, timeout: float = 30.0) -> None:
        """Run ``publish`` and wait until the reason's counter (prefix match) goes up by 1."""
        def count() -> int:
            return sum(n for r, n in self.drops().items() if r.startswith(reason))
        before = count()
        publish()
        wait_for(lambda: count() == before + 1, timeout, f"a drop '{reason}'",
                 lambda: f"drops: {self.drops()}\nlog:\n{self.proc.log()[-3000:]}")
        assert self.proc.alive()


@pytest.fixture(scope="module")
def feeder(mapper_run, sequence: SynthSequence) -> Feeder:
    f = Feeder(mapper_run, sequence)
    f.good()
    return f


def test_wrong_encoding(feeder: Feeder) -> None:
    frame = feeder.seq.frames[0]

    def publish() -> None:
        stamp = feeder.stamp()
        msg = depth_msg(frame.depth, stamp, frame.frame_id)
        msg.encoding = "8UC3"
        feeder.h.publish_frame(frame, stamp, feeder.seq.tf(0, stamp), depth=msg)
    feeder.expect_drop("unsupported encoding 8UC3", publish)


def test_malformed_image(feeder: Feeder) -> None:
    frame = feeder.seq.frames[0]

    def publish() -> None:
        stamp = feeder.stamp()
        msg = depth_msg(frame.depth, stamp, frame.frame_id)
        msg.data = bytes(msg.data)[: len(msg.data) // 2]
        feeder.h.publish_frame(frame, stamp, feeder.seq.tf(0, stamp), depth=msg)
    feeder.expect_drop("malformed image", publish)


def test_image_size_differs_from_camera_info(feeder: Feeder) -> None:
    frame = feeder.seq.frames[1]

    def publish() -> None:
        stamp = feeder.stamp()
        small = depth_msg(frame.depth[::2, ::2], stamp, frame.frame_id)
        feeder.h.publish_frame(frame, stamp, feeder.seq.tf(1, stamp), depth=small)
    feeder.expect_drop("depth size differs from camera_info", publish)


def test_all_zero_intrinsics(feeder: Feeder) -> None:
    frame = feeder.seq.frames[2]

    def publish() -> None:
        stamp = feeder.stamp()
        info = camera_info_msg(frame.camera, stamp, frame.frame_id)
        info.k = [0.0] * 9
        feeder.h.publish_frame(frame, stamp, feeder.seq.tf(2, stamp), info=info)
    feeder.expect_drop("camera_info K is all zero", publish)
    feeder.good(2)  # a good camera_info afterwards maps again


def test_nan_inf_negative_depth_pixels_are_invalid_not_fatal(feeder: Feeder) -> None:
    frame = feeder.seq.frames[4]
    depth = frame.depth.copy()
    depth[:20, :] = np.nan
    depth[20:30, :] = np.inf
    depth[30:40, :] = -1.0
    bad_pixels = 40 * depth.shape[1]
    before = feeder.h.camera_status()["invalid_depth_pixels"]
    n = feeder.h.status()["frames_integrated"]
    stamp = feeder.stamp()
    feeder.h.publish_frame(frame, stamp, feeder.seq.tf(4, stamp),
                           depth=depth_msg(depth, stamp, frame.frame_id, "32FC1"))
    status = feeder.h.wait_integrated(n + 1)  # the valid pixels are integrated
    assert status["cameras"]["camera"]["invalid_depth_pixels"] == before + bad_pixels

    def publish_all_invalid() -> None:
        s = feeder.stamp()
        nothing = np.full_like(frame.depth, np.nan)
        feeder.h.publish_frame(frame, s, feeder.seq.tf(4, s),
                               depth=depth_msg(nothing, s, frame.frame_id, "32FC1"))
    feeder.expect_drop("no valid depth pixels", publish_all_invalid)


def test_missing_tf(feeder: Feeder) -> None:
    frame = feeder.seq.frames[5]

    def publish_unknown_frame() -> None:
        stamp = feeder.stamp()
        msg = depth_msg(frame.depth, stamp, "no_such_frame")
        feeder.h.publish_frame(frame, stamp, feeder.seq.tf(5, stamp), depth=msg)
    feeder.expect_drop("TF lookup failed: frame 'no_such_frame' does not exist",
                       publish_unknown_frame)

    def publish_without_tf() -> None:
        feeder.h.publish_frame(frame, feeder.stamp(), None)
    feeder.expect_drop("TF lookup failed: extrapolation into the future", publish_without_tf)


def test_late_tf(feeder: Feeder) -> None:
    frame = feeder.seq.frames[6]
    # TF arriving after the image but within tf_timeout_s: the frame waits and is integrated
    n = feeder.h.status()["frames_integrated"]
    stamp = feeder.stamp()
    feeder.h.publish_frame(frame, stamp, None)
    feeder.h.tf_pub.publish(tf_message(feeder.seq.tf(6, stamp)))
    feeder.h.wait_integrated(n + 1)

    # TF arriving after the timeout: the frame has been dropped by then
    late = feeder.stamp()
    feeder.expect_drop("TF lookup failed: extrapolation into the future",
                       lambda: feeder.h.publish_frame(frame, late, None))
    feeder.h.tf_pub.publish(tf_message(feeder.seq.tf(6, late)))
    feeder.good()


def test_stamps_going_backwards(feeder: Feeder) -> None:
    old = feeder.good(7) - STEP // 2  # TF exists around this stamp: only the order is wrong
    frame = feeder.seq.frames[7]
    feeder.expect_drop("stamp not newer than the last frame",
                       lambda: feeder.h.publish_frame(frame, old, None))


def test_burst_faster_than_integration(feeder: Feeder) -> None:
    h = feeder.h
    received = h.camera_status()["received"]["depth"]
    n_burst = 40
    for _ in range(n_burst):
        stamp = feeder.stamp()
        i = feeder.k % len(feeder.seq)
        h.publish_frame(feeder.seq.frames[i], stamp, feeder.seq.tf(i, stamp))

    def settled():
        cam = h.camera_status()
        done = cam["integrated"] + sum(cam["drops"].values())
        # every depth image that reached the node is integrated or dropped with a reason
        return (cam["received"]["depth"] > received + QUEUE
                and cam["queue"]["depth"] == 0 and cam["received"]["depth"] == done and cam)
    cam = wait_for(settled, 60, "the burst to be processed",
                   lambda: str(h.camera_status()))
    assert cam["drops"].get("queue overflow", 0) >= 1, cam
    feeder.good()  # and it keeps mapping


def test_map_is_not_corrupted(feeder: Feeder) -> None:
    for i in range(len(feeder.seq)):
        feeder.good(i)
    state = mesh_state(feeder.h.wait_mesh_settled())
    err = surface_distance(feeder.seq.scene, mesh_vertices(state))
    assert np.median(err) < 0.01 and np.percentile(err, 99) < 0.05
    assert feeder.proc.alive()
