"""TfBuffer: hand-computed cases, then the real TF trees of the bags in ../shared/data/rosbags."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from recon_ros.core.errors import ReconError
from recon_ros.io.tf_buffer import (
    STATIC_TIME_RANGE,
    ConnectivityError,
    ExtrapolationError,
    TfBuffer,
    TfDataError,
    TfLookupError,
    UnknownFrameError,
    invert_transform,
    quaternion_xyzw_to_matrix,
    slerp_xyzw,
)

S = 1_000_000_000  # ns per second
ID_Q = (0.0, 0.0, 0.0, 1.0)
H = math.sqrt(0.5)


def q_axis(axis: tuple[float, float, float], angle: float) -> tuple[float, float, float, float]:
    """xyzw quaternion of a rotation by ``angle`` (rad) about unit ``axis``."""
    s = math.sin(angle / 2)
    return (axis[0] * s, axis[1] * s, axis[2] * s, math.cos(angle / 2))


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def rotation_angle(R: np.ndarray) -> float:
    return math.acos(max(-1.0, min(1.0, (np.trace(R) - 1) / 2)))


def assert_proper_rotation(R: np.ndarray) -> None:
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)


def quat_matrix_by_hand(q: tuple[float, ...]) -> np.ndarray:
    """Rotation matrix of an xyzw quaternion, written out (independent of transforms3d)."""
    x, y, z, w = np.asarray(q) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


# ------------------------------------------------------------------------ conventions


def test_quaternion_order_is_ros_xyzw() -> None:
    # 90 deg about z: x -> y.  (x, y, z, w) = (0, 0, s, s)
    Rz = quaternion_xyzw_to_matrix(np.array([0, 0, H, H]))
    np.testing.assert_allclose(Rz, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    # 90 deg about x: y -> z
    Rx = quaternion_xyzw_to_matrix(np.array([H, 0, 0, H]))
    np.testing.assert_allclose(Rx @ [0, 1, 0], [0, 0, 1], atol=1e-15)
    # identity really is (0, 0, 0, 1) and not (1, 0, 0, 0)
    np.testing.assert_allclose(quaternion_xyzw_to_matrix(np.array(ID_Q)), np.eye(3))
    np.testing.assert_allclose(
        quaternion_xyzw_to_matrix(np.array([1.0, 0, 0, 0])), np.diag([1.0, -1, -1]), atol=1e-15
    )
    # REP-103 optical frame from a body frame: q = (-0.5, 0.5, -0.5, 0.5): z_optical = x_body
    R = quaternion_xyzw_to_matrix(np.array([-0.5, 0.5, -0.5, 0.5]))
    np.testing.assert_allclose(R, [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-15)


def test_slerp_is_not_lerp() -> None:
    q0 = np.array(ID_Q)
    q1 = np.array(q_axis((0, 0, 1), math.pi / 2))
    for t in (0.1, 0.25, 0.5, 0.9):
        R = quaternion_xyzw_to_matrix(slerp_xyzw(q0, q1, t))
        np.testing.assert_allclose(R, rot_z(t * math.pi / 2), atol=1e-14)
    # normalised lerp would give 2 * atan(0.25 s / (0.75 + 0.25 s)) = 21.6 deg at t = 0.25
    nlerp = 0.75 * q0 + 0.25 * q1
    nlerp /= np.linalg.norm(nlerp)
    assert math.degrees(rotation_angle(quaternion_xyzw_to_matrix(nlerp))) == pytest.approx(
        21.59, abs=0.01
    )


# ------------------------------------------------------------------------ hand-made trees


def test_chain_of_three_frames_hand_computed() -> None:
    buf = TfBuffer()
    # a -> b: 90 deg about z, then 1 m along a's x
    buf.set_transform("a", "b", 0, (1, 0, 0), q_axis((0, 0, 1), math.pi / 2), static=True)
    # b -> c: 90 deg about x, 2 m along b's y
    buf.set_transform("b", "c", 5 * S, (0, 2, 0), q_axis((1, 0, 0), math.pi / 2))
    expected_T_a_c = np.array(
        [[0, 0, 1, -1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]]
    )
    T_a_c = buf.lookup("a", "c", 5 * S)
    np.testing.assert_allclose(T_a_c, expected_T_a_c, atol=1e-15)
    # a point at (1, 2, 3) in c is at (2, 1, 2) in a
    np.testing.assert_allclose(T_a_c @ [1, 2, 3, 1], [2, 1, 2, 1], atol=1e-15)
    np.testing.assert_allclose(buf.lookup("c", "a", 5 * S), np.linalg.inv(expected_T_a_c),
                               atol=1e-15)
    # a sibling branch: a -> d, the path c -> d goes up to a and down to d
    buf.set_transform("a", "d", 0, (0, 0, 3), ID_Q, static=True)
    T_d_c = buf.lookup("d", "c", 5 * S)
    np.testing.assert_allclose(T_d_c @ [1, 2, 3, 1], [2, 1, -1, 1], atol=1e-15)
    np.testing.assert_allclose(buf.lookup("a", "a", 5 * S), np.eye(4))
    assert buf.frames() == ["a", "b", "c", "d"]
    assert buf.parent("c") == "b" and buf.parent("a") is None
    assert buf.is_static("b") and not buf.is_static("c")
    assert buf.edges() == [("a", "b", True), ("b", "c", False), ("a", "d", True)]


def test_interpolation_halfway_is_exact_slerp() -> None:
    buf = TfBuffer()
    buf.set_transform("world", "robot", 1 * S, (0, 0, 0), ID_Q)
    buf.set_transform("world", "robot", 3 * S, (2, 4, 0), q_axis((0, 0, 1), math.pi / 2))
    T = buf.lookup("world", "robot", 2 * S)
    assert_proper_rotation(T[:3, :3])
    assert math.degrees(rotation_angle(T[:3, :3])) == pytest.approx(45.0, abs=1e-12)
    np.testing.assert_allclose(T[:3, :3], rot_z(math.pi / 4), atol=1e-15)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 0], atol=1e-15)
    # a quarter of the way: slerp gives exactly 22.5 deg (normalised lerp would give 21.6)
    T = buf.lookup("world", "robot", 1 * S + S // 2)
    assert_proper_rotation(T[:3, :3])
    assert math.degrees(rotation_angle(T[:3, :3])) == pytest.approx(22.5, abs=1e-12)
    np.testing.assert_allclose(T[:3, 3], [0.5, 1, 0], atol=1e-15)
    # exact stamps return the stored samples
    np.testing.assert_allclose(buf.lookup("world", "robot", 1 * S), np.eye(4))
    np.testing.assert_allclose(buf.lookup("world", "robot", 3 * S)[:3, :3], rot_z(math.pi / 2),
                               atol=1e-15)


def test_slerp_takes_the_short_arc() -> None:
    buf = TfBuffer()
    buf.set_transform("w", "r", 0, (0, 0, 0), ID_Q)
    # +270 deg about z == -90 deg; the negated quaternion is the same rotation
    q270 = q_axis((0, 0, 1), 3 * math.pi / 2)
    buf.set_transform("w", "r", 2 * S, (0, 0, 0), q270)
    np.testing.assert_allclose(buf.lookup("w", "r", S)[:3, :3], rot_z(-math.pi / 4), atol=1e-14)
    buf2 = TfBuffer()
    buf2.set_transform("w", "r", 0, (0, 0, 0), ID_Q)
    buf2.set_transform("w", "r", 2 * S, (0, 0, 0), tuple(-v for v in q_axis((0, 0, 1), 1.0)))
    np.testing.assert_allclose(buf2.lookup("w", "r", S)[:3, :3], rot_z(0.5), atol=1e-14)


def test_out_of_order_inserts_are_sorted() -> None:
    buf = TfBuffer()
    for t, x in ((3, 30.0), (1, 10.0), (2, 20.0)):
        buf.set_transform("odom", "base", t * S, (x, 0, 0), ID_Q)
    assert buf.time_range("base") == (1 * S, 3 * S)
    assert buf.num_samples("base") == 3
    assert buf.lookup("odom", "base", int(1.5 * S))[0, 3] == pytest.approx(15.0)
    assert buf.lookup("odom", "base", int(2.25 * S))[0, 3] == pytest.approx(22.5)
    # the same stamp again replaces the sample
    buf.set_transform("odom", "base", 2 * S, (-1, 0, 0), ID_Q)
    assert buf.num_samples("base") == 3
    assert buf.lookup("odom", "base", 2 * S)[0, 3] == -1.0


def test_static_and_dynamic_mix_and_latest_common_time() -> None:
    buf = TfBuffer()
    buf.set_transform("map", "odom", 1 * S, (1, 0, 0), ID_Q)
    buf.set_transform("map", "odom", 5 * S, (5, 0, 0), ID_Q)
    buf.set_transform("odom", "base_link", 2 * S, (0, 2, 0), ID_Q)
    buf.set_transform("odom", "base_link", 4 * S, (0, 4, 0), ID_Q)
    buf.set_transform("base_link", "camera", 123, (0, 0, 1), q_axis((0, 0, 1), math.pi),
                      static=True)
    # static edges hold at any time, even far outside every dynamic range
    np.testing.assert_allclose(buf.lookup("base_link", "camera", 10**18)[:3, 3], [0, 0, 1])
    np.testing.assert_allclose(buf.lookup("camera", "base_link", 0)[:3, 3], [0, 0, -1],
                               atol=1e-15)
    assert buf.time_range("camera") == STATIC_TIME_RANGE
    # stamp 0 = latest common time = min(5 s, 4 s) = 4 s
    assert buf.latest_common_time("map", "camera") == 4 * S
    T0 = buf.lookup("map", "camera", 0)
    np.testing.assert_allclose(T0, buf.lookup("map", "camera", 4 * S))
    np.testing.assert_allclose(T0[:3, 3], [4, 4, 1])
    assert buf.latest_common_time("base_link", "camera") == 0  # all static
    # at 3 s: map->odom interpolated to x = 3, odom->base_link to y = 3
    np.testing.assert_allclose(buf.lookup("map", "camera", 3 * S)[:3, 3], [3, 3, 1])
    # a point 1 m in front of the camera (camera x) is 1 m behind base_link (rotated 180 deg)
    np.testing.assert_allclose(buf.lookup("base_link", "camera", 0) @ [1, 0, 0, 1],
                               [-1, 0, 1, 1], atol=1e-15)


def test_single_sample_edge() -> None:
    buf = TfBuffer()
    buf.set_transform("a", "b", 7 * S, (1, 2, 3), ID_Q)
    np.testing.assert_allclose(buf.lookup("a", "b", 7 * S)[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(buf.lookup("a", "b", 0)[:3, 3], [1, 2, 3])
    with pytest.raises(ExtrapolationError, match="only time 7.000000000 s is in the buffer"):
        buf.lookup("a", "b", 8 * S)


# --------------------------------------------------------------------------------- errors


def test_unknown_frame_lists_known_frames() -> None:
    buf = TfBuffer()
    buf.set_transform("map", "odom", 0, (0, 0, 0), ID_Q, static=True)
    with pytest.raises(UnknownFrameError) as info:
        buf.lookup("map", "camera", 0)
    msg = str(info.value)
    assert "'camera'" in msg and "known frames: [map, odom]" in msg
    assert isinstance(info.value, TfLookupError) and isinstance(info.value, ReconError)
    assert info.value.reason == "frame 'camera' does not exist"
    with pytest.raises(UnknownFrameError, match="target"):
        buf.lookup("nowhere", "odom", 0)
    assert not buf.can_transform("map", "camera", 0)
    assert buf.can_transform("odom", "map", 0)
    with pytest.raises(UnknownFrameError):
        buf.time_range("camera")
    with pytest.raises(TfLookupError, match="root"):
        buf.time_range("map")


def test_disconnected_trees() -> None:
    buf = TfBuffer()
    buf.set_transform("map", "odom", 0, (0, 0, 0), ID_Q, static=True)
    buf.set_transform("world", "camera", 0, (0, 0, 0), ID_Q, static=True)
    with pytest.raises(ConnectivityError) as info:
        buf.lookup("odom", "camera", 0)
    msg = str(info.value)
    assert "not part of the same tree" in msg
    assert "'camera' has root 'world'" in msg and "'odom' has root 'map'" in msg
    assert not buf.can_transform("odom", "camera")


def test_extrapolation_past_and_future_messages() -> None:
    buf = TfBuffer()
    buf.set_transform("map", "odom", 0, (0, 0, 0), ID_Q, static=True)
    buf.set_transform("odom", "base_link", 10 * S, (0, 0, 0), ID_Q)
    buf.set_transform("odom", "base_link", 20 * S, (1, 0, 0), ID_Q)
    with pytest.raises(ExtrapolationError) as info:
        buf.lookup("map", "base_link", 9 * S + 500_000_000)
    err = info.value
    msg = str(err)
    assert "extrapolation into the past" in msg
    assert "Requested time 9.500000000 s" in msg
    assert "earliest data is at time 10.000000000 s" in msg
    assert "edge 'odom' -> 'base_link'" in msg
    assert "available range 10.000000000 s .. 20.000000000 s" in msg
    assert "from frame [base_link] to frame [map]" in msg
    assert (err.direction, err.parent, err.child) == ("past", "odom", "base_link")
    assert (err.stamp_ns, err.earliest_ns, err.latest_ns) == (9 * S + 500_000_000, 10 * S, 20 * S)
    assert err.reason == "extrapolation into the past on edge 'odom' -> 'base_link'"

    with pytest.raises(ExtrapolationError) as info:
        buf.lookup("base_link", "map", 21 * S)
    msg = str(info.value)
    assert "extrapolation into the future" in msg and "latest data is at time 20.000000000 s" in msg
    assert info.value.direction == "future"
    assert not buf.can_transform("map", "base_link", 21 * S)
    assert buf.can_transform("map", "base_link", 20 * S)


def test_invalid_input_is_refused() -> None:
    buf = TfBuffer()
    buf.set_transform("map", "odom", 0, (0, 0, 0), ID_Q)
    with pytest.raises(TfDataError, match="re-parenting"):
        buf.set_transform("world", "odom", 0, (0, 0, 0), ID_Q)
    with pytest.raises(TfDataError, match="cycle"):
        buf.set_transform("odom", "map", 0, (0, 0, 0), ID_Q)
    with pytest.raises(TfDataError, match="static"):
        buf.set_transform("map", "odom", 0, (0, 0, 0), ID_Q, static=True)
    buf.set_transform("odom", "cam", 0, (0, 0, 0), ID_Q, static=True)
    with pytest.raises(TfDataError, match="dynamic"):
        buf.set_transform("odom", "cam", 5, (0, 0, 0), ID_Q)
    with pytest.raises(TfDataError, match="zero"):
        buf.set_transform("a", "b", 0, (0, 0, 0), (0, 0, 0, 0))
    with pytest.raises(TfDataError, match="finite"):
        buf.set_transform("a", "b", 0, (0, float("nan"), 0), ID_Q)
    with pytest.raises(TfDataError, match="own parent"):
        buf.set_transform("a", "a", 0, (0, 0, 0), ID_Q)
    with pytest.raises(TfDataError, match=">= 0"):
        buf.set_transform("a", "b", -1, (0, 0, 0), ID_Q)
    assert isinstance(TfDataError("x"), ReconError)
    assert buf.frames() == ["cam", "map", "odom"]  # nothing half-inserted


def test_quaternions_are_normalised_and_slashes_stripped() -> None:
    buf = TfBuffer()
    buf.set_transform("/map", "/odom", 0, (0, 0, 0), (0, 0, 2 * H, 2 * H), static=True)
    T = buf.lookup("map", "/odom", 0)
    assert_proper_rotation(T[:3, :3])
    np.testing.assert_allclose(T[:3, :3], rot_z(math.pi / 2), atol=1e-15)
    assert buf.frames() == ["map", "odom"]


def test_cache_time_drops_old_samples() -> None:
    buf = TfBuffer(cache_time_s=1.0)
    for k in range(11):  # 0 .. 5 s every 0.5 s
        assert buf.set_transform("odom", "base", k * S // 2, (k, 0, 0), ID_Q)
    assert buf.time_range("base") == (4 * S, 5 * S)
    assert not buf.set_transform("odom", "base", 3 * S, (0, 0, 0), ID_Q)  # too old: refused
    with pytest.raises(ExtrapolationError, match="into the past"):
        buf.lookup("odom", "base", 3 * S)
    with pytest.raises(TfDataError):
        TfBuffer(cache_time_s=0)


# ---------------------------------------------------------------------------- real bags

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BAGS = DATA / "rosbags"
needs_data = pytest.mark.skipif(
    not BAGS.is_dir(), reason=f"real bags not found at {BAGS} (shared/ must sit beside the repo)"
)


def _raw_samples(bag: Path, parent: str, child: str) -> list[tuple[int, np.ndarray]]:
    """The (stamp, T_parent_child) samples of one edge, read straight from the bag."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    out = []
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        conns = [c for c in reader.connections if c.topic in ("/tf", "/tf_static")]
        for conn, _, raw in reader.messages(connections=conns):
            for tr in reader.deserialize(raw, conn.msgtype).transforms:
                if tr.header.frame_id == parent and tr.child_frame_id == child:
                    T = np.eye(4)
                    r, t = tr.transform.rotation, tr.transform.translation
                    T[:3, :3] = quat_matrix_by_hand((r.x, r.y, r.z, r.w))
                    T[:3, 3] = (t.x, t.y, t.z)
                    out.append((tr.header.stamp.sec * S + tr.header.stamp.nanosec, T))
    return sorted(out, key=lambda x: x[0])


@pytest.fixture(scope="module")
def nav2() -> TfBuffer:
    from recon_ros.io.rosbag_source import load_tf_from_bag

    buf = TfBuffer()
    report = load_tf_from_bag(BAGS / "nav2_turtlebot.mcap", buf)
    assert report.messages == 5423 and report.stored == report.transforms and not report.rejected
    return buf


@needs_data
def test_nav2_tree_structure(nav2: TfBuffer) -> None:
    frames = nav2.frames()
    assert len(frames) == 34
    for f in ("map", "odom", "base_link", "base_footprint", "shell_link", "oakd_link",
              "oakd_rgb_camera_optical_frame", "rplidar_link", "left_wheel", "right_wheel"):
        assert f in frames
    assert nav2.parent("odom") == "map" and nav2.parent("base_link") == "odom"
    assert nav2.parent("base_footprint") == "base_link" and nav2.is_static("base_footprint")
    dynamic = {c: p for p, c, st in nav2.edges() if not st}
    assert dynamic == {"odom": "map", "base_link": "odom", "left_wheel": "base_link",
                       "right_wheel": "base_link"}
    assert nav2.time_range("base_link") == (928_800_000_000, 1_025_496_000_000)
    assert nav2.time_range("odom") == (929_800_000_000, 1_026_400_000_000)
    # the camera's optical frame follows REP-103: its z axis is the camera body's x axis
    T = nav2.lookup("oakd_rgb_camera_frame", "oakd_rgb_camera_optical_frame", 0)
    np.testing.assert_allclose(T[:3, 2], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(T[:3, 0], [0, -1, 0], atol=1e-6)


@needs_data
def test_nav2_exact_and_interpolated_lookups(nav2: TfBuffer) -> None:
    samples = _raw_samples(BAGS / "nav2_turtlebot.mcap", "odom", "base_link")
    assert len(samples) == 2639
    # exact stamps return the samples (quaternions converted by hand, not by transforms3d)
    for stamp, T in samples[::300]:
        np.testing.assert_allclose(nav2.lookup("odom", "base_link", stamp), T, atol=1e-12)
    # at a mid stamp, the pose lies between the neighbouring samples
    moving = [
        k for k in range(len(samples) - 1)
        if np.linalg.norm(samples[k + 1][1][:3, 3] - samples[k][1][:3, 3]) > 1e-3
        and rotation_angle(samples[k][1][:3, :3].T @ samples[k + 1][1][:3, :3]) > 1e-3
    ]
    assert len(moving) > 10, "the robot should both drive and turn in this bag"
    for k in moving[:: max(1, len(moving) // 8)]:
        (s0, T0), (s1, T1) = samples[k], samples[k + 1]
        mid = (s0 + s1) // 2
        ratio = (mid - s0) / (s1 - s0)
        T = nav2.lookup("odom", "base_link", mid)
        assert_proper_rotation(T[:3, :3])
        lo = np.minimum(T0[:3, 3], T1[:3, 3]) - 1e-12
        hi = np.maximum(T0[:3, 3], T1[:3, 3]) + 1e-12
        assert np.all((lo <= T[:3, 3]) & (T[:3, 3] <= hi))
        np.testing.assert_allclose(T[:3, 3], (1 - ratio) * T0[:3, 3] + ratio * T1[:3, 3],
                                   atol=1e-12)
        full = rotation_angle(T0[:3, :3].T @ T1[:3, :3])
        a0 = rotation_angle(T0[:3, :3].T @ T[:3, :3])
        a1 = rotation_angle(T[:3, :3].T @ T1[:3, :3])
        assert a0 == pytest.approx(ratio * full, abs=1e-7)
        assert a1 == pytest.approx((1 - ratio) * full, abs=1e-7)


@needs_data
def test_nav2_chains_inverses_and_extrapolation(nav2: TfBuffer) -> None:
    lo, hi = 929_800_000_000, 1_025_496_000_000  # where map->odom and odom->base_link overlap
    wheels_hi = 1_025_472_000_000  # the wheel joints end a little earlier
    for stamp in (lo + 1, (lo + hi) // 2 + 12_345_678, wheels_hi - 1):
        T_map_cam = nav2.lookup("map", "oakd_rgb_camera_optical_frame", stamp)
        T_cam_map = nav2.lookup("oakd_rgb_camera_optical_frame", "map", stamp)
        np.testing.assert_allclose(T_map_cam @ T_cam_map, np.eye(4), atol=1e-12)
        chain = (
            nav2.lookup("map", "odom", stamp)
            @ nav2.lookup("odom", "base_link", stamp)
            @ nav2.lookup("base_link", "shell_link", stamp)
            @ nav2.lookup("shell_link", "oakd_camera_bracket", stamp)
            @ nav2.lookup("oakd_camera_bracket", "oakd_link", stamp)
            @ nav2.lookup("oakd_link", "oakd_rgb_camera_frame", stamp)
            @ nav2.lookup("oakd_rgb_camera_frame", "oakd_rgb_camera_optical_frame", stamp)
        )
        np.testing.assert_allclose(chain, T_map_cam, atol=1e-12)
        # map -> base_footprint goes through two dynamic and one static edge
        np.testing.assert_allclose(
            nav2.lookup("map", "base_footprint", stamp),
            nav2.lookup("map", "base_link", stamp) @ nav2.lookup("base_link", "base_footprint", 0),
            atol=1e-12,
        )
        # across branches: up from right_wheel to base_link, down to left_wheel
        np.testing.assert_allclose(
            nav2.lookup("left_wheel", "right_wheel", stamp),
            invert_transform(nav2.lookup("base_link", "left_wheel", stamp))
            @ nav2.lookup("base_link", "right_wheel", stamp),
            atol=1e-12,
        )
    # latest common time of map -> base_link = min of the two edges' newest samples
    assert nav2.latest_common_time("map", "base_link") == hi
    np.testing.assert_allclose(nav2.lookup("map", "base_link", 0),
                               nav2.lookup("map", "base_link", hi))
    with pytest.raises(ExtrapolationError, match="into the past") as info:
        nav2.lookup("map", "base_link", 929_000_000_000)
    assert "edge 'map' -> 'odom'" in str(info.value)
    with pytest.raises(ExtrapolationError, match="into the future") as info:
        nav2.lookup("map", "oakd_rgb_camera_optical_frame", 1_026_000_000_000)
    assert "edge 'odom' -> 'base_link'" in str(info.value)
    with pytest.raises(UnknownFrameError, match="known frames: \\[base_footprint, base_link"):
        nav2.lookup("map", "camera_link", 0)


@needs_data
def test_tf_example_sqlite3_bag() -> None:
    from recon_ros.io.rosbag_source import load_tf_from_bag

    buf = TfBuffer()
    report = load_tf_from_bag(BAGS / "tf_example", buf)
    assert (report.messages, report.stored) == (518, 518)
    assert buf.frames() == ["base_footprint", "base_link", "odom"]
    assert buf.parent("base_link") == "base_footprint" and buf.is_static("base_link")
    assert buf.parent("base_footprint") == "odom" and not buf.is_static("base_footprint")
    lo, hi = buf.time_range("base_footprint")
    assert (lo, hi) == (1714741164177519307, 1714741215784817334)
    samples = _raw_samples(BAGS / "tf_example", "odom", "base_footprint")
    assert len(samples) == 517
    static = _raw_samples(BAGS / "tf_example", "base_footprint", "base_link")[0][1]
    for k in (0, 100, 516):
        np.testing.assert_allclose(buf.lookup("odom", "base_link", samples[k][0]),
                                   samples[k][1] @ static, atol=1e-12)
    k = 258
    (s0, T0), (s1, T1) = samples[k], samples[k + 1]
    T = buf.lookup("odom", "base_footprint", (s0 + s1) // 2)
    assert np.all(np.minimum(T0[:3, 3], T1[:3, 3]) - 1e-12 <= T[:3, 3])
    assert np.all(T[:3, 3] <= np.maximum(T0[:3, 3], T1[:3, 3]) + 1e-12)
    T_ob = buf.lookup("odom", "base_link", (s0 + s1) // 2)
    T_bo = buf.lookup("base_link", "odom", (s0 + s1) // 2)
    np.testing.assert_allclose(T_ob @ T_bo, np.eye(4), atol=1e-12)
    with pytest.raises(ExtrapolationError, match="into the past"):
        buf.lookup("odom", "base_link", lo - 1)
    with pytest.raises(ExtrapolationError, match="into the future"):
        buf.lookup("base_link", "odom", hi + 1)
    # the bare .db3 file reads the same
    buf2 = TfBuffer()
    load_tf_from_bag(BAGS / "tf_example" / "tf_example.db3", buf2)
    np.testing.assert_allclose(
        buf2.lookup("odom", "base_link", hi), buf.lookup("odom", "base_link", hi)
    )
