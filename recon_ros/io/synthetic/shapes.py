"""Analytic solid primitives: exact signed distance, exact ray intersection, area sampling.

Conventions: world frame z up (REP-103), metres. Signed distances are negative inside a
solid and positive in free space. Every method is vectorised over points/rays on torch
tensors of any floating dtype and device; the primitive's own parameters are converted to
the input's dtype and device on each call.

Ray intersection takes origins ``o`` (N, 3) (or (1, 3), broadcast) and directions ``d``
(N, 3) that need **not** be unit length, and returns the ray parameter ``t`` (N,) of the
first crossing of the solid's boundary with ``t > eps`` (``inf`` where there is none); the
hit point is ``o + t * d``. With camera rays whose optical-frame direction has z = 1, ``t`` is
the z-depth directly.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ...core.errors import ConfigError

RGB = tuple[float, float, float]

#: Rays hitting at ``t <= RAY_EPS`` (in units of the direction's length) are ignored.
RAY_EPS = 1e-9


def _vec(x: Any, n: int, name: str) -> tuple[float, ...]:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} must be {n} finite numbers, got {x!r}")
    return tuple(float(v) for v in arr)


def _color(x: Any, name: str = "color") -> RGB:
    c = _vec(x, 3, name)
    if not all(0.0 <= v <= 1.0 for v in c):
        raise ConfigError(f"{name} must be RGB in [0, 1], got {x!r}")
    return c  # type: ignore[return-value]


def _positive(x: float, name: str) -> float:
    x = float(x)
    if not (math.isfinite(x) and x > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {x!r}")
    return x


def _t(values: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def _check_points(p: torch.Tensor) -> None:
    if not isinstance(p, torch.Tensor) or p.ndim != 2 or p.shape[1] != 3:
        raise ConfigError(f"points must be a (N, 3) torch tensor, got {getattr(p, 'shape', p)!r}")
    if not p.is_floating_point():
        raise ConfigError(f"points must be floating point, got {p.dtype}")


Scalar = float | torch.Tensor
Vec3 = tuple[Scalar, Scalar, Scalar]
#: (t, valid): ray parameter of the first hit (meaningless where not valid) and its mask.
Hit = tuple[torch.Tensor, torch.Tensor]


def _big(dtype: torch.dtype) -> float:
    """A finite stand-in for 1 / 0 that cannot overflow when multiplied by scene coordinates."""
    return 1e300 if dtype == torch.float64 else 1e30


# Note on CPU threading: torch runs "VML" unary ops (sqrt, reciprocal, ... and so
# ``float / tensor``) in parallel from 2048 elements, but ordinary element-wise kernels only
# from 32768. The renderer works in bands below 32768 pixels, so it avoids the former (using
# ``pow(0.5)`` and tensor / tensor division): a single thread per band never waits for a
# descheduled OpenMP worker on a busy machine.


def _rdiv(num: Scalar, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` for a float or tensor numerator, without torch's reciprocal kernel."""
    if not isinstance(num, torch.Tensor):
        num = torch.full((), num, dtype=den.dtype, device=den.device)
    return num / den


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    return x.pow(0.5)


def _inv(d: torch.Tensor) -> torch.Tensor:
    """1 / d with +-0 mapped to +-big (finite), so slab products never form inf * 0."""
    big = _big(d.dtype)
    return _rdiv(1.0, d).clamp_(-big, big)


def _interval_hit(t_near: torch.Tensor, t_far: torch.Tensor, eps: float,
                  ok: torch.Tensor | None = None) -> Hit:
    """First boundary crossing ``> eps`` of the ray interval [t_near, t_far] inside a convex
    solid: t_near when starting outside, t_far when starting inside. NaN bounds -> no hit."""
    t = torch.where(t_near > eps, t_near, t_far)
    valid = (t_near <= t_far) & (t_far > eps)
    if ok is not None:
        valid &= ok
    return t, valid


def _roots(a: Scalar, half_b: torch.Tensor, c: Scalar
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Roots of ``a t^2 + 2 half_b t + c = 0`` without cancellation.

    Returns ``(t_small, t_large, ok)``; ``ok`` is False where there is no real root (the
    roots are then meaningless but finite-or-NaN). ``a == 0`` yields inf/NaN roots.
    """
    disc = half_b * half_b - a * c
    ok = disc >= 0
    sq = _sqrt(disc.clamp(min=0.0))  # clamp: sqrt of negatives is slow (and NaN)
    q = -(half_b + torch.copysign(sq, half_b))
    r0 = q / a
    r1 = _rdiv(c, q)
    return torch.minimum(r0, r1), torch.maximum(r0, r1), ok


def _slab_axis(oi: Scalar, di: torch.Tensor, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray interval inside the slab ``|x| <= hi`` along one axis."""
    inv = _inv(di)
    m = -oi * inv
    w = inv.abs() * hi
    return m - w, m + w


def _slab(o: Vec3, d: Vec3, half: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test of rays against the axis-aligned box ``|x| <= half``: (t_near, t_far)."""
    n0, f0 = _slab_axis(o[0], d[0], half[0])
    n1, f1 = _slab_axis(o[1], d[1], half[1])
    n2, f2 = _slab_axis(o[2], d[2], half[2])
    return torch.maximum(torch.maximum(n0, n1), n2), torch.minimum(torch.minimum(f0, f1), f2)


def _unbind(x: torch.Tensor) -> Vec3:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 3:
        shape = tuple(getattr(x, "shape", ()))
        raise ConfigError(f"rays must be (N, 3) tensors, got shape {shape}")
    a, b, c = x.unbind(dim=1)
    return a.contiguous(), b.contiguous(), c.contiguous()


def _rot_z_np(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _box_sdf_local(q_local: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    q = q_local.abs() - half
    outside = torch.linalg.vector_norm(torch.clamp(q, min=0), dim=1)
    inside = torch.clamp(q.max(dim=1).values, max=0)
    return outside + inside


def _sample_box_faces(half: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points uniform by area on the surface of the box ``|x| <= half`` (local frame)."""
    hx, hy, hz = half
    # face pairs: normal axis 0 (area 4 hy hz), 1 (4 hx hz), 2 (4 hx hy); two faces each
    areas = np.array([hy * hz, hy * hz, hx * hz, hx * hz, hx * hy, hx * hy], dtype=np.float64)
    face = rng.choice(6, size=n, p=areas / areas.sum())
    pts = rng.uniform(-1.0, 1.0, size=(n, 3)) * half
    axis = face // 2
    sign = np.where(face % 2 == 0, -1.0, 1.0)
    pts[np.arange(n), axis] = sign * half[axis]
    return pts


class Shape(ABC):
    """A solid with an exact signed distance (negative inside) and exact ray casting."""

    color: RGB

    @abstractmethod
    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N,) signed distance, metres (negative inside the solid)."""

    @abstractmethod
    def cast(self, o: Vec3, d: Vec3, eps: float = RAY_EPS) -> Hit:
        """Ray casting on components: origin (x, y, z) (floats, or tensors broadcastable to
        the directions), direction components (N,) tensors -> ``(t, valid)``: (N,) first
        boundary crossing ``t > eps`` and (N,) bool mask of rays that have one."""

    def hit(self, o: Vec3, d: Vec3, eps: float = RAY_EPS) -> torch.Tensor:
        """:meth:`cast` with misses as ``inf``."""
        t, valid = self.cast(o, d, eps)
        return torch.where(valid, t, math.inf)

    def intersect(self, o: torch.Tensor, d: torch.Tensor, eps: float = RAY_EPS) -> torch.Tensor:
        """(N|1, 3) origins, (N, 3) directions -> (N,) first boundary hit ``t > eps`` or inf."""
        return self.hit(_unbind(o), _unbind(d), eps)

    @abstractmethod
    def area(self) -> float:
        """Total surface area, square metres."""

    @abstractmethod
    def sample_surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 3) float64 points uniformly distributed by area on the surface."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (``type`` plus constructor arguments)."""

    def base_color(self, p: torch.Tensor) -> torch.Tensor:
        """(N, 3) surface points -> (N, 3) albedo in [0, 1] before texturing."""
        return _t(self.color, p).expand(p.shape[0], 3)

    @abstractmethod
    def bounding_radius_xy(self) -> float:
        """Radius of a vertical cylinder around the shape's xy centre containing it."""

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounding box ``(lo (3,), hi (3,))`` (infinite for the room)."""
        return np.full(3, -np.inf), np.full(3, np.inf)


class Solid(Shape):
    """A bounded object standing in the room (its interior is solid)."""

    @abstractmethod
    def column_interval(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vertical extent of the solid above map points: (lo, hi) arrays shaped like ``x``;
        the open interval (lo, hi) is inside the solid (lo = inf, hi = -inf where the vertical
        line through (x, y) misses the solid's interior)."""


def _empty_where(mask: np.ndarray, lo: np.ndarray, hi: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    return np.where(mask, lo, np.inf), np.where(mask, hi, -np.inf)


@dataclass(frozen=True)
class Sphere(Solid):
    """Solid ball. ``center`` (3,) metres, ``radius`` metres."""

    center: tuple[float, float, float]
    radius: float
    color: RGB = (0.8, 0.3, 0.2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", _vec(self.center, 3, "Sphere.center"))
        object.__setattr__(self, "radius", _positive(self.radius, "Sphere.radius"))
        object.__setattr__(self, "color", _color(self.color, "Sphere.color"))

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        _check_points(p)
        return torch.linalg.vector_norm(p - _t(self.center, p), dim=1) - self.radius

    def cast(self, o: Vec3, d: Vec3, eps: float = RAY_EPS) -> Hit:
        ox, oy, oz = (oi - ci for oi, ci in zip(o, self.center))
        dx, dy, dz = d
        a = dx * dx + dy * dy + dz * dz
        half_b = ox * dx + oy * dy + oz * dz
        c = ox * ox + oy * oy + oz * oz - self.radius**2
        t_near, t_far, ok = _roots(a, half_b, c)
        return _interval_hit(t_near, t_far, eps, ok)

    def area(self) -> float:
        return 4.0 * math.pi * self.radius**2

    def sample_surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        v = rng.normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return np.asarray(self.center) + self.radius * v

    def bounding_radius_xy(self) -> float:
        return self.radius

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(self.center)
        return c - self.radius, c + self.radius

    def column_interval(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx, cy, cz = self.center
        rho2 = (np.asarray(x) - cx) ** 2 + (np.asarray(y) - cy) ** 2
        inside = rho2 < self.radius**2
        half = np.sqrt(np.maximum(self.radius**2 - rho2, 0.0))
        return _empty_where(inside, cz - half, cz + half)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "sphere", "center": list(self.center), "radius": self.radius,
                "color": list(self.color)}


@dataclass(frozen=True)
class Box(Solid):
    """Solid box: ``center`` (3,), ``half_extents`` (3,) metres, rotated by ``yaw_rad`` about z."""

    center: tuple[float, float, float]
    half_extents: tuple[float, float, float]
    yaw_rad: float = 0.0
    color: RGB = (0.3, 0.5, 0.8)

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", _vec(self.center, 3, "Box.center"))
        he = _vec(self.half_extents, 3, "Box.half_extents")
        for i, v in enumerate(he):
            _positive(v, f"Box.half_extents[{i}]")
        object.__setattr__(self, "half_extents", he)
        object.__setattr__(self, "yaw_rad", float(_vec([self.yaw_rad], 1, "Box.yaw_rad")[0]))
        object.__setattr__(self, "color", _color(self.color, "Box.color"))

    def _R(self, like: torch.Tensor) -> torch.Tensor:
        """World-from-local rotation (3, 3)."""
        return _t(_rot_z_np(self.yaw_rad), like)

    def to_local(self, p: torch.Tensor) -> torch.Tensor:
        """World points (N, 3) -> box-local coordinates (N, 3) (row vectors: ``(p - c) R``)."""
        return (p - _t(self.center, p)) @ self._R(p)

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        _check_points(p)
        return _box_sdf_local(self.to_local(p), _t(self.half_extents, p))

    def cast(self, o: Vec3, d: Vec3, eps: float = RAY_EPS) -> Hit:
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        qx, qy, qz = (oi - ci for oi, ci in zip(o, self.center))
        o_l = (c * qx + s * qy, -s * qx + c * qy, qz)
        d_l = (c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2])
        t_near, t_far = _slab(o_l, d_l, self.half_extents)
        return _interval_hit(t_near, t_far, eps)

    def area(self) -> float:
        hx, hy, hz = self.half_extents
        return 8.0 * (hx * hy + hy * hz + hx * hz)

    def sample_surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        local = _sample_box_faces(np.asarray(self.half_extents), n, rng)
        return local @ _rot_z_np(self.yaw_rad).T + np.asarray(self.center)

    def bounding_radius_xy(self) -> float:
        return math.hypot(self.half_extents[0], self.half_extents[1])

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        ext = np.abs(_rot_z_np(self.yaw_rad)) @ np.asarray(self.half_extents)
        c = np.asarray(self.center)
        return c - ext, c + ext

    def column_interval(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        qx, qy = np.asarray(x) - self.center[0], np.asarray(y) - self.center[1]
        lx, ly = c * qx + s * qy, -s * qx + c * qy
        hx, hy, hz = self.half_extents
        inside = (np.abs(lx) < hx) & (np.abs(ly) < hy)
        cz = self.center[2]
        return _empty_where(inside, np.full(inside.shape, cz - hz), np.full(inside.shape, cz + hz))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "box", "center": list(self.center),
                "half_extents": list(self.half_extents), "yaw_rad": self.yaw_rad,
                "color": list(self.color)}


@dataclass(frozen=True)
class Cylinder(Solid):
    """Solid vertical (axis = world z) capped cylinder: ``center`` (3,), ``radius``,
    ``half_height`` metres (it spans ``center.z +- half_height``)."""

    center: tuple[float, float, float]
    radius: float
    half_height: float
    color: RGB = (0.3, 0.7, 0.3)

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", _vec(self.center, 3, "Cylinder.center"))
        object.__setattr__(self, "radius", _positive(self.radius, "Cylinder.radius"))
        object.__setattr__(self, "half_height",
                           _positive(self.half_height, "Cylinder.half_height"))
        object.__setattr__(self, "color", _color(self.color, "Cylinder.color"))

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        _check_points(p)
        q = p - _t(self.center, p)
        dr = torch.linalg.vector_norm(q[:, :2], dim=1) - self.radius
        dz = q[:, 2].abs() - self.half_height
        outside = torch.sqrt(torch.clamp(dr, min=0) ** 2 + torch.clamp(dz, min=0) ** 2)
        inside = torch.clamp(torch.maximum(dr, dz), max=0)
        return outside + inside

    def cast(self, o: Vec3, d: Vec3, eps: float = RAY_EPS) -> Hit:
        # the solid is (infinite vertical cylinder) intersected with (slab |z| <= hh):
        # intersect the two ray intervals
        qx, qy, qz = (oi - ci for oi, ci in zip(o, self.center))
        dx, dy, dz = d
        a = dx * dx + dy * dy
        c = qx * qx + qy * qy - self.radius**2
        s_near, s_far, ok = _roots(a, qx * dx + qy * dy, c)
        if isinstance(c, torch.Tensor) or c <= 0:
            # vertical rays (a == 0) within the radius stay inside the infinite cylinder
            vertical_in = (a == 0) & (c <= 0)
            s_near = torch.where(vertical_in, -math.inf, s_near)
            s_far = torch.where(vertical_in, math.inf, s_far)
        z_near, z_far = _slab_axis(qz, dz, self.half_height)
        t_near = torch.maximum(s_near, z_near)
        t_far = torch.minimum(s_far, z_far)
        return _interval_hit(t_near, t_far, eps, ok)

    def area(self) -> float:
        r = self.radius
        return 2.0 * math.pi * r * (2.0 * self.half_height) + 2.0 * math.pi * r * r

    def sample_surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        r, hh = self.radius, self.half_height
        side_area = 4.0 * math.pi * r * hh
        cap_area = math.pi * r * r
        part = rng.choice(3, size=n, p=np.array([side_area, cap_area, cap_area]) / self.area())
        pts = np.empty((n, 3))
        phi = rng.uniform(0.0, 2.0 * math.pi, size=n)
        rho = np.where(part == 0, r, r * np.sqrt(rng.uniform(0.0, 1.0, size=n)))
        pts[:, 0] = rho * np.cos(phi)
        pts[:, 1] = rho * np.sin(phi)
        pts[:, 2] = np.where(part == 0, rng.uniform(-hh, hh, size=n),
                             np.where(part == 1, -hh, hh))
        return pts + np.asarray(self.center)

    def bounding_radius_xy(self) -> float:
        return self.radius

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(self.center)
        ext = np.array([self.radius, self.radius, self.half_height])
        return c - ext, c + ext

    def column_interval(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx, cy, cz = self.center
        inside = (np.asarray(x) - cx) ** 2 + (np.asarray(y) - cy) ** 2 < self.radius**2
        hh = self.half_height
        return _empty_where(inside, np.full(inside.shape, cz - hh),
                            np.full(inside.shape, cz + hh))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "cylinder", "center": list(self.center), "radius": self.radius,
                "half_height": self.half_height, "color": list(self.color)}


@dataclass(frozen=True)
class Room(Shape):
    """The inside of an axis-aligned box: floor at z = 0, four walls, ceiling at ``height``.

    The room's *solid* is everything outside that box, so its signed distance is positive in
    the room's free space (the distance to the nearest of floor, walls, ceiling) and negative
    beyond them. Cameras must be inside the room; :meth:`intersect` returns the exit distance.

    Attributes:
        size_xy: (x extent, y extent) metres.
        height: ceiling height, metres.
        center_xy: (x, y) of the room's centre, metres.
        floor_color, wall_colors (+x, -x, +y, -y walls), ceiling_color: albedo, RGB in [0, 1].
    """

    size_xy: tuple[float, float]
    height: float
    center_xy: tuple[float, float] = (0.0, 0.0)
    floor_color: RGB = (0.55, 0.45, 0.35)
    wall_colors: tuple[RGB, RGB, RGB, RGB] = (
        (0.85, 0.82, 0.7), (0.7, 0.78, 0.85), (0.8, 0.72, 0.8), (0.72, 0.85, 0.72))
    ceiling_color: RGB = (0.92, 0.92, 0.92)
    color: RGB = field(default=(0.8, 0.8, 0.8), repr=False)

    def __post_init__(self) -> None:
        sx, sy = _vec(self.size_xy, 2, "Room.size_xy")
        object.__setattr__(self, "size_xy", (_positive(sx, "Room.size_xy[0]"),
                                             _positive(sy, "Room.size_xy[1]")))
        object.__setattr__(self, "height", _positive(self.height, "Room.height"))
        object.__setattr__(self, "center_xy", _vec(self.center_xy, 2, "Room.center_xy"))
        object.__setattr__(self, "floor_color", _color(self.floor_color, "Room.floor_color"))
        walls = tuple(_color(c, "Room.wall_colors[i]") for c in self.wall_colors)
        if len(walls) != 4:
            raise ConfigError(f"Room.wall_colors must hold 4 colors, got {len(walls)}")
        object.__setattr__(self, "wall_colors", walls)
        object.__setattr__(self, "ceiling_color", _color(self.ceiling_color,
                                                         "Room.ceiling_color"))

    @property
    def box_center(self) -> tuple[float, float, float]:
        return (self.center_xy[0], self.center_xy[1], 0.5 * self.height)

    @property
    def half_extents(self) -> tuple[float, float, float]:
        return (0.5 * self.size_xy[0], 0.5 * self.size_xy[1], 0.5 * self.height)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo (3,), hi (3,)) corners of the room's free space."""
        c, h = np.asarray(self.box_center), np.asarray(self.half_extents)
        return c - h, c + h

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        _check_points(p)
        return -_box_sdf_local(p - _t(self.box_center, p), _t(self.half_extents, p))

    def cast(self, o: Vec3, d: Vec3, eps: float = RAY_EPS) -> Hit:
        # exit distance of the room box: per axis, the wall the ray points at is at
        # t = (c - o) / d + h / |d|
        ts = []
        for oi, di, ci, hi in zip(o, d, self.box_center, self.half_extents):
            inv = _inv(di)
            ts.append((ci - oi) * inv + inv.abs() * hi)
        t = torch.minimum(torch.minimum(ts[0], ts[1]), ts[2])
        return t, t > eps

    def area(self) -> float:
        hx, hy, hz = self.half_extents
        return 8.0 * (hx * hy + hy * hz + hx * hz)

    def sample_surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        local = _sample_box_faces(np.asarray(self.half_extents), n, rng)
        return local + np.asarray(self.box_center)

    def face_index(self, p: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N,) nearest face: 0 floor, 1 ceiling, 2 +x, 3 -x, 4 +y, 5 -y wall."""
        px, py, pz = p.unbind(dim=1)
        return self.face_index_xyz(px, py, pz)

    def face_index_xyz(self, px: torch.Tensor, py: torch.Tensor, pz: torch.Tensor
                       ) -> torch.Tensor:
        """:meth:`face_index` on (N,) coordinate components."""
        (cx, cy, cz), (hx, hy, hz) = self.box_center, self.half_extents
        qx, qy, qz = (px - cx) / hx, (py - cy) / hy, (pz - cz) / hz
        ax, ay, az = qx.abs(), qy.abs(), qz.abs()
        # nearest face = largest normalised coordinate; faces: floor 0, ceiling 1, +x 2,
        # -x 3, +y 4, -y 5
        face_z = torch.where(qz > 0, 1, 0)
        face_y = torch.where(qy > 0, 4, 5)
        face_x = torch.where(qx > 0, 2, 3)
        face = torch.where(ay >= az, face_y, face_z)
        return torch.where((ax >= ay) & (ax >= az), face_x, face)

    def base_color(self, p: torch.Tensor) -> torch.Tensor:
        palette = _t([self.floor_color, self.ceiling_color, *self.wall_colors], p)
        return palette[self.face_index(p)]

    def bounding_radius_xy(self) -> float:
        return 0.5 * math.hypot(*self.size_xy)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "room", "size_xy": list(self.size_xy), "height": self.height,
                "center_xy": list(self.center_xy), "floor_color": list(self.floor_color),
                "wall_colors": [list(c) for c in self.wall_colors],
                "ceiling_color": list(self.ceiling_color)}


def shape_from_dict(d: dict[str, Any]) -> Shape:
    """Inverse of ``Shape.to_dict``."""
    kind = d.get("type")
    args = {k: v for k, v in d.items() if k != "type"}
    classes: dict[str, type[Shape]] = {"sphere": Sphere, "box": Box, "cylinder": Cylinder,
                                       "room": Room}
    if kind not in classes:
        raise ConfigError(f"unknown shape type {kind!r}; expected one of {sorted(classes)}")
    if kind == "room" and "wall_colors" in args:
        args["wall_colors"] = tuple(tuple(c) for c in args["wall_colors"])
    return classes[kind](**args)  # type: ignore[call-arg]
