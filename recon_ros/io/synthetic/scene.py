"""Scenes: a room plus solid objects, their union SDF, ray casting and procedural texture.

A scene is fully determined by ``(name, seed)`` (see :func:`make_scene`), so ground truth can
always be recomputed instead of stored.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ...core.errors import ConfigError
from .shapes import (
    RAY_EPS,
    Box,
    Cylinder,
    Room,
    Shape,
    Sphere,
    Vec3,
    _unbind,
    shape_from_dict,
)

#: Distance of the default room-scan camera path from the walls, metres.
DEFAULT_SCAN_MARGIN_M = 0.8
#: Minimum horizontal distance between objects of random scenes and the scan path, metres.
DEFAULT_PATH_CLEARANCE_M = 0.5


@dataclass
class Scene:
    """A room and the solid objects in it.

    The scene's solid is the union of the room's solid (everything beyond floor, walls and
    ceiling) and the objects; its signed distance is the minimum of the parts' (exact in free
    space, a lower bound on depth inside overlapping solids).

    Attributes:
        room: the room.
        objects: solid primitives inside the room.
        name: registry name (``demo``, ``random``, or ``custom``).
        seed: the seed it was generated from, if any.
        checker_size_m: edge of the 3D checker pattern that modulates every surface's albedo.
    """

    room: Room
    objects: list[Shape] = field(default_factory=list)
    name: str = "custom"
    seed: int | None = None
    checker_size_m: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.room, Room):
            raise ConfigError(f"Scene.room must be a Room, got {type(self.room).__name__}")
        for i, o in enumerate(self.objects):
            if not isinstance(o, Shape) or isinstance(o, Room):
                raise ConfigError(f"Scene.objects[{i}] must be a Sphere, Box or Cylinder")
        if not (math.isfinite(self.checker_size_m) and self.checker_size_m > 0):
            raise ConfigError(f"Scene.checker_size_m must be > 0, got {self.checker_size_m}")

    @property
    def parts(self) -> list[Shape]:
        """``[room, *objects]``; part indices used by :meth:`intersect` refer to this list."""
        return [self.room, *self.objects]

    def part_sdf(self, p: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N, P) signed distance of every part."""
        return torch.stack([s.sdf(p) for s in self.parts], dim=1)

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N,) scene signed distance (positive in free space)."""
        return self.part_sdf(p).min(dim=1).values

    def sdf_np(self, p: np.ndarray) -> np.ndarray:
        """NumPy convenience: (N, 3) -> (N,) float64."""
        return self.sdf(torch.as_tensor(np.asarray(p, dtype=np.float64))).numpy()

    def intersect(self, o: torch.Tensor, d: torch.Tensor, eps: float = RAY_EPS
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """First hit of rays with the union of solids.

        Args:
            o: (N, 3) or (1, 3) ray origins (in free space).
            d: (N, 3) directions, any length; ``t`` is in units of that length.

        Returns:
            ``(t, part)``: (N,) ray parameter of the first hit (inf where none) and (N,) int64
            index into :attr:`parts` (-1 where none).
        """
        return self.hit(_unbind(o), _unbind(d), eps)

    def hit(self, o: Vec3, d: Vec3, eps: float = RAY_EPS) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`intersect` on components (see :meth:`Shape.hit`)."""
        t, valid = self.room.cast(o, d, eps)
        t = torch.where(valid, t, math.inf)
        part = torch.zeros(t.shape, dtype=torch.int64, device=t.device)
        for i, s in enumerate(self.objects, start=1):
            ti, vi = s.cast(o, d, eps)
            closer = vi & (ti < t)
            t = torch.where(closer, ti, t)
            part.masked_fill_(closer, i)
        part.masked_fill_(~torch.isfinite(t), -1)
        return t, part

    def albedo(self, p: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        """Procedural color of surface points: part base color times a 3D checker.

        Args:
            p: (N, 3) surface points (world).
            part: (N,) part index of each point (as returned by :meth:`intersect`).

        Returns:
            (N, 3) RGB in [0, 1], a deterministic function of ``(p, part)``.
        """
        px, py, pz = p.unbind(dim=1)
        return self.albedo_xyz(px.contiguous(), py.contiguous(), pz.contiguous(), part)

    def palette(self, like: torch.Tensor) -> torch.Tensor:
        """(6 + K, 3) base colors: room faces (floor, ceiling, +x, -x, +y, -y walls), then
        the K objects."""
        room = self.room
        return torch.tensor([room.floor_color, room.ceiling_color, *room.wall_colors,
                             *[o.color for o in self.objects]],
                            dtype=like.dtype, device=like.device)

    def albedo_xyz(self, px: torch.Tensor, py: torch.Tensor, pz: torch.Tensor,
                   part: torch.Tensor) -> torch.Tensor:
        """:meth:`albedo` on (N,) coordinate components (faster: no (N, 3) temporaries)."""
        face = self.room.face_index_xyz(px, py, pz)
        idx = torch.where(part <= 0, face, part + 5)
        pal = self.palette(px)
        base = torch.stack([pal[:, k].contiguous()[idx] for k in range(3)], dim=1)
        # 3D checker, boundaries at (k + 1/2) cells: the demo scene's axis-aligned faces
        # (floor z = 0, walls at multiples of the cell) never sit on a boundary.
        k = 1.0 / self.checker_size_m
        cells = (torch.floor(px * k + 0.5) + torch.floor(py * k + 0.5)
                 + torch.floor(pz * k + 0.5))
        parity = cells - 2.0 * torch.floor(cells * 0.5)
        return base * (0.6 + 0.4 * parity).unsqueeze(1)

    def describe(self) -> dict[str, Any]:
        """JSON-able description; :func:`scene_from_dict` inverts it."""
        return {"name": self.name, "seed": self.seed, "checker_size_m": self.checker_size_m,
                "room": self.room.to_dict(), "objects": [o.to_dict() for o in self.objects]}


def scene_from_dict(d: dict[str, Any]) -> Scene:
    """Inverse of :meth:`Scene.describe`."""
    room = shape_from_dict(d["room"])
    if not isinstance(room, Room):
        raise ConfigError("scene 'room' entry must be of type 'room'")
    return Scene(room=room, objects=[shape_from_dict(o) for o in d.get("objects", [])],
                 name=d.get("name", "custom"), seed=d.get("seed"),
                 checker_size_m=float(d.get("checker_size_m", 0.25)))


def make_demo_scene() -> Scene:
    """A 6 x 5 x 2.5 m room (x in [-3, 3], y in [-2.5, 2.5], z in [0, 2.5]) holding a table-like
    block, a ball on the floor, a pillar (cylinder) and a small rotated box on the floor.

    All objects keep more than 0.4 m of horizontal clearance from the default room-scan path
    (the ellipse 0.8 m inside the walls) and from the robot base following it.
    """
    room = Room(size_xy=(6.0, 5.0), height=2.5)
    objects: list[Shape] = [
        # table-like block 1.2 x 0.8 x 0.75 m, rotated 15 degrees
        Box(center=(0.5, 0.35, 0.375), half_extents=(0.6, 0.4, 0.375),
            yaw_rad=math.radians(15.0), color=(0.6, 0.4, 0.2)),
        # ball resting on the floor
        Sphere(center=(-1.05, 0.4, 0.4), radius=0.4, color=(0.85, 0.25, 0.2)),
        # pillar 1.2 m tall
        Cylinder(center=(-0.6, -0.65, 0.6), radius=0.3, half_height=0.6, color=(0.25, 0.65, 0.3)),
        # small box on the floor, rotated -30 degrees
        Box(center=(1.2, -0.45, 0.2), half_extents=(0.3, 0.25, 0.2),
            yaw_rad=math.radians(-30.0), color=(0.25, 0.4, 0.85)),
    ]
    return Scene(room=room, objects=objects, name="demo", seed=None)


def _random_color(rng: np.random.Generator, sat: tuple[float, float] = (0.4, 0.9),
                  val: tuple[float, float] = (0.5, 0.95)) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val))
    return (float(r), float(g), float(b))


def make_random_scene(seed: int, n_objects: int | None = None,
                      margin_m: float = DEFAULT_SCAN_MARGIN_M,
                      clearance_m: float = DEFAULT_PATH_CLEARANCE_M) -> Scene:
    """A procedural room with 3-6 random spheres, boxes and cylinders.

    The room is 4.5-8 x 4-7 m, 2.3-3.2 m high, centred at the origin. Objects stand on the
    floor (spheres may float up to 0.8 m), do not overlap each other in plan view, and keep
    ``clearance_m`` of horizontal distance from the default room-scan path (the ellipse
    ``margin_m`` inside the walls, see :func:`~.trajectory.room_scan_trajectory`), whose camera
    and robot base positions therefore stay in free space.

    Args:
        seed: determines everything.
        n_objects: override the number of objects (default: random in 3..6).
        margin_m: distance of the scan path from the walls (must match the trajectory's).
        clearance_m: horizontal clearance between objects and the scan path.
    """
    from .trajectory import scan_ellipse, scan_path_points

    rng = np.random.default_rng([int(seed), 0x5CE7E])
    sx, sy = float(rng.uniform(4.5, 8.0)), float(rng.uniform(4.0, 7.0))
    height = float(rng.uniform(2.3, 3.2))
    room = Room(size_xy=(sx, sy), height=height,
                floor_color=_random_color(rng, (0.1, 0.5), (0.35, 0.7)),
                wall_colors=tuple(_random_color(rng, (0.05, 0.35), (0.65, 0.95))
                                  for _ in range(4)),  # type: ignore[arg-type]
                ceiling_color=_random_color(rng, (0.0, 0.1), (0.85, 0.98)))
    a, b = scan_ellipse(room, margin_m)
    path = scan_path_points(room, margin_m, 720)
    k = int(rng.integers(3, 7)) if n_objects is None else int(n_objects)
    if k < 0:
        raise ConfigError(f"n_objects must be >= 0, got {k}")

    placed: list[tuple[np.ndarray, float]] = []
    objects: list[Shape] = []
    for _ in range(k):
        scale = 1.0
        for attempt in range(400):
            if attempt and attempt % 100 == 0:
                scale *= 0.7
            kind = int(rng.integers(0, 3))
            color = _random_color(rng)
            u = rng.uniform(-1.0, 1.0, size=2)
            if u @ u > 1.0:
                continue
            xy = np.asarray(room.center_xy) + u * np.array([a, b])
            if kind == 0:
                r = float(rng.uniform(0.15, 0.55)) * scale
                z = r + (float(rng.uniform(0.0, 0.8)) if rng.uniform() < 0.3 else 0.0)
                obj: Shape = Sphere(center=(xy[0], xy[1], z), radius=r, color=color)
            elif kind == 1:
                he = rng.uniform([0.12, 0.12, 0.1], [0.6, 0.6, 0.6]) * scale
                obj = Box(center=(xy[0], xy[1], he[2]), half_extents=tuple(he),
                          yaw_rad=float(rng.uniform(-math.pi, math.pi)), color=color)
            else:
                r = float(rng.uniform(0.1, 0.4)) * scale
                hh = float(rng.uniform(0.2, 1.0)) * scale
                obj = Cylinder(center=(xy[0], xy[1], hh), radius=r, half_height=hh, color=color)
            rho = obj.bounding_radius_xy()
            if np.min(np.linalg.norm(path - xy, axis=1)) < rho + clearance_m:
                continue
            if any(np.linalg.norm(xy - c) < rho + rc + 0.05 for c, rc in placed):
                continue
            placed.append((xy, rho))
            objects.append(obj)
            break
    return Scene(room=room, objects=objects, name="random", seed=int(seed))


SCENES: dict[str, Callable[[int], Scene]] = {
    "demo": lambda seed: make_demo_scene(),
    "random": lambda seed: make_random_scene(seed),
}


def make_scene(name: str, seed: int = 0) -> Scene:
    """Rebuild a registered scene from ``(name, seed)`` (``demo`` ignores the seed)."""
    if name not in SCENES:
        raise ConfigError(f"unknown synthetic scene {name!r}; expected one of {sorted(SCENES)}")
    return SCENES[name](seed)
