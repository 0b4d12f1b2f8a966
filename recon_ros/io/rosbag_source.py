"""Read posed RGB-D :class:`~recon_ros.core.frame.Frame` objects from a rosbag2 bag, no ROS.

Bags are read with the pure-Python ``rosbags`` package (:class:`rosbags.highlevel.AnyReader`):
a rosbag2 directory (``metadata.yaml`` + ``.db3`` or ``.mcap``), a bare ``.db3`` or ``.mcap``
file, or a directory holding exactly one of those. Message definitions embedded in the bag are
used; bags without them fall back to a default typestore (ROS 2 Humble).

Reading is two passes over the bag:

1. **Index**: every ``/tf`` and ``/tf_static`` message goes into a :class:`TfBuffer` (so poses
   can be interpolated at any image stamp: no "extrapolation into the future" from TF arriving
   after the image), every ``CameraInfo`` of the chosen image topics is kept (they are small),
   and the header stamps of depth and color images are collected to pair color with depth.
2. **Stream**: depth and color images are decoded and yielded as frames in depth-stamp order.

A :class:`StampWindow` restricts a reader to the images whose header stamp lies in a half-open
interval (a time window of a long bag); TF and camera_info of the whole bag are still used, so
frames near the window's edges get their poses and intrinsics as without a window.

:class:`RosbagColorSource` reads posed color images only (no depth needed), for color-only
mapping (``fusion.method: stereo`` or ``rgb``).

Every depth message (in the window) that does not become a frame is counted in
:attr:`RosbagSource.drops` with its reason; color problems do not drop the frame (it is
yielded with ``color=None``) and are counted in :attr:`RosbagSource.color_drops`.

Conventions: stamps are integer nanoseconds from ``header.stamp``; depth is float32 metres
(16UC1/mono16 millimetres are divided by 1000, 0 stays 0 = invalid); color is (H, W, 3) uint8
RGB; ``T_world_cam = T_{world_frame}_{depth header.frame_id}`` at the depth stamp (REP-103
optical frame expected); ``T_cam_color = T_{depth frame}_{color frame}``.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore

from recon_ros.core.errors import ConfigError, FrameError, ReconError
from recon_ros.core.frame import Frame, PinholeCamera

from .image_codec import (
    COLOR_ENCODINGS,
    COMPRESSED_IMAGE,
    DEPTH_ENCODINGS,
    CameraInfoError,
    ImageDecodeError,
    camera_from_info,
    decode_color,
    decode_depth,
)
from .tf_buffer import TfBuffer, TfDataError, TfLookupError

__all__ = [
    "BagReadError",
    "BagTopicError",
    "BagTopics",
    "CameraInfoSample",
    "ColorFrame",
    "ImageDecodeError",
    "RosbagColorSource",
    "RosbagSource",
    "StampWindow",
    "TfLoadReport",
    "bag_time_span",
    "camera_info_topic_for",
    "decode_color",
    "decode_depth",
    "load_tf_from_bag",
    "open_bag",
    "resolve_bag_path",
    "stamp_to_ns",
]

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


# ------------------------------------------------------------------------------------ errors


class BagTopicError(ReconError, ValueError):
    """The bag lacks a needed topic (depth image, camera_info) or a topic has the wrong type.
    The message lists every topic in the bag with its type and message count."""


class BagReadError(ReconError, OSError):
    """The bag path does not exist, is not a rosbag2, or cannot be opened."""


# ------------------------------------------------------------------------------ bag opening


def resolve_bag_path(path: str | Path) -> Path:
    """The path ``rosbags`` should open for ``path``.

    Accepts a rosbag2 directory (with ``metadata.yaml``), a ``.db3`` / ``.mcap`` file, or a
    directory without ``metadata.yaml`` that holds exactly one ``.db3`` or ``.mcap`` file.

    Raises:
        BagReadError: the path does not exist or is not recognised as a bag.
    """
    p = Path(path)
    if not p.exists():
        raise BagReadError(f"bag path does not exist: {p}")
    if p.is_dir():
        if (p / "metadata.yaml").is_file():
            return p
        files = sorted([*p.glob("*.mcap"), *p.glob("*.db3")])
        if len(files) == 1:
            return files[0]
        raise BagReadError(
            f"{p} is a directory without metadata.yaml and with {len(files)} .mcap/.db3 files "
            f"(need exactly one): not a rosbag2"
        )
    if p.suffix in (".mcap", ".db3"):
        return p
    raise BagReadError(f"{p} is not a rosbag2 (expected a directory, .mcap or .db3 file)")


def open_bag(path: str | Path, default_store: Stores = Stores.ROS2_HUMBLE) -> AnyReader:
    """An *unopened* :class:`AnyReader` for ``path`` (use ``with open_bag(p) as reader:``).

    Args:
        path: see :func:`resolve_bag_path`.
        default_store: typestore used when the bag carries no message definitions.
    """
    return AnyReader([resolve_bag_path(path)], default_typestore=get_typestore(default_store))


def bag_time_span(path: str | Path, default_store: Stores = Stores.ROS2_HUMBLE
                  ) -> tuple[int, int]:
    """``(start, end)`` of a bag, nanoseconds: the log time of its earliest message and the
    time just after its latest (``AnyReader.start_time`` / ``end_time``; log times, not header
    stamps).

    Raises:
        BagReadError: the bag cannot be opened.
    """
    with _open_checked(path, default_store) as reader:
        return int(reader.start_time), int(reader.end_time)


@dataclass(frozen=True)
class StampWindow:
    """The half-open interval ``[start_ns, end_ns)`` of image header stamps a bag reader
    yields, nanoseconds; None leaves that side unbounded (``StampWindow()``: every stamp).

    Raises:
        ConfigError: both ends are set and ``start_ns >= end_ns``.
    """

    start_ns: int | None = None
    end_ns: int | None = None

    def __post_init__(self) -> None:
        if self.start_ns is not None and self.end_ns is not None \
                and self.start_ns >= self.end_ns:
            raise ConfigError(
                f"empty stamp window: start {self.start_ns} ns must be before end "
                f"{self.end_ns} ns (the window is [start, end))")

    @property
    def bounded(self) -> bool:
        """Whether either end is set (else the window holds every stamp)."""
        return self.start_ns is not None or self.end_ns is not None

    def __contains__(self, stamp_ns: int) -> bool:
        """Whether a header stamp (nanoseconds) is in the window."""
        return ((self.start_ns is None or stamp_ns >= self.start_ns)
                and (self.end_ns is None or stamp_ns < self.end_ns))


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/msg/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _deserialize(reader: AnyReader, raw: bytes, msgtype: str) -> Any:
    """Deserialise one message (typed ``Any``: rosbags message classes are generated)."""
    return reader.deserialize(raw, msgtype)


def _clean_frame(frame_id: str) -> str:
    return frame_id[1:] if frame_id.startswith("/") else frame_id


# ----------------------------------------------------------------------------------- TF load


@dataclass
class TfLoadReport:
    """What :func:`load_tf_from_bag` did.

    Attributes:
        messages: TFMessage messages read.
        transforms: TransformStamped entries seen.
        stored: entries stored in the buffer.
        rejected: reasons why the others were refused (re-parenting, static/dynamic mix,
            invalid quaternion, outside the cache window), with counts.
    """

    messages: int = 0
    transforms: int = 0
    stored: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def _add_tf_message(buffer: TfBuffer, msg: Any, static: bool, report: TfLoadReport) -> None:
    report.messages += 1
    for tr in msg.transforms:
        report.transforms += 1
        t = tr.transform.translation
        q = tr.transform.rotation
        try:
            ok = buffer.set_transform(
                tr.header.frame_id,
                tr.child_frame_id,
                stamp_to_ns(tr.header.stamp),
                (t.x, t.y, t.z),
                (q.x, q.y, q.z, q.w),
                static=static,
            )
        except TfDataError as err:
            report.rejected[err.reason] += 1
            continue
        if ok:
            report.stored += 1
        else:
            report.rejected["older than the TF cache window"] += 1


def load_tf_from_bag(
    reader_or_path: AnyReader | str | Path,
    buffer: TfBuffer,
    tf_topics: Sequence[str] = ("/tf",),
    tf_static_topics: Sequence[str] = ("/tf_static",),
) -> TfLoadReport:
    """Fill ``buffer`` with every ``tf2_msgs/msg/TFMessage`` on the TF topics of a bag.

    Transforms on ``tf_static_topics`` are inserted as static. Transforms the buffer refuses
    (:class:`TfDataError`) are counted in the report, not raised, because real bags contain
    conflicting publishers.

    Args:
        reader_or_path: an *open* :class:`AnyReader`, or a bag path (opened and closed here).
        buffer: the buffer to fill.
        tf_topics, tf_static_topics: topic names; missing topics are ignored.

    Returns:
        A :class:`TfLoadReport`.
    """
    if not isinstance(reader_or_path, AnyReader):
        with _open_checked(reader_or_path) as reader:
            return load_tf_from_bag(reader, buffer, tf_topics, tf_static_topics)
    reader = reader_or_path
    static_names = set(tf_static_topics)
    conns = [
        c
        for c in reader.connections
        if c.msgtype == TF_MESSAGE and (c.topic in static_names or c.topic in set(tf_topics))
    ]
    report = TfLoadReport()
    if not conns:
        return report
    for conn, _, raw in reader.messages(connections=conns):
        msg = _deserialize(reader, raw, conn.msgtype)
        _add_tf_message(buffer, msg, conn.topic in static_names, report)
    return report


@contextmanager
def _open_checked(
    path: str | Path, default_store: Stores = Stores.ROS2_HUMBLE
) -> Iterator[AnyReader]:
    """Open a bag for the duration of a ``with`` block; open failures -> BagReadError."""
    reader = open_bag(path, default_store)
    try:
        reader.open()
    except (AnyReaderError, OSError) as err:
        raise BagReadError(f"cannot open bag {path}: {err}") from err
    try:
        yield reader
    finally:
        reader.close()


# ------------------------------------------------------------------------- topic detection


@dataclass(frozen=True)
class BagTopics:
    """Topics a :class:`RosbagSource` reads.

    Attributes:
        depth: depth ``sensor_msgs/msg/Image`` topic.
        depth_info: its ``CameraInfo`` topic.
        color: color ``Image`` or ``CompressedImage`` topic, or None.
        color_info: its ``CameraInfo`` topic, or None.
        tf, tf_static: TF topics present in the bag (possibly empty).
    """

    depth: str
    depth_info: str
    color: str | None
    color_info: str | None
    tf: tuple[str, ...]
    tf_static: tuple[str, ...]


def camera_info_topic_for(image_topic: str, topics: dict[str, str]) -> str | None:
    """The sibling ``camera_info`` topic of an image topic, if the bag has it.

    ``/cam/depth/image_raw`` -> ``/cam/depth/camera_info``;
    ``/x/image_raw/compressed`` -> ``/x/camera_info``.

    Args:
        image_topic: the image topic.
        topics: every topic of the bag, name -> message type.
    """
    base = image_topic
    for suffix in ("/compressed", "/compressedDepth", "/theora", "/zstd"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    namespace = base.rsplit("/", 1)[0]
    candidate = f"{namespace}/camera_info"
    return candidate if topics.get(candidate) == CAMERA_INFO else None


def _topic_listing(reader: AnyReader) -> str:
    lines = [
        f"  {name} [{info.msgtype}] ({info.msgcount} msgs)"
        for name, info in sorted(reader.topics.items())
    ]
    return "topics in the bag:\n" + ("\n".join(lines) if lines else "  (none)")


def _require_topic(path: Path, topics: dict[str, str], listing: str, name: str,
                   allowed: tuple[str, ...], role: str) -> None:
    """Raise BagTopicError unless the bag has topic ``name`` with a type in ``allowed``."""
    if name not in topics:
        raise BagTopicError(f"{role} topic {name} is not in bag {path}; {listing}")
    if topics[name] not in allowed:
        raise BagTopicError(
            f"{role} topic {name} has type {topics[name]}, expected "
            f"{' or '.join(allowed)}; {listing}"
        )


def _first_encoding(reader: AnyReader, name: str) -> str | None:
    """Encoding (Image) or format (CompressedImage) of the first message of a topic."""
    info = reader.topics[name]
    for conn, _, raw in reader.messages(connections=info.connections):
        msg = _deserialize(reader, raw, conn.msgtype)
        return str(msg.format if conn.msgtype == COMPRESSED_IMAGE else msg.encoding)
    return None


def _detect_color(
    reader: AnyReader,
    path: Path,
    topics: dict[str, str],
    color_topic: str | None,
    color_info_topic: str | None,
    notes: list[str],
    exclude: str | None = None,
) -> tuple[str | None, str | None]:
    """``(color topic, its camera_info topic)`` of a bag, ``(None, None)`` when there is none.

    Args:
        color_topic: a topic name to check, None to auto-detect (see :class:`RosbagSource`),
            ``""`` for no color.
        color_info_topic: override the sibling ``camera_info`` rule.
        notes: remarks of the detection are appended here.
        exclude: a topic that is never color (the depth topic).

    Raises:
        BagTopicError: a named topic is missing or has the wrong type, or the color topic
            has no camera_info.
    """
    listing = _topic_listing(reader)
    color_info: str | None = None
    if color_topic == "":
        color_topic = None
    elif color_topic is None:
        candidates_c = []
        for name, typ in topics.items():
            if name == exclude or typ not in (IMAGE, COMPRESSED_IMAGE):
                continue
            low = name.lower()
            enc = _first_encoding(reader, name)
            if typ == IMAGE and enc not in COLOR_ENCODINGS:
                continue
            if typ == COMPRESSED_IMAGE and ("depth" in low or "compressedDepth" in (enc or "")):
                continue
            info = camera_info_topic_for(name, topics)
            if info is None:
                notes.append(f"color candidate {name} ignored: no camera_info topic")
                continue
            name_score = 2 if ("color" in low or "rgb" in low) else int("image" in low)
            candidates_c.append(
                (-name_score, enc == "mono8", typ == COMPRESSED_IMAGE, name, info)
            )
        if candidates_c:
            best = min(candidates_c)
            color_topic, color_info = best[3], best[4]
            if len(candidates_c) > 1:
                notes.append(
                    f"color topic {color_topic} chosen among "
                    f"{sorted(c[3] for c in candidates_c)}"
                )
    else:
        _require_topic(path, topics, listing, color_topic, (IMAGE, COMPRESSED_IMAGE), "color")
    if color_topic is not None and color_info is None:
        if color_info_topic is not None:
            _require_topic(path, topics, listing, color_info_topic, (CAMERA_INFO,),
                           "color camera_info")
            color_info = color_info_topic
        else:
            color_info = camera_info_topic_for(color_topic, topics)
            if color_info is None:
                raise BagTopicError(
                    f"no {CAMERA_INFO} topic for color topic {color_topic} in bag "
                    f"{path} (pass color_info_topic=...); {listing}"
                )
    return color_topic, color_info


@dataclass
class CameraInfoSample:
    """One ``CameraInfo``: ``K`` (3, 3) pixels, image ``width`` x ``height``, its frame."""

    stamp_ns: int
    K: np.ndarray
    width: int
    height: int
    frame_id: str

    @classmethod
    def from_msg(cls, msg: Any) -> "CameraInfoSample":
        """From a deserialized ``sensor_msgs/msg/CameraInfo``."""
        return cls(stamp_to_ns(msg.header.stamp),
                   np.asarray(msg.k, dtype=np.float64).reshape(3, 3).copy(),
                   int(msg.width), int(msg.height), _clean_frame(str(msg.header.frame_id)))


@dataclass
class _Index:
    tf: TfBuffer
    tf_report: TfLoadReport
    infos: dict[str, list[CameraInfoSample]]
    info_stamps: dict[str, list[int]]
    depth_stamps: list[int]
    color_stamps: list[int]


# ------------------------------------------------------------------------------ the source


class _DropLedger:
    """What a bag reader's last pass yielded and dropped: :attr:`drops` counts per reason,
    :attr:`drop_examples` the first detail of each (the readers below share it)."""

    drops: Counter[str]
    drop_examples: dict[str, str]
    frames_yielded: int

    def _reset_ledger(self) -> None:
        self.drops = Counter()
        self.drop_examples = {}
        self.frames_yielded = 0

    def _drop(self, reason: str, detail: str | None = None) -> None:
        self.drops[reason] += 1
        self.drop_examples.setdefault(reason, detail or reason)

    def _ledger_parts(self, what: str, messages: int) -> list[str]:
        """``"<yielded>/<messages> <what> frames yielded"`` and the drop reasons with counts."""
        parts = [f"{self.frames_yielded}/{messages} {what} frames yielded"]
        if self.drops:
            parts.append("dropped: " + ", ".join(f"{r} x{n}" for r, n in self.drops.most_common()))
        return parts


class RosbagSource(_DropLedger):
    """Iterate posed RGB-D frames of a rosbag2 bag (sqlite3 or MCAP) without ROS.

    Args:
        path: bag directory, ``.db3`` or ``.mcap`` file (see :func:`resolve_bag_path`).
        depth_topic: depth ``Image`` topic; None = auto-detect (the Image topic whose first
            message is 16UC1/mono16/32FC1, preferring names containing "depth").
        color_topic: color ``Image``/``CompressedImage`` topic; None = auto-detect (rgb8/bgr8/
            mono8 Image or CompressedImage, preferring names with "color"/"rgb", then
            "image"; only topics with a camera_info are picked). Pass ``""`` to ignore color.
        world_frame: TF frame the poses are expressed in (``T_world_cam``), e.g. ``map``.
        max_color_offset_ns: largest |color stamp - depth stamp| for pairing, nanoseconds.
        depth_info_topic, color_info_topic: override the sibling ``camera_info`` rule.
        default_store: typestore used when the bag carries no message definitions.
        window: yield only the depth messages whose header stamp is in it (None: all). The
            others are skipped before decoding: they are neither frames nor drops. A frame
            is still paired with the nearest color image, in the window or not.

    Raises:
        BagReadError: the bag cannot be opened.
        BagTopicError: no depth topic, no camera_info for it, or a named topic is missing or
            has the wrong type (the message lists every topic in the bag).

    Attributes:
        window: the :class:`StampWindow` read (unbounded without one).
        topics: the :class:`BagTopics` used.
        all_topics: every topic in the bag, name -> message type.
        drops: depth messages (in the window) not yielded in the last iteration, by reason.
        color_drops: frames yielded without color in the last iteration, by reason.
        drop_examples: one full error message per drop reason (e.g. the TF error with stamps).
        frames_yielded: frames yielded in the last (or current) iteration.
        notes: remarks from topic detection (e.g. a color topic ignored for lack of camera_info).
    """

    def __init__(
        self,
        path: str | Path,
        depth_topic: str | None = None,
        color_topic: str | None = None,
        world_frame: str = "map",
        max_color_offset_ns: int = 20_000_000,
        depth_info_topic: str | None = None,
        color_info_topic: str | None = None,
        default_store: Stores = Stores.ROS2_HUMBLE,
        window: StampWindow | None = None,
    ) -> None:
        if max_color_offset_ns < 0:
            raise ConfigError(f"max_color_offset_ns must be >= 0, got {max_color_offset_ns}")
        self.path = Path(path)
        self.world_frame = _clean_frame(world_frame)
        self.max_color_offset_ns = int(max_color_offset_ns)
        self.window = window if window is not None else StampWindow()
        self._default_store = default_store
        self._reset_ledger()
        self.color_drops: Counter[str] = Counter()
        self.notes: list[str] = []
        self._index: _Index | None = None
        with self._open() as reader:
            self.all_topics: dict[str, str] = {
                name: str(info.msgtype) for name, info in reader.topics.items()
            }
            self._counts = {name: int(info.msgcount) for name, info in reader.topics.items()}
            self.topics = self._detect(
                reader, depth_topic, color_topic, depth_info_topic, color_info_topic
            )

    # ------------------------------------------------------------------------- public API

    def __len__(self) -> int:
        """Number of depth messages in the bag, with a bounded :attr:`window` of those whose
        header stamp is in it (runs the index pass on first use): an upper bound of frames
        yielded."""
        if self.window.bounded:
            return sum(stamp in self.window for stamp in self._get_index().depth_stamps)
        return self._counts.get(self.topics.depth, 0)

    @property
    def tf(self) -> TfBuffer:
        """Every transform of the bag (runs the index pass on first use)."""
        return self._get_index().tf

    @property
    def tf_report(self) -> TfLoadReport:
        """What loading the bag's TF did (counts, refused transforms)."""
        return self._get_index().tf_report

    def summary(self) -> str:
        """One line: frames yielded / depth messages, and drop reasons with counts."""
        parts = self._ledger_parts("depth", len(self))
        if self.color_drops:
            parts.append(
                "without color: "
                + ", ".join(f"{r} x{n}" for r, n in self.color_drops.most_common())
            )
        return "; ".join(parts)

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames in depth-stamp order (resets :attr:`drops` and friends)."""
        self._reset_ledger()
        self.color_drops = Counter()
        with self._open() as reader:
            index = self._get_index(reader)
            yield from self._stream(reader, index)

    # --------------------------------------------------------------------- implementation

    def _open(self) -> AbstractContextManager[AnyReader]:
        return _open_checked(self.path, self._default_store)

    def _detect(
        self,
        reader: AnyReader,
        depth_topic: str | None,
        color_topic: str | None,
        depth_info_topic: str | None,
        color_info_topic: str | None,
    ) -> BagTopics:
        topics = self.all_topics
        listing = _topic_listing(reader)

        def require(name: str, allowed: tuple[str, ...], role: str) -> None:
            _require_topic(self.path, topics, listing, name, allowed, role)

        # depth
        if depth_topic is None:
            candidates = []
            for name, typ in topics.items():
                if typ != IMAGE:
                    continue
                enc = _first_encoding(reader, name)
                if enc in DEPTH_ENCODINGS:
                    has_info = camera_info_topic_for(name, topics) is not None
                    candidates.append(("depth" not in name.lower(), not has_info, name))
            if not candidates:
                raise BagTopicError(
                    f"no depth image topic in bag {self.path} (need a {IMAGE} topic with "
                    f"encoding 16UC1, mono16 or 32FC1); {listing}"
                )
            depth_topic = min(candidates)[2]
            if len(candidates) > 1:
                self.notes.append(
                    f"depth topic {depth_topic} chosen among "
                    f"{sorted(c[2] for c in candidates)}"
                )
        else:
            require(depth_topic, (IMAGE,), "depth")
        if depth_info_topic is None:
            depth_info_topic = camera_info_topic_for(depth_topic, topics)
            if depth_info_topic is None:
                base = depth_topic.rsplit("/", 1)[0]
                raise BagTopicError(
                    f"no {CAMERA_INFO} topic for depth topic {depth_topic} in bag {self.path} "
                    f"(expected {base}/camera_info; pass depth_info_topic=...); {listing}"
                )
        else:
            require(depth_info_topic, (CAMERA_INFO,), "depth camera_info")

        color_topic, color_info = _detect_color(reader, self.path, topics, color_topic,
                                                color_info_topic, self.notes,
                                                exclude=depth_topic)
        tf = tuple(n for n, t in sorted(topics.items()) if t == TF_MESSAGE and n == "/tf")
        tf_static = tuple(
            n for n, t in sorted(topics.items()) if t == TF_MESSAGE and n == "/tf_static"
        )
        if not tf and not tf_static:
            self.notes.append("the bag has no /tf or /tf_static: every frame will be dropped")
        return BagTopics(depth_topic, depth_info_topic, color_topic, color_info, tf, tf_static)

    def _get_index(self, reader: AnyReader | None = None) -> _Index:
        if self._index is None:
            if reader is None:
                with self._open() as r:
                    self._index = self._build_index(r)
            else:
                self._index = self._build_index(reader)
        return self._index

    def _build_index(self, reader: AnyReader) -> _Index:
        """Pass 1: TF into a buffer, all camera_infos, stamps of depth and color images."""
        t = self.topics
        buffer = TfBuffer()
        report = TfLoadReport()
        info_topics = {x for x in (t.depth_info, t.color_info) if x}
        wanted = set(t.tf) | set(t.tf_static) | info_topics | {t.depth}
        if t.color:
            wanted.add(t.color)
        infos: dict[str, list[CameraInfoSample]] = {x: [] for x in info_topics}
        depth_stamps: list[int] = []
        color_stamps: list[int] = []
        conns = [c for c in reader.connections if c.topic in wanted]
        for conn, _, raw in reader.messages(connections=conns):
            msg = _deserialize(reader, raw, conn.msgtype)
            topic = conn.topic
            if topic in t.tf or topic in t.tf_static:
                _add_tf_message(buffer, msg, topic in t.tf_static, report)
            elif topic == t.depth:
                depth_stamps.append(stamp_to_ns(msg.header.stamp))
            elif topic == t.color:
                color_stamps.append(stamp_to_ns(msg.header.stamp))
            if topic in info_topics:  # (not elif: an info topic is never an image topic)
                infos[topic].append(CameraInfoSample.from_msg(msg))
        for samples in infos.values():
            samples.sort(key=lambda s: s.stamp_ns)
        info_stamps = {k: [s.stamp_ns for s in v] for k, v in infos.items()}
        return _Index(buffer, report, infos, info_stamps, depth_stamps, color_stamps)

    def _pair_colors(self, index: _Index) -> list[int | None]:
        """For every depth message (by ordinal) the ordinal of the nearest color message
        within ``max_color_offset_ns`` (ties: the earlier color), else None."""
        if not self.topics.color or not index.color_stamps:
            return [None] * len(index.depth_stamps)
        order = sorted(range(len(index.color_stamps)), key=lambda i: (index.color_stamps[i], i))
        stamps = [index.color_stamps[i] for i in order]
        pairs: list[int | None] = []
        for ds in index.depth_stamps:
            j = bisect.bisect_left(stamps, ds)
            best: int | None = None
            best_dt = self.max_color_offset_ns + 1
            for k in (j - 1, j):
                if 0 <= k < len(stamps) and abs(stamps[k] - ds) < best_dt:
                    best, best_dt = k, abs(stamps[k] - ds)
            pairs.append(order[best] if best is not None else None)
        return pairs

    def _info_at(self, topic: str, stamp_ns: int, index: _Index) -> CameraInfoSample | None:
        """The newest camera_info of ``topic`` with stamp <= ``stamp_ns``."""
        samples = index.infos.get(topic, [])
        i = bisect.bisect_right(index.info_stamps.get(topic, []), stamp_ns) - 1
        return samples[i] if i >= 0 else None

    def _stream(self, reader: AnyReader, index: _Index) -> Iterator[Frame]:
        """Pass 2: decode images and yield frames in depth-stamp order; depth messages outside
        :attr:`window` are skipped undecoded, and the pass ends after the last frame."""
        t = self.topics
        pairs = self._pair_colors(index)
        inside = [stamp in self.window for stamp in index.depth_stamps]
        needed = Counter(p for p, keep in zip(pairs, inside) if keep and p is not None)
        order = sorted((i for i, keep in enumerate(inside) if keep),
                       key=lambda i: (index.depth_stamps[i], i))
        pending_depth: dict[int, tuple[bytes, str]] = {}
        pending_color: dict[int, tuple[bytes, str]] = {}
        n_depth = n_color = 0
        next_i = 0
        conns = [c for c in reader.connections if c.topic in {t.depth, t.color}]

        def emit(d: int) -> Frame | None:
            depth_raw = pending_depth.pop(d, None)
            c = pairs[d]
            color_raw = pending_color.get(c) if c is not None else None
            if c is not None:
                needed[c] -= 1
                if needed[c] <= 0:
                    pending_color.pop(c, None)
            if depth_raw is None:  # cannot happen unless the bag changed between passes
                self._drop("depth message missing in the second pass")
                return None
            return self._make_frame(reader, index, depth_raw, color_raw, c is not None)

        for conn, _, raw in reader.messages(connections=conns):
            if conn.topic == t.depth:
                if n_depth < len(inside) and inside[n_depth]:
                    pending_depth[n_depth] = (raw, conn.msgtype)
                n_depth += 1
            else:
                if needed.get(n_color, 0) > 0:
                    pending_color[n_color] = (raw, conn.msgtype)
                n_color += 1
            while next_i < len(order):
                d = order[next_i]
                c = pairs[d]
                if d not in pending_depth or (c is not None and c not in pending_color):
                    break
                next_i += 1
                frame = emit(d)
                if frame is not None:
                    self.frames_yielded += 1
                    yield frame
            if next_i == len(order):  # every frame out: the rest of the bag is not needed
                break
        while next_i < len(order):  # only if the bag ended early (not expected)
            frame = emit(order[next_i])
            next_i += 1
            if frame is not None:
                self.frames_yielded += 1
                yield frame

    def _drop_color(self, reason: str, detail: str | None = None) -> None:
        self.color_drops[reason] += 1
        self.drop_examples.setdefault(f"color: {reason}", detail or reason)

    def _camera(self, info: CameraInfoSample, w: int, h: int, what: str
                ) -> tuple[PinholeCamera | None, str | None, str | None]:
        """(camera, drop reason, detail) for an image of size w x h and its camera_info."""
        try:
            return camera_from_info(info.K, info.width, info.height, w, h, what), None, None
        except CameraInfoError as err:
            return None, err.reason, str(err)

    def _make_frame(
        self,
        reader: AnyReader,
        index: _Index,
        depth_raw: tuple[bytes, str],
        color_raw: tuple[bytes, str] | None,
        color_paired: bool,
    ) -> Frame | None:
        t = self.topics
        msg = _deserialize(reader, *depth_raw)
        stamp = stamp_to_ns(msg.header.stamp)
        frame_id = _clean_frame(str(msg.header.frame_id))
        try:
            depth = decode_depth(msg)
        except ImageDecodeError as err:
            self._drop(err.reason, str(err))
            return None
        if not frame_id:
            self._drop("depth message has an empty frame_id")
            return None
        if stamp == 0:
            self._drop("depth header stamp is 0")
            return None
        info = self._info_at(t.depth_info, stamp, index)
        if info is None:
            self._drop("no camera_info before frame",
                       f"no {t.depth_info} message with stamp <= {stamp} ns")
            return None
        h, w = depth.shape
        camera, reason, detail = self._camera(info, w, h, "depth")
        if camera is None:
            self._drop(reason or "invalid camera_info", detail)
            return None
        try:
            T_world_cam = index.tf.lookup(self.world_frame, frame_id, stamp)
        except TfLookupError as err:
            self._drop(f"tf lookup failed: {err.reason}", str(err))
            return None

        color = None
        color_camera = None
        T_cam_color = np.eye(4)
        if t.color is not None:
            if color_raw is None:
                if not color_paired:
                    self._drop_color(
                        f"no color image within {self.max_color_offset_ns / 1e6:g} ms"
                    )
            else:
                result = self._color(reader, index, color_raw, frame_id, stamp)
                if result is not None:
                    color, color_camera, T_cam_color = result
        try:
            return Frame(
                depth=depth,
                camera=camera,
                T_world_cam=T_world_cam,
                color=color,
                color_camera=color_camera,
                T_cam_color=T_cam_color,
                stamp_ns=stamp,
                frame_id=frame_id,
            )
        except FrameError as err:
            self._drop("invalid frame", str(err))
            return None

    def _color(
        self,
        reader: AnyReader,
        index: _Index,
        color_raw: tuple[bytes, str],
        depth_frame: str,
        depth_stamp: int,
    ) -> tuple[np.ndarray, PinholeCamera, np.ndarray] | None:
        """(rgb, color camera, T_cam_color) or None (reason counted in color_drops)."""
        raw, msgtype = color_raw
        msg = _deserialize(reader, raw, msgtype)
        stamp = stamp_to_ns(msg.header.stamp)
        try:
            rgb = decode_color(msg, msgtype)
        except ImageDecodeError as err:
            self._drop_color(err.reason, str(err))
            return None
        info = (
            self._info_at(self.topics.color_info, stamp, index)
            if self.topics.color_info else None
        )
        if info is None:
            self._drop_color("no color camera_info before frame")
            return None
        camera, reason, detail = self._camera(info, rgb.shape[1], rgb.shape[0], "color")
        if camera is None:
            self._drop_color(reason or "invalid camera_info", detail)
            return None
        color_frame = _clean_frame(str(msg.header.frame_id)) or depth_frame
        if color_frame == depth_frame:
            return rgb, camera, np.eye(4)
        try:
            T_cam_color = index.tf.lookup(depth_frame, color_frame, depth_stamp)
        except TfLookupError as err:
            self._drop_color(f"tf lookup failed: {err.reason}", str(err))
            return None
        return rgb, camera, T_cam_color


# ------------------------------------------------------------------- color-only source


@dataclass(frozen=True)
class ColorFrame:
    """A posed color image of a bag.

    Attributes:
        color: (H, W, 3) uint8 RGB.
        camera: its intrinsics (from its camera_info).
        T_world_cam: (4, 4) pose of its optical frame (``header.frame_id``) in the world
            frame at its stamp, metres.
        stamp_ns: header stamp, nanoseconds.
        frame_id: its optical frame.
    """

    color: np.ndarray
    camera: PinholeCamera
    T_world_cam: np.ndarray
    stamp_ns: int
    frame_id: str


class RosbagColorSource(_DropLedger):
    """Iterate the posed color images of a rosbag2 bag (sqlite3 or MCAP) without ROS, for
    color-only mapping (``fusion.method: stereo`` or ``rgb``); depth topics, if any, are
    ignored.

    Reading is two passes: TF and the color camera_info first (poses are interpolated at
    every image stamp), then the images, yielded in bag order. Every image that does not
    become a :class:`ColorFrame` is counted in :attr:`drops` with its reason; images outside
    the ``window`` are skipped before decoding and are not drops.

    Args:
        path: bag directory, ``.db3`` or ``.mcap`` file (see :func:`resolve_bag_path`).
        color_topic: color ``Image``/``CompressedImage`` topic; None = auto-detect as
            :class:`RosbagSource` does.
        world_frame: TF frame the poses are expressed in.
        color_info_topic: override the sibling ``camera_info`` rule.
        default_store: typestore used when the bag carries no message definitions.
        window: yield only the images whose header stamp is in it (None: all).

    Raises:
        BagReadError: the bag cannot be opened.
        BagTopicError: no color topic with a camera_info, or a named topic is missing or has
            the wrong type (the message lists every topic in the bag).

    Attributes:
        window: the :class:`StampWindow` read (unbounded without one).
        color_topic, color_info_topic: the topics read.
        drops, drop_examples, frames_yielded, notes: as in :class:`RosbagSource`.
    """

    def __init__(
        self,
        path: str | Path,
        color_topic: str | None = None,
        world_frame: str = "map",
        color_info_topic: str | None = None,
        default_store: Stores = Stores.ROS2_HUMBLE,
        window: StampWindow | None = None,
    ) -> None:
        self.path = Path(path)
        self.world_frame = _clean_frame(world_frame)
        self.window = window if window is not None else StampWindow()
        self._default_store = default_store
        self._reset_ledger()
        self.notes: list[str] = []
        with _open_checked(self.path, default_store) as reader:
            topics = {name: str(info.msgtype) for name, info in reader.topics.items()}
            color, info = _detect_color(reader, self.path, topics, color_topic,
                                        color_info_topic, self.notes)
            if color is None or info is None:
                raise BagTopicError(
                    f"no color image topic in bag {self.path}: color-only mapping "
                    f"(fusion.method: stereo or rgb) needs a {IMAGE} (rgb8, bgr8, rgba8, "
                    f"bgra8 or mono8) or {COMPRESSED_IMAGE} topic with a sibling camera_info; "
                    f"{_topic_listing(reader)}"
                )
            self._count = int(reader.topics[color].msgcount)
        self.color_topic: str = color
        self.color_info_topic: str = info
        self._tf_topics = tuple(n for n in ("/tf",) if topics.get(n) == TF_MESSAGE)
        self._tf_static_topics = tuple(n for n in ("/tf_static",) if topics.get(n) == TF_MESSAGE)
        if not self._tf_topics and not self._tf_static_topics:
            self.notes.append("the bag has no /tf or /tf_static: every frame will be dropped")

    def __len__(self) -> int:
        """Number of color messages in the whole bag, also with a bounded :attr:`window` (an
        upper bound of frames yielded; counting those in the window would take a pass over
        every image)."""
        return self._count

    def summary(self) -> str:
        """One line: frames yielded / color messages, and drop reasons with counts."""
        return "; ".join(self._ledger_parts("color", len(self)))

    def __iter__(self) -> Iterator[ColorFrame]:
        """Yield posed color images in bag order (resets :attr:`drops` and friends)."""
        self._reset_ledger()
        with _open_checked(self.path, self._default_store) as reader:
            tf = TfBuffer()
            load_tf_from_bag(reader, tf, self._tf_topics, self._tf_static_topics)
            infos: list[CameraInfoSample] = []
            info_conns = [c for c in reader.connections if c.topic == self.color_info_topic]
            for conn, _, raw in reader.messages(connections=info_conns):
                infos.append(CameraInfoSample.from_msg(_deserialize(reader, raw, conn.msgtype)))
            infos.sort(key=lambda sample: sample.stamp_ns)
            info_stamps = [sample.stamp_ns for sample in infos]
            conns = [c for c in reader.connections if c.topic == self.color_topic]
            for conn, _, raw in reader.messages(connections=conns):
                msg = _deserialize(reader, raw, conn.msgtype)
                if stamp_to_ns(msg.header.stamp) not in self.window:
                    continue  # (not decoded, not a drop)
                frame = self._make_frame(msg, conn.msgtype, tf, infos, info_stamps)
                if frame is not None:
                    self.frames_yielded += 1
                    yield frame

    def _make_frame(self, msg: Any, msgtype: str, tf: TfBuffer,
                    infos: list[CameraInfoSample], info_stamps: list[int]) -> ColorFrame | None:
        """One decoded, posed image, or None (the reason counted in :attr:`drops`)."""
        stamp = stamp_to_ns(msg.header.stamp)
        frame_id = _clean_frame(str(msg.header.frame_id))
        try:
            rgb = decode_color(msg, msgtype)
        except ImageDecodeError as err:
            self._drop(err.reason, str(err))
            return None
        if not frame_id:
            self._drop("color message has an empty frame_id")
            return None
        i = bisect.bisect_right(info_stamps, stamp) - 1
        if i < 0:
            self._drop("no camera_info before frame",
                       f"no {self.color_info_topic} message with stamp <= {stamp} ns")
            return None
        info = infos[i]
        try:
            camera = camera_from_info(info.K, info.width, info.height, rgb.shape[1],
                                      rgb.shape[0], "color")
        except CameraInfoError as err:
            self._drop(err.reason, str(err))
            return None
        try:
            T_world_cam = tf.lookup(self.world_frame, frame_id, stamp)
        except TfLookupError as err:
            self._drop(f"tf lookup failed: {err.reason}", str(err))
            return None
        return ColorFrame(rgb, camera, T_world_cam, stamp, frame_id)
