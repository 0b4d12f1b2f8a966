"""Offline mapping: a rosbag2 in, map files out (no ROS runtime needed).

Used by ``recon-ros replay``, ``replay-many``, ``merge`` and ``demo``; :func:`write_map_outputs`
is also what the live node's save service writes, so every map directory has the same layout:

    mesh.ply      binary PLY, vertex colors when the map has color; made by ``mesh.method``
                  (marching cubes, or screened Poisson: ``Mapper.export_mesh``)
    map.yaml      Nav2 map_server description (+ map.pgm)
    map.pt        full map checkpoint (``Mapper.load``)
    config.yaml   the mapping configuration used
    preview.png   mesh view + 2D grid
    esdf.npz      3D distance field (observed voxels) + its horizontal slice at
                  ``esdf.slice_height_m`` (``recon_ros.io.map_files.read_esdf``); only when
                  the ESDF is on (``esdf.enabled``, the default)

Crash safety. A map directory ``<dir>`` is never edited in place. A save writes every file of
the new map (each under a temporary name, flushed to disk, renamed) into a new sibling
directory ``<dir>.saving-<pid>-<id>``, flushes it, swaps it with ``<dir>`` in one atomic step
(Linux ``renameat2(RENAME_EXCHANGE)``) and then deletes the old map
(:func:`recon_ros.io.map_files.replace_directory`). So, if a map was ever completely saved
into ``<dir>``, then after a crash, SIGKILL or (on file systems that honour ``fsync``) power
cut at any instant:

- ``Mapper.load("<dir>/map.pt")`` works, and
- every file in ``<dir>`` belongs to the map of that checkpoint: all of them come from the
  previous save until the swap, all from the new one after it.

With ``checkpoint_first=True`` (the node's autosave at shutdown, when the launch system may
kill the process) the checkpoint and config are swapped in first, alone, and the Nav2 map,
distance field, mesh and preview are then added to ``<dir>`` one by one (each atomically): an
interrupted save leaves the new checkpoint with some of its other files, never a file of the
old map. Where the one-step swap is not available (not Linux, or a file system without it),
two renames replace the directory: a crash between them leaves no ``<dir>`` and the previous
map complete at ``<dir>.previous``, which the next save into ``<dir>`` moves back first.
Leftover ``<dir>.saving-*`` directories of a killed save are deleted by the next save. A map
directory holds map files only: a save refuses a directory with other entries
(:class:`~recon_ros.io.map_files.MapDirectoryError`), since it replaces the whole directory.
One save at a time per directory.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .core.config import MapperConfig
from .core.errors import ConfigError
from .core.frame import Frame, PinholeCamera
from .core.mapper import COLOR_METHODS, Mapper
from .core.merge import is_identity
from .core.mesh import TriangleMesh
from .core.atomic_file import atomic_path
from .core.rgb_mapping import FragmentTsdf
from .io.map_files import EsdfMap, replace_directory, write_esdf, write_nav2_map, write_ply
from .io.preview import write_preview
from .io.quality_report import QualitySample, write_quality_csv, write_quality_plot
from .io.render_strip import write_render_strip
from .io.rosbag_source import RosbagColorSource, RosbagSource, StampWindow

MESH_FILE = "mesh.ply"
GRID_FILE = "map.yaml"
GRID_IMAGE_FILE = "map.pgm"  # named after GRID_FILE by write_nav2_map
CHECKPOINT_FILE = "map.pt"
CONFIG_FILE = "config.yaml"
PREVIEW_FILE = "preview.png"
ESDF_FILE = "esdf.npz"
#: Output name (keys of :func:`write_map_outputs`' paths) -> file.
OUTPUT_FILES = {"checkpoint": CHECKPOINT_FILE, "config": CONFIG_FILE, "grid": GRID_FILE,
                "esdf": ESDF_FILE, "mesh": MESH_FILE, "preview": PREVIEW_FILE}
#: Replay's map-quality report (written after the map, into its directory).
QUALITY_CSV_FILE = "quality.csv"
QUALITY_PLOT_FILE = "quality.png"
#: Replay's renders of the map from recorded poses and an orbit.
RENDERS_FILE = "renders.png"
#: The files every map save writes (:func:`write_map_outputs`; ESDF and preview optional).
MAP_FILES = frozenset({*OUTPUT_FILES.values(), GRID_IMAGE_FILE})
#: Every file a map directory may hold: those, and replay's reports beside them.
MAP_DIR_FILES = MAP_FILES | {QUALITY_CSV_FILE, QUALITY_PLOT_FILE, RENDERS_FILE}
#: Replay refreshes the (incremental) occupancy layers every this many frames, so the summary's
#: "2D cells cleared" counts cells that turned free along the way, as the live node does.
OCCUPANCY_REFRESH_FRAMES = 10
#: Replay scores the map against every this-many-th depth frame by default (0 = off).
QUALITY_EVERY_FRAMES = 10
#: Replay renders the map from this many recorded and as many orbit poses by default.
RENDER_VIEWS = 4


@dataclass(frozen=True)
class MeshExport:
    """The mesh written into a map directory and how it was made.

    Attributes:
        mesh: the mesh (:meth:`Mapper.export_mesh`).
        method: the mesher, the map's ``mesh.method``.
        seconds: wall-clock time of the meshing.
    """

    mesh: TriangleMesh
    method: str
    seconds: float


def write_map_outputs(mapper: Mapper, out_dir: str | Path, preview: bool = True,
                      checkpoint_first: bool = False,
                      on_checkpoint: Callable[[Path], None] | None = None
                      ) -> tuple[dict[str, Path], MeshExport]:
    """Replace the map directory ``out_dir`` with ``mapper``'s map: checkpoint, config, Nav2
    map, the distance field (brought up to date first) when the mapper has one, mesh (by
    ``mesh.method``: :meth:`Mapper.export_mesh`) and (optionally) a preview, crash-safely
    (see the module docstring).

    Args:
        mapper: the map.
        out_dir: the map directory (created if missing); it may hold map files only.
        preview: also write ``preview.png``.
        checkpoint_first: commit the checkpoint and config before the other files are even
            computed, so a save cut short keeps the new checkpoint (at shutdown); by default
            all files are committed together, so a save cut short keeps the previous map whole.
        on_checkpoint: called with the checkpoint's path as soon as it is in ``out_dir``.

    Returns:
        ``(paths, mesh)``: name -> written file (in ``out_dir``), and the mesh that was written
        with its mesher and meshing time.

    Raises:
        MapDirectoryError: ``out_dir`` holds files that are not map files; nothing is written.
        OSError: a file could not be written. ``out_dir`` keeps the previous map, or, with
            ``checkpoint_first`` once ``on_checkpoint`` was called, the new checkpoint and config
            with the other files written so far.
    """
    out = Path(out_dir)
    with replace_directory(out, MAP_DIR_FILES) as staging:
        mapper.save(staging / CHECKPOINT_FILE)
        with atomic_path(staging / CONFIG_FILE) as tmp:
            mapper.config.to_yaml(tmp)
        if not checkpoint_first:
            derived, mesh = _write_derived_files(mapper, staging, preview)
    if on_checkpoint is not None:
        on_checkpoint(out / CHECKPOINT_FILE)
    if checkpoint_first:
        derived, mesh = _write_derived_files(mapper, out, preview)
    return {name: out / OUTPUT_FILES[name] for name in ("checkpoint", "config", *derived)}, mesh


def merge_map_files(maps: Sequence[str | Path],
                    transforms: Sequence[np.ndarray] | None = None,
                    device: str | None = None,
                    on_added: Callable[[Path, int], None] | None = None) -> Mapper:
    """Merge maps of one place into one :class:`Mapper` (what ``recon-ros merge`` writes):
    the first map, moved into the output frame by its transform unless that is the identity,
    then every other map fused in by :meth:`Mapper.merge`, in order. The first map's
    configuration is kept.

    Args:
        maps: map directories or their checkpoints (``map.pt``), at least one.
        transforms: per map, the (4, 4) rigid transform from its map frame into the output
            frame (metres); None: every map is in the output frame.
        device: torch device of the merge (None: each map's own ``volume.device``).
        on_added: called after each map but the first is merged, with its checkpoint's path
            and how many blocks it added.

    Raises:
        ConfigError: no maps, a transform count other than the map count, maps that cannot be
            merged (:meth:`Mapper.merge`) or a transform that is not rigid.
        VolumeError: a checkpoint cannot be read.
    """
    if not maps or (transforms is not None and len(transforms) != len(maps)):
        raise ConfigError(f"merge needs at least one map and as many transforms as maps, got "
                          f"{len(maps)} maps and "
                          f"{'no' if transforms is None else len(transforms)} transforms")
    paths = [Path(m) / CHECKPOINT_FILE if Path(m).is_dir() else Path(m) for m in maps]
    merged = Mapper.load(paths[0], device)
    if transforms is not None and not is_identity(transforms[0]):
        first = Mapper(merged.config)  # an empty map in the output frame
        first.merge(merged, transforms[0])
        merged = first
    for i, path in enumerate(paths[1:], start=1):
        added = merged.merge(Mapper.load(path, device),
                             None if transforms is None else transforms[i])
        if on_added is not None:
            on_added(path, added)
    return merged


def _write_derived_files(mapper: Mapper, directory: Path, preview: bool
                         ) -> tuple[list[str], MeshExport]:
    """Write the files computed from the map into ``directory``, each atomically, the Nav2 map
    first (what a robot needs next); returns the names written and the mesh."""
    grid = mapper.occupancy_grid()
    write_nav2_map(directory / GRID_FILE, grid)
    written = ["grid"]
    if mapper.esdf is not None:
        mapper.update_esdf()
        write_esdf(directory / ESDF_FILE,
                   EsdfMap(**mapper.esdf.export(), slice=mapper.esdf_slice()))
        written.append("esdf")
    start = time.perf_counter()
    mesh = mapper.export_mesh()
    export = MeshExport(mesh, mapper.config.mesh.method, time.perf_counter() - start)
    write_ply(directory / MESH_FILE, mesh)
    written.append("mesh")
    if preview:
        write_preview(directory / PREVIEW_FILE, mesh, grid,
                      ceiling_cut_m=mapper.config.occupancy.max_height_m)
        written.append("preview")
    return written, export


@dataclass
class ReplayResult:
    """What a replay did.

    Attributes:
        frames_used: frames integrated (``fusion.method: stereo``: keyframe depth maps;
            ``rgb``: keyframes merged as part of a fragment).
        depth_messages: depth images in the bag (0 in the color-only modes ``stereo`` and
            ``rgb``).
        drops: reason -> count for frames not integrated (color-only modes: color images not
            used, e.g. without a pose).
        color_drops: reason -> count for frames integrated without color.
        timings: per-stage timing summary (see ``StageTimer.summary``) of the stages the
            config's ``timing`` section has timed (none with ``off``).
        stats: map size and memory (see ``Mapper.stats``).
        mesh_vertices, mesh_faces: size of the final (exported) mesh.
        mesh_method: its mesher (``mesh.method``).
        mesh_s: wall-clock time of its meshing.
        outputs: name -> written file.
        wall_s: wall-clock duration of the whole replay.
        bag_duration_s: time spanned by the integrated frames' stamps.
        color_messages: color-only modes only: color images in the bag.
        color_only: color-only modes only: ``frames_seen`` (posed color images),
            ``keyframes``, and for ``stereo`` ``depth_frames`` (keyframes given a stereo depth
            map) and ``without_sources`` (keyframes with too few source views), for ``rgb``
            ``fragments`` (fragments predicted and merged).
        quality: the map's agreement with every ``quality_every``-th frame before it was
            fused (:meth:`Mapper.frame_agreement`; none in the color-only modes or when off).
    """

    frames_used: int
    depth_messages: int
    drops: Counter
    color_drops: Counter
    timings: dict[str, dict[str, float]]
    stats: dict[str, float | int]
    mesh_vertices: int
    mesh_faces: int
    mesh_method: str
    mesh_s: float
    outputs: dict[str, Path] = field(default_factory=dict)
    wall_s: float = 0.0
    bag_duration_s: float = 0.0
    color_messages: int = 0
    color_only: dict[str, int] = field(default_factory=dict)
    quality: list[QualitySample] = field(default_factory=list)


def replay_bag(bag: str | Path, out_dir: str | Path, config: MapperConfig,
               depth_topic: str | None = None, color_topic: str | None = None,
               world_frame: str = "map", max_frames: int | None = None,
               progress: Callable[[int, int], None] | None = None,
               quality_every: int = QUALITY_EVERY_FRAMES,
               render_views: int = RENDER_VIEWS,
               window: StampWindow | None = None) -> ReplayResult:
    """Map a rosbag2 (sqlite3 or MCAP) deterministically and write the map files.

    In the color-only modes (``fusion.method: stereo`` or ``rgb``) the bag needs color images,
    their camera_info and TF only: depth topics are ignored (``depth_topic`` too), and the map
    is made from the color images (:meth:`Mapper.integrate_color`).

    Args:
        bag: bag directory, ``.db3`` or ``.mcap`` file.
        out_dir: where the map files go.
        config: mapping configuration.
        depth_topic, color_topic: override topic auto-detection (``color_topic=""``: no color).
        world_frame: the TF frame the map is built in.
        max_frames: stop after this many integrated frames (stereo: the keyframes still
            waiting for newer ones when the bag ends are integrated too, at most
            ``stereo.reference_delay`` more; rgb: the fragment of the keyframes since the
            last one).
        progress: called after each integrated frame as ``progress(image_messages_seen,
            image_messages_total)`` (depth images; color-only modes: color images).
        quality_every: before fusing every this-many-th depth frame (the first included
            once the map holds a block), score how well the map explains it
            (:meth:`Mapper.frame_agreement`) and write ``quality.csv`` and ``quality.png``;
            0 = off. Not in the color-only modes (no measured depth to compare with).
        render_views: write ``renders.png``: the map rendered at this many of the recorded
            camera poses and from as many orbit poses (``io.render_strip``); 0 = off.
        window: map only the images whose header stamp is in this window (a time window of
            a long bag; TF and camera_info of the whole bag are still used); None: all. Then
            ``depth_messages`` counts the depth images in the window, while
            ``color_messages`` (color-only modes) still counts the whole bag's.

    Raises:
        BagTopicError: no depth topic (color-only modes: no color topic) or camera_info for
            it.
    """
    start = time.perf_counter()
    mapper = Mapper(config)
    color_only = config.fusion.method in COLOR_METHODS
    source: RosbagSource | RosbagColorSource
    if color_only:
        source = RosbagColorSource(bag, color_topic=color_topic, world_frame=world_frame,
                                   window=window)
    else:
        source = RosbagSource(bag, depth_topic=depth_topic, color_topic=color_topic,
                              world_frame=world_frame, window=window)
    total = len(source)
    first_ns = last_ns = None
    quality: list[QualitySample] = []
    poses, camera = [], None
    for view in _integrate_all(mapper, source, quality, quality_every):
        poses.append(view.T_world_cam)
        camera = view.camera
        if mapper.frames_integrated % OCCUPANCY_REFRESH_FRAMES == 0:
            mapper.refresh_occupancy()
        first_ns = view.stamp_ns if first_ns is None else first_ns
        last_ns = view.stamp_ns
        if progress is not None:
            progress(source.frames_yielded + sum(source.drops.values()), total)
        if max_frames is not None and mapper.frames_integrated >= max_frames:
            break
    outputs, export = write_map_outputs(mapper, out_dir)
    if quality:
        outputs["quality"] = Path(out_dir) / QUALITY_CSV_FILE
        outputs["quality_plot"] = Path(out_dir) / QUALITY_PLOT_FILE
        write_quality_csv(outputs["quality"], quality)
        write_quality_plot(outputs["quality_plot"], quality)
    if render_views and camera is not None:
        outputs["renders"] = Path(out_dir) / RENDERS_FILE
        write_render_strip(outputs["renders"], mapper, camera, np.stack(poses), render_views)
    return ReplayResult(
        frames_used=mapper.frames_integrated, depth_messages=0 if color_only else total,
        drops=Counter(source.drops),
        color_drops=(Counter(source.color_drops) if isinstance(source, RosbagSource)
                     else Counter()),
        timings=mapper.timer.summary(),
        stats=mapper.stats(), mesh_vertices=export.mesh.num_vertices,
        mesh_faces=export.mesh.num_faces, mesh_method=export.method, mesh_s=export.seconds,
        outputs=outputs,
        wall_s=time.perf_counter() - start,
        bag_duration_s=((last_ns - first_ns) * 1e-9) if first_ns is not None else 0.0,
        color_messages=total if color_only else 0,
        color_only=mapper.color_input_counts(), quality=quality)


class IntegratedView(NamedTuple):
    """A view whose data is in the map: a depth frame, a stereo keyframe's depth map, or a
    keyframe of a merged rgb fragment.

    Attributes:
        T_world_cam: (4, 4) pose of its optical frame in the map, metres.
        camera: its intrinsics (rgb: at the model's training resolution).
        stamp_ns: its stamp, nanoseconds.
    """

    T_world_cam: np.ndarray
    camera: PinholeCamera
    stamp_ns: int


def _views(fused: Frame | FragmentTsdf) -> Iterator[IntegratedView]:
    """The views a depth frame or a merged fragment (its new keyframes) put into the map."""
    if isinstance(fused, Frame):
        yield IntegratedView(fused.T_world_cam, fused.camera, fused.stamp_ns)
        return
    for kf in fused.keyframes[len(fused.keyframes) - fused.new_keyframes:]:
        yield IntegratedView(kf.T_world_cam, kf.data.camera, kf.data.stamp_ns)


def _integrate_all(mapper: Mapper, source: RosbagSource | RosbagColorSource,
                   quality: list[QualitySample], quality_every: int
                   ) -> Iterator[IntegratedView]:
    """Feed every frame of ``source`` to ``mapper``; yields each view once it is in the map
    (stereo: the keyframe depth maps, then those completed at the end; rgb: the new
    keyframes of each merged fragment, then those of the last one). Depth frames number
    ``0, quality_every, ...`` are scored first into ``quality`` while the map holds
    anything."""
    if isinstance(source, RosbagSource):
        for frame in source:
            if mapper.agreement_due(quality_every):
                quality.append(QualitySample(mapper.frames_integrated, frame.stamp_ns,
                                             mapper.frame_agreement(frame)))
            mapper.integrate(frame)
            yield from _views(frame)
        return
    for image in source:
        fused = mapper.integrate_color(image.color, image.camera, image.T_world_cam,
                                       image.stamp_ns, image.frame_id)
        if fused is not None:
            yield from _views(fused)
    for fused in mapper.finish_color():
        yield from _views(fused)
