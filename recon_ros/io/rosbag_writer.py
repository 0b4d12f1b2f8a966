"""Write rosbag2 bags (sqlite3 or MCAP) of RGB-D data and TF without a ROS install.

Built on :class:`rosbags.rosbag2.Writer`; messages are instances of the typestore's classes
(``typestore.types['sensor_msgs/msg/Image']``) serialised with ``typestore.serialize_cdr``.
Used for tests, synthetic data and exporting; the reader is
:class:`recon_ros.io.rosbag_source.RosbagSource`.

Conventions: stamps are integer nanoseconds; the bag's log time of a message defaults to its
header stamp. Depth is metres in, ``16UC1`` millimetres or ``32FC1`` metres on disk. Color is
(H, W, 3) uint8 **RGB** in. Quaternions are ROS order (x, y, z, w).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import cv2
import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from recon_ros.core.errors import ReconError

from .image_codec import ImageEncodeError, encode_compressed, encode_depth

__all__ = ["BagWriteError", "BagWriter", "TransformTuple", "TF_STATIC_QOS"]

#: ``(parent, child, stamp_ns, translation (3,) m, quaternion_xyzw (4,))``
TransformTuple = tuple[str, str, int, Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]

_INFINITE = QosTime(sec=9223372036, nsec=854775807)
#: Offered QoS that real ``/tf_static`` publishers use (latched: transient local, depth 1).
TF_STATIC_QOS = Qos(
    history=QosHistory.KEEP_LAST,
    depth=1,
    reliability=QosReliability.RELIABLE,
    durability=QosDurability.TRANSIENT_LOCAL,
    deadline=_INFINITE,
    lifespan=_INFINITE,
    liveliness=QosLiveliness.AUTOMATIC,
    liveliness_lease_duration=_INFINITE,
    avoid_ros_namespace_conventions=False,
)

_STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


class BagWriteError(ReconError, ValueError):
    """Invalid input to :class:`BagWriter` (shape, dtype, encoding, topic/type clash, closed)."""


class BagWriter:
    """Context manager that writes a rosbag2 directory (``metadata.yaml`` + one storage file).

    Args:
        path: bag directory to create; must not exist.
        storage: ``"sqlite3"`` (``.db3``) or ``"mcap"``.
        typestore_store: message definitions to use (embedded into the bag).
        version: rosbag2 metadata version (8 or 9).

    Example::

        with BagWriter(tmp / "bag", "mcap") as bag:
            bag.write_camera_info("/cam/depth/camera_info", t, K, 640, 480, "cam_optical")
            bag.write_depth("/cam/depth/image_raw", t, depth_m, "cam_optical")
    """

    def __init__(
        self,
        path: str | Path,
        storage: Literal["sqlite3", "mcap"] = "sqlite3",
        typestore_store: Stores = Stores.ROS2_HUMBLE,
        version: Literal[8, 9] = 9,
    ) -> None:
        if storage not in _STORAGES:
            raise BagWriteError(f"storage must be 'sqlite3' or 'mcap', got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        self.typestore = get_typestore(typestore_store)
        self._writer = Writer(self.path, version=version, storage_plugin=_STORAGES[storage])
        self._connections: dict[str, Any] = {}
        self._open = False

    # ------------------------------------------------------------------------ lifecycle

    def open(self) -> BagWriter:
        """Create the bag directory and storage (called by ``__enter__``)."""
        self._writer.open()
        self._open = True
        return self

    def close(self) -> None:
        """Finish the storage file and write ``metadata.yaml``."""
        if self._open:
            self._writer.close()
            self._open = False

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._writer.abort()
            self._open = False

    # ------------------------------------------------------------------------ low level

    def write_message(
        self,
        topic: str,
        msg: Any,
        log_time_ns: int,
        offered_qos: Sequence[Qos] = (),
    ) -> None:
        """Serialise ``msg`` (a typestore message object) to CDR and append it to ``topic``.

        Raises:
            BagWriteError: bag not open, or ``topic`` already used with another type.
        """
        if not self._open:
            raise BagWriteError(f"bag {self.path} is not open (use it as a context manager)")
        msgtype = msg.__msgtype__
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore, offered_qos_profiles=list(offered_qos)
            )
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagWriteError(
                f"topic {topic} already carries {conn.msgtype}, cannot write {msgtype}"
            )
        self._writer.write(conn, int(log_time_ns), self.typestore.serialize_cdr(msg, msgtype))

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        """A ``std_msgs/msg/Header`` for ``stamp_ns`` (integer ns >= 0) and ``frame_id``."""
        stamp_ns = int(stamp_ns)
        if stamp_ns < 0:
            raise BagWriteError(f"stamp must be >= 0 ns, got {stamp_ns}")
        sec, nsec = divmod(stamp_ns, 1_000_000_000)
        t = self.typestore.types
        return t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id
        )

    def write_image(
        self,
        topic: str,
        stamp_ns: int,
        data: np.ndarray | bytes,
        width: int,
        height: int,
        encoding: str,
        step: int,
        frame_id: str,
        is_bigendian: bool = False,
        log_time_ns: int | None = None,
    ) -> None:
        """Write a ``sensor_msgs/msg/Image`` from raw bytes, as is (any encoding, any step).

        Args:
            data: ``height * step`` bytes (uint8 array or bytes).
        """
        buf = np.frombuffer(bytes(data), dtype=np.uint8) if isinstance(data, bytes) else (
            np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        )
        msg = self.typestore.types["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame_id),
            height=int(height),
            width=int(width),
            encoding=encoding,
            is_bigendian=int(bool(is_bigendian)),
            step=int(step),
            data=buf.copy(),
        )
        self.write_message(topic, msg, stamp_ns if log_time_ns is None else log_time_ns)

    # ---------------------------------------------------------------------- conveniences

    def write_depth(
        self,
        topic: str,
        stamp_ns: int,
        depth_m: np.ndarray,
        frame_id: str,
        encoding: Literal["16UC1", "32FC1"] = "16UC1",
        is_bigendian: bool = False,
        row_padding_bytes: int = 0,
        log_time_ns: int | None = None,
    ) -> None:
        """Write a depth image.

        Args:
            depth_m: (H, W) depth in metres (float). For ``16UC1`` it is stored as
                ``round(m * 1000)`` millimetres clipped to [0, 65535], with NaN/Inf -> 0; for
                ``32FC1`` as float32 metres (NaN/Inf kept).
            encoding: ``"16UC1"`` (millimetres) or ``"32FC1"`` (metres).
            is_bigendian: store multi-byte pixels big-endian (the reader must honour the flag).
            row_padding_bytes: extra bytes at the end of each row (``step > width * 2|4``).
        """
        try:
            pixels = encode_depth(depth_m, encoding, is_bigendian)
        except ImageEncodeError as err:
            raise BagWriteError(str(err)) from err
        h, w = pixels.shape
        self._write_pixels(
            topic, stamp_ns, pixels, w, h, encoding, frame_id, is_bigendian, row_padding_bytes,
            log_time_ns,
        )

    def write_color(
        self,
        topic: str,
        stamp_ns: int,
        rgb: np.ndarray,
        frame_id: str,
        encoding: Literal["rgb8", "bgr8", "mono8"] = "rgb8",
        row_padding_bytes: int = 0,
        log_time_ns: int | None = None,
    ) -> None:
        """Write an uncompressed color image.

        Args:
            rgb: (H, W, 3) uint8 RGB; for ``mono8`` also (H, W) uint8, and (H, W, 3) is
                converted to grey with OpenCV's RGB2GRAY weights.
            encoding: ``"rgb8"``, ``"bgr8"`` (channels swapped on disk) or ``"mono8"``.
        """
        img = np.asarray(rgb)
        if img.dtype != np.uint8:
            raise BagWriteError(f"color must be uint8, got {img.dtype}")
        if encoding == "mono8":
            if img.ndim == 3 and img.shape[2] == 3:
                img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
            if img.ndim != 2:
                raise BagWriteError(f"mono8 needs (H, W) or (H, W, 3) input, got {img.shape}")
        elif encoding in ("rgb8", "bgr8"):
            if img.ndim != 3 or img.shape[2] != 3:
                raise BagWriteError(f"color must be (H, W, 3) RGB, got shape {img.shape}")
            if encoding == "bgr8":
                img = img[:, :, ::-1]
        else:
            raise BagWriteError(f"color encoding must be rgb8, bgr8 or mono8, got {encoding!r}")
        h, w = img.shape[:2]
        self._write_pixels(
            topic, stamp_ns, img, w, h, encoding, frame_id, False, row_padding_bytes, log_time_ns
        )

    def write_compressed(
        self,
        topic: str,
        stamp_ns: int,
        rgb: np.ndarray,
        frame_id: str,
        fmt: Literal["jpeg", "png"] = "jpeg",
        jpeg_quality: int = 95,
        log_time_ns: int | None = None,
    ) -> None:
        """Write a ``sensor_msgs/msg/CompressedImage`` (image_transport style format string
        ``"rgb8; jpeg compressed bgr8"``).

        Args:
            rgb: (H, W, 3) uint8 RGB.
            fmt: ``"jpeg"`` (lossy) or ``"png"`` (lossless).
        """
        try:
            data, format_string = encode_compressed(rgb, fmt, jpeg_quality)
        except ImageEncodeError as err:
            raise BagWriteError(str(err)) from err
        msg = self.typestore.types["sensor_msgs/msg/CompressedImage"](
            header=self.header(stamp_ns, frame_id),
            format=format_string,
            data=data,
        )
        self.write_message(topic, msg, stamp_ns if log_time_ns is None else log_time_ns)

    def write_camera_info(
        self,
        topic: str,
        stamp_ns: int,
        K: np.ndarray,
        width: int,
        height: int,
        frame_id: str,
        D: np.ndarray | Sequence[float] | None = None,
        log_time_ns: int | None = None,
    ) -> None:
        """Write a ``sensor_msgs/msg/CameraInfo``: ``plumb_bob``, D = zeros(5) unless given,
        R = I, P = [K | 0].

        Args:
            K: (3, 3) intrinsics, pixels.
            width, height: image size, pixels.
        """
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise BagWriteError(f"K must be (3, 3), got {K.shape}")
        d = np.zeros(5) if D is None else np.asarray(D, dtype=np.float64).reshape(-1)
        P = np.zeros((3, 4))
        P[:, :3] = K
        t = self.typestore.types
        msg = t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id),
            height=int(height),
            width=int(width),
            distortion_model="plumb_bob",
            d=d,
            k=K.reshape(-1).copy(),
            r=np.eye(3).reshape(-1),
            p=P.reshape(-1),
            binning_x=0,
            binning_y=0,
            roi=t["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            ),
        )
        self.write_message(topic, msg, stamp_ns if log_time_ns is None else log_time_ns)

    def write_tf(
        self,
        transforms: Sequence[TransformTuple],
        static: bool = False,
        topic: str | None = None,
        log_time_ns: int | None = None,
    ) -> None:
        """Write one ``tf2_msgs/msg/TFMessage`` on ``/tf`` (or ``/tf_static`` if ``static``).

        Args:
            transforms: ``(parent, child, stamp_ns, translation (3,) m, quaternion (4,) xyzw)``
                tuples; each is the pose of ``child`` in ``parent``.
            static: write to ``/tf_static`` with transient-local offered QoS.
            topic: override the topic name.
            log_time_ns: bag log time; defaults to the largest stamp.
        """
        if not transforms:
            raise BagWriteError("write_tf needs at least one transform")
        t = self.typestore.types
        items = []
        for parent, child, stamp_ns, trans, quat in transforms:
            tr = np.asarray(trans, dtype=np.float64).reshape(-1)
            q = np.asarray(quat, dtype=np.float64).reshape(-1)
            if tr.shape != (3,) or q.shape != (4,):
                raise BagWriteError(
                    f"transform {parent} -> {child}: translation must be (3,) and quaternion "
                    f"(4,) xyzw, got {tr.shape} and {q.shape}"
                )
            items.append(
                t["geometry_msgs/msg/TransformStamped"](
                    header=self.header(stamp_ns, parent),
                    child_frame_id=child,
                    transform=t["geometry_msgs/msg/Transform"](
                        translation=t["geometry_msgs/msg/Vector3"](
                            x=float(tr[0]), y=float(tr[1]), z=float(tr[2])
                        ),
                        rotation=t["geometry_msgs/msg/Quaternion"](
                            x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])
                        ),
                    ),
                )
            )
        msg = t["tf2_msgs/msg/TFMessage"](transforms=items)
        name = topic or ("/tf_static" if static else "/tf")
        log = max(int(x[2]) for x in transforms) if log_time_ns is None else log_time_ns
        self.write_message(name, msg, log, offered_qos=(TF_STATIC_QOS,) if static else ())

    # ----------------------------------------------------------------------------- helpers

    def _write_pixels(
        self,
        topic: str,
        stamp_ns: int,
        pixels: np.ndarray,
        width: int,
        height: int,
        encoding: str,
        frame_id: str,
        is_bigendian: bool,
        row_padding_bytes: int,
        log_time_ns: int | None,
    ) -> None:
        rows = np.ascontiguousarray(pixels).reshape(height, -1).view(np.uint8).reshape(height, -1)
        if row_padding_bytes < 0:
            raise BagWriteError(f"row_padding_bytes must be >= 0, got {row_padding_bytes}")
        if row_padding_bytes:
            pad = np.full((height, row_padding_bytes), 0xAB, dtype=np.uint8)
            rows = np.concatenate([rows, pad], axis=1)
        self.write_image(
            topic, stamp_ns, rows.reshape(-1), width, height, encoding, rows.shape[1], frame_id,
            is_bigendian, log_time_ns,
        )
