"""A tf2-like transform buffer in pure numpy (no rclpy, no ``*_msgs``).

The buffer stores a forest of coordinate frames. Every frame has at most one parent; the edge
``parent -> child`` carries the pose of ``child`` in ``parent`` (``T_parent_child``), either

- **static**: one value valid at every time (``/tf_static``), or
- **dynamic**: a time series of samples (``/tf``), interpolated between samples (linear
  translation, shortest-arc quaternion slerp) and never extrapolated.

Conventions:

- Stamps are integer nanoseconds (``header.stamp.sec * 10**9 + header.stamp.nanosec``).
- Translations are metres, shape (3,). Quaternions are ROS order **(x, y, z, w)**, shape (4,),
  and are normalised on insertion. (transforms3d uses (w, x, y, z); the conversion happens only
  inside this module.)
- :meth:`TfBuffer.lookup` returns ``T_target_source``: a (4, 4) float64 homogeneous matrix that
  maps a point expressed in ``source`` into ``target`` (same as tf2's
  ``lookupTransform(target, source, time)``).
- A lookup stamp of ``0`` means "the latest time at which every dynamic edge on the path has
  data" (tf2's ``getLatestCommonTime``); a path made only of static edges is valid at any time.

Errors are typed: :class:`UnknownFrameError`, :class:`ConnectivityError` and
:class:`ExtrapolationError` (all :class:`TfLookupError`) for lookups, :class:`TfDataError` for
invalid or conflicting input to :meth:`TfBuffer.set_transform`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
from transforms3d.quaternions import quat2mat

from recon_ros.core.errors import ReconError

__all__ = [
    "STATIC_TIME_RANGE",
    "ConnectivityError",
    "ExtrapolationError",
    "TfBuffer",
    "TfDataError",
    "TfLookupError",
    "UnknownFrameError",
    "format_stamp",
    "quaternion_xyzw_to_matrix",
    "slerp_xyzw",
    "transform_from_xyzw",
    "invert_transform",
]

#: What :meth:`TfBuffer.time_range` returns for a static edge: valid at every time.
STATIC_TIME_RANGE: tuple[int, int] = (0, 2**63 - 1)

_MAX_FRAMES_IN_MESSAGE = 60


# ----------------------------------------------------------------------------------- errors


class TfLookupError(ReconError):
    """A transform could not be looked up. ``reason`` is a short, stamp-free summary that is
    stable across frames (suitable as a drop-counter key); ``str(err)`` is the full message."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason: str = reason if reason is not None else message


class UnknownFrameError(TfLookupError, KeyError):
    """A frame name is not in the buffer. The message lists the known frames."""

    def __init__(self, frame: str, role: str, known: list[str]) -> None:
        shown = known[:_MAX_FRAMES_IN_MESSAGE]
        more = f" ... and {len(known) - len(shown)} more" if len(known) > len(shown) else ""
        listing = ", ".join(shown) if shown else "(buffer is empty)"
        message = (
            f"frame '{frame}' ({role}) does not exist in the TF tree; "
            f"known frames: [{listing}{more}]"
        )
        super().__init__(message, reason=f"frame '{frame}' does not exist")
        self.frame = frame
        self.known = known

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class ConnectivityError(TfLookupError):
    """Source and target frames are in different (unconnected) trees."""

    def __init__(self, target: str, source: str, target_root: str, source_root: str) -> None:
        message = (
            f"cannot transform from frame '{source}' to frame '{target}': they are not part of "
            f"the same tree ('{source}' has root '{source_root}', '{target}' has root "
            f"'{target_root}'); TF has two or more unconnected trees"
        )
        super().__init__(message, reason=f"'{source}' and '{target}' are not connected")
        self.target = target
        self.source = source
        self.target_root = target_root
        self.source_root = source_root


class ExtrapolationError(TfLookupError):
    """A dynamic edge on the path has no data around the requested stamp.

    Attributes:
        parent, child: the edge that failed (``parent -> child``).
        stamp_ns: the requested stamp.
        earliest_ns, latest_ns: the edge's available range.
        direction: ``"past"`` (stamp before the earliest sample) or ``"future"``.
    """

    def __init__(
        self,
        parent: str,
        child: str,
        stamp_ns: int,
        earliest_ns: int,
        latest_ns: int,
        target: str,
        source: str,
    ) -> None:
        direction = "past" if stamp_ns < earliest_ns else "future"
        if earliest_ns == latest_ns:
            detail = (
                f"Lookup would require extrapolation into the {direction} at time "
                f"{format_stamp(stamp_ns)}, but only time {format_stamp(earliest_ns)} is in "
                f"the buffer"
            )
        elif direction == "past":
            detail = (
                f"Lookup would require extrapolation into the past. Requested time "
                f"{format_stamp(stamp_ns)} but the earliest data is at time "
                f"{format_stamp(earliest_ns)} (available range {format_stamp(earliest_ns)} .. "
                f"{format_stamp(latest_ns)}, {format_stamp(earliest_ns - stamp_ns)} too early)"
            )
        else:
            detail = (
                f"Lookup would require extrapolation into the future. Requested time "
                f"{format_stamp(stamp_ns)} but the latest data is at time "
                f"{format_stamp(latest_ns)} (available range {format_stamp(earliest_ns)} .. "
                f"{format_stamp(latest_ns)}, {format_stamp(stamp_ns - latest_ns)} too late)"
            )
        message = (
            f"{detail}, on edge '{parent}' -> '{child}', when looking up transform from frame "
            f"[{source}] to frame [{target}]"
        )
        super().__init__(
            message, reason=f"extrapolation into the {direction} on edge '{parent}' -> '{child}'"
        )
        self.parent = parent
        self.child = child
        self.stamp_ns = stamp_ns
        self.earliest_ns = earliest_ns
        self.latest_ns = latest_ns
        self.direction = direction


class TfDataError(ReconError, ValueError):
    """A transform handed to :meth:`TfBuffer.set_transform` is invalid or conflicts with the
    tree (re-parenting, a cycle, mixing static and dynamic data on one edge, non-finite values,
    a zero quaternion, a negative stamp). ``reason`` is a short summary without numbers."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason: str = reason if reason is not None else message


# ------------------------------------------------------------------------------- math helpers


def format_stamp(stamp_ns: int) -> str:
    """``1234567890123`` -> ``'1234.567890123 s'`` (exact, no float rounding)."""
    sign = "-" if stamp_ns < 0 else ""
    sec, nsec = divmod(abs(int(stamp_ns)), 1_000_000_000)
    return f"{sign}{sec}.{nsec:09d} s"


def quaternion_xyzw_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion in ROS order (x, y, z, w) -> (3, 3) float64 rotation matrix."""
    x, y, z, w = (float(v) for v in q_xyzw)
    return np.asarray(quat2mat([w, x, y, z]), dtype=np.float64)


def transform_from_xyzw(translation: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """Translation (3,) metres + quaternion (4,) xyzw -> (4, 4) float64 homogeneous matrix."""
    T = np.eye(4)
    T[:3, :3] = quaternion_xyzw_to_matrix(q_xyzw)
    T[:3, 3] = translation
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform, computed as ``[R^T | -R^T t]``."""
    R = T[:3, :3]
    inv = np.eye(4)
    inv[:3, :3] = R.T
    inv[:3, 3] = -R.T @ T[:3, 3]
    return inv


def slerp_xyzw(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Shortest-arc spherical linear interpolation of unit quaternions (any component order).

    ``t = 0`` gives ``q0``, ``t = 1`` gives ``q1`` (or ``-q1``, the same rotation); the rotation
    angle grows linearly with ``t``. Antipodal representations are handled by flipping ``q1``
    so that the interpolation follows the short arc. The angle is computed with ``atan2`` so
    that nearly equal quaternions stay accurate.

    Args:
        q0, q1: (4,) unit quaternions.
        t: interpolation parameter in [0, 1].

    Returns:
        (4,) float64 unit quaternion.
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    d = float(np.dot(q0, q1))
    if d < 0.0:
        q1 = -q1
        d = -d
    ortho = q1 - d * q0
    s = float(np.linalg.norm(ortho))  # sin(theta), theta = half the rotation angle between them
    if s < 1e-12:
        return q0.copy()
    theta = float(np.arctan2(s, d))
    out = (np.sin((1.0 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)
    return np.asarray(out / np.linalg.norm(out), dtype=np.float64)


# -------------------------------------------------------------------------------- the buffer


@dataclass
class _StaticEdge:
    parent: str
    stamp_ns: int
    translation: np.ndarray
    quaternion: np.ndarray
    matrix: np.ndarray


@dataclass
class _DynamicEdge:
    parent: str
    stamps: list[int] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)


class TfBuffer:
    """A tf2-like buffer of static and dynamic transforms (pure numpy).

    Args:
        cache_time_s: how much history each dynamic edge keeps, seconds. ``None`` keeps
            everything (offline replay). Otherwise, samples older than the edge's newest sample
            minus ``cache_time_s`` are dropped, and inserts older than that are refused.

    Example::

        buf = TfBuffer()
        buf.set_transform("map", "odom", 0, [0, 0, 0], [0, 0, 0, 1], static=True)
        buf.set_transform("odom", "base_link", 10**9, [1, 0, 0], [0, 0, 0, 1])
        T_map_base = buf.lookup("map", "base_link", 10**9)   # (4, 4), maps base_link -> map
    """

    def __init__(self, cache_time_s: float | None = None) -> None:
        if cache_time_s is not None and not (cache_time_s > 0 and np.isfinite(cache_time_s)):
            raise TfDataError(f"cache_time_s must be a positive number or None, got {cache_time_s}")
        self._cache_ns: int | None = None if cache_time_s is None else int(cache_time_s * 1e9)
        self._static: dict[str, _StaticEdge] = {}
        self._dynamic: dict[str, _DynamicEdge] = {}
        self._frames: set[str] = set()

    # ------------------------------------------------------------------------------ insert

    def set_transform(
        self,
        parent: str,
        child: str,
        stamp_ns: int,
        translation: np.ndarray | list[float] | tuple[float, ...],
        quaternion_xyzw: np.ndarray | list[float] | tuple[float, ...],
        static: bool = False,
    ) -> bool:
        """Insert the pose of ``child`` in ``parent`` (``T_parent_child``) at ``stamp_ns``.

        Args:
            parent: parent frame id (leading ``/`` is stripped, as tf2 does).
            child: child frame id.
            stamp_ns: sample time, integer nanoseconds (>= 0). Ignored for validity of static
                edges (they hold at every time) but recorded.
            translation: (3,) metres, child origin in parent.
            quaternion_xyzw: (4,) rotation of child in parent, ROS order (x, y, z, w);
                normalised here.
            static: True for ``/tf_static`` data. A static edge is replaced by a newer static
                value; a dynamic sample with an existing stamp replaces that sample.

        Returns:
            True if stored; False if refused because it is older than the cache window.

        Raises:
            TfDataError: empty/equal frame names, a child that already has another parent
                (re-parenting), a cycle, mixing static and dynamic data for one child,
                non-finite values, a zero quaternion or a negative stamp.
        """
        parent = _clean(parent)
        child = _clean(child)
        if not parent or not child:
            raise TfDataError(f"frame ids must be non-empty, got parent={parent!r} child={child!r}")
        if parent == child:
            raise TfDataError(f"frame '{child}' cannot be its own parent")
        stamp_ns = int(stamp_ns)
        if stamp_ns < 0:
            raise TfDataError(
                f"stamp must be >= 0 ns, got {stamp_ns} for '{parent}' -> '{child}'",
                reason=f"negative stamp on '{parent}' -> '{child}'",
            )
        t = np.asarray(translation, dtype=np.float64).reshape(-1)
        q = np.asarray(quaternion_xyzw, dtype=np.float64).reshape(-1)
        if t.shape != (3,) or not np.all(np.isfinite(t)):
            raise TfDataError(
                f"translation of '{parent}' -> '{child}' must be 3 finite numbers, got {t}",
                reason=f"invalid translation on '{parent}' -> '{child}'",
            )
        if q.shape != (4,) or not np.all(np.isfinite(q)):
            raise TfDataError(
                f"quaternion (x, y, z, w) of '{parent}' -> '{child}' must be 4 finite numbers, "
                f"got {q}",
                reason=f"invalid quaternion on '{parent}' -> '{child}'",
            )
        norm = float(np.linalg.norm(q))
        if norm < 1e-9:
            raise TfDataError(
                f"quaternion of '{parent}' -> '{child}' is zero",
                reason=f"invalid quaternion on '{parent}' -> '{child}'",
            )
        q = q / norm

        existing_parent = self.parent(child)
        if existing_parent is None:
            # A new edge: make sure it does not close a loop (child must not be above parent).
            node: str | None = parent
            while node is not None:
                if node == child:
                    raise TfDataError(
                        f"adding '{parent}' -> '{child}' would create a cycle: '{child}' is "
                        f"already an ancestor of '{parent}'"
                    )
                node = self.parent(node)
        elif existing_parent != parent:
            raise TfDataError(
                f"re-parenting is not supported: frame '{child}' already has parent "
                f"'{existing_parent}', cannot set parent '{parent}'"
            )
        if static and child in self._dynamic:
            raise TfDataError(
                f"frame '{child}' already has dynamic (/tf) data; refusing a static (/tf_static) "
                f"transform '{parent}' -> '{child}'"
            )
        if not static and child in self._static:
            raise TfDataError(
                f"frame '{child}' already has a static (/tf_static) transform; refusing dynamic "
                f"(/tf) data '{parent}' -> '{child}'"
            )

        self._frames.add(parent)
        self._frames.add(child)
        if static:
            self._static[child] = _StaticEdge(parent, stamp_ns, t, q, transform_from_xyzw(t, q))
            return True

        edge = self._dynamic.get(child)
        if edge is None:
            edge = self._dynamic[child] = _DynamicEdge(parent)
        cache = self._cache_ns
        if cache is not None and edge.stamps and stamp_ns < edge.stamps[-1] - cache:
            return False
        i = bisect.bisect_left(edge.stamps, stamp_ns)
        if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:
            edge.translations[i] = t
            edge.quaternions[i] = q
        else:
            edge.stamps.insert(i, stamp_ns)
            edge.translations.insert(i, t)
            edge.quaternions.insert(i, q)
        if self._cache_ns is not None:
            cutoff = edge.stamps[-1] - self._cache_ns
            n_old = bisect.bisect_left(edge.stamps, cutoff)
            if n_old:
                del edge.stamps[:n_old], edge.translations[:n_old], edge.quaternions[:n_old]
        return True

    def clear(self, keep_static: bool = False) -> None:
        """Forget every frame and transform; with ``keep_static`` only the dynamic ones (what
        tf2 does when time jumps back, e.g. a bag restarting)."""
        self._dynamic.clear()
        if keep_static:
            self._frames = {f for child, edge in self._static.items() for f in (child, edge.parent)}
            return
        self._static.clear()
        self._frames.clear()

    # ------------------------------------------------------------------------------ queries

    def frames(self) -> list[str]:
        """Sorted names of every frame seen as a parent or a child."""
        return sorted(self._frames)

    def has_frame(self, frame: str) -> bool:
        """True if ``frame`` is known (as a parent or a child)."""
        return _clean(frame) in self._frames

    def parent(self, child: str) -> str | None:
        """Parent of ``child``, or None for a root or an unknown frame."""
        child = _clean(child)
        if child in self._static:
            return self._static[child].parent
        if child in self._dynamic:
            return self._dynamic[child].parent
        return None

    def is_static(self, child: str) -> bool:
        """True if the edge ``parent(child) -> child`` is static."""
        return _clean(child) in self._static

    def edges(self) -> list[tuple[str, str, bool]]:
        """Every edge as ``(parent, child, is_static)``, sorted by child."""
        out = [(e.parent, c, True) for c, e in self._static.items()]
        out += [(e.parent, c, False) for c, e in self._dynamic.items()]
        return sorted(out, key=lambda x: x[1])

    def time_range(self, child: str) -> tuple[int, int]:
        """``(earliest_ns, latest_ns)`` of the samples of the edge ``parent(child) -> child``.

        A static edge returns :data:`STATIC_TIME_RANGE` (valid at every time).

        Raises:
            UnknownFrameError: ``child`` is unknown.
            TfLookupError: ``child`` is a root (it has no parent edge).
        """
        child = _clean(child)
        if child in self._static:
            return STATIC_TIME_RANGE
        edge = self._dynamic.get(child)
        if edge is not None:
            return edge.stamps[0], edge.stamps[-1]
        if child in self._frames:
            raise TfLookupError(f"frame '{child}' is a root: it has no parent edge")
        raise UnknownFrameError(child, "time_range argument", self.frames())

    def num_samples(self, child: str) -> int:
        """Number of stored samples of the edge into ``child`` (1 for static, 0 if none)."""
        child = _clean(child)
        if child in self._static:
            return 1
        edge = self._dynamic.get(child)
        return len(edge.stamps) if edge is not None else 0

    def can_transform(self, target: str, source: str, stamp_ns: int = 0) -> bool:
        """True if :meth:`lookup` with the same arguments would succeed."""
        try:
            self.lookup(target, source, stamp_ns)
        except TfLookupError:
            return False
        return True

    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> np.ndarray:
        """``T_target_source`` at ``stamp_ns``: (4, 4) float64, maps points from ``source`` to
        ``target``.

        The path goes up from ``source`` to the closest common ancestor, then down to
        ``target``. Dynamic edges are interpolated (translation linearly, rotation by
        shortest-arc slerp); an exact stamp hit returns the stored sample; static edges hold at
        any time. ``stamp_ns == 0`` looks up at the latest common time of the dynamic edges on
        the path (any time if all are static). Equal ``target`` and ``source`` give identity
        without checking that the frame exists (as tf2 does).

        Raises:
            UnknownFrameError: ``target`` or ``source`` is unknown (message lists known frames).
            ConnectivityError: they are in different trees.
            ExtrapolationError: a dynamic edge has no data bracketing ``stamp_ns``.
            TfLookupError: negative stamp.
        """
        target = _clean(target)
        source = _clean(source)
        stamp_ns = int(stamp_ns)
        if stamp_ns < 0:
            raise TfLookupError(f"lookup stamp must be >= 0 ns, got {stamp_ns}")
        if target == source:
            return np.eye(4)
        up_children, down_children = self._path(target, source)
        if stamp_ns == 0:
            stamp_ns = self._latest_common(up_children, down_children)

        T_common_source = np.eye(4)
        for c in reversed(up_children):  # from the common ancestor downwards
            T_common_source = T_common_source @ self._edge(c, stamp_ns, target, source)
        T_common_target = np.eye(4)
        for c in reversed(down_children):
            T_common_target = T_common_target @ self._edge(c, stamp_ns, target, source)
        return invert_transform(T_common_target) @ T_common_source

    def latest_common_time(self, target: str, source: str) -> int:
        """The stamp that ``lookup(target, source, 0)`` uses: the minimum over the dynamic
        edges on the path of their newest sample, nanoseconds; 0 if the path is all static.

        Raises:
            UnknownFrameError, ConnectivityError: as :meth:`lookup`.
        """
        target = _clean(target)
        source = _clean(source)
        if target == source:
            return 0
        return self._latest_common(*self._path(target, source))

    # ----------------------------------------------------------------------------- internal

    def _path(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Children of the edges from ``source`` up to the common ancestor, and of the edges
        from ``target`` up to it."""
        if target not in self._frames:
            raise UnknownFrameError(target, "lookup target frame", self.frames())
        if source not in self._frames:
            raise UnknownFrameError(source, "lookup source frame", self.frames())
        up = self._chain(source)  # source, parent(source), ..., root
        down = self._chain(target)
        down_index = {f: i for i, f in enumerate(down)}
        common_i = next((i for i, f in enumerate(up) if f in down_index), None)
        if common_i is None:
            raise ConnectivityError(target, source, down[-1], up[-1])
        return up[:common_i], down[: down_index[up[common_i]]]

    def _latest_common(self, up_children: list[str], down_children: list[str]) -> int:
        latest = [
            self._dynamic[c].stamps[-1]
            for c in (*up_children, *down_children)
            if c in self._dynamic
        ]
        return min(latest) if latest else 0


    def _chain(self, frame: str) -> list[str]:
        """[frame, parent, grandparent, ..., root]."""
        out = [frame]
        node = self.parent(frame)
        while node is not None:
            out.append(node)
            node = self.parent(node)
        return out

    def _edge(self, child: str, stamp_ns: int, target: str, source: str) -> np.ndarray:
        """``T_parent_child`` at ``stamp_ns`` (0 = any time: only reached when all-static or
        the latest common time is 0)."""
        st = self._static.get(child)
        if st is not None:
            return st.matrix
        edge = self._dynamic[child]
        stamps = edge.stamps
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return transform_from_xyzw(edge.translations[i], edge.quaternions[i])
        if i == 0 or i == len(stamps):
            raise ExtrapolationError(
                edge.parent, child, stamp_ns, stamps[0], stamps[-1], target, source
            )
        t0, t1 = stamps[i - 1], stamps[i]
        ratio = (stamp_ns - t0) / (t1 - t0)
        trans = (1.0 - ratio) * edge.translations[i - 1] + ratio * edge.translations[i]
        quat = slerp_xyzw(edge.quaternions[i - 1], edge.quaternions[i], ratio)
        return transform_from_xyzw(trans, quat)


def _clean(frame: str) -> str:
    """tf2 strips one leading slash from frame ids (``/map`` == ``map``)."""
    frame = str(frame)
    return frame[1:] if frame.startswith("/") else frame
