"""Dynamic synthetic scenes: per-frame scenes, rendering, ground truth of removed/added objects,
the metrics that score them, and the bag / dataset writers (exact answers, small images)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from recon_ros.core.errors import ConfigError
from recon_ros.core.mesh import TriangleMesh
from recon_ros.core.occupancy_grid import FREE, OCCUPIED, UNKNOWN, OccupancyGrid2D
from recon_ros.evaluation import dynamic_metrics
from recon_ros.io.map_files import read_nav2_map, read_points
from recon_ros.io.synthetic import (
    Box,
    Cylinder,
    DynamicObject,
    DynamicScene,
    Room,
    Scene,
    Sphere,
    check_layout,
    change_surface_points,
    default_camera,
    dynamic_scene_from_dict,
    exposed_surface_points,
    footprint_cells,
    frame_scene,
    iter_frames,
    make_demo_scene,
    make_dynamic,
    make_dynamic_scene,
    make_table,
    render,
    seen_free_cells,
    visible_mask,
)
from test.conftest import look_at

FPL = 6  # frames per loop of the small sequences


@pytest.fixture(scope="module")
def benchmark() -> tuple:
    return make_dynamic_scene(0, FPL)


# ----------------------------------------------------------------------------- scene
def test_scene_at_gives_the_objects_of_each_frame(benchmark):
    dyn, traj = benchmark
    assert dyn.name == "dynamic" and dyn.seed == 0 and len(traj) == 2 * FPL
    by_name = {o.name: o for o in dyn.dynamic_objects}
    assert sorted(by_name) == ["box", "crate", "cylinder", "table"]
    static = list(dyn.base.objects)
    loop1 = static + [*by_name["box"].shapes, *by_name["cylinder"].shapes,
                      *by_name["table"].shapes]
    loop2 = static + list(by_name["crate"].shapes)
    for i in range(2 * FPL):
        scene = dyn.scene_at(i)
        expected = loop1 if i < FPL else loop2
        assert len(scene.objects) == len(expected)
        assert all(a is b for a, b in zip(scene.objects, expected))
        assert scene.room is dyn.room and scene.name == "dynamic" and scene.seed == 0
    assert len(by_name["table"].shapes) == 5
    assert [o.name for o in dyn.removed(0, 2 * FPL - 1)] == ["box", "cylinder", "table"]
    assert [o.name for o in dyn.added(0, 2 * FPL - 1)] == ["crate"]
    assert dyn.stable_from(2 * FPL) == FPL and dyn.stable_from(FPL) == 0
    # the same loop driven twice: identical poses, increasing stamps
    np.testing.assert_array_equal(traj.poses[FPL:], traj.poses[:FPL])
    assert np.all(np.diff(traj.stamps_ns) == 100_000_000)
    static_scene = make_demo_scene()
    assert frame_scene(static_scene, 7) is static_scene
    assert frame_scene(dyn, FPL).objects[-1] is by_name["crate"].shapes[0]


def test_dynamic_scene_description_round_trip_and_registry(benchmark):
    dyn, traj = benchmark
    again = dynamic_scene_from_dict(json.loads(json.dumps(dyn.describe())))
    assert again.describe() == dyn.describe()
    rebuilt, traj2 = make_dynamic("dynamic", 0, FPL)
    assert rebuilt.describe() == dyn.describe()
    np.testing.assert_array_equal(traj2.poses, traj.poses)
    assert make_dynamic_scene(1, FPL)[0].describe() != dyn.describe()
    with pytest.raises(ConfigError):
        make_dynamic("nope")


def test_dynamic_object_validation():
    box = Box(center=(0, 0, 0.5), half_extents=(0.2, 0.2, 0.5))
    obj = DynamicObject("a", (box,), 2, 5)
    assert [obj.present_at(i) for i in range(7)] == [False, False, True, True, True, False,
                                                     False]
    assert DynamicObject("b", (box,), 3).present_at(10**6)
    for bad in (dict(name="", shapes=(box,)), dict(name="x", shapes=()),
                dict(name="x", shapes=(Room((4.0, 4.0), 2.0),)),
                dict(name="x", shapes=(box,), first_frame=-1),
                dict(name="x", shapes=(box,), first_frame=3, last_frame=3)):
        with pytest.raises(ConfigError):
            DynamicObject(**bad)
    with pytest.raises(ConfigError):
        DynamicScene(make_demo_scene(), [obj, DynamicObject("a", (box,))])


@pytest.mark.parametrize("seed", range(8))
def test_benchmark_layout_stands_on_the_floor_clear_of_the_camera_path(seed):
    dyn, traj = make_dynamic_scene(seed, 16)
    room_lo, room_hi = dyn.room.bounds
    solids = list(dyn.base.objects) + [s for o in dyn.dynamic_objects for s in o.shapes]
    for s in solids:
        lo, hi = s.aabb()
        assert np.all(lo >= room_lo) and np.all(hi <= room_hi)
    groups = [[s] for s in dyn.base.objects] + [list(o.shapes) for o in dyn.dynamic_objects]
    for g in groups:
        assert min(s.aabb()[0][2] for s in g) == pytest.approx(0.0, abs=1e-12)
    # optical centres and the robot base path keep >= 0.5 m from every solid (plan view)
    cams = traj.camera_positions[:, :2]
    bases = traj.base_xy_yaw[:, :2]
    for s in solids:
        c = 0.5 * (s.aabb()[0][:2] + s.aabb()[1][:2])
        for path in (cams, bases):
            assert np.min(np.linalg.norm(path - c, axis=1)) - s.bounding_radius_xy() > 0.4
    for i in range(len(traj)):
        assert dyn.scene_at(i).sdf_np(traj.camera_positions[i:i + 1])[0] > 0.5


def test_check_layout_rejects_bad_placements():
    room = Room((7.0, 6.0), 2.5)
    ok = [Box(center=(0, 0, 0.3), half_extents=(0.2, 0.2, 0.3))]
    check_layout(room, [ok])
    on_path = [Box(center=(2.7, 0, 0.3), half_extents=(0.2, 0.2, 0.3))]
    floating = [Sphere(center=(0, 0, 0.5), radius=0.2)]
    outside = [Cylinder(center=(3.4, 0, 0.5), radius=0.3, half_height=0.5)]
    for bad in ([on_path], [floating], [outside], [ok, [Box(center=(0.3, 0, 0.3),
                                                            half_extents=(0.2, 0.2, 0.3))]]):
        with pytest.raises(ConfigError):
            check_layout(room, bad)


def test_make_table_legs_touch_floor_and_top():
    top, *legs = make_table((1.0, -0.5), math.radians(30), top_half_xy=(0.5, 0.3),
                            height_m=0.8, top_thickness_m=0.05, leg_radius_m=0.04,
                            leg_inset_m=0.06)
    assert top.aabb()[1][2] == pytest.approx(0.8) and top.aabb()[0][2] == pytest.approx(0.75)
    for leg in legs:
        lo, hi = leg.aabb()
        assert lo[2] == pytest.approx(0.0) and hi[2] == pytest.approx(0.75)
        # every leg's axis lies inside the top (its centre is under the top)
        p = torch.tensor([[leg.center[0], leg.center[1], 0.775]], dtype=torch.float64)
        assert float(top.sdf(p)[0]) < -0.02


# ----------------------------------------------------------------------------- rendering
def _pixel_on(shape_center: np.ndarray, camera, T: np.ndarray) -> tuple[int, int] | None:
    """Nearest pixel to the projection of a world point, if it is inside the image."""
    pc = (shape_center - T[:3, 3]) @ T[:3, :3]
    if pc[2] <= 0:
        return None
    u = round(camera.fx * pc[0] / pc[2] + camera.cx)
    v = round(camera.fy * pc[1] / pc[2] + camera.cy)
    return (u, v) if 0 <= u < camera.width and 0 <= v < camera.height else None


def _exact_first_hit(scene: Scene, camera, T: np.ndarray, u: int, v: int
                     ) -> tuple[float, int]:
    """z-depth and part index of pixel (u, v)'s first hit, intersecting every part alone."""
    d_cam = np.array([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, 1.0])
    o = torch.tensor(T[None, :3, 3])
    d = torch.tensor((T[:3, :3] @ d_cam)[None])
    ts = [float(p.intersect(o, d)[0]) for p in scene.parts]
    k = int(np.argmin(ts))
    return ts[k], k


def test_rendered_pixel_sees_removed_object_in_loop_1_and_background_in_loop_2(benchmark):
    dyn, traj = benchmark
    cam = default_camera(80, 60)
    frames = list(iter_frames(dyn, cam, traj))
    box = next(o for o in dyn.dynamic_objects if o.name == "box").shapes[0]
    checked = 0
    for i in range(FPL):
        T = traj.poses[i]
        pix = _pixel_on(np.asarray(box.center), cam, T)
        if pix is None:
            continue
        u, v = pix
        t1, part1 = _exact_first_hit(dyn.scene_at(i), cam, T, u, v)
        if dyn.scene_at(i).parts[part1] is not box:
            continue  # occluded from this pose
        t2, part2 = _exact_first_hit(dyn.scene_at(i + FPL), cam, T, u, v)
        assert part2 == 0 and t2 > t1 + 0.2  # the floor or a wall, behind the box
        assert frames[i].depth[v, u] == pytest.approx(t1, abs=1e-5)
        assert frames[i + FPL].depth[v, u] == pytest.approx(t2, abs=1e-5)
        np.testing.assert_array_equal(frames[i].T_world_cam, frames[i + FPL].T_world_cam)
        checked += 1
    assert checked >= 2
    # frames equal the static renders of their own scene
    for i in (0, FPL):
        np.testing.assert_array_equal(frames[i].depth,
                                      render(dyn.scene_at(i), cam, traj.poses[i]).depth)


# ----------------------------------------------------------------------------- ground truth
def test_exposed_surface_excludes_contact_faces():
    room = Room((4.0, 4.0), 2.0)
    table = make_table((0.0, 0.0), 0.0, top_half_xy=(0.4, 0.3), height_m=0.7,
                       top_thickness_m=0.04, leg_radius_m=0.05, leg_inset_m=0.08)
    crate = Box(center=(1.2, 0.0, 0.25), half_extents=(0.25, 0.25, 0.25))
    scene = Scene(room, [*table, crate])
    pts = exposed_surface_points(scene, table, 20000, seed=3, tol_m=0.01)
    assert pts.shape == (20000, 3)
    p = torch.from_numpy(pts)
    own = torch.stack([s.sdf(p) for s in table], dim=1)
    assert float(own.abs().min(dim=1).values.max()) < 1e-9  # on the table's surface
    # more than 1 cm outside every other part: its other solids, the floor, the crate
    for k, s in enumerate(table):
        mine = own[:, k].abs() < 1e-9
        others = [q for q in scene.parts if q is not s]
        d = torch.stack([q.sdf(p[mine]) for q in others], dim=1).min(dim=1).values
        assert float(d.min()) > 0.01
    assert pts[:, 2].min() > 0.01  # leg bottoms on the floor are not exposed
    top, legs = table[0], table[1:]
    underside = np.abs(pts[:, 2] - 0.66) < 1e-9
    assert underside.sum() > 500  # the top's underside is exposed away from the legs...
    for leg in legs:  # ...but not where the legs meet it, nor the legs' upper caps
        r = np.hypot(pts[underside, 0] - leg.center[0], pts[underside, 1] - leg.center[1])
        assert r.min() > leg.radius + 0.01
    # the crate's bottom face never appears; its top does, in proportion to its area
    crate_pts = exposed_surface_points(scene, [crate], 20000, seed=4)
    assert crate_pts[:, 2].min() > 0.01
    top_fraction = np.mean(np.abs(crate_pts[:, 2] - 0.5) < 1e-9)
    expected = 0.25 / (0.25 + 4 * 0.5 * (0.5 - 0.01))  # top / (top + sides above 1 cm)
    assert top_fraction == pytest.approx(expected, abs=0.015)
    with pytest.raises(ConfigError):
        exposed_surface_points(scene, [Box(center=(0, 0, 1), half_extents=(1, 1, 1))], 10)


def test_visible_mask_exact_cases():
    room = Room((8.0, 8.0), 3.0)
    front = Box(center=(2.0, 0.0, 1.0), half_extents=(0.25, 0.25, 0.25))
    # a small blocker on the line from the camera to (1.75, 0.2, 1.0)
    blocker = Box(center=(1.0, 0.2 / 1.75, 1.0), half_extents=(0.05, 0.05, 0.05))
    scene = Scene(room, [front, blocker])
    cam = default_camera(80, 60)  # half field of view about 31 degrees
    T = look_at(np.array([0.0, 0.0, 1.0]), np.array([2.0, 0.0, 1.0]))
    pts = np.array([
        [1.75, -0.2, 1.0],  # front face of the box, facing the camera: seen
        [1.75, 0.2, 1.0],  # front face, behind the blocker: hidden
        [0.95, 0.2 / 1.75, 1.0],  # the blocker's face towards the camera: seen
        [2.25, 0.0, 1.0],  # the box's back face: hidden by the box itself
        [4.0, 0.0, 1.0],  # the wall behind the box: hidden
        [4.0, 3.9, 1.0],  # a wall point outside the field of view
        [-4.0, 0.0, 1.0],  # the wall behind the camera
    ])
    np.testing.assert_array_equal(visible_mask(pts, [(scene, T)], cam),
                                  [True, False, True, False, False, False, False])
    # without the blocker the point behind it is seen; each view has its own scene
    np.testing.assert_array_equal(
        visible_mask(pts[:2], [(scene, T), (Scene(room, [front]), T)], cam), [True, True])
    # the range limit is on z-depth
    np.testing.assert_array_equal(visible_mask(pts[:1], [(scene, T)], cam, max_range_m=1.76),
                                  [True])
    np.testing.assert_array_equal(visible_mask(pts[:1], [(scene, T)], cam, max_range_m=1.74),
                                  [False])
    # the back face is seen from the other side
    T_back = look_at(np.array([3.5, 0.0, 1.0]), np.array([2.0, 0.0, 1.0]))
    np.testing.assert_array_equal(visible_mask(pts[3:4], [(scene, T), (scene, T_back)], cam),
                                  [True])


def test_footprint_cells_of_an_axis_aligned_box_and_a_cylinder():
    # x in [0.12, 0.38], y in [-0.20, -0.06], z in [0, 1]; cells of 0.1 m centred on k * 0.1
    box = Box(center=(0.25, -0.13, 0.5), half_extents=(0.13, 0.07, 0.5))
    got = footprint_cells([box], 0.1, 0.05, 1.5)
    expected = [(ix, iy) for iy in (-2, -1) for ix in (1, 2, 3, 4)]
    assert got.dtype == np.int64 and [tuple(c) for c in got] == expected
    assert len(footprint_cells([box], 0.1, 1.1, 1.5)) == 0  # band above the box
    assert len(footprint_cells([box], 0.1, 1.0, 1.5)) == 0  # touching its top only
    cyl = Cylinder(center=(0.0, 0.0, 0.3), radius=0.1, half_height=0.3)
    got = footprint_cells([cyl], 0.1, 0.05, 1.5)
    assert sorted(map(tuple, got)) == [(ix, iy) for ix in (-1, 0, 1) for iy in (-1, 0, 1)]
    both = footprint_cells([box, cyl], 0.1, 0.05, 1.5)
    assert sorted(map(tuple, both)) == sorted(set(map(tuple, got)) | set(expected))
    assert footprint_cells([], 0.1, 0.0, 1.0).shape == (0, 2)


def test_seen_free_cells_from_a_camera_looking_down():
    room = Room((6.0, 6.0), 3.0)
    post = Box(center=(0.5, 0.0, 0.3), half_extents=(0.12, 0.12, 0.3))  # 0.6 m tall
    scene = Scene(room, [post])
    cam = default_camera(80, 60)
    T = look_at(np.array([0.0, 0.0, 1.5]), np.array([0.0, 0.0, 0.0]),
                up=np.array([1.0, 0.0, 0.0]))
    cells = np.array([[0, 0], [-3, 2], [5, 0], [40, 0], [0, 20]])
    got = seen_free_cells(cells, scene, cam, [T], 0.1, 0.05, 0.4, stride_px=2)
    # under the camera and in view: seen free; the post's cell: its column is solid in the
    # band; (4, 0) is 4 m away, out of view; (0, 20) is outside the room
    np.testing.assert_array_equal(got, [True, True, False, False, False])
    # with the post removed, its cell is seen free; frames select the views used
    empty = Scene(room, [])
    assert seen_free_cells(cells[2:3], empty, cam, [T], 0.1, 0.05, 0.4)[0]
    dyn = DynamicScene(empty, [DynamicObject("post", (post,), 0, 1)])
    assert not seen_free_cells(cells[2:3], dyn, cam, [T, T], 0.1, 0.05, 0.4, frames=[0])[0]
    assert seen_free_cells(cells[2:3], dyn, cam, [T, T], 0.1, 0.05, 0.4, frames=[1])[0]
    # a band entirely above what the rays cross before the floor is not free evidence
    assert not seen_free_cells(cells[:1], empty, cam, [T], 0.1, 1.6, 2.0).any()


def test_benchmark_footprint_is_seen_free_in_loop_2_only_where_nothing_stands(benchmark):
    dyn, traj = benchmark
    cam = default_camera(80, 60)
    removed = dyn.removed(0, 2 * FPL - 1)
    solid_cells = {}
    for o in removed:
        cells = footprint_cells(o.shapes, 0.05, 0.05, 1.5)
        loop2 = seen_free_cells(cells, dyn, cam, traj, 0.05, 0.05, 0.4,
                                frames=range(FPL, 2 * FPL), stride_px=2)
        loop1 = seen_free_cells(cells, dyn, cam, traj, 0.05, 0.05, 0.4,
                                frames=range(FPL), stride_px=2)
        assert loop2.mean() > 0.9, o.name
        # cells entirely inside a solid that fills the band's bottom are never seen free
        # while it stands
        centres = cells * 0.05
        inner = np.ones(len(cells), dtype=bool)
        for dx in (-0.025, 0.025):
            for dy in (-0.025, 0.025):
                zlo, zhi = np.inf, -np.inf
                for s in o.shapes:
                    lo, hi = s.column_interval(centres[:, 0] + dx, centres[:, 1] + dy)
                    zlo, zhi = np.minimum(zlo, lo), np.maximum(zhi, hi)
                inner &= (zlo <= 0.05) & (zhi >= 0.4)
        solid_cells[o.name] = int(inner.sum())
        assert not loop1[inner].any(), o.name
    assert solid_cells["box"] > 20 and solid_cells["cylinder"] > 5


def test_change_surface_points(benchmark):
    dyn, traj = benchmark
    cam = default_camera(80, 60)
    final = dyn.scene_at(2 * FPL - 1)
    first = dyn.scene_at(0)
    for o in dyn.dynamic_objects:
        pts = change_surface_points(dyn, o, cam, traj, 4000, seed=1, margin_m=0.1)
        assert 1000 < len(pts) < 4000, o.name
        own = torch.stack([s.sdf(torch.from_numpy(pts)) for s in o.shapes], 1)
        assert float(own.abs().min(1).values.max()) < 1e-9
        absent = final if o.name != "crate" else first
        assert absent.sdf_np(pts).min() > 0.1
        present = [i for i in range(2 * FPL) if o.present_at(i)]
        assert visible_mask(pts, [(dyn.scene_at(i), traj.poses[i]) for i in present], cam).all()
        assert pts[:, 2].min() > 0.1  # the margin drops the sides' bottom above the floor
    with pytest.raises(ConfigError):
        change_surface_points(dyn, DynamicObject("x", (Sphere((0, 0, 1), 0.2),)), cam, traj, 10)


# ----------------------------------------------------------------------------- metrics
def _box_mesh(lo, hi) -> TriangleMesh:
    """Closed axis-aligned box, 12 outward triangles."""
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    v = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)], np.float32)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = [tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))]
    return TriangleMesh(v, np.array(f, np.int64))


def _quad_mesh(corners) -> TriangleMesh:
    return TriangleMesh(np.asarray(corners, np.float32), np.array([[0, 1, 2], [0, 2, 3]]))


def _merge(*meshes: TriangleMesh) -> TriangleMesh:
    off = np.cumsum([0] + [m.num_vertices for m in meshes[:-1]])
    return TriangleMesh(np.concatenate([m.vertices for m in meshes]),
                        np.concatenate([m.faces + o for m, o in zip(meshes, off)]))


def test_dynamic_metrics_exact_values():
    rng = np.random.default_rng(0)
    floor = _quad_mesh([[-2, -2, 0], [2, -2, 0], [2, 2, 0], [-2, 2, 0]])
    wall = _quad_mesh([[2, -2, 0], [2, 2, 0], [2, 2, 2], [2, -2, 2]])
    cube = _box_mesh((0.8, 0.8, 0.0), (1.2, 1.2, 0.4))
    # removed-object points on the cube's top and upper sides (> 5 cm above the floor)
    top = np.column_stack((rng.uniform(0.8, 1.2, (60, 2)), np.full(60, 0.4)))
    side = np.column_stack((np.full(40, 0.8), rng.uniform(0.8, 1.2, 40), rng.uniform(0.1, 0.4, 40)))
    removed = np.concatenate((top, side))
    far = np.column_stack((rng.uniform(-1, 0, (10, 2)), np.full(10, 1.5)))  # 1.5 m up
    added = np.concatenate((removed[:30], far))  # 30 on the cube, 10 far from any mesh
    static_gt = np.concatenate((
        np.column_stack((rng.uniform(-2, 2, (40000, 2)), np.zeros(40000))),
        np.column_stack((np.full(20000, 2.0), rng.uniform(-2, 2, 20000),
                         rng.uniform(0, 2, 20000)))))
    # 4 x 4 grid of 0.5 m cells, origin (0, 0): 3 occupied, 2 free, 2 unknown, 1 outside
    data = np.full((4, 4), UNKNOWN, np.int8)
    data[0, 0] = data[0, 1] = data[1, 1] = OCCUPIED
    data[2, 2] = data[3, 3] = FREE
    grid = OccupancyGrid2D(data, 0.5, (0.0, 0.0), 0.05, 1.5)
    footprint = np.array([[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [1.25, 1.25], [1.75, 1.75],
                          [1.25, 0.25], [0.25, 1.75], [5.0, 5.0]])
    kept = dynamic_metrics(_merge(floor, wall, cube), grid, removed, footprint, added, static_gt)
    assert kept.removed_surface_kept == 1.0
    assert kept.removed_footprint_occupied == 3 / 8
    assert kept.added_surface_recall == 30 / 40
    # the cube's surface above 5 cm is not in the static ground truth: precision drops
    p = 1.0 - 0.72 / (16.0 + 8.0 + 0.96)
    assert kept.static_fscore == pytest.approx(2 * p / (1 + p), abs=0.005)
    assert (kept.n_removed_points, kept.n_footprint_cells, kept.n_added_points) == (100, 8, 40)
    gone = dynamic_metrics(_merge(floor, wall), grid, removed, footprint, added, static_gt)
    assert gone.removed_surface_kept == 0.0 and gone.added_surface_recall == 0.0
    assert gone.static_fscore == 1.0
    assert [r[0] for r in gone.as_rows()] == [
        "removed surface kept @ 5 cm", "removed footprint still occupied",
        "added surface recall @ 5 cm", "static F-score @ 5 cm"]
    nothing = dynamic_metrics(_merge(floor, wall), grid, np.zeros((0, 3)), np.zeros((0, 2)),
                              np.zeros((0, 3)), static_gt)
    assert math.isnan(nothing.removed_surface_kept)
    assert math.isnan(nothing.removed_footprint_occupied)
    assert math.isnan(nothing.added_surface_recall)


# ----------------------------------------------------------------------------- bag, dataset
@pytest.mark.parametrize("storage,encoding", [("sqlite3", "32FC1")])
def test_dynamic_bag_round_trip(tmp_path, storage, encoding):
    from recon_ros.io.rosbag_source import RosbagSource
    from recon_ros.io.synthetic_bag import write_scene_bag

    dyn, traj = make_dynamic_scene(2, 3)
    cam = default_camera(80, 60)
    info = write_scene_bag(tmp_path / "bag", dyn, cam, traj, storage=storage,
                           depth_encoding=encoding)
    assert info.n_frames == 6 and info.scene_name == "dynamic" and info.scene_seed == 2
    frames = list(RosbagSource(tmp_path / "bag", world_frame="map"))
    assert len(frames) == 6
    rebuilt, _ = make_dynamic(info.scene_name, info.scene_seed, info.n_frames // 2)
    for i, f in enumerate(frames):
        np.testing.assert_allclose(f.T_world_cam, traj.poses[i], atol=1e-6)
        clean = render(rebuilt.scene_at(i), cam, traj.poses[i])
        np.testing.assert_allclose(np.asarray(f.depth), clean.depth, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(f.color), clean.color)
    # same poses, different scenes: the removed objects are gone in the second pass
    changed = [np.mean(np.asarray(frames[i].depth) != np.asarray(frames[i + 3].depth))
               for i in range(3)]
    assert max(changed) > 0.05


def test_write_synthetic_dataset_dynamic(tmp_path):
    from recon_ros.io.synthetic_dataset import read_change_ground_truth, write_synthetic_dataset

    with pytest.raises(ConfigError, match="even"):
        write_synthetic_dataset(tmp_path / "odd", scene_name="dynamic", n_frames=7)
    out = tmp_path / "ds"
    info = write_synthetic_dataset(out, scene_name="dynamic", seed=1, n_frames=8, width=80,
                                   height=60, change_points=3000, gt_stride_px=2)
    assert info.n_frames == 8 and info.scene_name == "dynamic"
    meta = json.loads((out / "scene.json").read_text())
    assert meta["dynamic"]["removed"] == ["box", "cylinder", "table"]
    assert meta["dynamic"]["added"] == ["crate"]
    dyn, _ = make_dynamic("dynamic", 1, 4)
    assert dynamic_scene_from_dict(meta["scene"]).describe() == dyn.describe()
    final, first = dyn.scene_at(7), dyn.scene_at(0)
    gt = read_change_ground_truth(out / "ground_truth")
    removed = [s for o in dyn.removed(0, 7) for s in o.shapes]
    crate = dyn.added(0, 7)[0].shapes[0]

    def dist_to(shapes, p):
        t = torch.from_numpy(p)
        return torch.stack([s.sdf(t) for s in shapes], 1).abs().min(1).values.numpy()

    assert len(gt.removed_surface) == meta["dynamic"]["removed_surface_points"] > 3000
    assert dist_to(removed, gt.removed_surface).max() < 1e-6  # float32 PLY
    assert final.sdf_np(gt.removed_surface).min() > 0.1
    assert dist_to([crate], gt.added_surface).max() < 1e-6
    assert first.sdf_np(gt.added_surface).min() > 0.1
    # footprint cells: centred on multiples of 5 cm, the seen-free ones among them
    cells = np.round(gt.removed_footprint_xy / 0.05)
    np.testing.assert_allclose(gt.removed_footprint_xy, cells * 0.05, atol=1e-6)
    np.testing.assert_array_equal(cells, footprint_cells(removed, 0.05, 0.05, 1.5))
    seen = {tuple(c) for c in np.round(gt.removed_footprint_seen_free_xy / 0.05)}
    assert seen <= {tuple(c) for c in cells} and len(seen) > 0.8 * len(cells)
    # points.ply and map.yaml describe the final scene (no removed object, the crate)
    points = read_points(out / "ground_truth" / "points.ply")
    assert np.abs(final.sdf_np(points)).max() < 1e-5
    above_floor = points[points[:, 2] > 1e-3]  # the floor where they stood is seen now
    assert dist_to(removed, above_floor).min() > 1e-3
    grid = read_nav2_map(out / "ground_truth" / "map.yaml")
    box = dyn.removed(0, 7)[0].shapes[0]
    assert grid.value_at(np.array([box.center[0]]), np.array([box.center[1]]))[0] == FREE
    assert grid.value_at(np.array([crate.center[0]]), np.array([crate.center[1]]))[0] == OCCUPIED
