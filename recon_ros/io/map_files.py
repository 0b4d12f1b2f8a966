"""Map files on disk: triangle meshes as PLY, 2D occupancy as Nav2 map_server YAML + PGM, the
3D distance field (ESDF) as NumPy ``.npz``; map directories replaced as a whole.

ROS-free. Every writer here replaces its file atomically (a temporary name beside it, flushed
to disk, then renamed: :func:`~recon_ros.core.atomic_file.atomic_path`), so a crash leaves the
old or the new file, never a torn one; :func:`replace_directory` does the same for a whole
directory of files that belong together.

The Nav2 files follow ``nav2_map_server`` exactly (trinary mode, ``negate: 0``):

- writing (as ``map_saver``): occupied cells become pixel 0 (black), free cells 254 (white),
  unknown cells 205 (grey); image row 0 is the top of the map (highest y);
- reading (as ``map_server``): a pixel ``p`` has occupancy ``occ = (255 - p) / 255``; the cell is
  occupied if ``occ > occupied_thresh``, free if ``occ < free_thresh``, unknown otherwise.

``free_thresh`` is written as 0.196, not ``map_saver``'s default 0.25: grey 205 has
``occ = 0.19608``, so with 0.25 every unknown cell would reload as free and planners would drive
into unseen space.
"""

from __future__ import annotations

import errno
import math
import os
import secrets
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..core.atomic_file import (
    atomic_path,
    exchange_paths,
    fsync_dir,
    fsync_file,
    is_temporary_name,
)
from ..core.distance_slice import DistanceSlice
from ..core.errors import ReconError
from ..core.mesh import TriangleMesh
from ..core.occupancy_grid import FREE, OCCUPIED, UNKNOWN, OccupancyGrid2D

PathLike = str | os.PathLike[str]

OCCUPIED_THRESH = 0.65
FREE_THRESH = 0.196
PIXEL_OCCUPIED = 0
PIXEL_FREE = 254
PIXEL_UNKNOWN = 205


class MapFileError(ReconError, ValueError):
    """A map file is malformed or uses a feature this reader does not support."""


# --------------------------------------------------------------------------------------------
# PLY
# --------------------------------------------------------------------------------------------

def write_ply(path: PathLike, mesh: TriangleMesh) -> None:
    """Write ``mesh`` as a binary little-endian PLY (with per-vertex RGB when it has colors),
    atomically.

    Parent directories are created. An empty mesh gives a valid PLY with no elements.

    Raises:
        MapFileError: the arrays of ``mesh`` have inconsistent shapes.
        OSError: the file could not be written.
    """
    _check_mesh(mesh)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if mesh.num_vertices == 0:
            # Open3D refuses to write a mesh without vertices.
            tmp.write_bytes(_empty_ply_header(mesh.colors is not None))
        else:
            _write_ply_open3d(tmp, mesh)


def _write_ply_open3d(path: Path, mesh: TriangleMesh) -> None:
    """A non-empty ``mesh`` as binary PLY through Open3D."""
    import open3d as o3d  # here, not at module level: the Nav2 functions do not need it

    o3d_mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(mesh.vertices.astype(np.float64)),
        o3d.utility.Vector3iVector(mesh.faces.astype(np.int32)),
    )
    if mesh.colors is not None:
        o3d_mesh.vertex_colors = o3d.utility.Vector3dVector(mesh.colors.astype(np.float64) / 255.0)
    if not o3d.io.write_triangle_mesh(str(path), o3d_mesh, write_ascii=False,
                                      write_vertex_normals=False):
        raise OSError(f"open3d could not write the mesh to {path}")


def read_ply(path: PathLike) -> TriangleMesh:
    """Read a triangle mesh from a PLY file (vertices float32, faces int64, colors uint8 | None).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    import open3d as o3d

    o3d_mesh = o3d.io.read_triangle_mesh(str(path))
    colors = None
    if o3d_mesh.has_vertex_colors():
        colors = np.clip(np.rint(np.asarray(o3d_mesh.vertex_colors) * 255.0), 0, 255)
        colors = colors.astype(np.uint8)
    return TriangleMesh(
        vertices=np.asarray(o3d_mesh.vertices, dtype=np.float32).reshape(-1, 3),
        faces=np.asarray(o3d_mesh.triangles, dtype=np.int64).reshape(-1, 3),
        colors=colors,
    )


def read_points(path: PathLike) -> np.ndarray:
    """(N, 3) float64 points of a PLY: its vertices (mesh or point cloud alike).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    import open3d as o3d

    return np.asarray(o3d.io.read_point_cloud(str(path)).points, dtype=np.float64).reshape(-1, 3)


def ply_has_faces(path: PathLike) -> bool:
    """Whether a PLY file declares a non-empty face element (reads the header only)."""
    with open(path, "rb") as f:
        for raw in f:
            line = raw.strip()
            if line.startswith(b"element face"):
                return int(line.split()[2]) > 0
            if line == b"end_header":
                return False
    return False


def _check_mesh(mesh: TriangleMesh) -> None:
    n = mesh.num_vertices
    if mesh.vertices.ndim != 2 or mesh.vertices.shape[1] != 3:
        raise MapFileError(f"mesh vertices must be (N, 3), got {mesh.vertices.shape}")
    if mesh.faces.ndim != 2 or mesh.faces.shape[1] != 3:
        raise MapFileError(f"mesh faces must be (M, 3), got {mesh.faces.shape}")
    if mesh.faces.size and (mesh.faces.min() < 0 or mesh.faces.max() >= n):
        raise MapFileError(f"mesh faces index outside [0, {n})")
    if mesh.colors is not None and mesh.colors.shape != (n, 3):
        raise MapFileError(f"mesh colors must be ({n}, 3), got {mesh.colors.shape}")


def _empty_ply_header(with_colors: bool) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", "element vertex 0",
             "property double x", "property double y", "property double z"]
    if with_colors:
        lines += ["property uchar red", "property uchar green", "property uchar blue"]
    lines += ["element face 0", "property list uchar uint vertex_indices", "end_header", ""]
    return "\n".join(lines).encode("ascii")


# --------------------------------------------------------------------------------------------
# Nav2 map_server YAML + PGM
# --------------------------------------------------------------------------------------------

def write_nav2_map(yaml_path: PathLike, grid: OccupancyGrid2D) -> Path:
    """Write ``grid`` as a Nav2 map: ``yaml_path`` and a PGM with the same stem next to it.

    Cells are converted as ``map_saver`` does in trinary mode: values outside [0, 100] are
    unknown (205), values <= ``rint(100 * FREE_THRESH)`` free (254), values >=
    ``rint(100 * OCCUPIED_THRESH)`` occupied (0), anything between unknown. The height band of
    the grid is stored as the extra keys ``min_height_m`` / ``max_height_m`` (map_server
    ignores them). Parent directories are created. Each file is replaced atomically, the PGM
    first, so a YAML never names an image that is not there yet.

    Returns:
        The path of the PGM image.
    """
    data = np.asarray(grid.data)
    if data.ndim != 2 or data.size == 0:
        raise MapFileError(f"grid data must be a non-empty (H, W) array, got {data.shape}")
    yaml_path = Path(yaml_path)
    pgm_path = yaml_path.with_suffix(".pgm")
    yaml_path.parent.mkdir(parents=True, exist_ok=True)

    cells = data.astype(np.int16)
    pixels = np.full(cells.shape, PIXEL_UNKNOWN, np.uint8)
    known = (cells >= 0) & (cells <= 100)
    pixels[known & (cells <= round(100 * FREE_THRESH))] = PIXEL_FREE
    pixels[known & (cells >= round(100 * OCCUPIED_THRESH))] = PIXEL_OCCUPIED
    height, width = pixels.shape
    header = f"P5\n{width} {height}\n255\n".encode("ascii")
    # Image row 0 is the top of the map; grid row 0 is the lowest y.
    with atomic_path(pgm_path) as tmp:
        tmp.write_bytes(header + np.ascontiguousarray(pixels[::-1]).tobytes())

    meta = {
        "image": pgm_path.name,
        "mode": "trinary",
        "resolution": float(grid.resolution_m),
        "origin": [float(grid.origin_xy[0]), float(grid.origin_xy[1]), 0.0],
        "negate": 0,
        "occupied_thresh": OCCUPIED_THRESH,
        "free_thresh": FREE_THRESH,
        "min_height_m": float(grid.min_height_m),
        "max_height_m": float(grid.max_height_m),
    }
    with atomic_path(yaml_path) as tmp:
        tmp.write_text(yaml.safe_dump(meta, sort_keys=False, default_flow_style=None))
    return pgm_path


def read_nav2_map(yaml_path: PathLike) -> OccupancyGrid2D:
    """Load a Nav2 map (YAML + image) as ``map_server`` does in trinary mode.

    The image path in the YAML is relative to the YAML's directory unless absolute. Binary PGM
    (P5) is read directly; other formats (PNG, ...) through OpenCV, color channels averaged as
    map_server does. ``min_height_m`` / ``max_height_m`` are NaN when the YAML lacks them
    (maps not written by recon_ros).

    Raises:
        FileNotFoundError: the YAML or its image does not exist.
        MapFileError: a required key is missing, the mode is not trinary, the origin has a
            yaw, or the image is malformed.
    """
    yaml_path = Path(yaml_path)
    meta = yaml.safe_load(yaml_path.read_text())
    if not isinstance(meta, dict):
        raise MapFileError(f"{yaml_path}: not a YAML mapping")
    missing = [k for k in ("image", "resolution", "origin", "occupied_thresh", "free_thresh")
               if k not in meta]
    if missing:
        raise MapFileError(f"{yaml_path}: missing keys {missing}")
    mode = meta.get("mode", "trinary")
    if mode != "trinary":
        raise MapFileError(f"{yaml_path}: mode {mode!r} is not supported (only 'trinary')")
    origin = [float(v) for v in meta["origin"]]
    if len(origin) != 3 or origin[2] != 0.0:
        raise MapFileError(f"{yaml_path}: origin must be [x, y, 0.0] (no yaw), got {origin}")

    image_path = yaml_path.parent / meta["image"]
    shade = _read_shade(image_path)
    cells = trinary_occupancy(shade, float(meta["occupied_thresh"]), float(meta["free_thresh"]),
                              negate=bool(int(meta.get("negate", 0))))
    return OccupancyGrid2D(
        data=np.ascontiguousarray(cells[::-1]),
        resolution_m=float(meta["resolution"]),
        origin_xy=(origin[0], origin[1]),
        min_height_m=float(meta.get("min_height_m", math.nan)),
        max_height_m=float(meta.get("max_height_m", math.nan)),
    )


def trinary_occupancy(shade: np.ndarray, occupied_thresh: float, free_thresh: float,
                      negate: bool = False) -> np.ndarray:
    """map_server's trinary rule: image brightness -> occupancy cells.

    Args:
        shade: (H, W) pixel brightness in [0, 1] (an 8-bit pixel ``p`` is ``p / 255``).
        occupied_thresh: cells with ``occ > occupied_thresh`` are occupied (100).
        free_thresh: cells with ``occ < free_thresh`` are free (0); the rest are unknown (-1).
        negate: if False (the usual), ``occ = 1 - shade`` (black is occupied); else ``shade``.

    Returns:
        (H, W) int8 cells in image row order.
    """
    occ = shade if negate else 1.0 - shade
    cells = np.full(occ.shape, UNKNOWN, np.int8)
    cells[occ > occupied_thresh] = OCCUPIED
    cells[occ < free_thresh] = FREE
    return cells


def _read_shade(image_path: Path) -> np.ndarray:
    """(H, W) float64 brightness in [0, 1] of a map image, as map_server computes it."""
    raw = image_path.read_bytes()
    if raw[:2] == b"P5":
        pixels, maxval = _parse_pgm_p5(raw, image_path)
        return pixels.astype(np.float64) / maxval
    import cv2  # only for non-PGM images

    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype.kind != "u":
        raise MapFileError(f"{image_path}: not an 8- or 16-bit image")
    # map_server averages R, G, B (and, in trinary mode, alpha) of each pixel.
    shade = image.astype(np.float64) / np.iinfo(image.dtype).max
    return shade.mean(axis=2) if shade.ndim == 3 else shade


def _parse_pgm_p5(raw: bytes, image_path: Path) -> tuple[np.ndarray, int]:
    """Pixels (H, W) and maxval of a binary PGM; header tokens may be separated by comments."""
    tokens: list[bytes] = []
    pos = 2
    while len(tokens) < 3:
        while pos < len(raw) and raw[pos:pos + 1].isspace():
            pos += 1
        if raw[pos:pos + 1] == b"#":
            end = raw.find(b"\n", pos)
            pos = len(raw) if end < 0 else end + 1
            continue
        start = pos
        while pos < len(raw) and not raw[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise MapFileError(f"{image_path}: truncated PGM header")
        tokens.append(raw[start:pos])
    try:
        width, height, maxval = (int(t) for t in tokens)
    except ValueError as exc:
        raise MapFileError(f"{image_path}: bad PGM header {tokens}") from exc
    if width <= 0 or height <= 0 or not 0 < maxval < 65536:
        raise MapFileError(f"{image_path}: bad PGM header {width}x{height}, maxval {maxval}")
    pos += 1  # the single whitespace byte that ends the header
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
    count = width * height
    if len(raw) - pos < count * dtype.itemsize:
        raise MapFileError(f"{image_path}: PGM raster is shorter than {width}x{height}")
    pixels = np.frombuffer(raw, dtype, count=count, offset=pos).reshape(height, width)
    return pixels, maxval


# --------------------------------------------------------------------------------------------
# ESDF (.npz)
# --------------------------------------------------------------------------------------------

ESDF_NPZ_FORMAT = "recon_ros.esdf_npz.v1"


@dataclass
class EsdfMap:
    """The distance field as stored in ``esdf.npz``: every observed voxel, and one horizontal
    slice for 2D planners.

    Attributes:
        indices: (N, 3) int32 global voxel indices; voxel ``i`` has its centre at
            ``i * voxel_size_m`` (map frame, metres).
        distance: (N,) float32 signed distance to the nearest obstacle, metres (positive in
            free space, at most ``max_distance_m``; negative just inside obstacles).
        obstacle: (N,) bool, the voxel is an obstacle (observed TSDF below zero).
        voxel_size_m: voxel edge, metres.
        max_distance_m: the ESDF's propagation limit, metres.
        slice: the horizontal slice (see :class:`DistanceSlice`; NaN = unknown).
    """

    indices: np.ndarray
    distance: np.ndarray
    obstacle: np.ndarray
    voxel_size_m: float
    max_distance_m: float
    slice: DistanceSlice

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int32)
        self.distance = np.asarray(self.distance, dtype=np.float32)
        self.obstacle = np.asarray(self.obstacle, dtype=bool)
        self.voxel_size_m = float(self.voxel_size_m)
        self.max_distance_m = float(self.max_distance_m)
        n = self.indices.shape[0]
        if self.indices.shape != (n, 3):
            raise MapFileError(f"ESDF indices must be (N, 3), got {self.indices.shape}")
        if self.distance.shape != (n,) or self.obstacle.shape != (n,):
            raise MapFileError(f"ESDF distance and obstacle must be ({n},), got "
                               f"{self.distance.shape} and {self.obstacle.shape}")
        if np.asarray(self.slice.distance).ndim != 2:
            raise MapFileError(f"ESDF slice must be (H, W), got {self.slice.distance.shape}")

    @property
    def num_voxels(self) -> int:
        return int(self.indices.shape[0])

    def centers(self) -> np.ndarray:
        """(N, 3) float64 map-frame voxel centres, metres."""
        return self.indices.astype(np.float64) * self.voxel_size_m


def write_esdf(path: PathLike, esdf: EsdfMap) -> None:
    """Write ``esdf`` as a compressed ``.npz``, atomically (exactly at ``path``; parents are
    created).

    Keys: ``format``, ``indices``, ``distance``, ``obstacle``, ``voxel_size_m``,
    ``max_distance_m`` (the fields of :class:`EsdfMap`) and ``slice_distance`` (H, W) float32,
    ``slice_origin_xy`` (2,) float64, ``slice_resolution_m``, ``slice_height_m``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = esdf.slice
    # A file object: numpy would append ".npz" to other names.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f, format=np.str_(ESDF_NPZ_FORMAT), indices=esdf.indices, distance=esdf.distance,
            obstacle=esdf.obstacle, voxel_size_m=np.float64(esdf.voxel_size_m),
            max_distance_m=np.float64(esdf.max_distance_m),
            slice_distance=np.asarray(s.distance, dtype=np.float32),
            slice_origin_xy=np.asarray(s.origin_xy, dtype=np.float64),
            slice_resolution_m=np.float64(s.resolution_m),
            slice_height_m=np.float64(s.height_m))


def read_esdf(path: PathLike) -> EsdfMap:
    """Read a file written by :func:`write_esdf`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        MapFileError: not a recon_ros ESDF file, a key is missing or an array has a wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except ValueError as exc:  # not an npz (or pickled content)
        raise MapFileError(f"{path}: not an ESDF .npz file ({exc})") from exc
    if str(data.get("format", "")) != ESDF_NPZ_FORMAT:
        raise MapFileError(f"{path}: format {data.get('format')!r}, expected "
                           f"{ESDF_NPZ_FORMAT!r}")
    missing = [k for k in ("indices", "distance", "obstacle", "voxel_size_m", "max_distance_m",
                           "slice_distance", "slice_origin_xy", "slice_resolution_m",
                           "slice_height_m") if k not in data]
    if missing:
        raise MapFileError(f"{path}: missing keys {missing}")
    max_distance_m = float(data["max_distance_m"])
    origin = data["slice_origin_xy"]
    return EsdfMap(
        indices=data["indices"], distance=data["distance"], obstacle=data["obstacle"],
        voxel_size_m=float(data["voxel_size_m"]), max_distance_m=max_distance_m,
        slice=DistanceSlice(distance=data["slice_distance"],
                            resolution_m=float(data["slice_resolution_m"]),
                            origin_xy=(float(origin[0]), float(origin[1])),
                            height_m=float(data["slice_height_m"]),
                            max_distance_m=max_distance_m))


# --------------------------------------------------------------------------------------------
# Map directories, replaced as a whole
# --------------------------------------------------------------------------------------------

#: ``<dir>.saving-<pid>-<8 hex>``: a directory being built, or (after the swap) the old one
#: being deleted.
STAGING_MARK = ".saving-"
#: ``<dir>.previous``: where the old directory waits while two renames replace it (only where
#: the one-step swap is not available).
PREVIOUS_SUFFIX = ".previous"


class MapDirectoryError(ReconError):
    """A map directory cannot be replaced (it holds other entries, or is not a directory)."""


@contextmanager
def replace_directory(directory: PathLike, names: Collection[str]) -> Iterator[Path]:
    """Build the new content of ``directory`` in a new sibling directory (yielded) and, when
    the ``with`` block ends normally, put it in place of ``directory`` in one step.

    The files in the new directory are flushed to disk, then the two directories are swapped
    atomically (:func:`~recon_ros.core.atomic_file.exchange_paths`) and the old one is deleted.
    So after a crash at any instant ``directory`` holds the complete old content or the
    complete new one. Where the swap is not available, two renames do it: a crash between them
    leaves no ``directory`` and the complete old content at ``<directory>.previous``, which the
    next replacement moves back first. When the block raises (or is interrupted), the new
    directory is deleted and ``directory`` is untouched. Leftovers of a killed replacement
    (``<directory>.saving-<pid>-*`` of a process that is gone) are deleted by the next one.

    ``directory`` is resolved first (a symlink to it stays a symlink) and created if missing
    (its parents too). One replacement at a time per directory.

    Args:
        directory: the directory to replace.
        names: the file names the directory may hold. Only these (and temporary files of
            :func:`~recon_ros.core.atomic_file.atomic_path`) are ever deleted from an old
            directory, so an entry that something else put there survives in
            ``<directory>.saving-*``.

    Raises:
        MapDirectoryError: ``directory`` holds entries not in ``names`` (they would vanish with
            the old content), or is not a directory. Nothing is changed.
        OSError: the file system refused (permissions, disk full, ...).
    """
    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target, names)
    if target.exists() and not target.is_dir():
        raise MapDirectoryError(f"{target} is not a directory")
    if target.is_dir():
        foreign = sorted(n for n in os.listdir(target)
                         if n not in names and not is_temporary_name(n))
        if foreign:
            raise MapDirectoryError(
                f"{target} holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
                f"which are not map files: a save replaces the whole directory, so save into a "
                f"directory of its own")
    staging = target.with_name(f"{target.name}{STAGING_MARK}{os.getpid()}-"
                               f"{secrets.token_hex(4)}")
    os.mkdir(staging)
    try:
        if target.is_dir():
            os.chmod(staging, stat.S_IMODE(target.stat().st_mode))
        yield staging
        for entry in os.scandir(staging):
            fsync_file(entry.path)
        fsync_dir(staging)
        old = _swap_in(staging, target, names)
    except BaseException:
        _remove_owned(staging, names)
        raise
    fsync_dir(target.parent)
    if old is not None:
        _remove_owned(old, names)


def _swap_in(staging: Path, target: Path, names: Collection[str]) -> Path | None:
    """Put ``staging`` in place of ``target``; returns where the old ``target`` now is (to be
    deleted), None if there was none."""
    if not target.exists():
        os.rename(staging, target)
        return None
    if exchange_paths(staging, target):
        return staging
    previous = target.with_name(target.name + PREVIOUS_SUFFIX)
    if previous.exists():  # a finished replacement whose clean-up was cut short
        _remove_owned(previous, names)
    os.rename(target, previous)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(previous, target)
        raise
    return previous


def _recover(target: Path, names: Collection[str]) -> None:
    """Undo what a killed replacement of ``target`` left: the old directory back in place if
    it was cut between its two renames; staging directories of processes that are gone."""
    previous = target.with_name(target.name + PREVIOUS_SUFFIX)
    if not target.exists() and previous.is_dir():
        os.rename(previous, target)
    prefix = target.name + STAGING_MARK
    for name in os.listdir(target.parent):
        pid = name[len(prefix):].split("-")[0]
        stale = target.parent / name
        if name.startswith(prefix) and pid.isdigit() and stale.is_dir() \
                and not _process_alive(int(pid)):
            _remove_owned(stale, names)


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (this process's own leftovers count as gone)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_owned(directory: Path, names: Collection[str]) -> None:
    """Delete the files ``names`` and temporary files from ``directory``, then the directory if
    that emptied it; nothing else is ever deleted."""
    for entry in os.scandir(directory):
        if entry.name in names or is_temporary_name(entry.name):
            os.unlink(entry.path)
    try:
        os.rmdir(directory)
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
