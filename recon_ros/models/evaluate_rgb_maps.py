"""Whole-map evaluation of the color-only modes (issue 11): the product path, a
:class:`~recon_ros.core.mapper.Mapper` fed a stream of posed color images, scored like a depth
camera's map, on held-out synthetic rooms and on real frames.

Methods (:data:`MAP_METHODS`), each a ``Mapper`` with the same voxel size (the Atlas weights'
8 cm), the same truncation and the same ``occupancy`` band, fed the same images and poses:

- ``rgb-average`` / ``rgb-context``: ``fusion.method: rgb`` (keyframe fragments, Atlas TSDF
  merged into the map) with the shipped weights of each view fusion;
- ``plane-sweep``: ``fusion.method: stereo`` (plane-sweep depth per keyframe, TSDF fusion);
- ``depth-tsdf``: TSDF fusion of the depth at the same poses (the ceiling).

Scores per map: :func:`recon_ros.evaluation.mesh_metrics` of its marching-cubes mesh against
the truth points (accuracy, completeness, precision / recall / F-score; predictions cropped to
the truth's bounding box grown by 10 cm), and the fraction of the truth grid's obstacle cells
that the map's 2D grid marks free (:func:`recon_ros.evaluation.grid_metrics`).

- **Synthetic rooms** (:func:`evaluate_rooms`): held-out rooms (scene seeds from
  :data:`~recon_ros.models.data.EVALUATION_SEED_BASE`, never trained on), one loop of the room
  scan (:func:`~recon_ros.io.synthetic.room_scan_trajectory`), noise-free renders; truth: the
  exact surface the views saw and the exact grid of the band.
- **Real frames** (:func:`evaluate_frame_folder`, e.g. ``shared/data/3dmatch-seq01``): the
  color images of an RGB-D folder; truth: the folder's own depth fused by TSDF at half the
  voxel size (the reference mesh and its grid), so it measures agreement with the depth
  camera, not with an exact surface. The poses are turned into a z-up frame (the first
  camera's "up", -y, becomes +z), and the floor height (for the band and
  ``rgb.floor_height_m``) is the 2nd percentile of the reference mesh's heights: the depth
  places the floor for every method. Out of distribution for a network trained on synthetic
  rooms. With so few frames every frame is made a keyframe (``keyframe_translation_m``
  0.01), and the plane sweep takes the sources of :data:`REAL_FRAMES_STEREO`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.config import MapperConfig, OccupancyConfig
from ..core.frame import Frame, PinholeCamera
from ..core.mapper import Mapper
from ..core.occupancy_grid import OccupancyGrid2D
from ..evaluation import (GridMetrics, MeshMetrics, grid_metrics, mesh_metrics,
                          sample_mesh_points)
from ..io.frame_folder import FrameFolder
from ..io.synthetic import (
    default_camera,
    gt_occupancy_grid,
    make_random_scene,
    render,
    room_scan_trajectory,
    visible_surface_points,
)
from .data import EVALUATION_SEED_BASE
from .evaluate_rgb import RgbEvalConfig

MAP_METHODS = ("rgb-average", "rgb-context", "plane-sweep", "depth-tsdf")
#: Plane sweep on the few, far-apart real frames: any source 2 cm away and turned up to 45
#: degrees (3dmatch-seq01's frames are 1.5-3 cm or 32-44 degrees apart), one confirming view.
REAL_FRAMES_STEREO = {"min_baseline_m": 0.02, "max_source_rotation_deg": 45.0,
                      "min_consistent_views": 1}
#: Rotation of an optical frame (x right, y down, z forward) into z-up axes: x, z, -y.
Z_UP = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])


@dataclass(frozen=True)
class MapEvalConfig:
    """What the whole-map evaluations run.

    Attributes:
        rooms: held-out synthetic rooms (seeds ``EVALUATION_SEED_BASE + j``).
        frames: poses of one loop of each room's scan.
        width, height: synthetic image size, pixels (the Atlas training size).
        voxel_size_m: voxel of every map (the shipped Atlas weights' training voxel).
        truncation_voxels: truncation of every map (the Atlas finest-level truncation).
        thresholds_m: F-score thresholds, metres.
        mesh_samples: points sampled on each mesh.
        stereo: ``stereo`` section of the plane-sweep maps of synthetic rooms (that of the
            fragment evaluation, :class:`~recon_ros.models.evaluate_rgb.RgbEvalConfig`); real
            frames use the defaults (matching at half resolution).
        max_depth_m: depth range of the real frames' maps, metres.
    """

    rooms: int = 2
    frames: int = 48
    width: int = 128
    height: int = 96
    voxel_size_m: float = 0.08
    truncation_voxels: float = 3.0
    thresholds_m: tuple[float, ...] = (0.05, 0.10)
    mesh_samples: int = 50_000
    stereo: dict[str, Any] = field(default_factory=lambda: dict(RgbEvalConfig().stereo))
    max_depth_m: float = 8.0


@dataclass
class MapScore:
    """One method's map.

    Attributes:
        metrics: its mesh against the truth points.
        marked_free: fraction of the truth grid's obstacle cells its grid marks free.
        coverage: fraction of the truth grid's cells its grid knows (free or occupied): a
            map that marks little free also marks few obstacles free.
        seconds: wall time of mapping (all images, ``finish_color`` included).
        keyframes: keyframes it used (depth: frames).
    """

    metrics: MeshMetrics
    marked_free: float
    coverage: float
    seconds: float
    keyframes: int

    @property
    def ms_per_keyframe(self) -> float:
        return 1000.0 * self.seconds / max(self.keyframes, 1)


@dataclass
class MapResult:
    """Every method on one room or frame folder."""

    name: str
    gt_points: int
    scores: dict[str, MapScore]


def method_config(method: str, cfg: MapEvalConfig, stereo: dict[str, Any],
                  rgb: dict[str, Any], occupancy: dict[str, float],
                  integration: dict[str, float]) -> MapperConfig:
    """The mapper configuration of ``method`` (one of :data:`MAP_METHODS`): the ``stereo``
    and ``rgb`` sections are those given (``rgb.view_fusion`` that of the method)."""
    data: dict[str, Any] = {
        "volume": {"voxel_size_m": cfg.voxel_size_m},
        "integration": {"truncation_voxels": cfg.truncation_voxels, **integration},
        "occupancy": occupancy}
    if method.startswith("rgb-"):
        data["fusion"] = {"method": "rgb"}
        data["rgb"] = {**rgb, "view_fusion": method.split("-", 1)[1]}
    elif method == "plane-sweep":
        data["fusion"] = {"method": "stereo"}
        data["stereo"] = stereo
    return MapperConfig.from_dict(data)


def run_method(config: MapperConfig, images: list[np.ndarray], camera: PinholeCamera,
               poses: list[np.ndarray], depths: list[np.ndarray]) -> tuple[Mapper, float, int]:
    """Map the views; returns the mapper, its wall time (s) and the keyframes (frames) it
    used. Color-only methods get ``images``, depth TSDF fusion ``depths``."""
    start = time.perf_counter()
    mapper = Mapper(config)
    if config.fusion.method == "tsdf":
        for i, (depth, T) in enumerate(zip(depths, poses)):
            mapper.integrate(Frame(depth=depth, camera=camera, T_world_cam=T,
                                   stamp_ns=i * 100_000_000))
        keyframes = len(depths)
    else:
        for i, (image, T) in enumerate(zip(images, poses)):
            mapper.integrate_color(image, camera, T, i * 100_000_000)
        mapper.finish_color()
        keyframes = (mapper.rgb or mapper.stereo).keyframes
    mapper.mesh()  # (lazy outputs belong to the map's cost)
    return mapper, time.perf_counter() - start, keyframes


def score_map(mapper: Mapper, gt_points: np.ndarray, truth_grid: OccupancyGrid2D,
              cfg: MapEvalConfig) -> tuple[MeshMetrics, GridMetrics]:
    """Mesh metrics and grid agreement of a map."""
    metrics = mesh_metrics(mapper.mesh(), gt_points, cfg.thresholds_m, cfg.mesh_samples)
    return metrics, grid_metrics(mapper.occupancy_grid(), truth_grid)


def evaluate_views(name: str, images: list[np.ndarray], camera: PinholeCamera,
                   poses: list[np.ndarray], depths: list[np.ndarray], gt_points: np.ndarray,
                   truth_grid: OccupancyGrid2D, cfg: MapEvalConfig, stereo: dict[str, Any],
                   rgb: dict[str, Any], occupancy: dict[str, float],
                   integration: dict[str, float], log: Callable[[str], None]) -> MapResult:
    """Every method of :data:`MAP_METHODS` on the same views, scored against the truth
    (config sections as in :func:`method_config`)."""
    scores = {}
    for method in MAP_METHODS:
        config = method_config(method, cfg, stereo, rgb, occupancy, integration)
        mapper, seconds, keyframes = run_method(config, images, camera, poses, depths)
        metrics, grid = score_map(mapper, gt_points, truth_grid, cfg)
        scores[method] = MapScore(metrics, grid.obstacles_marked_free, grid.coverage, seconds,
                                  keyframes)
        log(f"{name} {method}: F@5cm {metrics.fscore[0.05]:.3f}, obstacles marked free "
            f"{grid.obstacles_marked_free:.3f} (grid coverage {grid.coverage:.3f}), "
            f"{seconds:.1f} s ({keyframes} keyframes)")
    return MapResult(name, len(gt_points), scores)


def evaluate_rooms(cfg: MapEvalConfig, log: Callable[[str], None] = print
                   ) -> list[MapResult]:
    """Every method on ``cfg.rooms`` held-out rooms (see the module docstring)."""
    oc = OccupancyConfig()
    camera = default_camera(cfg.width, cfg.height)
    results = []
    for j in range(cfg.rooms):
        seed = EVALUATION_SEED_BASE + j
        scene = make_random_scene(seed)
        poses = [np.asarray(T) for T in room_scan_trajectory(scene, cfg.frames).poses]
        views = [render(scene, camera, T) for T in poses]
        truth_grid = gt_occupancy_grid(scene, cfg.voxel_size_m, oc.min_height_m,
                                       oc.max_height_m)
        results.append(evaluate_views(
            f"room {seed}", [v.color for v in views], camera, poses,
            [v.depth.astype(np.float32) for v in views],
            visible_surface_points(scene, poses, camera), truth_grid, cfg, cfg.stereo, {}, {},
            {}, log))
    return results


def evaluate_frame_folder(path: str | Path, cfg: MapEvalConfig,
                          log: Callable[[str], None] = print) -> MapResult:
    """Every method on the color frames of an RGB-D folder, scored against its depth fused
    at half the voxel size (see the module docstring)."""
    folder = FrameFolder(path)
    frames = [folder.load(i) for i in folder.indices]
    if any(f.color is None or f.color_camera is not None for f in frames):
        raise ValueError(f"{path}: every frame needs a color image registered with its depth")
    camera = frames[0].camera
    poses = [Z_UP @ f.T_world_cam for f in frames]
    depths = [np.asarray(f.depth) for f in frames]
    integration = {"max_depth_m": cfg.max_depth_m}
    reference = Mapper(MapperConfig.from_dict({
        "volume": {"voxel_size_m": cfg.voxel_size_m / 2}, "integration": integration}))
    for f, T, depth in zip(frames, poses, depths):
        reference.integrate(Frame(depth=depth, camera=camera, T_world_cam=T,
                                  stamp_ns=f.stamp_ns))
    ref_mesh = reference.mesh()
    floor = float(np.percentile(ref_mesh.vertices[:, 2], 2.0))
    band = OccupancyConfig()
    occupancy = {"min_height_m": floor + band.min_height_m,
                 "max_height_m": floor + band.max_height_m,
                 "free_below_m": floor + band.free_below_m, "resolution_m": cfg.voxel_size_m}
    reference = Mapper(reference.config.with_overrides(occupancy=occupancy))
    for f, T, depth in zip(frames, poses, depths):
        reference.integrate(Frame(depth=depth, camera=camera, T_world_cam=T,
                                  stamp_ns=f.stamp_ns))
    gt = sample_mesh_points(reference.mesh(), 200_000)
    log(f"{Path(path).name}: {len(frames)} frames {camera.width}x{camera.height}, reference: "
        f"depth TSDF at {100 * cfg.voxel_size_m / 2:g} cm, floor at z = {floor:.2f} m")
    every = {"keyframe_translation_m": 0.01}
    return evaluate_views(Path(path).name, [np.asarray(f.color) for f in frames], camera,
                          poses, depths, gt, reference.occupancy_grid(), cfg,
                          {**every, **REAL_FRAMES_STEREO},
                          {**every, "floor_height_m": floor}, occupancy, integration, log)


def map_summary(results: list[MapResult], thresholds_m: tuple[float, ...]
                ) -> dict[str, dict[str, float]]:
    """Per method, means over maps (shown next to the per-map rows, never instead):
    ``accuracy_cm`` / ``completeness_cm`` (over the maps where it produced a surface;
    ``meshed`` counts them), ``fscore@t``, ``marked_free``, ``ms_per_keyframe``."""
    out = {}
    for m in MAP_METHODS:
        scores = [r.scores[m] for r in results]
        finite = [s.metrics for s in scores if np.isfinite(s.metrics.accuracy_m)
                  and np.isfinite(s.metrics.completeness_m)]
        row = {"accuracy_cm": 100 * float(np.mean([x.accuracy_m for x in finite]))
               if finite else float("inf"),
               "completeness_cm": 100 * float(np.mean([x.completeness_m for x in finite]))
               if finite else float("inf"),
               "meshed": float(len(finite)),
               "marked_free": float(np.mean([s.marked_free for s in scores])),
               "coverage": float(np.mean([s.coverage for s in scores])),
               "ms_per_keyframe": float(np.mean([s.ms_per_keyframe for s in scores]))}
        for t in thresholds_m:
            row[f"fscore@{100 * t:g}"] = float(np.mean([s.metrics.fscore[t] for s in scores]))
        out[m] = row
    return out
