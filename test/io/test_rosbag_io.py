"""BagWriter -> RosbagSource round trips on real rosbag2 files (sqlite3 and MCAP), no mocks."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability
from rosbags.typesys import Stores, get_typestore

from recon_ros.core.errors import ConfigError, ReconError
from recon_ros.core.frame import Frame
from recon_ros.io.rosbag_source import (
    BagReadError,
    BagTopicError,
    RosbagColorSource,
    RosbagSource,
    StampWindow,
    camera_info_topic_for,
    resolve_bag_path,
)
from recon_ros.io.rosbag_writer import BagWriteError, BagWriter

S = 1_000_000_000
MS = 1_000_000
H = math.sqrt(0.5)
STORAGES = ["sqlite3", "mcap"]
OPTICAL_Q = (-0.5, 0.5, -0.5, 0.5)  # body (x fwd, y left, z up) -> optical (x right, y down, z fwd)
R_OPTICAL = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0.0]])  # written out by hand

DEPTH_T = "/cam/depth/image_raw"
DEPTH_INFO = "/cam/depth/camera_info"
COLOR_T = "/cam/color/image_raw"
COLOR_INFO = "/cam/color/camera_info"
K_DEPTH = np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])  # 16 x 12 images
K_COLOR = np.array([[25.0, 0, 9.5], [0, 25.0, 7.0], [0, 0, 1]])  # 20 x 15 images


# ------------------------------------------------------------------- the REP-105 scene


def yaw_q(yaw: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))


def make_T(R: np.ndarray, t: tuple[float, float, float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def rot_z(a: float) -> np.ndarray:
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


MAP_ODOM_T, MAP_ODOM_YAW = (2.0, -1.0, 0.0), 0.3
BASE_CAM_T = (0.1, 0.0, 0.3)
CAM_DEPTH_T = (0.0, 0.02, 0.0)
CAM_COLOR_T = (0.0, -0.03, 0.0)


def odom_base(t_s: float) -> tuple[tuple[float, float, float], float]:
    """The robot drives and turns at constant rates: translation and yaw linear in time."""
    return (0.5 * t_s, 0.2 * t_s, 0.0), 0.4 * t_s


def expected_T_map_depth(stamp_ns: int) -> np.ndarray:
    """map -> odom -> base_link -> camera_link -> camera_depth_optical_frame, by hand."""
    trans, yaw = odom_base(stamp_ns / S)
    return (
        make_T(rot_z(MAP_ODOM_YAW), MAP_ODOM_T)
        @ make_T(rot_z(yaw), trans)
        @ make_T(np.eye(3), BASE_CAM_T)
        @ make_T(R_OPTICAL, CAM_DEPTH_T)
    )


def write_tf_tree(bag: BagWriter, t0_s: float = 0.9, t1_s: float = 2.2) -> None:
    """REP-105 chain: map->odom (5 Hz), odom->base_link (20 Hz) on /tf; the camera on /tf_static."""
    bag.write_tf(
        [
            ("base_link", "camera_link", 0, BASE_CAM_T, (0, 0, 0, 1)),
            ("camera_link", "camera_depth_optical_frame", 0, CAM_DEPTH_T, OPTICAL_Q),
            ("camera_link", "camera_color_optical_frame", 0, CAM_COLOR_T, OPTICAL_Q),
        ],
        static=True,
        log_time_ns=int(t0_s * S),
    )
    n = int(round((t1_s - t0_s) / 0.05))
    for k in range(n + 1):
        stamp = int(round((t0_s + 0.05 * k) * S))
        trans, yaw = odom_base(stamp / S)
        items = [("odom", "base_link", stamp, trans, yaw_q(yaw))]
        if k % 4 == 0:
            items.append(("map", "odom", stamp, MAP_ODOM_T, yaw_q(MAP_ODOM_YAW)))
        bag.write_tf(items)


def depth_pattern(seed: int, h: int = 12, w: int = 16) -> np.ndarray:
    """Depth in metres with sub-millimetre values, holes (0, NaN, Inf), negative and too-far."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.3, 6.0, size=(h, w))
    d[0, 0], d[0, 1], d[0, 2], d[0, 3], d[0, 4] = 0.0, np.nan, np.inf, -1.0, 70.0
    return d


def expected_16uc1(d: np.ndarray) -> np.ndarray:
    mm = np.clip(np.where(np.isfinite(d), np.round(d * 1000.0), 0.0), 0, 65535).astype(np.uint16)
    return mm.astype(np.float32) / np.float32(1000.0)


def color_pattern(tag: int, h: int = 15, w: int = 20) -> np.ndarray:
    """RGB image whose channels differ (R > G > B) and whose pixel (0, 0) carries ``tag``."""
    v, u = np.mgrid[0:h, 0:w]
    rgb = np.stack([200 + (u % 50), 100 + v * 3, 20 + u + v], axis=-1).astype(np.uint8)
    rgb[0, 0] = (tag, tag, tag)
    return rgb


def frame_stamp(i: int) -> int:
    return int(round((1.0 + 0.1 * i + 0.007) * S))  # between TF samples: interpolated


# ----------------------------------------------------------------------------- helpers


def msg_equal(a: Any, b: Any) -> bool:
    """Recursive field-by-field equality of deserialised rosbags messages."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a).__name__ == type(b).__name__ and all(
            msg_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(msg_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def read_all(path: Path) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    with AnyReader([resolve_bag_path(path)]) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(reader.deserialize(raw, conn.msgtype))
    return out


# ---------------------------------------------------------------- depth, pose, intrinsics


@pytest.mark.parametrize("storage", STORAGES)
def test_depth_16uc1_values_and_composed_pose(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "bag"
    depths = [depth_pattern(i) for i in range(6)]
    with BagWriter(path, storage) as bag:
        write_tf_tree(bag)
        for i, d in enumerate(depths):
            t = frame_stamp(i)
            bag.write_camera_info(DEPTH_INFO, t, K_DEPTH, 16, 12, "camera_depth_optical_frame")
            bag.write_depth(DEPTH_T, t, d, "camera_depth_optical_frame", "16UC1")
    src = RosbagSource(path)
    assert src.topics.depth == DEPTH_T and src.topics.depth_info == DEPTH_INFO
    assert src.topics.color is None and src.topics.tf == ("/tf",)
    assert len(src) == 6
    frames = list(src)
    assert src.frames_yielded == 6 and not src.drops, src.drop_examples
    for i, f in enumerate(frames):
        assert isinstance(f, Frame)
        assert f.stamp_ns == frame_stamp(i) and f.frame_id == "camera_depth_optical_frame"
        assert f.depth.dtype == np.float32 and f.depth.shape == (12, 16)
        np.testing.assert_array_equal(f.depth, expected_16uc1(depths[i]))
        assert f.depth[0, 0] == 0 and f.depth[0, 1] == 0 and f.depth[0, 2] == 0  # holes stay 0
        assert f.depth[0, 3] == 0 and f.depth[0, 4] == np.float32(65.535)  # clipped
        np.testing.assert_array_equal(f.camera.K, K_DEPTH)
        assert f.color is None
        np.testing.assert_allclose(f.T_world_cam, expected_T_map_depth(f.stamp_ns), atol=1e-9)
        np.testing.assert_array_equal(f.T_cam_color, np.eye(4))
    # the optical axis (z) of the camera points along the robot's heading in the map
    yaw = MAP_ODOM_YAW + odom_base(frames[0].stamp_ns / S)[1]
    np.testing.assert_allclose(frames[0].T_world_cam[:3, 2], [math.cos(yaw), math.sin(yaw), 0],
                               atol=1e-9)
    # a second iteration gives the same frames and resets the counters
    again = list(src)
    assert src.frames_yielded == 6 and [f.stamp_ns for f in again] == [f.stamp_ns for f in frames]
    # the tf buffer is exposed
    assert "camera_color_optical_frame" in src.tf.frames()


@pytest.mark.parametrize("storage", STORAGES)
def test_depth_32fc1_mono16_bigendian_and_row_padding(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "bag"
    d = depth_pattern(7)
    d32 = np.where(d < 0, np.nan, d)
    with BagWriter(path, storage) as bag:
        write_tf_tree(bag)
        for i, (enc, big, pad) in enumerate(
            [("32FC1", False, 0), ("32FC1", True, 8), ("16UC1", True, 6), ("16UC1", False, 2)]
        ):
            t = frame_stamp(i)
            bag.write_camera_info(DEPTH_INFO, t, K_DEPTH, 16, 12, "camera_depth_optical_frame")
            bag.write_depth(DEPTH_T, t, d32, "camera_depth_optical_frame", enc, is_bigendian=big,
                            row_padding_bytes=pad)
        # mono16 is read as millimetres too
        t = frame_stamp(4)
        mm = np.clip(np.nan_to_num(np.round(d32 * 1000), nan=0, posinf=0), 0, 65535)
        raw = mm.astype(">u2")
        bag.write_camera_info(DEPTH_INFO, t, K_DEPTH, 16, 12, "camera_depth_optical_frame")
        bag.write_image(DEPTH_T, t, raw, 16, 12, "mono16", 32, "camera_depth_optical_frame",
                        is_bigendian=True)
    frames = list(RosbagSource(path))
    assert len(frames) == 5
    expected32 = d32.astype(np.float32)
    np.testing.assert_array_equal(frames[0].depth, expected32)  # NaN == NaN here, Inf kept
    np.testing.assert_array_equal(frames[1].depth, expected32)
    assert np.isnan(frames[0].depth[0, 1]) and np.isinf(frames[0].depth[0, 2])
    np.testing.assert_array_equal(frames[2].depth, expected_16uc1(d32))
    np.testing.assert_array_equal(frames[3].depth, expected_16uc1(d32))
    np.testing.assert_array_equal(frames[4].depth, expected_16uc1(d32))


# ---------------------------------------------------------------------------- color


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("kind", ["rgb8", "bgr8", "mono8", "png", "jpeg"])
def test_color_encodings(tmp_path: Path, storage: str, kind: str) -> None:
    path = tmp_path / "bag"
    rgb = color_pattern(7)
    color_topic = COLOR_T + "/compressed" if kind in ("png", "jpeg") else COLOR_T
    with BagWriter(path, storage) as bag:
        write_tf_tree(bag)
        t = frame_stamp(0)
        bag.write_camera_info(DEPTH_INFO, t, K_DEPTH, 16, 12, "camera_depth_optical_frame")
        bag.write_depth(DEPTH_T, t, depth_pattern(0), "camera_depth_optical_frame")
        bag.write_camera_info(COLOR_INFO, t, K_COLOR, 20, 15, "camera_color_optical_frame")
        if kind in ("png", "jpeg"):
            bag.write_compressed(color_topic, t, rgb, "camera_color_optical_frame", kind)
        else:
            bag.write_color(color_topic, t, rgb, "camera_color_optical_frame", kind)
    src = RosbagSource(path)
    assert src.topics.color == color_topic and src.topics.color_info == COLOR_INFO
    (frame,) = list(src)
    assert not src.color_drops, src.drop_examples
    assert frame.color is not None and frame.color.dtype == np.uint8
    assert frame.color.shape == (15, 20, 3)
    if kind in ("rgb8", "bgr8", "png"):
        np.testing.assert_array_equal(frame.color, rgb)
    elif kind == "mono8":
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(frame.color, np.repeat(grey[:, :, None], 3, axis=2))
    else:  # jpeg is lossy, but channel order must survive: R > G > B on average
        assert np.abs(frame.color.astype(int) - rgb.astype(int)).mean() < 4
        means = frame.color.reshape(-1, 3).mean(axis=0)
        assert means[0] > means[1] > means[2]
    assert frame.color_camera is not None
    np.testing.assert_array_equal(frame.color_camera.K, K_COLOR)
    # color optical frame is 5 cm to the right (+x) of the depth optical frame
    np.testing.assert_allclose(frame.T_cam_color, make_T(np.eye(3), (0.05, 0, 0)), atol=1e-12)


@pytest.mark.parametrize("storage", STORAGES)
def test_color_paired_by_nearest_stamp(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "bag"
    # per depth frame: color offsets (ms) written; the nearest within 20 ms must be chosen
    offsets = {0: [-12, 8], 1: [-15], 2: [30, -25], 3: [0, 19], 4: [-20, 21]}
    with BagWriter(path, storage) as bag:
        write_tf_tree(bag)
        tag = 1
        tags: dict[tuple[int, int], int] = {}
        writes = []
        for i, offs in offsets.items():
            t = frame_stamp(i)
            bag.write_camera_info(DEPTH_INFO, t, K_DEPTH, 16, 12, "camera_depth_optical_frame")
            bag.write_depth(DEPTH_T, t, depth_pattern(i), "camera_depth_optical_frame")
            for off in offs:
                tags[(i, off)] = tag
                writes.append((t + off * MS, tag))
                tag += 1
        bag.write_camera_info(COLOR_INFO, 0, K_COLOR, 20, 15, "camera_color_optical_frame")
        for stamp, tg in writes:
            bag.write_color(COLOR_T, stamp, color_pattern(tg), "camera_color_optical_frame")
    src = RosbagSource(path)
    frames = list(src)
    assert len(frames) == 5
    got = [None if f.color is None else int(f.color[0, 0, 0]) for f in frames]
    assert got == [tags[(0, 8)], tags[(1, -15)], None, tags[(3, 0)], tags[(4, -20)]]
    assert src.color_drops == {"no color image within 20 ms": 1}
    # a tighter tolerance leaves more frames without color, never drops them
    src = RosbagSource(path, max_color_offset_ns=10 * MS)
    got = [None if f.color is None else int(f.color[0, 0, 0]) for f in src]
    assert got == [tags[(0, 8)], None, None, tags[(3, 0)], None]
    assert src.frames_yielded == 5


@pytest.mark.parametrize("storage", STORAGES)
def test_frames_come_in_depth_stamp_order(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "bag"
    with BagWriter(path, storage) as bag:
        write_tf_tree(bag)
        bag.write_camera_info(DEPTH_INFO, 1, K_DEPTH, 16, 12, "camera_depth_optical_frame")
        bag.write_camera_info(COLOR_INFO, 1, K_COLOR, 20, 15, "camera_color_optical_frame")
        # log times out of stamp order (a late driver), color logged before its depth
        for i, log_i in [(2, 0), (0, 1), (3, 2), (1, 3)]:
            t = frame_stamp(i)
            log = int(2.5 * S) + log_i * 10 * MS
            bag.write_color(COLOR_T, t + 3 * MS, color_pattern(50 + i),
                            "camera_color_optical_frame", log_time_ns=log)
            bag.write_depth(DEPTH_T, t, depth_pattern(i), "camera_depth_optical_frame",
                            log_time_ns=log + 1)
    frames = list(RosbagSource(path))
    assert [f.stamp_ns for f in frames] == [frame_stamp(i) for i in range(4)]
    assert [int(f.color[0, 0, 0]) for f in frames] == [50, 51, 52, 53]


# ----------------------------------------------------------------------------- drops


@pytest.mark.parametrize("storage", STORAGES)
def test_drops_are_counted_with_reasons(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "bag"
    opt = "camera_depth_optical_frame"
    with BagWriter(path, storage) as bag:
        write_tf_tree(bag)  # TF covers 0.9 .. 2.2 s
        bag.write_camera_info(DEPTH_INFO, int(1.0 * S), K_DEPTH, 16, 12, opt)
        bag.write_depth(DEPTH_T, int(0.95 * S), depth_pattern(0), opt)  # before any camera_info
        bag.write_depth(DEPTH_T, int(1.05 * S), depth_pattern(1), opt)  # ok
        bag.write_image(DEPTH_T, int(1.10 * S), np.zeros((12, 32), np.uint8), 16, 12, "16SC1",
                        32, opt)  # unsupported
        bag.write_camera_info(DEPTH_INFO, int(1.15 * S), np.zeros((3, 3)), 16, 12, opt)
        bag.write_depth(DEPTH_T, int(1.15 * S), depth_pattern(2), opt)  # K all zero
        bag.write_camera_info(DEPTH_INFO, int(1.20 * S), K_DEPTH, 16, 12, opt)
        bag.write_depth(DEPTH_T, int(1.20 * S), depth_pattern(3), opt)  # ok
        bag.write_depth(DEPTH_T, int(1.25 * S), depth_pattern(4, h=10, w=8), opt)  # wrong size
        bag.write_depth(DEPTH_T, int(1.30 * S), depth_pattern(5), opt)  # ok
        bag.write_depth(DEPTH_T, int(3.0 * S), depth_pattern(6), opt)  # TF ends at 2.2 s
        bag.write_depth(DEPTH_T, int(1.35 * S), depth_pattern(7), "")  # no frame_id
    src = RosbagSource(path)
    frames = list(src)
    assert [f.stamp_ns for f in frames] == [int(1.05 * S), int(1.20 * S), int(1.30 * S)]
    assert src.drops == {
        "no camera_info before frame": 1,
        "unsupported encoding 16SC1": 1,
        "camera_info K is all zero": 1,
        "depth size differs from camera_info": 1,
        "tf lookup failed: extrapolation into the future on edge 'map' -> 'odom'": 1,
        "depth message has an empty frame_id": 1,
    }
    assert len(src) == 9 and src.frames_yielded + sum(src.drops.values()) == len(src)
    tf_detail = src.drop_examples[
        "tf lookup failed: extrapolation into the future on edge 'map' -> 'odom'"
    ]
    assert "Requested time 3.000000000 s" in tf_detail and "2.100000000 s" in tf_detail
    assert "8x10" in src.drop_examples["depth size differs from camera_info"]
    summary = src.summary()
    assert summary.startswith("3/9 depth frames yielded")
    assert "unsupported encoding 16SC1 x1" in summary

    # a world frame that is not in the tree drops everything, with the frame named
    src = RosbagSource(path, world_frame="world")
    assert list(src) == []
    assert src.drops["tf lookup failed: frame 'world' does not exist"] == 4
    assert "known frames: [base_link, camera_color_optical_frame" in src.drop_examples[
        "tf lookup failed: frame 'world' does not exist"
    ]


@pytest.mark.parametrize("storage", STORAGES)
def test_color_problems_keep_the_frame(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "bag"
    with BagWriter(path, storage) as bag:
        write_tf_tree(bag)
        bag.write_camera_info(DEPTH_INFO, 1, K_DEPTH, 16, 12, "camera_depth_optical_frame")
        bag.write_camera_info(COLOR_INFO, frame_stamp(1), K_COLOR, 20, 15,
                              "camera_color_optical_frame")
        for i in range(3):
            bag.write_depth(DEPTH_T, frame_stamp(i), depth_pattern(i), "camera_depth_optical_frame")
        # 0: color before its camera_info; 1: ok; 2: unsupported color encoding
        bag.write_color(COLOR_T, frame_stamp(0), color_pattern(1), "camera_color_optical_frame")
        bag.write_color(COLOR_T, frame_stamp(1), color_pattern(2), "camera_color_optical_frame")
        bag.write_image(COLOR_T, frame_stamp(2), np.zeros(15 * 20 * 2, np.uint8), 20, 15, "yuv422",
                        40, "camera_color_optical_frame")
    src = RosbagSource(path, color_topic=COLOR_T)
    frames = list(src)
    assert [f.color is not None for f in frames] == [False, True, False]
    assert not src.drops
    assert src.color_drops == {"no color camera_info before frame": 1,
                               "unsupported encoding yuv422": 1}


# ---------------------------------------------------------------------- stamp windows


@pytest.mark.parametrize("storage", STORAGES)
def test_stamp_windows_partition_the_frames(tmp_path: Path, storage: str) -> None:
    """Windows that partition the stamps yield every frame exactly once (same stamps, depth,
    color and pose as without a window), each only its own; frames outside a window are not
    drops, and a frame near an edge is still paired with a color image across it."""
    path = tmp_path / "bag"
    opt, copt = "camera_depth_optical_frame", "camera_color_optical_frame"
    # edges 2 ms before frames 3 and 6; frame 3's color (5 ms before it) is in window 0
    edges = (frame_stamp(3) - 2 * MS, frame_stamp(6) - 2 * MS)
    with BagWriter(path, storage) as bag:
        write_tf_tree(bag)  # TF covers 0.9 .. 2.2 s
        bag.write_camera_info(DEPTH_INFO, 1, K_DEPTH, 16, 12, opt)
        bag.write_camera_info(COLOR_INFO, 1, K_COLOR, 20, 15, copt)
        for i in range(8):
            bag.write_color(COLOR_T, frame_stamp(i) - 5 * MS, color_pattern(10 + i), copt)
            bag.write_depth(DEPTH_T, frame_stamp(i), depth_pattern(i), opt)
        bag.write_image(DEPTH_T, frame_stamp(8), np.zeros((12, 32), np.uint8), 16, 12, "16SC1",
                        32, opt)  # unsupported encoding: a drop in the last window only
        bag.write_depth(DEPTH_T, int(3.0 * S), depth_pattern(9), opt)  # after TF: a drop too
    whole = RosbagSource(path)
    every = list(whole)
    assert len(every) == 8 and sum(whole.drops.values()) == 2
    windows = [StampWindow(end_ns=edges[0]), StampWindow(*edges), StampWindow(start_ns=edges[1])]
    parts, drops, summaries = [], [], []
    for window, expected in zip(windows, ([0, 1, 2], [3, 4, 5], [6, 7])):
        src = RosbagSource(path, window=window)
        frames = list(src)
        assert [f.stamp_ns for f in frames] == [frame_stamp(i) for i in expected]
        assert all(f.stamp_ns in window for f in frames)
        assert src.frames_yielded == len(frames) and not src.color_drops
        assert len(src) == len(frames) + sum(src.drops.values())  # the window's messages
        parts += frames
        drops.append(src.drops)
        summaries.append(src.summary())
    assert drops[0] == drops[1] == {}  # other windows' undecodable / unposed frames: no drops
    assert drops[2] == whole.drops
    assert len(parts) == len(every)
    for got, want in zip(parts, every):
        assert got.stamp_ns == want.stamp_ns
        np.testing.assert_array_equal(got.depth, want.depth)
        np.testing.assert_array_equal(got.color, want.color)
        np.testing.assert_array_equal(got.T_world_cam, want.T_world_cam)
    assert int(parts[3].color[0, 0, 0]) == 13  # paired across the edge
    assert summaries[0] == "3/3 depth frames yielded"
    assert summaries[2].startswith("2/4 depth frames yielded; dropped: ")
    empty = RosbagSource(path, window=StampWindow(end_ns=frame_stamp(0)))
    assert list(empty) == [] and len(empty) == 0 and not empty.drops


@pytest.mark.parametrize("storage", STORAGES)
def test_color_source_stamp_windows(tmp_path: Path, storage: str) -> None:
    """The color-only reader yields the images of its window only (their union: every image
    once), counts no drops for the others, and its len() stays the whole bag's."""
    path = tmp_path / "bag"
    copt = "camera_color_optical_frame"
    with BagWriter(path, storage) as bag:
        write_tf_tree(bag)
        bag.write_camera_info(COLOR_INFO, 1, K_COLOR, 20, 15, copt)
        for i in range(6):
            bag.write_color(COLOR_T, frame_stamp(i), color_pattern(10 + i), copt)
    every = list(RosbagColorSource(path))
    assert len(every) == 6
    edge = frame_stamp(2)
    parts = []
    for window, count in ((StampWindow(end_ns=edge), 2), (StampWindow(start_ns=edge), 4)):
        src = RosbagColorSource(path, window=window)
        frames = list(src)
        assert len(frames) == count and not src.drops and len(src) == 6
        parts += frames
    assert [f.stamp_ns for f in parts] == [f.stamp_ns for f in every]
    for got, want in zip(parts, every):
        np.testing.assert_array_equal(got.color, want.color)
        np.testing.assert_array_equal(got.T_world_cam, want.T_world_cam)


def test_stamp_window_bounds() -> None:
    window = StampWindow(10, 20)
    assert 10 in window and 19 in window and 20 not in window and 9 not in window
    assert 5 in StampWindow(end_ns=6) and 6 not in StampWindow(end_ns=6)
    assert -(2**62) in StampWindow() and not StampWindow().bounded and window.bounded
    for start, end in ((20, 20), (21, 20)):
        with pytest.raises(ConfigError, match=rf"empty stamp window: start {start} ns must be "
                                              r"before end 20 ns \(the window is \[start, "
                                              r"end\)\)"):
            StampWindow(start, end)


# ------------------------------------------------------------------------ topic errors


@pytest.mark.parametrize("storage", STORAGES)
def test_missing_depth_topic_lists_every_topic(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "bag"
    with BagWriter(path, storage) as bag:
        write_tf_tree(bag)
        bag.write_camera_info(COLOR_INFO, S, K_COLOR, 20, 15, "camera_color_optical_frame")
        bag.write_color(COLOR_T, S, color_pattern(1), "camera_color_optical_frame")
    with pytest.raises(BagTopicError) as info:
        RosbagSource(path)
    msg = str(info.value)
    assert "no depth image topic" in msg and "16UC1" in msg
    for line in (
        "/tf [tf2_msgs/msg/TFMessage]",
        "/tf_static [tf2_msgs/msg/TFMessage] (1 msgs)",
        f"{COLOR_T} [sensor_msgs/msg/Image] (1 msgs)",
        f"{COLOR_INFO} [sensor_msgs/msg/CameraInfo]",
    ):
        assert line in msg
    assert isinstance(info.value, ReconError)
    with pytest.raises(BagTopicError, match="/nope is not in bag"):
        RosbagSource(path, depth_topic="/nope")
    with pytest.raises(BagTopicError, match="has type tf2_msgs/msg/TFMessage"):
        RosbagSource(path, depth_topic="/tf")


@pytest.mark.parametrize("storage", STORAGES)
def test_missing_camera_info_is_an_error(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "bag"
    with BagWriter(path, storage) as bag:
        write_tf_tree(bag)
        bag.write_depth(DEPTH_T, S, depth_pattern(0), "camera_depth_optical_frame")
        bag.write_camera_info("/elsewhere/camera_info", S, K_DEPTH, 16, 12, "x")
    with pytest.raises(BagTopicError) as info:
        RosbagSource(path)
    msg = str(info.value)
    assert f"expected {DEPTH_INFO}" in msg and "/elsewhere/camera_info [sensor_msgs" in msg
    # an explicit info topic is accepted
    src = RosbagSource(path, depth_info_topic="/elsewhere/camera_info")
    assert src.topics.depth_info == "/elsewhere/camera_info"


def test_topic_auto_detection_prefers_depth_and_color_names(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    with BagWriter(path, "mcap") as bag:
        write_tf_tree(bag)
        t = frame_stamp(0)
        for ns in ("/cam/ir", "/cam/depth", "/cam/color", "/cam/mono"):
            bag.write_camera_info(f"{ns}/camera_info", t, K_DEPTH, 16, 12,
                                  "camera_depth_optical_frame")
        bag.write_depth("/cam/ir/image_raw", t, depth_pattern(0), "camera_depth_optical_frame")
        bag.write_depth("/cam/depth/image_raw", t, depth_pattern(1), "camera_depth_optical_frame")
        bag.write_color("/cam/mono/image_raw", t, color_pattern(1, 12, 16),
                        "camera_depth_optical_frame", "mono8")
        bag.write_compressed("/cam/color/image_raw/compressed", t, color_pattern(2, 12, 16),
                             "camera_depth_optical_frame", "png")
        bag.write_color("/cam/nocal/image_raw", t, color_pattern(3, 12, 16),
                        "camera_depth_optical_frame")
    src = RosbagSource(path)
    assert src.topics.depth == "/cam/depth/image_raw"
    assert src.topics.color == "/cam/color/image_raw/compressed"
    assert src.topics.color_info == "/cam/color/camera_info"
    assert any("/cam/nocal/image_raw ignored" in n for n in src.notes)
    (frame,) = list(src)
    assert int(frame.color[0, 0, 0]) == 2
    np.testing.assert_array_equal(frame.T_cam_color, np.eye(4))  # same frame: identity
    assert RosbagSource(path, color_topic="").topics.color is None


def test_camera_info_topic_rule() -> None:
    topics = {"/a/depth/camera_info": "sensor_msgs/msg/CameraInfo",
              "/x/camera_info": "sensor_msgs/msg/CameraInfo",
              "/y/camera_info": "std_msgs/msg/String"}
    assert camera_info_topic_for("/a/depth/image_raw", topics) == "/a/depth/camera_info"
    assert camera_info_topic_for("/x/image_raw/compressed", topics) == "/x/camera_info"
    assert camera_info_topic_for("/y/image_raw", topics) is None
    assert camera_info_topic_for("/z/image_raw", topics) is None


def test_bag_paths(tmp_path: Path) -> None:
    for storage, suffix in (("sqlite3", ".db3"), ("mcap", ".mcap")):
        path = tmp_path / storage
        with BagWriter(path, storage) as bag:  # type: ignore[arg-type]
            write_tf_tree(bag)
            bag.write_camera_info(DEPTH_INFO, frame_stamp(0), K_DEPTH, 16, 12,
                                  "camera_depth_optical_frame")
            bag.write_depth(DEPTH_T, frame_stamp(0), depth_pattern(0), "camera_depth_optical_frame")
        (storage_file,) = path.glob(f"*{suffix}")
        assert resolve_bag_path(path) == path
        assert resolve_bag_path(storage_file) == storage_file
        assert len(list(RosbagSource(storage_file))) == 1  # the bare storage file reads too
    with pytest.raises(BagReadError, match="does not exist"):
        RosbagSource(tmp_path / "missing")
    (tmp_path / "notabag.txt").write_text("x")
    with pytest.raises(BagReadError):
        RosbagSource(tmp_path / "notabag.txt")
    with pytest.raises(BagWriteError):
        BagWriter(tmp_path / "x", "rosbag1")  # type: ignore[arg-type]


# --------------------------------------------------------------- message round trips


@pytest.mark.parametrize("storage", STORAGES)
def test_message_round_trips(tmp_path: Path, storage: str) -> None:
    """Every message type, built by hand with the typestore, deserialises to an equal message;
    and the convenience writers fill the fields as documented."""
    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    path = tmp_path / "bag"

    def header(stamp: int, frame: str) -> Any:
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=stamp // S, nanosec=stamp % S),
            frame_id=frame,
        )

    image = T["sensor_msgs/msg/Image"](
        header=header(5 * S + 7, "cam"), height=2, width=3, encoding="16UC1", is_bigendian=0,
        step=6, data=np.arange(12, dtype=np.uint8),
    )
    compressed = T["sensor_msgs/msg/CompressedImage"](
        header=header(6 * S, "cam"), format="jpeg", data=np.arange(5, dtype=np.uint8)
    )
    info = T["sensor_msgs/msg/CameraInfo"](
        header=header(7 * S, "cam"), height=12, width=16, distortion_model="plumb_bob",
        d=np.array([0.1, -0.2, 0.0, 0.0, 0.01]), k=K_DEPTH.reshape(-1),
        r=np.eye(3).reshape(-1), p=np.hstack([K_DEPTH, np.zeros((3, 1))]).reshape(-1),
        binning_x=1, binning_y=2,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=1, y_offset=2, height=3, width=4,
                                                  do_rectify=True),
    )
    tf = T["tf2_msgs/msg/TFMessage"](transforms=[
        T["geometry_msgs/msg/TransformStamped"](
            header=header(8 * S, "odom"), child_frame_id="base_link",
            transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=1.0, y=2.0, z=3.0),
                rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=H, w=H),
            ),
        )
    ])
    built = {"/img": image, "/img/compressed": compressed, "/info": info, "/tf": tf}
    rgb = color_pattern(9, 4, 5)
    with BagWriter(path, storage) as bag:
        for topic, msg in built.items():
            bag.write_message(topic, msg, 10 * S)
        bag.write_depth("/d16", S, np.array([[1.2344, 0.0], [np.nan, 70.0]]), "c", "16UC1")
        bag.write_depth("/d32", S, np.array([[1.25, 0.5]]), "c", "32FC1")
        bag.write_color("/bgr", S, rgb, "c", "bgr8")
        bag.write_compressed("/png", S, rgb, "c", "png")
        bag.write_camera_info("/ci", S + 1, K_DEPTH, 16, 12, "c")
        bag.write_tf([("a", "b", 3 * S, (1, 2, 3), (0, 0, H, H))], static=True)
        with pytest.raises(BagWriteError, match="already carries"):
            bag.write_message("/tf", image, S)
    got = read_all(path)
    for topic, msg in built.items():
        assert len(got[topic]) == 1 and msg_equal(got[topic][0], msg), topic
    d16 = got["/d16"][0]
    assert (d16.encoding, d16.width, d16.height, d16.step) == ("16UC1", 2, 2, 4)
    assert d16.is_bigendian == 0
    np.testing.assert_array_equal(d16.data.view("<u2"), [1234, 0, 0, 65535])
    d32 = got["/d32"][0]
    np.testing.assert_array_equal(d32.data.view("<f4"), [1.25, 0.5])
    bgr = got["/bgr"][0]
    np.testing.assert_array_equal(bgr.data.reshape(4, 5, 3), rgb[:, :, ::-1])
    png = got["/png"][0]
    assert png.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(cv2.imdecode(png.data, cv2.IMREAD_COLOR), rgb[:, :, ::-1])
    ci = got["/ci"][0]
    assert (ci.header.stamp.sec, ci.header.stamp.nanosec, ci.header.frame_id) == (1, 1, "c")
    assert (ci.width, ci.height, ci.distortion_model) == (16, 12, "plumb_bob")
    np.testing.assert_array_equal(ci.k, K_DEPTH.reshape(-1))
    np.testing.assert_array_equal(ci.p.reshape(3, 4), np.hstack([K_DEPTH, np.zeros((3, 1))]))
    np.testing.assert_array_equal(ci.r, np.eye(3).reshape(-1))
    np.testing.assert_array_equal(ci.d, np.zeros(5))
    (st,) = got["/tf_static"][0].transforms
    assert (st.header.frame_id, st.child_frame_id, st.header.stamp.sec) == ("a", "b", 3)
    assert (st.transform.rotation.z, st.transform.rotation.w) == (H, H)
    with AnyReader([path]) as reader:
        (conn,) = reader.topics["/tf_static"].connections
        assert conn.ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
        assert conn.ext.offered_qos_profiles[0].depth == 1
