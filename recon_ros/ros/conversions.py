"""rclpy messages <-> numpy / core types.

Image decoding (depth encodings, step, endianness, compressed color) and the camera_info
checks are the ROS-free :mod:`recon_ros.io.image_codec` functions, which read rclpy messages
as they read ``rosbags`` ones; this module adds what only a live node needs: stamps, TF
messages, building messages for publishing (grids, grid updates, clouds, the distance slice),
the mesh as a ``MarkerArray`` and as a ``recon_ros_interfaces/Mesh``.

Mesh markers are serialised straight to CDR bytes with numpy (:func:`mesh_marker_array_cdr`):
building one ``geometry_msgs/Point`` object per triangle corner costs about 1.5 us each in
Python (over a second for a 100k-triangle map), the numpy encoding a few milliseconds.
``rclpy`` publishes such bytes as they are (``Publisher.publish(bytes)``); a test checks them
against ``rclpy.serialization`` field by field.
"""

from __future__ import annotations

import array
import struct
from collections import deque
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from map_msgs.msg import OccupancyGridUpdate
from nav_msgs.msg import OccupancyGrid
from recon_ros_interfaces.msg import Mesh, MeshBlock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from tf2_msgs.msg import TFMessage

from recon_ros.core.distance_slice import DistanceSlice
from recon_ros.core.frame import PinholeCamera
from recon_ros.core.occupancy_grid import OccupancyGrid2D
from recon_ros.io.image_codec import encode_compressed, encode_depth
from recon_ros.io.tf_buffer import TfBuffer, TfDataError

__all__ = [
    "BlockTriangles",
    "HeldGrid",
    "IndexedBlock",
    "MARKER_ADD",
    "MARKER_DELETE",
    "MARKER_DELETEALL",
    "TfTuple",
    "add_tf_message",
    "apply_grid_update",
    "camera_info_msg",
    "cloud_fields",
    "color_msg",
    "compressed_msg",
    "depth_msg",
    "distance_slice_msg",
    "grid_from_msg",
    "grid_update_msg",
    "mesh_marker_array_cdr",
    "mesh_msg",
    "ns_to_time",
    "occupancy_grid_msg",
    "point_cloud_msg",
    "points_from_cloud",
    "stamp_ns",
    "tf_message",
]

#: ``(parent, child, stamp_ns, translation (3,) m, quaternion_xyzw (4,))``
TfTuple = tuple[str, str, int, Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]

MARKER_ADD = 0
MARKER_DELETE = 2
MARKER_DELETEALL = 3
_TRIANGLE_LIST = 11


# ------------------------------------------------------------------------------------ stamps


def stamp_ns(stamp: Time) -> int:
    """``builtin_interfaces/msg/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_time(ns: int) -> Time:
    """Integer nanoseconds (>= 0) -> ``builtin_interfaces/msg/Time``."""
    sec, nsec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nsec)


# ---------------------------------------------------------------------------------------- TF


def add_tf_message(buffer: TfBuffer, msg: TFMessage, static: bool) -> list[str]:
    """Insert every transform of a ``tf2_msgs/msg/TFMessage`` into ``buffer``.

    Returns:
        The reasons of the transforms the buffer refused (re-parenting, invalid quaternion,
        older than the cache window, ...); the others are stored.
    """
    refused = []
    for tr in msg.transforms:
        t, q = tr.transform.translation, tr.transform.rotation
        try:
            stored = buffer.set_transform(tr.header.frame_id, tr.child_frame_id,
                                          stamp_ns(tr.header.stamp), (t.x, t.y, t.z),
                                          (q.x, q.y, q.z, q.w), static=static)
        except TfDataError as err:
            refused.append(err.reason)
            continue
        if not stored:
            refused.append("older than the TF cache window")
    return refused


def tf_message(transforms: Sequence[TfTuple]) -> TFMessage:
    """A ``TFMessage`` of ``(parent, child, stamp_ns, translation, quaternion_xyzw)`` tuples."""
    msg = TFMessage()
    for parent, child, stamp, trans, quat in transforms:
        tr = TransformStamped()
        tr.header.stamp = ns_to_time(stamp)
        tr.header.frame_id = parent
        tr.child_frame_id = child
        t = np.asarray(trans, dtype=np.float64).reshape(3)
        q = np.asarray(quat, dtype=np.float64).reshape(4)
        tr.transform.translation.x, tr.transform.translation.y, tr.transform.translation.z = (
            float(v) for v in t)
        (tr.transform.rotation.x, tr.transform.rotation.y, tr.transform.rotation.z,
         tr.transform.rotation.w) = (float(v) for v in q)
        msg.transforms.append(tr)
    return msg


# ------------------------------------------------------------------------- images (publish)


def _image(pixels: np.ndarray, encoding: str, stamp: int, frame_id: str,
           is_bigendian: bool = False) -> Image:
    rows = np.ascontiguousarray(pixels)
    msg = Image()
    msg.header.stamp = ns_to_time(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rows.shape[0]), int(rows.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(is_bigendian)
    msg.step = int(rows.strides[0])
    msg.data = rows.tobytes()
    return msg


def depth_msg(depth_m: np.ndarray, stamp: int, frame_id: str, encoding: str = "16UC1",
              is_bigendian: bool = False) -> Image:
    """(H, W) metres -> ``Image`` in ``16UC1`` (millimetres) or ``32FC1`` (metres)."""
    return _image(encode_depth(depth_m, encoding, is_bigendian), encoding, stamp, frame_id,
                  is_bigendian)


def color_msg(rgb: np.ndarray, stamp: int, frame_id: str, encoding: str = "rgb8") -> Image:
    """(H, W, 3) uint8 RGB -> ``Image`` in ``rgb8`` or ``bgr8``."""
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"encoding must be rgb8 or bgr8, got {encoding!r}")
    img = np.asarray(rgb, dtype=np.uint8)
    return _image(img[:, :, ::-1] if encoding == "bgr8" else img, encoding, stamp, frame_id)


def compressed_msg(rgb: np.ndarray, stamp: int, frame_id: str, fmt: str = "jpeg"
                   ) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> ``CompressedImage`` (jpeg or png)."""
    data, format_string = encode_compressed(rgb, fmt)
    msg = CompressedImage()
    msg.header.stamp = ns_to_time(stamp)
    msg.header.frame_id = frame_id
    msg.format = format_string
    msg.data = data.tobytes()
    return msg


def camera_info_msg(camera: PinholeCamera, stamp: int, frame_id: str) -> CameraInfo:
    """``CameraInfo`` of a pinhole camera: plumb_bob with zero distortion, R = I, P = [K | 0]."""
    msg = CameraInfo()
    msg.header.stamp = ns_to_time(stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = camera.width, camera.height
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = camera.K.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    P = np.zeros((3, 4))
    P[:, :3] = camera.K
    msg.p = P.reshape(-1).tolist()
    return msg


# ------------------------------------------------------------------------ map outputs


def occupancy_grid_msg(grid: OccupancyGrid2D, frame_id: str, stamp: int) -> OccupancyGrid:
    """``nav_msgs/OccupancyGrid`` of a core grid (row 0 = lowest y, origin = cell (0, 0)'s
    outer corner at z = the band's lower edge, no rotation)."""
    msg = OccupancyGrid()
    msg.header.stamp = ns_to_time(stamp)
    msg.header.frame_id = frame_id
    msg.info.map_load_time = msg.header.stamp
    msg.info.resolution = float(grid.resolution_m)
    msg.info.width, msg.info.height = grid.width, grid.height
    msg.info.origin.position.x = float(grid.origin_xy[0])
    msg.info.origin.position.y = float(grid.origin_xy[1])
    msg.info.origin.position.z = float(grid.min_height_m)
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array("b", np.ascontiguousarray(grid.data, dtype=np.int8).tobytes())
    return msg


def grid_from_msg(msg: OccupancyGrid) -> OccupancyGrid2D:
    """Inverse of :func:`occupancy_grid_msg` (the band's upper edge is not carried: NaN)."""
    data = np.asarray(msg.data, dtype=np.int8).reshape(msg.info.height, msg.info.width)
    return OccupancyGrid2D(data=data.copy(), resolution_m=float(msg.info.resolution),
                           origin_xy=(msg.info.origin.position.x, msg.info.origin.position.y),
                           min_height_m=float(msg.info.origin.position.z),
                           max_height_m=float("nan"))


def grid_update_msg(previous: np.ndarray, grid: OccupancyGrid2D, frame_id: str, stamp: int
                    ) -> OccupancyGridUpdate | None:
    """The ``map_msgs/OccupancyGridUpdate`` that turns the cells ``previous`` into ``grid``.

    Args:
        previous: (H, W) int8 cells last sent, on the same geometry (size, resolution, origin)
            as ``grid``.
        grid: the new grid.
        frame_id, stamp: header (map frame, stamp of the newest integrated frame).

    Returns:
        The tightest box of changed cells: ``x``/``y`` its first column/row, ``width`` x
        ``height`` cells, ``data`` its cells row-major (row 0 = lowest y, as the grid); None
        if no cell changed.

    Raises:
        ValueError: ``previous`` has another shape than ``grid``.
    """
    if previous.shape != grid.data.shape:
        raise ValueError(f"grid update needs the same size: {previous.shape} vs "
                         f"{grid.data.shape}")
    changed = previous != grid.data
    rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    msg = OccupancyGridUpdate()
    msg.header.stamp = ns_to_time(stamp)
    msg.header.frame_id = frame_id
    msg.x, msg.y, msg.width, msg.height = x0, y0, x1 - x0, y1 - y0
    msg.data = array.array("b", np.ascontiguousarray(grid.data[y0:y1, x0:x1]).tobytes())
    return msg


def apply_grid_update(data: np.ndarray, update: OccupancyGridUpdate) -> np.ndarray:
    """The cells ``data`` (H, W) with ``update`` written into them (a new array), as Nav2's
    StaticLayer and RViz apply ``map_updates``.

    Raises:
        ValueError: the update's box leaves the grid, or its data has the wrong length.
    """
    x, y, w, h = int(update.x), int(update.y), int(update.width), int(update.height)
    if x < 0 or y < 0 or x + w > data.shape[1] or y + h > data.shape[0]:
        raise ValueError(f"update box x={x} y={y} {w}x{h} exceeds the {data.shape[1]}x"
                         f"{data.shape[0]} grid")
    if len(update.data) != w * h:
        raise ValueError(f"update data has {len(update.data)} cells, box {w}x{h}")
    out = data.copy()
    out[y:y + h, x:x + w] = np.asarray(update.data, dtype=np.int8).reshape(h, w)
    return out


class HeldGrid:
    """The grid a subscriber of ``map`` and ``map_updates`` holds, fed the messages as they
    arrive; what Nav2's StaticLayer does, plus a repair for updates that overtake their map.

    ``map`` and ``map_updates`` are separate DDS streams, so when the grid grows, the
    update published right after the new full map can arrive before it (e.g. when the larger
    map is retransmitted by the reliable protocol). An update that does not fit the held map
    waits for the next map; when a map arrives, the updates received since the previous map
    and stamped no earlier than it (the node stamps both with the newest integrated frame) are
    applied to it again, in arrival order. Re-applying an update the map already contains
    changes nothing.

    Attributes:
        msg: the grid held now (None before the first map).
    """

    #: Updates kept for re-applying to a map that arrives late.
    KEEP_UPDATES = 16

    def __init__(self) -> None:
        self.msg: OccupancyGrid | None = None
        self._cells = np.zeros((0, 0), np.int8)
        self._since_map: deque[OccupancyGridUpdate] = deque(maxlen=self.KEEP_UPDATES)

    def add(self, msg: OccupancyGrid | OccupancyGridUpdate) -> list[OccupancyGrid]:
        """Take the next message received; returns the grids held after each change it made
        (the map itself, then every update applied to it again; or the update applied; or
        nothing for an update that waits for its map or is in another frame)."""
        if isinstance(msg, OccupancyGrid):
            self.msg, self._cells = msg, grid_from_msg(msg).data
            stamp = stamp_ns(msg.header.stamp)
            overtaken = [u for u in self._since_map if stamp_ns(u.header.stamp) >= stamp]
            self._since_map = deque(overtaken, maxlen=self.KEEP_UPDATES)
            return [msg] + [g for u in overtaken for g in self._apply(u)]
        self._since_map.append(msg)
        return self._apply(msg)

    def _apply(self, update: OccupancyGridUpdate) -> list[OccupancyGrid]:
        held = self.msg
        if held is None or update.header.frame_id != held.header.frame_id:
            return []
        try:
            self._cells = apply_grid_update(self._cells, update)
        except ValueError:
            return []
        self.msg = OccupancyGrid(header=update.header, info=held.info,
                                 data=array.array("b", self._cells.tobytes()))
        return [self.msg]


def _cloud_msg(columns: np.ndarray, names: Sequence[str], frame_id: str, stamp: int
               ) -> PointCloud2:
    """An unordered, dense ``PointCloud2`` of (N, len(names)) values as float32 fields."""
    values = np.ascontiguousarray(columns, dtype="<f4").reshape(-1, len(names))
    step = 4 * len(names)
    msg = PointCloud2()
    msg.header.stamp = ns_to_time(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = 1, int(values.shape[0])
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate(names)]
    msg.is_bigendian = False
    msg.point_step = step
    msg.row_step = step * int(values.shape[0])
    msg.is_dense = True
    msg.data = values.tobytes()
    return msg


def point_cloud_msg(points: np.ndarray, frame_id: str, stamp: int) -> PointCloud2:
    """(N, 3) float points -> an unordered ``PointCloud2`` with float32 x, y, z."""
    return _cloud_msg(points, "xyz", frame_id, stamp)


def distance_slice_msg(distance_slice: DistanceSlice, frame_id: str, stamp: int
                       ) -> PointCloud2:
    """A horizontal ESDF slice as an unordered ``PointCloud2`` with float32 fields x, y, z,
    distance: one point per known (non-NaN) cell, at the cell centre (map frame, metres),
    ``z`` the slice height, ``distance`` to the nearest obstacle in metres (negative inside
    obstacles). RViz shows it with the ``Intensity`` color transformer on ``distance``."""
    known = ~np.isnan(distance_slice.distance)
    x, y = distance_slice.cell_centers()
    z = np.full(int(known.sum()), distance_slice.height_m)
    return _cloud_msg(np.stack([x[known], y[known], z, distance_slice.distance[known]], axis=1),
                      ("x", "y", "z", "distance"), frame_id, stamp)


def cloud_fields(msg: PointCloud2, names: Sequence[str]) -> np.ndarray:
    """(N, len(names)) float32 values of float32 fields of a ``PointCloud2`` (any layout)."""
    offsets = {f.name: f.offset for f in msg.fields if f.datatype == PointField.FLOAT32}
    missing = [n for n in names if n not in offsets]
    if missing:
        raise ValueError(f"PointCloud2 has no float32 field(s) {missing}")
    n = int(msg.width) * int(msg.height)
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(n, int(msg.point_step))
    order = ">f4" if msg.is_bigendian else "<f4"
    return np.stack([raw[:, offsets[a]:offsets[a] + 4].copy().view(order)[:, 0]
                     for a in names], axis=1).astype(np.float32).reshape(n, len(names))


def points_from_cloud(msg: PointCloud2) -> np.ndarray:
    """(N, 3) float32 x, y, z of a ``PointCloud2`` with float32 x/y/z fields (any layout)."""
    return cloud_fields(msg, "xyz")


# -------------------------------------------------------------------------- mesh markers


class _Cdr:
    """Little-endian CDR (XCDR1) writer; alignment counts from after the 4-byte header."""

    def __init__(self) -> None:
        self.buf = bytearray(b"\x00\x01\x00\x00")

    def align(self, n: int) -> None:
        self.buf += bytes((-(len(self.buf) - 4)) % n)

    def pack(self, fmt: str, size: int, *values: float | int) -> None:
        self.align(size)
        self.buf += struct.pack("<" + fmt, *values)

    def string(self, s: str) -> None:
        raw = s.encode() + b"\x00"
        self.pack("I", 4, len(raw))
        self.buf += raw

    def array(self, values: np.ndarray, align: int) -> None:
        """A sequence of fixed-size elements: count, then the raw little-endian values."""
        self.pack("I", 4, len(values))
        if len(values):
            self.align(align)
            self.buf += np.ascontiguousarray(values).tobytes()

    def header(self, stamp: int, frame_id: str) -> None:
        sec, nsec = divmod(int(stamp), 1_000_000_000)
        self.pack("iI", 4, sec, nsec)
        self.string(frame_id)


#: One block's marker: ``(marker id, corners (T, 3, 3) metres or None, colors (T, 3, 3)
#: uint8 or None)``; no corners (or none left) deletes the marker.
BlockTriangles = tuple[int, np.ndarray | None, np.ndarray | None]


def _marker(w: _Cdr, frame_id: str, stamp: int, ns: str, marker_id: int, action: int,
            corners: np.ndarray | None, colors: np.ndarray | None) -> None:
    """Append one ``visualization_msgs/Marker`` (TRIANGLE_LIST, identity pose, unit scale)."""
    w.header(stamp, frame_id)
    w.string(ns)
    w.pack("iii", 4, int(marker_id), _TRIANGLE_LIST, action)
    w.pack("7d", 8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # pose: position, orientation xyzw
    w.pack("3d", 8, 1.0, 1.0, 1.0)  # scale
    w.pack("4f", 4, 0.8, 0.8, 0.8, 1.0)  # color (used when there are no vertex colors)
    w.pack("iI", 4, 0, 0)  # lifetime 0 = forever
    w.buf += b"\x00"  # frame_locked
    points = np.zeros((0, 3)) if corners is None else corners.reshape(-1, 3)
    w.array(points.astype("<f8"), 8)
    rgba = np.zeros((0, 4), "<f4")
    if colors is not None and len(points):
        rgba = np.ones((len(points), 4), dtype="<f4")
        rgba[:, :3] = colors.reshape(-1, 3).astype(np.float32) / 255.0
    w.array(rgba, 4)
    w.string("")  # texture_resource
    w.header(0, "")  # texture: sensor_msgs/CompressedImage
    w.string("")
    w.array(np.zeros(0, np.uint8), 1)
    w.array(np.zeros((0, 2), "<f4"), 4)  # uv_coordinates
    w.string("")  # text
    w.string("")  # mesh_resource
    w.string("")  # mesh_file.filename
    w.array(np.zeros(0, np.uint8), 1)  # mesh_file.data
    w.buf += b"\x00"  # mesh_use_embedded_materials


def mesh_marker_array_cdr(frame_id: str, stamp: int, ns: str,
                          blocks: Sequence[BlockTriangles],
                          delete_all_first: bool = False) -> bytes:
    """A serialised ``visualization_msgs/MarkerArray`` of per-block mesh markers.

    Args:
        frame_id, stamp: header of every marker (the triangles are in this frame).
        ns: marker namespace.
        blocks: ``(marker id, corners, colors)``: triangles become an ADD of a TRIANGLE_LIST
            (with per-vertex colors if given), no triangles a DELETE of that id.
        delete_all_first: start with a DELETEALL marker (clears every marker of the
            display before the others are added).

    Returns:
        CDR bytes (with the encapsulation header) for ``Publisher.publish``.
    """
    w = _Cdr()
    w.pack("I", 4, len(blocks) + int(delete_all_first))
    if delete_all_first:
        _marker(w, frame_id, stamp, ns, 0, MARKER_DELETEALL, None, None)
    for marker_id, corners, colors in blocks:
        empty = corners is None or len(corners) == 0
        _marker(w, frame_id, stamp, ns, marker_id, MARKER_DELETE if empty else MARKER_ADD,
                None if empty else corners, None if empty else colors)
    return bytes(w.buf)


# ------------------------------------------------------------------------ mesh (own message)

#: One block of a ``recon_ros_interfaces/Mesh``: ``(index (3,) int block coordinates,
#: vertices (V, 3) metres map frame, triangles (T, 3) indices into those vertices, colors
#: (V, 3) uint8 or None)``; no vertices: the block's surface is gone.
IndexedBlock = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]


def mesh_msg(frame_id: str, stamp: int, block_size_m: float, blocks: Sequence[IndexedBlock],
             clear: bool = False) -> Mesh:
    """A ``recon_ros_interfaces/Mesh`` of per-block indexed meshes.

    The arrays go into the message as ``array.array`` made from their bytes (the generated
    setters take those without checking each element), so a 100k-triangle mesh costs
    milliseconds, not the seconds of Python lists.

    Args:
        frame_id, stamp: header (the map frame; stamp in integer nanoseconds).
        block_size_m: edge length of a block, metres.
        blocks: the changed blocks (see :data:`IndexedBlock`); colors are left out of a block
            whose ``colors`` is None.
        clear: receivers forget every block held so far before applying ``blocks``.
    """
    msg = Mesh()
    msg.header.stamp = ns_to_time(stamp)
    msg.header.frame_id = frame_id
    msg.block_size_m = float(block_size_m)
    msg.clear = bool(clear)
    out = []
    for index, vertices, triangles, colors in blocks:
        block = MeshBlock()
        block.index = np.asarray(index, dtype=np.int32).reshape(3)
        block.vertices = array.array("f", np.asarray(vertices, dtype=np.float32).tobytes())
        block.triangles = array.array("I", np.asarray(triangles, dtype=np.uint32).tobytes())
        if colors is not None:
            block.colors = array.array("B", np.asarray(colors, dtype=np.uint8).tobytes())
        out.append(block)
    msg.blocks = out
    return msg
