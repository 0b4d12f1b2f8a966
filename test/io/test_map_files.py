"""Map files: PLY meshes, Nav2 map_server YAML + PGM and the ESDF .npz, checked by round trips
and by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from recon_ros.core.config import MapperConfig
from recon_ros.core.distance_slice import DistanceSlice
from recon_ros.core.mapper import Mapper
from recon_ros.core.mesh import TriangleMesh
from recon_ros.core.occupancy_grid import FREE, OCCUPIED, UNKNOWN, OccupancyGrid2D
from recon_ros.io.map_files import (
    FREE_THRESH,
    OCCUPIED_THRESH,
    PIXEL_FREE,
    PIXEL_OCCUPIED,
    PIXEL_UNKNOWN,
    EsdfMap,
    MapFileError,
    read_esdf,
    read_nav2_map,
    read_ply,
    trinary_occupancy,
    write_esdf,
    write_nav2_map,
    write_ply,
)
from recon_ros.io.synthetic import (
    default_camera,
    iter_frames,
    make_demo_scene,
    room_scan_trajectory,
)
from recon_ros.offline import ESDF_FILE, MESH_FILE, write_map_outputs

U, F, O = UNKNOWN, FREE, OCCUPIED


# --------------------------------------------------------------------------------------------
# PLY
# --------------------------------------------------------------------------------------------

def _colored_mesh() -> TriangleMesh:
    """A small fan of triangles whose vertex colors take every value 0..255 once or more."""
    rng = np.random.default_rng(0)
    n = 90  # 270 color components >= 256
    vertices = rng.uniform(-5.0, 5.0, (n, 3)).astype(np.float32)
    faces = np.stack([np.zeros(n - 2), np.arange(1, n - 1), np.arange(2, n)], axis=1)
    colors = (np.arange(n * 3) % 256).astype(np.uint8).reshape(n, 3)
    return TriangleMesh(vertices, faces.astype(np.int64), colors)


def test_ply_round_trip_colored_mesh(tmp_path: Path) -> None:
    mesh = _colored_mesh()
    path = tmp_path / "sub" / "mesh.ply"
    write_ply(path, mesh)

    header = path.read_bytes().split(b"end_header")[0].decode("ascii")
    assert "format binary_little_endian 1.0" in header
    assert "property uchar red" in header

    back = read_ply(path)
    assert back.vertices.dtype == np.float32
    assert back.faces.dtype == np.int64
    np.testing.assert_array_equal(back.vertices, mesh.vertices)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    assert back.colors is not None and back.colors.dtype == np.uint8
    np.testing.assert_array_equal(back.colors, mesh.colors)


def test_ply_round_trip_without_colors(tmp_path: Path) -> None:
    mesh = _colored_mesh()
    mesh.colors = None
    write_ply(tmp_path / "mesh.ply", mesh)
    back = read_ply(tmp_path / "mesh.ply")
    assert back.colors is None
    np.testing.assert_array_equal(back.faces, mesh.faces)


def test_ply_empty_mesh(tmp_path: Path) -> None:
    write_ply(tmp_path / "empty.ply", TriangleMesh.empty(with_colors=True))
    back = read_ply(tmp_path / "empty.ply")
    assert back.num_vertices == 0 and back.num_faces == 0


def test_read_ply_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_ply(tmp_path / "nope.ply")


# --------------------------------------------------------------------------------------------
# Nav2 map_server YAML + PGM
# --------------------------------------------------------------------------------------------

# 4 rows x 6 columns, row 0 = lowest y; no row or column symmetry, so a flip or transpose shows.
GRID = np.array([
    [O, O, F, F, F, U],
    [O, F, F, U, U, U],
    [F, F, U, U, O, U],
    [U, F, F, F, F, O],
], dtype=np.int8)


def _grid() -> OccupancyGrid2D:
    return OccupancyGrid2D(data=GRID.copy(), resolution_m=0.05, origin_xy=(-1.25, 3.5),
                           min_height_m=0.1, max_height_m=1.8)


def _read_pgm(path: Path) -> tuple[list[bytes], np.ndarray]:
    """Header lines and pixels of a PGM with a comment-free 3-line header."""
    raw = path.read_bytes()
    header = raw.split(b"\n", 3)
    magic, size, maxval, raster = header
    width, height = (int(v) for v in size.split())
    return [magic, size, maxval], np.frombuffer(raster, np.uint8).reshape(height, width)


def test_nav2_map_round_trip(tmp_path: Path) -> None:
    yaml_path = tmp_path / "maps" / "floor.yaml"
    pgm_path = write_nav2_map(yaml_path, _grid())
    assert pgm_path == tmp_path / "maps" / "floor.pgm"

    back = read_nav2_map(yaml_path)
    np.testing.assert_array_equal(back.data, GRID)
    assert back.data.dtype == np.int8
    assert back.resolution_m == 0.05
    assert back.origin_xy == (-1.25, 3.5)
    assert (back.min_height_m, back.max_height_m) == (0.1, 1.8)


def test_nav2_yaml_contents(tmp_path: Path) -> None:
    write_nav2_map(tmp_path / "floor.yaml", _grid())
    meta = yaml.safe_load((tmp_path / "floor.yaml").read_text())
    assert meta["image"] == "floor.pgm"
    assert meta["mode"] == "trinary"
    assert meta["resolution"] == 0.05
    assert meta["origin"] == [-1.25, 3.5, 0.0]
    assert meta["negate"] == 0
    assert meta["occupied_thresh"] == 0.65
    assert meta["free_thresh"] == 0.196


def test_pgm_header_and_row_order(tmp_path: Path) -> None:
    pgm_path = write_nav2_map(tmp_path / "floor.yaml", _grid())
    header, pixels = _read_pgm(pgm_path)
    assert header == [b"P5", b"6 4", b"255"]  # width 6, height 4
    # Image row 0 is the top of the map: the grid's last row (highest y).
    np.testing.assert_array_equal(
        pixels[0], [PIXEL_UNKNOWN, PIXEL_FREE, PIXEL_FREE, PIXEL_FREE, PIXEL_FREE, PIXEL_OCCUPIED])
    np.testing.assert_array_equal(
        pixels[3], [PIXEL_OCCUPIED, PIXEL_OCCUPIED, PIXEL_FREE, PIXEL_FREE, PIXEL_FREE,
                    PIXEL_UNKNOWN])
    assert (PIXEL_OCCUPIED, PIXEL_FREE, PIXEL_UNKNOWN) == (0, 254, 205)


def test_unknown_grey_stays_unknown_only_with_free_thresh_0196() -> None:
    grey = np.array([[PIXEL_UNKNOWN / 255.0]])
    assert math.isclose(1.0 - grey[0, 0], 0.19608, abs_tol=1e-5)
    assert trinary_occupancy(grey, OCCUPIED_THRESH, FREE_THRESH)[0, 0] == UNKNOWN
    # With map_saver's default free_thresh the same pixel reloads as free: the pitfall.
    assert trinary_occupancy(grey, OCCUPIED_THRESH, 0.25)[0, 0] == FREE


def test_map_saver_default_thresholds_turn_unknown_into_free(tmp_path: Path) -> None:
    """A map written with free_thresh 0.25 (map_saver's default) loses its unknown cells."""
    write_nav2_map(tmp_path / "floor.yaml", _grid())
    meta = yaml.safe_load((tmp_path / "floor.yaml").read_text())
    meta["free_thresh"] = 0.25
    (tmp_path / "floor.yaml").write_text(yaml.safe_dump(meta))

    back = read_nav2_map(tmp_path / "floor.yaml")
    np.testing.assert_array_equal(back.data, np.where(GRID == UNKNOWN, FREE, GRID))


def test_trinary_rule_boundaries() -> None:
    # occ = (255 - p) / 255; strict comparisons as in map_server.
    pixels = np.array([[0, 89, 90, 204, 205, 254, 255]], dtype=np.float64)
    cells = trinary_occupancy(pixels / 255.0, OCCUPIED_THRESH, FREE_THRESH)
    # p=89: occ 0.651 > 0.65 occupied; p=90: occ 0.647 unknown; p=204: occ 0.2 unknown;
    # p=205: occ 0.19608 unknown (not < 0.196).
    np.testing.assert_array_equal(cells, [[O, O, U, U, U, F, F]])
    # negate: occ = p / 255 (0, 0.349, 0.353, 0.8, 0.804, 0.996, 1).
    negated = trinary_occupancy(pixels / 255.0, OCCUPIED_THRESH, FREE_THRESH, negate=True)
    np.testing.assert_array_equal(negated, [[F, U, U, O, O, O, O]])


def test_intermediate_cell_values_follow_map_saver(tmp_path: Path) -> None:
    grid = _grid()
    grid.data = np.array([[0, 20, 21, 64, 65, 100, -1, 127]], dtype=np.int8)
    write_nav2_map(tmp_path / "m.yaml", grid)
    _, pixels = _read_pgm(tmp_path / "m.pgm")
    np.testing.assert_array_equal(pixels[0], [254, 254, 205, 205, 0, 0, 205, 205])


def test_reads_map_saver_pgm_with_comment(tmp_path: Path) -> None:
    """map_saver puts a '# CREATOR' comment into the PGM header."""
    pixels = np.array([[0, 205], [254, 0], [205, 254]], dtype=np.uint8)  # 2 wide, 3 high
    (tmp_path / "saved.pgm").write_bytes(
        b"P5\n# CREATOR: map_saver.cpp 0.100 m/pix\n2 3\n255\n" + pixels.tobytes())
    (tmp_path / "saved.yaml").write_text(
        "image: saved.pgm\nmode: trinary\nresolution: 0.1\norigin: [-10.0, -5.0, 0]\n"
        "negate: 0\noccupied_thresh: 0.65\nfree_thresh: 0.196\n")
    grid = read_nav2_map(tmp_path / "saved.yaml")
    np.testing.assert_array_equal(grid.data, [[U, F], [F, O], [O, U]])
    assert grid.origin_xy == (-10.0, -5.0)
    assert math.isnan(grid.min_height_m) and math.isnan(grid.max_height_m)


def test_reads_png_through_opencv(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    pgm_path = write_nav2_map(tmp_path / "floor.yaml", _grid())
    _, pixels = _read_pgm(pgm_path)
    assert cv2.imwrite(str(tmp_path / "floor.png"), pixels)
    meta = yaml.safe_load((tmp_path / "floor.yaml").read_text())
    meta["image"] = "floor.png"
    (tmp_path / "png.yaml").write_text(yaml.safe_dump(meta))
    np.testing.assert_array_equal(read_nav2_map(tmp_path / "png.yaml").data, GRID)


# --------------------------------------------------------------------------------------------
# ESDF .npz
# --------------------------------------------------------------------------------------------

def _esdf_map(n: int = 500) -> EsdfMap:
    """Random voxels (negative indices included) and a slice with unknown (NaN) cells."""
    rng = np.random.default_rng(1)
    distance = rng.uniform(-0.2, 2.0, (7, 9)).astype(np.float32)
    distance[rng.random((7, 9)) < 0.3] = np.nan
    return EsdfMap(
        indices=rng.integers(-300, 300, (n, 3)).astype(np.int32),
        distance=rng.uniform(-0.2, 2.0, n).astype(np.float32),
        obstacle=rng.random(n) < 0.2, voxel_size_m=0.05, max_distance_m=2.0,
        slice=DistanceSlice(distance, 0.05, (-1.275, 0.325), 0.5, 2.0))


@pytest.mark.parametrize("n", [500, 0])
def test_esdf_round_trip(tmp_path: Path, n: int) -> None:
    esdf = _esdf_map(n)
    path = tmp_path / "sub" / "field.bin"  # written exactly there, whatever the suffix
    write_esdf(path, esdf)
    assert path.is_file() and not path.with_suffix(".bin.npz").exists()
    back = read_esdf(path)
    assert back.indices.dtype == np.int32 and back.distance.dtype == np.float32
    assert back.obstacle.dtype == bool
    np.testing.assert_array_equal(back.indices, esdf.indices)
    np.testing.assert_array_equal(back.distance, esdf.distance)
    np.testing.assert_array_equal(back.obstacle, esdf.obstacle)
    assert (back.voxel_size_m, back.max_distance_m, back.num_voxels) == (0.05, 2.0, n)
    np.testing.assert_array_equal(back.slice.distance, esdf.slice.distance)  # NaN == NaN
    assert np.isnan(back.slice.distance).any()
    assert back.slice.origin_xy == esdf.slice.origin_xy
    assert (back.slice.resolution_m, back.slice.height_m, back.slice.max_distance_m) == (
        0.05, 0.5, 2.0)
    np.testing.assert_allclose(back.centers(), esdf.indices * 0.05)


def test_esdf_npz_keys_are_plain_arrays(tmp_path: Path) -> None:
    """Readable with plain NumPy (no pickle), under the documented keys."""
    write_esdf(tmp_path / "esdf.npz", _esdf_map())
    with np.load(tmp_path / "esdf.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"format", "indices", "distance", "obstacle", "voxel_size_m",
                                  "max_distance_m", "slice_distance", "slice_origin_xy",
                                  "slice_resolution_m", "slice_height_m"}
        assert npz["indices"].shape == (500, 3) and npz["slice_distance"].shape == (7, 9)


def test_esdf_rejects_bad_shapes_and_foreign_files(tmp_path: Path) -> None:
    good = _esdf_map(10)
    with pytest.raises(MapFileError, match="indices"):
        EsdfMap(good.indices[:, :2], good.distance, good.obstacle, 0.05, 2.0, good.slice)
    with pytest.raises(MapFileError, match="distance and obstacle"):
        EsdfMap(good.indices, good.distance[:9], good.obstacle, 0.05, 2.0, good.slice)
    other = tmp_path / "other.npz"
    np.savez(other, indices=good.indices)
    with pytest.raises(MapFileError, match="format"):
        read_esdf(other)
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(MapFileError):
        read_esdf(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        read_esdf(tmp_path / "missing.npz")


def _demo_mapper(esdf: bool, mesh_method: str = "marching_cubes") -> Mapper:
    """The demo room seen by 6 small frames at 10 cm; the ESDF is never updated here."""
    scene = make_demo_scene()
    mapper = Mapper(MapperConfig.from_dict({"volume": {"voxel_size_m": 0.1},
                                            "esdf": {"enabled": esdf},
                                            "mesh": {"method": mesh_method}}))
    for frame in iter_frames(scene, default_camera(80, 60), room_scan_trajectory(scene, 6)):
        mapper.integrate(frame)
    return mapper


def test_map_directory_holds_the_up_to_date_esdf(tmp_path: Path) -> None:
    """write_map_outputs (replay, demo, the node's save service) updates the field before
    writing it: the file's distances are the mapper's at every voxel centre, and its slice is
    the voxel layer at ``esdf.slice_height_m``."""
    mapper = _demo_mapper(esdf=True)
    paths, _ = write_map_outputs(mapper, tmp_path, preview=False)
    assert paths["esdf"] == tmp_path / ESDF_FILE
    esdf = read_esdf(paths["esdf"])
    assert esdf.num_voxels > 1000 and 0 < esdf.obstacle.sum() < esdf.num_voxels
    assert (esdf.voxel_size_m, esdf.max_distance_m) == (0.1, mapper.config.esdf.max_distance_m)
    query = mapper.distance(esdf.centers())
    assert bool(query.observed.all())
    np.testing.assert_allclose(query.distance.numpy(), esdf.distance, atol=1e-4)
    assert (esdf.distance[esdf.obstacle] <= 0).all() and (esdf.distance[~esdf.obstacle] >= 0).all()
    s = esdf.slice
    layer = round(mapper.config.esdf.slice_height_m / 0.1)
    assert s.height_m == pytest.approx(layer * 0.1) and s.resolution_m == 0.1
    at_layer = esdf.indices[:, 2] == layer
    centers = esdf.centers()[at_layer]
    assert at_layer.sum() > 100
    np.testing.assert_array_equal(s.value_at(centers[:, 0], centers[:, 1]),
                                  esdf.distance[at_layer])
    # Every known cell of the slice is a voxel of the file: nothing else is known.
    assert int(np.isfinite(s.distance).sum()) == int(at_layer.sum())


def test_map_directory_without_esdf(tmp_path: Path) -> None:
    write_map_outputs(_demo_mapper(esdf=True), tmp_path, preview=False)
    assert (tmp_path / ESDF_FILE).is_file()
    # The same directory reused by a map without ESDF: the old field goes with the old map.
    paths, _ = write_map_outputs(_demo_mapper(esdf=False), tmp_path, preview=False)
    assert "esdf" not in paths and not (tmp_path / ESDF_FILE).exists()
    assert paths["mesh"].is_file() and paths["grid"].is_file()


@pytest.mark.parametrize("checkpoint_first", [False, True])
def test_map_directory_mesh_follows_mesh_method(tmp_path: Path, checkpoint_first: bool) -> None:
    """The directory's mesh.ply (replay, the node's save services and autosave) is made by
    ``mesh.method``: the Poisson mesh differs from the marching-cubes one, lies on the room's
    surface and is reported with its mesher."""
    scene = make_demo_scene()
    mapper = _demo_mapper(esdf=False, mesh_method="poisson")
    paths, export = write_map_outputs(mapper, tmp_path / "poisson", preview=False,
                                      checkpoint_first=checkpoint_first)
    assert paths["mesh"] == tmp_path / "poisson" / MESH_FILE
    poisson = read_ply(paths["mesh"])
    assert export.method == "poisson" and export.seconds > 0
    assert (poisson.num_vertices, poisson.num_faces) == (export.mesh.num_vertices,
                                                         export.mesh.num_faces)
    np.testing.assert_allclose(poisson.vertices, export.mesh.vertices, atol=1e-6)
    assert poisson.colors is not None
    assert np.abs(scene.sdf_np(poisson.vertices.astype(np.float64))).mean() < 0.05
    marching = mapper.mesh()  # the live mesh is still marching cubes
    assert poisson.num_faces > 1000 and poisson.num_faces != marching.num_faces

    _, default = write_map_outputs(_demo_mapper(esdf=False), tmp_path / "mc", preview=False,
                                   checkpoint_first=checkpoint_first)
    assert default.method == "marching_cubes"
    assert read_ply(tmp_path / "mc" / MESH_FILE).num_faces == marching.num_faces
