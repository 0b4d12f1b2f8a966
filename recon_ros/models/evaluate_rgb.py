"""Colour-only reconstruction of held-out synthetic fragments: Atlas (average and context view
fusion) against plane-sweep stereo -> TSDF, with depth TSDF fusion of the same poses as the
ceiling (``benchmarks/rgb_eval.py`` prints the table).

Each held-out fragment (:func:`~recon_ros.models.train_atlas.heldout_sample` with scene seeds
from :data:`~recon_ros.models.data.EVALUATION_SEED_BASE`, never drawn in training) gives every
method the same posed views (noise-free colour renders; depth renders for the ceiling) and the
same voxel box:

- ``atlas-average`` / ``atlas-context``: the shipped weights of each view fusion; the final
  finest-level TSDF (after coarse-to-fine masking) over the voxels seen by any view.
- ``plane-sweep``: :class:`~recon_ros.core.mapper.Mapper` with ``fusion.method: stereo``
  (``integrate_color`` per view, ``finish_color``), the TSDF of its observed voxels.
- ``depth-tsdf``: the same mapper geometry fusing the renderer's exact depth.

The mapper volumes use the fragment's voxel size and the Atlas finest-level truncation. Every
method's TSDF is read on the fragment's voxels, meshed by the same marching cubes
(:class:`~recon_ros.core.marching_cubes.IncrementalMesher` over a
:class:`~recon_ros.core.volume.BlockVolume` holding the box, observed voxels weight 1) and
scored against the ground-truth surface the views saw (exact ray hits,
:func:`~recon_ros.io.synthetic.visible_surface_points`) inside the box: accuracy (mean distance
mesh -> truth), completeness (truth -> mesh), precision / recall / F-score at the thresholds
(:func:`recon_ros.evaluation.point_metrics` on points sampled by area on the mesh, cropped to
the box). The same box volume gives each method's 2D grid (:func:`box_grid`: occupancy from
the TSDF alone, as ``fusion.method: rgb`` maps have it), scored by the fraction of the
ground-truth obstacle cells of the box (:func:`~recon_ros.io.synthetic.gt_occupancy_grid`)
that it marks free (:func:`recon_ros.evaluation.grid_metrics`).

Whole maps (the product modes through :class:`~recon_ros.core.mapper.Mapper`, and real
frames) are evaluated by :mod:`recon_ros.models.evaluate_rgb_maps`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from ..core.config import MapperConfig, OccupancyConfig
from ..core.frame import Frame
from ..core.mapper import Mapper
from ..core.marching_cubes import IncrementalMesher
from ..core.mesh import TriangleMesh
from ..core.occupancy import OccupancyMapper
from ..core.occupancy_grid import OccupancyGrid2D
from ..core.rgb_mapping import FragmentTsdf, fragment_volume
from ..core.volume import BlockVolume
from ..evaluation import MeshMetrics, grid_metrics, point_metrics, sample_mesh_points
from ..io.synthetic import gt_occupancy_grid, render_depth, visible_surface_points
from .atlas import AtlasModel, Fragment, load_atlas
from .data import EVALUATION_SEED_BASE
from .evaluate import read_voxels
from .train_atlas import AtlasTrainConfig, FragmentSample, heldout_sample

METHODS = ("atlas-average", "atlas-context", "plane-sweep", "depth-tsdf")


@dataclass(frozen=True)
class RgbEvalConfig:
    """What :func:`evaluate_rgb` runs.

    Attributes:
        fragments: held-out fragments, one per scene (seeds ``EVALUATION_SEED_BASE + j``).
        weights_average, weights_context: Atlas weights (``""`` = shipped).
        geometry: views, image size, fragment box and voxel size (default: the training
            configuration stored with the average weights).
        thresholds_m: F-score thresholds, metres.
        mesh_samples: points sampled on each mesh.
        stereo: ``stereo`` config section of the plane-sweep mapper. Default: matching at
            full resolution with a 7 x 7 window and one confirming view, the best of five
            settings tried on the *validation* rooms (mean F@5cm 0.80 there, against 0.78
            for the 9 x 9 default window at full resolution and 0.69 at half resolution).
    """

    fragments: int = 8
    weights_average: str = ""
    weights_context: str = ""
    geometry: AtlasTrainConfig | None = None
    thresholds_m: tuple[float, ...] = (0.05, 0.10)
    mesh_samples: int = 50_000
    stereo: dict[str, Any] = field(default_factory=lambda: {
        "image_scale": 1.0, "window_radius_px": 3, "min_consistent_views": 1})


def dense_mesh(tsdf_m: torch.Tensor, observed: torch.Tensor, fragment: Fragment,
               truncation_m: float) -> TriangleMesh:
    """Marching cubes of a dense fragment TSDF.

    Args:
        tsdf_m: (X, Y, Z) TSDF, metres (clamped to ``+-truncation_m``).
        observed: (X, Y, Z) bool; only cubes whose 8 corners are observed are meshed.
        fragment: the box (its voxels' global indices place the mesh in the world).
        truncation_m: the TSDF's truncation, metres.
    """
    volume = box_volume(tsdf_m, observed, fragment, truncation_m)
    volume.mark_changed(torch.arange(volume.num_blocks))
    mesher = IncrementalMesher(volume, min_weight=0.5)
    mesher.update()
    return mesher.mesh(with_colors=False)


def box_volume(tsdf_m: torch.Tensor, observed: torch.Tensor, fragment: Fragment,
               truncation_m: float) -> BlockVolume:
    """The observed voxels of a dense fragment TSDF (metres) as a CPU block volume of 8^3
    blocks, weight 1 (:func:`~recon_ros.core.rgb_mapping.fragment_volume`)."""
    box = FragmentTsdf(fragment.origin_index, tsdf_m.detach().cpu(), observed.detach().cpu())
    return fragment_volume(box, fragment.voxel_size_m, truncation_m, 8, 1.0)


def occupancy_of(volume: BlockVolume, config: OccupancyConfig = OccupancyConfig()
                 ) -> OccupancyMapper:
    """The occupancy layers a mapper with the ``occupancy`` section ``config`` keeps over
    ``volume`` (2D cells at the voxel size unless ``resolution_m`` says otherwise)."""
    v = volume.voxel_size_m
    return OccupancyMapper(
        volume, resolution_m=config.resolution_m or v, min_height_m=config.min_height_m,
        max_height_m=config.max_height_m,
        occupied_threshold_m=config.occupied_threshold_voxels * v,
        free_below_m=config.free_below_m, min_weight=config.min_weight,
        truncation_m=volume.truncation_m, free_space_stride_px=config.free_space_stride_px)


def box_grid(tsdf_m: torch.Tensor, observed: torch.Tensor, fragment: Fragment,
             truncation_m: float) -> OccupancyGrid2D:
    """The default-band 2D grid of a dense fragment TSDF (from its voxels alone)."""
    return occupancy_of(box_volume(tsdf_m, observed, fragment, truncation_m)).grid()


def box_truth_grid(sample: FragmentSample) -> OccupancyGrid2D:
    """Ground-truth default-band grid over the fragment's columns (cells centred on the
    voxel columns)."""
    oc, frag = OccupancyConfig(), sample.fragment
    lo, hi = frag.bounds_m()
    half = 0.5 * frag.voxel_size_m
    return gt_occupancy_grid(sample.scene, frag.voxel_size_m, oc.min_height_m,
                             oc.max_height_m, (lo[0] - half, lo[1] - half, hi[0] + half,
                                               hi[1] + half))


def in_box(points: np.ndarray, fragment: Fragment) -> np.ndarray:
    """The points inside the box of the fragment's voxel centres."""
    lo, hi = fragment.bounds_m()
    return points[((points >= lo - 1e-6) & (points <= hi + 1e-6)).all(axis=1)]


def atlas_tsdf(model: AtlasModel, sample: FragmentSample
               ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(X, Y, Z) TSDF in metres, observed mask and truncation (m) of an Atlas model."""
    with torch.no_grad():
        out = model(sample.images, sample.camera, sample.poses, sample.fragment)
    trunc = model.truncation_m(sample.fragment.voxel_size_m)
    return out.finest.tsdf_final * trunc, out.seen, trunc


def mapper_tsdf(sample: FragmentSample, method: str, truncation_voxels: float,
                stereo: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, Y, Z) TSDF in metres (+truncation where unobserved) and observed mask of the
    fragment in a mapper fed the colour views (``plane-sweep``) or the exact depth
    (``depth-tsdf``)."""
    frag = sample.fragment
    base = {"volume": {"voxel_size_m": frag.voxel_size_m},
            "integration": {"truncation_voxels": truncation_voxels}}
    if method == "plane-sweep":
        mapper = Mapper(MapperConfig.from_dict({**base, "fusion": {"method": "stereo"},
                                                "stereo": stereo}))
        for i, (image, T) in enumerate(zip(sample.images, sample.poses)):
            mapper.integrate_color(image, sample.camera, T, i * 100_000_000)
        mapper.finish_color()
    else:
        mapper = Mapper(MapperConfig.from_dict(base))
        for i, T in enumerate(sample.poses):
            mapper.integrate(Frame(depth=render_depth(sample.scene, sample.camera, T),
                                   camera=sample.camera, T_world_cam=T,
                                   stamp_ns=i * 100_000_000))
    tsdf, seen, _ = read_voxels(mapper.volume, frag.voxel_indices().reshape(-1, 3))
    return tsdf.reshape(frag.dims), seen.reshape(frag.dims)


@dataclass
class FragmentResult:
    """Every method on one held-out fragment.

    Attributes:
        scene_seed: the room.
        gt_points: truth points (surface the views saw, inside the box).
        metrics: method -> mesh metrics.
        seconds: method -> wall time of its reconstruction (not the scoring).
        marked_free: method -> fraction of the box's true obstacle cells its grid calls
            free.
    """

    scene_seed: int
    gt_points: int
    metrics: dict[str, MeshMetrics]
    seconds: dict[str, float]
    marked_free: dict[str, float] = field(default_factory=dict)


def evaluate_fragment(sample: FragmentSample, scene_seed: int, cfg: RgbEvalConfig,
                      models: dict[str, AtlasModel], truncation_voxels: float
                      ) -> FragmentResult:
    """Run and score every method of :data:`METHODS` on one fragment (``models``: the Atlas
    model of each ``atlas-*`` method)."""
    frag = sample.fragment
    gt = in_box(visible_surface_points(sample.scene, sample.poses, sample.camera), frag)
    truth_grid = box_truth_grid(sample)
    metrics, seconds, marked_free = {}, {}, {}
    for method in METHODS:
        t0 = time.perf_counter()
        if method in models:
            tsdf, seen, trunc = atlas_tsdf(models[method], sample)
        else:
            tsdf, seen = mapper_tsdf(sample, method, truncation_voxels, cfg.stereo)
            trunc = truncation_voxels * frag.voxel_size_m
        seconds[method] = time.perf_counter() - t0
        mesh = dense_mesh(tsdf, seen, frag, trunc)
        pred = in_box(sample_mesh_points(mesh, cfg.mesh_samples), frag)
        metrics[method] = point_metrics(pred, gt, cfg.thresholds_m)
        marked_free[method] = grid_metrics(box_grid(tsdf, seen, frag, trunc),
                                           truth_grid).obstacles_marked_free
    return FragmentResult(scene_seed, len(gt), metrics, seconds, marked_free)


def evaluate_rgb(cfg: RgbEvalConfig, log: Callable[[str], None] = print
                 ) -> tuple[list[FragmentResult], AtlasTrainConfig]:
    """Every method on ``cfg.fragments`` held-out fragments; returns the results and the
    geometry used."""
    loaded = {m: load_atlas(w, "cpu", m.split("-", 1)[1])
              for m, w in (("atlas-average", cfg.weights_average),
                           ("atlas-context", cfg.weights_context))}
    models = {m: model for m, (model, _) in loaded.items()}
    trained = AtlasTrainConfig.from_dict(loaded["atlas-average"][1]["train_config"])
    geometry = cfg.geometry or replace(trained, device="cpu")
    results = []
    for j in range(cfg.fragments):
        sample = heldout_sample(geometry, EVALUATION_SEED_BASE, j)
        r = evaluate_fragment(sample, EVALUATION_SEED_BASE + j, cfg, models,
                              geometry.model.truncation_voxels)
        results.append(r)
        t = cfg.thresholds_m[0]
        log(f"scene {r.scene_seed} ({r.gt_points} truth points): " + ", ".join(
            f"{m} F@{100 * t:g}cm {r.metrics[m].fscore[t]:.3f}" for m in METHODS))
    return results, geometry


def summary(results: list[FragmentResult], thresholds_m: tuple[float, ...]
            ) -> dict[str, dict[str, float]]:
    """Per method, means over fragments: ``accuracy_cm``, ``completeness_cm``,
    ``precision@t``, ``recall@t``, ``fscore@t`` (t in cm), ``marked_free`` and ``seconds``.
    A method that produced no surface in a fragment contributes accuracy / completeness
    ``inf``; the means of those two are over the fragments where it did (``meshed`` counts
    them)."""
    out = {}
    for m in METHODS:
        rows = [r.metrics[m] for r in results]
        finite = [x for x in rows if np.isfinite(x.accuracy_m) and np.isfinite(x.completeness_m)]
        s = {"accuracy_cm": 100 * float(np.mean([x.accuracy_m for x in finite]))
             if finite else float("inf"),
             "completeness_cm": 100 * float(np.mean([x.completeness_m for x in finite]))
             if finite else float("inf"),
             "meshed": float(len(finite)),
             "marked_free": float(np.mean([r.marked_free[m] for r in results])),
             "seconds": float(np.mean([r.seconds[m] for r in results]))}
        for t in thresholds_m:
            key = f"{100 * t:g}"
            s[f"precision@{key}"] = float(np.mean([x.precision[t] for x in rows]))
            s[f"recall@{key}"] = float(np.mean([x.recall[t] for x in rows]))
            s[f"fscore@{key}"] = float(np.mean([x.fscore[t] for x in rows]))
        out[m] = s
    return out
