"""Camera trajectories built from planar robot poses and a REP-105 TF tree.

Every pose is produced by the chain

    map -> odom -> base_link -> camera_link -> camera_depth_optical_frame

and the rendering pose ``T_world_cam`` (world == map) *is* that composition, so a consumer
that looks the chain up in TF recovers exactly the pose the images were rendered from.

- ``map -> odom``: a fixed offset (default translation (0.5, -0.2, 0), yaw 10 deg), published
  on ``/tf`` at every stamp (as a localiser would).
- ``odom -> base_link``: the robot's planar pose (x, y, yaw), dynamic.
- ``base_link -> camera_link``: the mount, translation ``mount_xyz_m`` then a pitch about the
  body y axis (positive = looking down, REP-103). Static when the pitch is constant over the
  trajectory; otherwise published on ``/tf`` per frame (a tilt head).
- ``camera_link -> camera_depth_optical_frame``: the standard body-to-optical rotation,
  quaternion xyzw ``(-0.5, 0.5, -0.5, 0.5)``, static.

TF tuples are ``(parent, child, stamp_ns, translation (3,), quaternion_xyzw (4,))``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ...core.errors import ConfigError

if TYPE_CHECKING:
    from .scene import Scene
    from .shapes import Room

TfTuple = tuple[str, str, int, np.ndarray, np.ndarray]

#: camera_link (x forward, y left, z up) -> optical (x right, y down, z forward), xyzw.
Q_LINK_OPTICAL_XYZW = np.array([-0.5, 0.5, -0.5, 0.5])
#: A realistic default start time (2023-11-14T22:13:20Z) so no stamp is 0 ("latest" in tf2).
DEFAULT_START_NS = 1_700_000_000_000_000_000


# ----------------------------------------------------------------------------- rotations
def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> (3, 3) rotation matrix."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> unit quaternion (x, y, z, w) with w >= 0 (Shepperd)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s,
                      (R[1, 0] - R[0, 1]) / s, 0.25 * s])
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = np.array([0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s,
                      (R[2, 1] - R[1, 2]) / s])
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = np.array([(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s,
                      (R[0, 2] - R[2, 0]) / s])
    else:
        s = 2.0 * math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = np.array([(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s,
                      (R[1, 0] - R[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def make_T(R: np.ndarray, t: Sequence[float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def T_from_tf(t: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """(3,) translation + (4,) quaternion xyzw -> (4, 4) ``T_parent_child``."""
    return make_T(quat_xyzw_to_matrix(q_xyzw), t)


def T_inv(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def compose_tf_chain(transforms: Sequence[TfTuple], target: str, source: str) -> np.ndarray:
    """Compose TF tuples along the unique parent->child path ``target -> ... -> source``.

    Returns ``T_target_source`` (4, 4). Only walks downwards (target must be an ancestor).
    """
    by_child = {child: (parent, t, q) for parent, child, _, t, q in transforms}
    T = np.eye(4)
    frame = source
    while frame != target:
        if frame not in by_child:
            raise ConfigError(f"no TF path from {target!r} to {source!r} (stuck at {frame!r})")
        parent, t, q = by_child[frame]
        T = T_from_tf(t, q) @ T
        frame = parent
    return T


# ----------------------------------------------------------------------------- rig
@dataclass(frozen=True)
class CameraRig:
    """Frame names and static offsets of the robot's TF tree.

    Attributes:
        map_frame, odom_frame, base_frame, camera_link_frame, optical_frame: frame ids.
        map_odom_xyz_m, map_odom_yaw_rad: the fixed ``T_map_odom``.
        mount_xyz_m: camera_link origin in base_link (x forward, z up), metres.
    """

    map_frame: str = "map"
    odom_frame: str = "odom"
    base_frame: str = "base_link"
    camera_link_frame: str = "camera_link"
    optical_frame: str = "camera_depth_optical_frame"
    map_odom_xyz_m: tuple[float, float, float] = (0.5, -0.2, 0.0)
    map_odom_yaw_rad: float = math.radians(10.0)
    mount_xyz_m: tuple[float, float, float] = (0.1, 0.0, 1.2)

    def __post_init__(self) -> None:
        names = [self.map_frame, self.odom_frame, self.base_frame, self.camera_link_frame,
                 self.optical_frame]
        if len(set(names)) != 5 or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"CameraRig frame ids must be 5 distinct non-empty strings: {names}")
        for name in ("map_odom_xyz_m", "mount_xyz_m"):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.shape != (3,) or not np.all(np.isfinite(v)):
                raise ConfigError(f"CameraRig.{name} must be 3 finite numbers")
            object.__setattr__(self, name, tuple(float(x) for x in v))
        if not math.isfinite(self.map_odom_yaw_rad):
            raise ConfigError("CameraRig.map_odom_yaw_rad must be finite")

    @property
    def T_map_odom(self) -> np.ndarray:
        return make_T(rot_z(self.map_odom_yaw_rad), self.map_odom_xyz_m)

    def T_base_link(self, pitch_rad: float) -> np.ndarray:
        return make_T(rot_y(pitch_rad), self.mount_xyz_m)

    @property
    def T_link_optical(self) -> np.ndarray:
        return make_T(quat_xyzw_to_matrix(Q_LINK_OPTICAL_XYZW), (0.0, 0.0, 0.0))


def _tf(parent: str, child: str, stamp_ns: int, T: np.ndarray) -> TfTuple:
    return (parent, child, int(stamp_ns), T[:3, 3].copy(), matrix_to_quat_xyzw(T[:3, :3]))


@dataclass
class Trajectory:
    """A timed sequence of robot poses and the camera poses they imply.

    Attributes:
        base_xy_yaw: (N, 3) robot base pose in the map frame: x, y metres, yaw radians.
        pitch_rad: (N,) camera pitch about camera_link's y axis (positive looks down).
        stamps_ns: (N,) int64 acquisition times, nanoseconds.
        rig: frame names and static offsets.
    """

    base_xy_yaw: np.ndarray
    pitch_rad: np.ndarray
    stamps_ns: np.ndarray
    rig: CameraRig = field(default_factory=CameraRig)

    def __post_init__(self) -> None:
        self.base_xy_yaw = np.asarray(self.base_xy_yaw, dtype=np.float64).reshape(-1, 3)
        n = len(self.base_xy_yaw)
        self.pitch_rad = np.broadcast_to(np.asarray(self.pitch_rad, dtype=np.float64),
                                         (n,)).copy()
        self.stamps_ns = np.asarray(self.stamps_ns, dtype=np.int64).reshape(-1)
        if self.stamps_ns.shape != (n,):
            raise ConfigError(f"stamps_ns must have {n} entries, got {self.stamps_ns.shape}")
        if not (np.all(np.isfinite(self.base_xy_yaw)) and np.all(np.isfinite(self.pitch_rad))):
            raise ConfigError("trajectory poses must be finite")
        if n > 1 and np.any(np.diff(self.stamps_ns) <= 0):
            raise ConfigError("trajectory stamps must be strictly increasing")

    @classmethod
    def from_base_poses(cls, base_xy_yaw: np.ndarray, pitch_rad: float | np.ndarray = 0.0,
                        rate_hz: float = 10.0, start_ns: int = DEFAULT_START_NS,
                        rig: CameraRig | None = None) -> "Trajectory":
        n = len(np.asarray(base_xy_yaw).reshape(-1, 3))
        return cls(base_xy_yaw, pitch_rad, _stamps(n, rate_hz, start_ns), rig or CameraRig())

    def __len__(self) -> int:
        return len(self.base_xy_yaw)

    def retimed(self, rate_hz: float, start_ns: int | None = None) -> "Trajectory":
        """Same poses at ``rate_hz`` starting at ``start_ns`` (default: the current start)."""
        if start_ns is None:
            start_ns = int(self.stamps_ns[0]) if len(self) else DEFAULT_START_NS
        return dataclasses.replace(self, stamps_ns=_stamps(len(self), rate_hz, start_ns))

    @property
    def static_mount(self) -> bool:
        """True when base_link -> camera_link is constant (published on /tf_static)."""
        return len(self) == 0 or bool(np.all(self.pitch_rad == self.pitch_rad[0]))

    def T_map_base(self, i: int) -> np.ndarray:
        x, y, yaw = self.base_xy_yaw[i]
        return make_T(rot_z(yaw), (x, y, 0.0))

    def T_odom_base(self, i: int) -> np.ndarray:
        return T_inv(self.rig.T_map_odom) @ self.T_map_base(i)

    def chain(self, i: int) -> list[TfTuple]:
        """All four transforms of frame ``i`` (dynamic and static), stamped ``stamps_ns[i]``."""
        r, s = self.rig, int(self.stamps_ns[i])
        return [
            _tf(r.map_frame, r.odom_frame, s, r.T_map_odom),
            _tf(r.odom_frame, r.base_frame, s, self.T_odom_base(i)),
            _tf(r.base_frame, r.camera_link_frame, s, r.T_base_link(self.pitch_rad[i])),
            _tf(r.camera_link_frame, r.optical_frame, s, r.T_link_optical),
        ]

    def T_world_cam(self, i: int) -> np.ndarray:
        """(4, 4) pose of the optical frame in map == world: the composed TF chain."""
        r = self.rig
        return compose_tf_chain(self.chain(i), r.map_frame, r.optical_frame)

    @property
    def poses(self) -> np.ndarray:
        """(N, 4, 4) ``T_world_cam`` of every frame."""
        return np.stack([self.T_world_cam(i) for i in range(len(self))]) if len(self) else \
            np.zeros((0, 4, 4))

    @property
    def camera_positions(self) -> np.ndarray:
        """(N, 3) optical centres in the world frame."""
        return self.poses[:, :3, 3]

    def tf_dynamic(self, i: int) -> list[TfTuple]:
        """Transforms of frame ``i`` for ``/tf``: map->odom, odom->base_link, and
        base_link->camera_link when the mount is not static."""
        chain = self.chain(i)
        return chain[:3] if not self.static_mount else chain[:2]

    def tf_dynamic_at(self, position: float, stamp_ns: int) -> list[TfTuple]:
        """:meth:`tf_dynamic` between frames, e.g. for TF published faster than the images:
        the pose at fractional frame index ``position`` (looping over the frames), linear in
        x, y, yaw (the short way round) and pitch between the two frames around it, stamped
        ``stamp_ns``."""
        n = len(self)
        i0 = int(np.floor(position))
        a = position - i0
        p0, p1 = self.base_xy_yaw[i0 % n], self.base_xy_yaw[(i0 + 1) % n]
        step = p1 - p0
        step[2] = (step[2] + np.pi) % (2 * np.pi) - np.pi
        pitch0, pitch1 = self.pitch_rad[i0 % n], self.pitch_rad[(i0 + 1) % n]
        pose = dataclasses.replace(self, base_xy_yaw=(p0 + a * step)[None],
                                   pitch_rad=np.array([pitch0 + a * (pitch1 - pitch0)]),
                                   stamps_ns=np.array([stamp_ns], dtype=np.int64))
        chain = pose.chain(0)
        return chain[:3] if not self.static_mount else chain[:2]

    def tf_static(self) -> list[TfTuple]:
        """Transforms for ``/tf_static`` (stamped at the first frame)."""
        if not len(self):
            return []
        chain = self.chain(0)
        return [chain[3]] if not self.static_mount else chain[2:]

    def tf_per_frame(self) -> list[list[TfTuple]]:
        """``[tf_dynamic(i) for every frame]``."""
        return [self.tf_dynamic(i) for i in range(len(self))]

    def tf_messages(self) -> tuple[list[TfTuple], list[list[TfTuple]]]:
        """``(tf_static(), tf_per_frame())``: what to publish on /tf_static once and on /tf
        at every frame."""
        return self.tf_static(), self.tf_per_frame()


def _stamps(n: int, rate_hz: float, start_ns: int) -> np.ndarray:
    if not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ConfigError(f"rate_hz must be > 0, got {rate_hz}")
    period = 1e9 / rate_hz
    return int(start_ns) + np.round(np.arange(n) * period).astype(np.int64)


def _base_from_camera(cam_xy: np.ndarray, yaw: np.ndarray, rig: CameraRig) -> np.ndarray:
    """Robot base (x, y, yaw) that puts camera_link's origin at ``cam_xy`` with heading yaw."""
    mx, my, _ = rig.mount_xyz_m
    c, s = np.cos(yaw), np.sin(yaw)
    bx = cam_xy[:, 0] - (c * mx - s * my)
    by = cam_xy[:, 1] - (s * mx + c * my)
    return np.stack((bx, by, yaw), axis=1)


# ----------------------------------------------------------------------------- generators
def orbit_trajectory(center: Sequence[float], radius: float, height: float, n: int,
                     look_at: Sequence[float] | None = None, *, arc_rad: float = 2 * math.pi,
                     start_angle_rad: float = 0.0, rate_hz: float = 10.0,
                     start_ns: int = DEFAULT_START_NS, rig: CameraRig | None = None
                     ) -> Trajectory:
    """Camera on a horizontal circle, always looking at ``look_at``.

    Args:
        center: (x, y) or (x, y, z) of the circle's centre; z (default 0) is the default
            look-at height.
        radius: circle radius, metres (of the camera's optical centre).
        height: optical centre height above the floor, metres (becomes the rig's mount z).
        n: number of poses.
        look_at: (3,) point every camera looks at (default: ``center``). When its horizontal
            distance varies along the orbit the pitch varies and base_link -> camera_link is
            published on /tf.
        arc_rad: angle covered (2 pi: full circle, endpoint excluded).
        start_angle_rad: angle of the first pose.
        rate_hz, start_ns: timing.
        rig: frame names / offsets (its mount z is replaced by ``height``).
    """
    c = np.asarray(center, dtype=np.float64).reshape(-1)
    if c.shape not in ((2,), (3,)):
        raise ConfigError(f"center must be (x, y) or (x, y, z), got {center!r}")
    c3 = np.array([c[0], c[1], c[2] if len(c) == 3 else 0.0])
    target = c3 if look_at is None else np.asarray(look_at, dtype=np.float64).reshape(3)
    if n < 1 or radius <= 0:
        raise ConfigError(f"need n >= 1 and radius > 0, got n={n} radius={radius}")
    rig = rig or CameraRig()
    rig = dataclasses.replace(rig, mount_xyz_m=(rig.mount_xyz_m[0], rig.mount_xyz_m[1],
                                                float(height)))
    full = abs(abs(arc_rad) - 2 * math.pi) < 1e-12
    ang = start_angle_rad + np.linspace(0.0, arc_rad, n, endpoint=not full and n > 1)
    cam = np.stack((c3[0] + radius * np.cos(ang), c3[1] + radius * np.sin(ang)), axis=1)
    delta = target[:2] - cam
    yaw = np.arctan2(delta[:, 1], delta[:, 0])
    horiz = np.linalg.norm(delta, axis=1)
    pitch = np.arctan2(height - target[2], horiz)
    if np.ptp(pitch) < 1e-12:
        pitch = np.full(n, pitch[0])
    return Trajectory(_base_from_camera(cam, yaw, rig), pitch, _stamps(n, rate_hz, start_ns),
                      rig)


def scan_ellipse(room: "Room", margin_m: float = 0.8) -> tuple[float, float]:
    """Semi-axes (a, b) of the room-scan path: an ellipse ``margin_m`` inside the walls."""
    a = 0.5 * room.size_xy[0] - margin_m
    b = 0.5 * room.size_xy[1] - margin_m
    if a <= 0.1 or b <= 0.1:
        raise ConfigError(f"room {room.size_xy} too small for a scan path {margin_m} m "
                          "from the walls")
    return a, b


def scan_path_points(room: "Room", margin_m: float = 0.8, n: int = 720) -> np.ndarray:
    """(n, 2) world xy points, metres, evenly spaced in angle on the room-scan ellipse
    (:func:`scan_ellipse`) that the optical centre of :func:`room_scan_trajectory` follows."""
    a, b = scan_ellipse(room, margin_m)
    theta = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack((a * np.cos(theta), b * np.sin(theta)), axis=1) + np.asarray(room.center_xy)


def room_scan_trajectory(scene: "Scene", n: int, *, margin_m: float | None = None,
                         height: float | None = None, pitch_rad: float = math.radians(20.0),
                         loops: float = 1.0, sweep_rad: float = math.radians(15.0),
                         sweep_cycles: float = 3.0, look_at: Sequence[float] | None = None,
                         rate_hz: float = 10.0, start_ns: int = DEFAULT_START_NS,
                         rig: CameraRig | None = None) -> Trajectory:
    """A robot driving around an ellipse inside the room, its camera turned to the objects.

    The optical centre follows the ellipse ``margin_m`` inside the walls (counter-clockwise,
    ``loops`` times), heading towards ``look_at`` (default: the objects' centroid, or the
    room's centre if empty) plus a sinusoidal sweep of ``+-sweep_rad``; the camera is pitched
    down by a constant ``pitch_rad`` (static mount).

    Args:
        scene: the scene (only its room and object positions are used).
        n: number of poses.
        margin_m: path distance from the walls (default :data:`DEFAULT_SCAN_MARGIN_M`).
        height: optical centre height (default: the rig's mount z, 1.2 m).
    """
    from .scene import DEFAULT_SCAN_MARGIN_M

    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    rig = rig or CameraRig()
    if height is not None:
        rig = dataclasses.replace(rig, mount_xyz_m=(rig.mount_xyz_m[0], rig.mount_xyz_m[1],
                                                    float(height)))
    a, b = scan_ellipse(scene.room, DEFAULT_SCAN_MARGIN_M if margin_m is None else margin_m)
    if look_at is None:
        if scene.objects:
            target = np.mean([np.asarray(o.center)[:2] for o in scene.objects], axis=0)
        else:
            target = np.asarray(scene.room.center_xy)
    else:
        target = np.asarray(look_at, dtype=np.float64).reshape(-1)[:2]
    s = np.arange(n) / n
    ang = -0.5 * math.pi + 2 * math.pi * loops * s
    cam = np.stack((a * np.cos(ang), b * np.sin(ang)), axis=1) + np.asarray(scene.room.center_xy)
    delta = target - cam
    yaw = np.arctan2(delta[:, 1], delta[:, 0]) + sweep_rad * np.sin(2 * math.pi * sweep_cycles * s)
    return Trajectory(_base_from_camera(cam, yaw, rig), np.full(n, float(pitch_rad)),
                      _stamps(n, rate_hz, start_ns), rig)


def repeat_trajectory(loop: Trajectory, times: int, rate_hz: float = 10.0) -> Trajectory:
    """The poses of ``loop`` driven ``times`` times in a row, stamped at ``rate_hz``.

    Pose ``k * len(loop) + i`` equals pose ``i`` of ``loop`` exactly (same base pose, pitch
    and rig), so every pass sees the scene from identical viewpoints; stamps start at the
    loop's first stamp and keep increasing across passes.
    """
    if times < 1:
        raise ConfigError(f"times must be >= 1, got {times}")
    if len(loop) == 0:
        raise ConfigError("cannot repeat an empty trajectory")
    return Trajectory.from_base_poses(np.tile(loop.base_xy_yaw, (times, 1)),
                                      np.tile(loop.pitch_rad, times), rate_hz,
                                      int(loop.stamps_ns[0]), loop.rig)
