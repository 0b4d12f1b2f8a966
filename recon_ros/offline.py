"""Offline mapping: a rosbag2 in, map files out (no ROS runtime needed).

Used by ``recon-ros replay`` and ``recon-ros demo``; :func:`write_map_outputs` is also what the
live node's save service writes, so every map directory has the same layout:

    mesh.ply      binary PLY, vertex colors when the map has color
    map.yaml      Nav2 map_server description (+ map.pgm)
    map.pt        full map checkpoint (``Mapper.load``)
    config.yaml   the mapping configuration used
    preview.png   mesh view + 2D grid
    esdf.npz      3D distance field (observed voxels) + its horizontal slice at
                  ``esdf.slice_height_m`` (``recon_ros.io.map_files.read_esdf``); only when
                  the ESDF is on (``esdf.enabled``, the default)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .core.config import MapperConfig
from .core.mapper import Mapper
from .core.mesh import TriangleMesh
from .io.map_files import EsdfMap, write_esdf, write_nav2_map, write_ply
from .io.preview import write_preview
from .io.rosbag_source import RosbagSource

MESH_FILE = "mesh.ply"
GRID_FILE = "map.yaml"
CHECKPOINT_FILE = "map.pt"
CONFIG_FILE = "config.yaml"
PREVIEW_FILE = "preview.png"
ESDF_FILE = "esdf.npz"
#: Replay refreshes the (incremental) occupancy layers every this many frames, so the summary's
#: "2D cells cleared" counts cells that turned free along the way, as the live node does.
OCCUPANCY_REFRESH_FRAMES = 10


def write_map_outputs(mapper: Mapper, out_dir: str | Path, preview: bool = True
                      ) -> tuple[dict[str, Path], TriangleMesh]:
    """Write mesh, Nav2 map, checkpoint, config (and a preview) into ``out_dir``, and the
    distance field (brought up to date first) when the mapper has one.

    Returns:
        ``(paths, mesh)``: name -> written file, and the mesh that was written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mesh = mapper.mesh()
    grid = mapper.occupancy_grid()
    paths = {"mesh": out / MESH_FILE, "grid": out / GRID_FILE,
             "checkpoint": out / CHECKPOINT_FILE, "config": out / CONFIG_FILE}
    write_ply(paths["mesh"], mesh)
    write_nav2_map(paths["grid"], grid)
    mapper.save(paths["checkpoint"])
    mapper.config.to_yaml(paths["config"])
    if mapper.esdf is not None:
        paths["esdf"] = out / ESDF_FILE
        mapper.update_esdf()
        field = mapper.esdf.export()
        # The scalars as configured (export() gives them as float32).
        field.update(voxel_size_m=mapper.esdf.voxel_size_m,
                     max_distance_m=mapper.esdf.max_distance_m)
        write_esdf(paths["esdf"], EsdfMap(**field, slice=mapper.esdf_slice()))
    else:  # a field left by an earlier map in this directory would not match this one
        (out / ESDF_FILE).unlink(missing_ok=True)
    if preview:
        paths["preview"] = out / PREVIEW_FILE
        write_preview(paths["preview"], mesh, grid,
                      ceiling_cut_m=mapper.config.occupancy.max_height_m)
    return paths, mesh


@dataclass
class ReplayResult:
    """What a replay did.

    Attributes:
        frames_used: frames integrated.
        depth_messages: depth images in the bag.
        drops: reason -> count for frames not integrated.
        color_drops: reason -> count for frames integrated without color.
        timings: per-stage timing summary (see ``StageTimer.summary``).
        stats: map size and memory (see ``Mapper.stats``).
        mesh_vertices, mesh_faces: size of the final mesh.
        outputs: name -> written file.
        wall_s: wall-clock duration of the whole replay.
        bag_duration_s: time spanned by the integrated frames' stamps.
    """

    frames_used: int
    depth_messages: int
    drops: Counter
    color_drops: Counter
    timings: dict[str, dict[str, float]]
    stats: dict[str, float | int]
    mesh_vertices: int
    mesh_faces: int
    outputs: dict[str, Path] = field(default_factory=dict)
    wall_s: float = 0.0
    bag_duration_s: float = 0.0


def replay_bag(bag: str | Path, out_dir: str | Path, config: MapperConfig,
               depth_topic: str | None = None, color_topic: str | None = None,
               world_frame: str = "map", max_frames: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> ReplayResult:
    """Map a rosbag2 (sqlite3 or MCAP) deterministically and write the map files.

    Args:
        bag: bag directory, ``.db3`` or ``.mcap`` file.
        out_dir: where the map files go.
        config: mapping configuration.
        depth_topic, color_topic: override topic auto-detection (``color_topic=""``: no color).
        world_frame: the TF frame the map is built in.
        max_frames: stop after this many integrated frames.
        progress: called as ``progress(depth_messages_seen, depth_messages_total)``.
    """
    start = time.perf_counter()
    source = RosbagSource(bag, depth_topic=depth_topic, color_topic=color_topic,
                          world_frame=world_frame)
    mapper = Mapper(config)
    total = len(source)
    first_ns = last_ns = None
    for frame in source:
        mapper.integrate(frame)
        if mapper.frames_integrated % OCCUPANCY_REFRESH_FRAMES == 0:
            mapper.refresh_occupancy()
        first_ns = frame.stamp_ns if first_ns is None else first_ns
        last_ns = frame.stamp_ns
        if progress is not None:
            progress(source.frames_yielded + sum(source.drops.values()), total)
        if max_frames is not None and mapper.frames_integrated >= max_frames:
            break
    outputs, mesh = write_map_outputs(mapper, out_dir)
    return ReplayResult(
        frames_used=mapper.frames_integrated, depth_messages=total, drops=Counter(source.drops),
        color_drops=Counter(source.color_drops), timings=mapper.timer.summary(),
        stats=mapper.stats(), mesh_vertices=mesh.num_vertices, mesh_faces=mesh.num_faces,
        outputs=outputs,
        wall_s=time.perf_counter() - start,
        bag_duration_s=((last_ns - first_ns) * 1e-9) if first_ns is not None else 0.0)
