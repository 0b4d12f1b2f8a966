"""Dynamic scenes: a static base scene plus objects that are present only during some frames.

A :class:`DynamicScene` holds a static :class:`~.scene.Scene` (room and furniture that never
moves) and :class:`DynamicObject` entries: one or more solids sharing a presence interval of
frame indices ``[first_frame, last_frame)`` (``last_frame = None``: until the end).
:meth:`DynamicScene.scene_at` gives the static scene of one frame; the renderer
(:func:`~.render.iter_frames`) and the ground truth use it frame by frame.

:func:`make_dynamic_scene` builds the benchmark of design.md section 6 ("Dynamic scenes"): the
same room-scan loop driven twice; a box, a vertical cylinder and a table stand during the first
pass and are gone during the second; a crate is absent during the first pass and stands during
the second. It is registered by name in :data:`DYNAMIC_SCENES`.

Conventions as in :mod:`.scene`: world == map frame, z up, metres.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ...core.errors import ConfigError
from .scene import (DEFAULT_PATH_CLEARANCE_M, DEFAULT_SCAN_MARGIN_M, Scene, _random_color,
                    scene_from_dict)
from .shapes import Box, Cylinder, Room, Solid, shape_from_dict
from .trajectory import Trajectory, repeat_trajectory, room_scan_trajectory, scan_path_points


@dataclass(frozen=True)
class DynamicObject:
    """Solids that appear and disappear together.

    Attributes:
        name: unique name within its scene (e.g. ``table``).
        shapes: the solids (e.g. a table top and its legs), world frame.
        first_frame: first frame index at which the object is present.
        last_frame: first frame index at which it is gone again (None: present until the end).
    """

    name: str
    shapes: tuple[Solid, ...]
    first_frame: int = 0
    last_frame: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"DynamicObject.name must be a non-empty string, got {self.name!r}")
        shapes = tuple(self.shapes)
        if not shapes or not all(isinstance(s, Solid) for s in shapes):
            raise ConfigError(f"DynamicObject {self.name!r} needs one or more Sphere, Box or "
                              "Cylinder shapes")
        object.__setattr__(self, "shapes", shapes)
        if not (isinstance(self.first_frame, int) and self.first_frame >= 0):
            raise ConfigError(f"DynamicObject {self.name!r}: first_frame must be an int >= 0, "
                              f"got {self.first_frame!r}")
        if self.last_frame is not None and not (isinstance(self.last_frame, int)
                                                and self.last_frame > self.first_frame):
            raise ConfigError(f"DynamicObject {self.name!r}: last_frame must be None or an int "
                              f"> first_frame ({self.first_frame}), got {self.last_frame!r}")

    def present_at(self, frame: int) -> bool:
        """Whether the object stands in the scene at frame index ``frame``."""
        return self.first_frame <= frame and (self.last_frame is None or frame < self.last_frame)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; :meth:`from_dict` inverts it."""
        return {"name": self.name, "first_frame": self.first_frame,
                "last_frame": self.last_frame, "shapes": [s.to_dict() for s in self.shapes]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DynamicObject":
        shapes = tuple(shape_from_dict(s) for s in d["shapes"])
        return cls(name=d["name"], shapes=shapes,  # type: ignore[arg-type]
                   first_frame=int(d.get("first_frame", 0)),
                   last_frame=None if d.get("last_frame") is None else int(d["last_frame"]))


@dataclass
class DynamicScene:
    """A static scene plus objects with presence intervals in frame indices.

    Attributes:
        base: the room and the objects present in every frame.
        dynamic_objects: objects present only during their interval (unique names).
    """

    base: Scene
    dynamic_objects: list[DynamicObject] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.base, Scene):
            raise ConfigError(f"DynamicScene.base must be a Scene, got {type(self.base).__name__}")
        names = [o.name for o in self.dynamic_objects]
        if len(set(names)) != len(names):
            raise ConfigError(f"DynamicScene object names must be unique, got {names}")

    @property
    def name(self) -> str:
        """Registry name (the base scene's)."""
        return self.base.name

    @property
    def seed(self) -> int | None:
        """The seed it was generated from (the base scene's)."""
        return self.base.seed

    @property
    def room(self) -> Room:
        return self.base.room

    def present(self, frame: int) -> list[DynamicObject]:
        """The dynamic objects standing at frame index ``frame``."""
        return [o for o in self.dynamic_objects if o.present_at(frame)]

    def scene_at(self, frame: int) -> Scene:
        """The static scene at frame index ``frame``: the base objects, then the solids of the
        present dynamic objects in declaration order (same room, name, seed and texture)."""
        shapes = [s for o in self.present(frame) for s in o.shapes]
        b = self.base
        return Scene(room=b.room, objects=[*b.objects, *shapes], name=b.name, seed=b.seed,
                     checker_size_m=b.checker_size_m)

    def removed(self, before: int, after: int) -> list[DynamicObject]:
        """Objects present at frame ``before`` and absent at frame ``after``."""
        return [o for o in self.dynamic_objects if o.present_at(before) and not o.present_at(after)]

    def added(self, before: int, after: int) -> list[DynamicObject]:
        """Objects absent at frame ``before`` and present at frame ``after``."""
        return [o for o in self.dynamic_objects if not o.present_at(before) and o.present_at(after)]

    def stable_from(self, n_frames: int) -> int:
        """The first frame index from which the scene stays the same up to frame
        ``n_frames - 1`` (0 for a scene that never changes within ``n_frames``)."""
        if n_frames < 1:
            raise ConfigError(f"n_frames must be >= 1, got {n_frames}")
        changes = [0]
        for o in self.dynamic_objects:
            changes += [f for f in (o.first_frame, o.last_frame) if f is not None and f < n_frames]
        return max(changes)

    def describe(self) -> dict[str, Any]:
        """JSON-able description; :func:`dynamic_scene_from_dict` inverts it."""
        return {"base": self.base.describe(),
                "dynamic_objects": [o.to_dict() for o in self.dynamic_objects]}


def dynamic_scene_from_dict(d: dict[str, Any]) -> DynamicScene:
    """Inverse of :meth:`DynamicScene.describe`."""
    return DynamicScene(base=scene_from_dict(d["base"]),
                        dynamic_objects=[DynamicObject.from_dict(o)
                                         for o in d.get("dynamic_objects", [])])


def frame_scene(scene: Scene | DynamicScene, frame: int) -> Scene:
    """The static scene seen at frame index ``frame`` (a static ``Scene`` is returned as is)."""
    return scene.scene_at(frame) if isinstance(scene, DynamicScene) else scene


# ----------------------------------------------------------------------------- the benchmark
#: Room of :func:`make_dynamic_scene`: x in [-3.5, 3.5], y in [-3, 3], z in [0, 2.5] metres.
DYNAMIC_ROOM_SIZE_XY = (7.0, 6.0)
DYNAMIC_ROOM_HEIGHT_M = 2.5
#: Seeded offsets of every object's nominal position are uniform in +- this, metres.
DYNAMIC_JITTER_M = 0.08
#: Minimum horizontal gap between the bounding circles of different objects, metres.
DYNAMIC_MIN_GAP_M = 0.1


def make_table(center_xy: tuple[float, float], yaw_rad: float, *,
               top_half_xy: tuple[float, float] = (0.45, 0.3), height_m: float = 0.75,
               top_thickness_m: float = 0.05, leg_radius_m: float = 0.04,
               leg_inset_m: float = 0.06, color: tuple[float, float, float] = (0.6, 0.4, 0.2)
               ) -> tuple[Solid, ...]:
    """A table standing on the floor: a box top on four vertical cylinder legs.

    The legs stand on the floor (z = 0) and end exactly under the top (z = ``height_m -
    top_thickness_m``); their centres sit ``leg_inset_m`` inside the top's corners.

    Returns:
        ``(top, leg, leg, leg, leg)``, world frame.
    """
    hx, hy = top_half_xy
    leg_h = height_m - top_thickness_m
    if not (0 < top_thickness_m < height_m and 0 < leg_radius_m <= leg_inset_m < min(hx, hy)):
        raise ConfigError("make_table: need 0 < thickness < height and "
                          "0 < leg radius <= leg inset < the top's half sizes")
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    top = Box(center=(center_xy[0], center_xy[1], height_m - 0.5 * top_thickness_m),
              half_extents=(hx, hy, 0.5 * top_thickness_m), yaw_rad=yaw_rad, color=color)
    ox, oy = hx - leg_inset_m, hy - leg_inset_m
    legs = []
    for lx, ly in ((ox, oy), (ox, -oy), (-ox, oy), (-ox, -oy)):
        x, y = center_xy[0] + c * lx - s * ly, center_xy[1] + s * lx + c * ly
        legs.append(Cylinder(center=(x, y, 0.5 * leg_h), radius=leg_radius_m,
                             half_height=0.5 * leg_h, color=color))
    return (top, *legs)


def _layout(rng: np.random.Generator) -> tuple[list[Solid], dict[str, tuple[Solid, ...]],
                                               dict[str, tuple[Solid, ...]]]:
    """Static solids, removed objects and added objects of the benchmark room (nominal
    positions jittered by ``rng``)."""
    def xy(x: float, y: float) -> tuple[float, float]:
        dx, dy = rng.uniform(-DYNAMIC_JITTER_M, DYNAMIC_JITTER_M, size=2)
        return x + float(dx), y + float(dy)

    def yaw(deg: float) -> float:
        return math.radians(deg + float(rng.uniform(-15.0, 15.0)))

    def box(x: float, y: float, half: tuple[float, float, float], deg: float) -> Box:
        cx, cy = xy(x, y)
        return Box(center=(cx, cy, half[2]), half_extents=half, yaw_rad=yaw(deg),
                   color=_random_color(rng))

    def cylinder(x: float, y: float, radius: float, height: float) -> Cylinder:
        cx, cy = xy(x, y)
        return Cylinder(center=(cx, cy, 0.5 * height), radius=radius, half_height=0.5 * height,
                        color=_random_color(rng))

    static: list[Solid] = [
        box(-1.25, 0.55, (0.3, 0.22, 0.45), 0.0),  # cabinet, 0.9 m tall
        cylinder(1.4, 0.65, 0.2, 1.5),  # pillar
    ]
    removed = {
        "box": (box(1.2, -0.7, (0.25, 0.2, 0.3), 25.0),),
        "cylinder": (cylinder(-0.35, -0.85, 0.18, 0.9),),
        "table": make_table(xy(0.1, 0.55), yaw(10.0), color=_random_color(rng)),
    }
    added = {"crate": (box(-1.45, -0.6, (0.28, 0.22, 0.35), -20.0),)}
    return static, removed, added


def _center_xy(solid: Solid) -> np.ndarray:
    """(2,) plan-view centre of a solid (its bounding box's; the centre of
    :meth:`~.shapes.Shape.bounding_radius_xy`'s circle for every primitive)."""
    lo, hi = solid.aabb()
    return 0.5 * (lo[:2] + hi[:2])


def check_layout(room: Room, groups: Sequence[Sequence[Solid]],
                 margin_m: float = DEFAULT_SCAN_MARGIN_M,
                 clearance_m: float = DEFAULT_PATH_CLEARANCE_M,
                 min_gap_m: float = DYNAMIC_MIN_GAP_M) -> None:
    """Raise ConfigError unless every object stands on the floor inside the room, keeps
    ``clearance_m`` of horizontal distance from the room-scan path ``margin_m`` inside the
    walls, and the bounding circles (plan view) of solids of different groups are at least
    ``min_gap_m`` apart.

    Args:
        room: the room.
        groups: one sequence of solids per object (solids of one object may touch).
    """
    path = scan_path_points(room, margin_m, 1440)
    lo, hi = room.bounds
    for g, solids in enumerate(groups):
        bottom = min(float(s.aabb()[0][2]) for s in solids)
        if abs(bottom) > 1e-9:
            raise ConfigError(f"object {g} does not stand on the floor (lowest z {bottom})")
        for s in solids:
            s_lo, s_hi = s.aabb()
            if np.any(s_lo < lo) or np.any(s_hi > hi):
                raise ConfigError(f"object {g} reaches outside the room")
            dist = np.min(np.linalg.norm(path - _center_xy(s), axis=1))
            if dist - s.bounding_radius_xy() < clearance_m:
                raise ConfigError(f"object {g} is closer than {clearance_m} m to the scan path")
    for (i, group_a), (j, group_b) in itertools.combinations(enumerate(groups), 2):
        for a, b in itertools.product(group_a, group_b):
            gap = (float(np.linalg.norm(_center_xy(a) - _center_xy(b)))
                   - a.bounding_radius_xy() - b.bounding_radius_xy())
            if gap < min_gap_m:
                raise ConfigError(f"objects {i} and {j} are closer than {min_gap_m} m")


def make_dynamic_scene(seed: int = 0, frames_per_loop: int = 40, *,
                       rate_hz: float = 10.0) -> tuple[DynamicScene, Trajectory]:
    """The two-pass change benchmark: a 7 x 6 x 2.5 m room scanned twice along the same loop.

    Static: a cabinet (box, 0.9 m tall) and a pillar (cylinder, 1.5 m). Removed (present in
    frames ``[0, frames_per_loop)``): ``box`` (0.6 m tall, rotated), ``cylinder`` (vertical,
    0.9 m) and ``table`` (0.75 m, box top on four cylinder legs). Added (present from frame
    ``frames_per_loop`` on): ``crate`` (box, 0.7 m). Everything stands on the floor around the
    room's centre; ``seed`` jitters positions (+-8 cm), yaws and colors. All objects keep
    :data:`DEFAULT_PATH_CLEARANCE_M` from the camera path, checked by :func:`check_layout`.

    The trajectory is :func:`~.trajectory.room_scan_trajectory` (one loop of
    ``frames_per_loop`` poses looking at the room's centre) driven twice: frame
    ``frames_per_loop + i`` has exactly the pose of frame ``i``.

    Args:
        seed: determines the jitter and colors.
        frames_per_loop: poses per pass (the trajectory has twice as many).
        rate_hz: image rate of the stamps.

    Returns:
        ``(scene, trajectory)``; ``scene.name == "dynamic"``, ``scene.seed == seed``.
    """
    if frames_per_loop < 1:
        raise ConfigError(f"frames_per_loop must be >= 1, got {frames_per_loop}")
    rng = np.random.default_rng([int(seed), 0xD1A])
    room = Room(size_xy=DYNAMIC_ROOM_SIZE_XY, height=DYNAMIC_ROOM_HEIGHT_M)
    static, removed, added = _layout(rng)
    check_layout(room, [[s] for s in static] + list(removed.values()) + list(added.values()))
    base = Scene(room=room, objects=static, name="dynamic", seed=int(seed))
    n = frames_per_loop
    dynamic = ([DynamicObject(k, v, 0, n) for k, v in removed.items()]
               + [DynamicObject(k, v, n, None) for k, v in added.items()])
    loop = room_scan_trajectory(base, n, look_at=room.center_xy, rate_hz=rate_hz)
    return DynamicScene(base, dynamic), repeat_trajectory(loop, 2, rate_hz)


#: Dynamic scenes by name: ``(seed, frames_per_loop) -> (scene, trajectory)``.
DYNAMIC_SCENES: dict[str, Callable[[int, int], tuple[DynamicScene, Trajectory]]] = {
    "dynamic": lambda seed, frames_per_loop: make_dynamic_scene(seed, frames_per_loop),
}


def make_dynamic(name: str, seed: int = 0, frames_per_loop: int = 40
                 ) -> tuple[DynamicScene, Trajectory]:
    """Rebuild a registered dynamic scene and its trajectory from ``(name, seed,
    frames_per_loop)`` (a bag of ``N`` frames of it has ``frames_per_loop = N // 2``)."""
    if name not in DYNAMIC_SCENES:
        raise ConfigError(f"unknown dynamic scene {name!r}; expected one of "
                          f"{sorted(DYNAMIC_SCENES)}")
    return DYNAMIC_SCENES[name](seed, frames_per_loop)
