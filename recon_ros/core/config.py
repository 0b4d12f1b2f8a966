"""Typed, validated configuration of the mapping core.

Sections mirror the ROS parameter file (``config/mapper.yaml``): ``volume``, ``integration``,
``mesh``, ``occupancy``, ``fusion``, ``stereo``, ``rgb``, ``map``, ``esdf``, ``costmap``,
``timing``, ``refine``. Every field name
carries its unit.
``MapperConfig.from_dict`` rejects unknown keys so that a typo in a YAML file is an error, not
a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .errors import ConfigError
from .plane_sweep import PlaneSweepConfig
from .poisson import PoissonConfig
from .timing import TIMING_MODES

WEIGHTING_MODES = ("constant", "inverse_square")
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def check_known_keys(klass: type, data: dict[str, Any], section: str) -> None:
    """Raise ConfigError naming ``section`` when ``data`` has keys that are not fields of the
    dataclass ``klass`` (a typo in a YAML file is an error, not a silently ignored setting)."""
    known = {f.name for f in dataclasses.fields(klass)}
    bad = set(data) - known
    if bad:
        raise ConfigError(f"unknown key(s) {sorted(bad)} in section {section!r}; "
                          f"known: {sorted(known)}")


def _require(cond: bool, section: str, name: str, reason: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{section}.{name}={value!r} is invalid: {reason}")


def _require_keyframe_motion(section: str, translation_m: float, rotation_deg: float) -> None:
    """The keyframe thresholds of a color-only method: finite, and not both 0."""
    _require(math.isfinite(translation_m) and translation_m >= 0, section,
             "keyframe_translation_m", "must be a finite number >= 0 m", translation_m)
    _require(0.0 <= rotation_deg <= 180.0, section, "keyframe_rotation_deg",
             "must be in [0, 180] degrees", rotation_deg)
    _require(translation_m > 0 or rotation_deg > 0, section, "keyframe_translation_m",
             "and keyframe_rotation_deg cannot both be 0 (every frame a keyframe)",
             translation_m)


@dataclass
class VolumeConfig:
    """Block-sparse voxel storage.

    Attributes:
        voxel_size_m: edge length of one voxel, metres.
        block_size: voxels per block edge (a block holds ``block_size**3`` voxels).
        device: torch device of the volume, e.g. ``"cpu"`` or ``"cuda:0"``.
        dtype: storage dtype of TSDF, weight and color (``float32`` or ``float16``).
        initial_capacity_blocks: blocks allocated up front; storage doubles when full.
    """

    voxel_size_m: float = 0.05
    block_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    initial_capacity_blocks: int = 4096

    def __post_init__(self) -> None:
        s = "volume"
        _require(0.001 <= self.voxel_size_m <= 1.0, s, "voxel_size_m", "must be in [0.001, 1] m",
                 self.voxel_size_m)
        _require(self.block_size in (4, 8, 16), s, "block_size", "must be 4, 8 or 16",
                 self.block_size)
        _require(self.dtype in DTYPES, s, "dtype", f"must be one of {sorted(DTYPES)}", self.dtype)
        _require(self.initial_capacity_blocks >= 1, s, "initial_capacity_blocks",
                 "must be >= 1", self.initial_capacity_blocks)
        try:
            dev = torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigError(f"volume.device={self.device!r} is invalid: {exc}") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"volume.device={self.device!r} is invalid: CUDA is not available")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def block_size_m(self) -> float:
        return self.voxel_size_m * self.block_size


@dataclass
class IntegrationConfig:
    """Projective TSDF integration.

    Attributes:
        truncation_voxels: truncation distance in voxels (TSDF is clamped to +-this).
        min_depth_m: depths below are ignored, metres.
        max_depth_m: depths above are ignored, metres.
        weighting: ``constant`` (every measurement weighs 1) or ``inverse_square`` (a
            measurement at depth z weighs ``1 / z**2``, favouring close, less noisy readings).
        max_weight: cap of the accumulated weight; lower values let the map adapt faster to
            change.
        behind_surface_drop: measurements more than one voxel behind the observed surface get
            a weight falling linearly to 0 at the truncation distance (as voxblox does); this
            keeps silhouettes seen from other views from pulling surfaces inwards.
        alloc_stride_px: pixel stride used to find the blocks a frame touches. At depth z a
            stride of s pixels spans ``z * s / fx`` metres, which must stay well below a block;
            0 (default) picks the largest stride spanning at most a quarter block at
            ``max_depth_m``.
        compile: fuse the per-voxel update with ``torch.compile`` (several times faster; the
            first frame of a process pays a one-off compilation, cached on disk afterwards).
        clear_free_space: update every allocated block in the camera's view, not only those
            near the measured surface, so space seen through becomes free (objects that moved
            away disappear), and release in-view blocks left holding free space only.
        clearing_weight_factor: when a measurement contradicts a voxel's stored TSDF by
            more than half the truncation (free space seen through a surface that left, or a
            surface where the map held free space), the voxel's accumulated weight is
            multiplied by this before the update. 1 = plain weighted average (nvblox); the
            default 0.5 forgets a removed object, and maps an added one, within about
            ``log2(max_weight)`` frames, while a single stray reading moves a well-observed
            voxel by about ``2 / max_weight`` of the truncation.
        decay_per_s: exponential weight decay rate, 1/s of sensor time: before each frame,
            every weight is multiplied by ``exp(-decay_per_s * dt)``; voxels falling below
            ``mesh.min_weight`` become unobserved and empty blocks are released. For maps of
            long-lived dynamic scenes; 0 (default) = off. Costs one pass over the whole map
            per frame.
    """

    truncation_voxels: float = 4.0
    min_depth_m: float = 0.1
    max_depth_m: float = 5.0
    weighting: str = "constant"
    max_weight: float = 100.0
    behind_surface_drop: bool = True
    alloc_stride_px: int = 0
    compile: bool = False
    clear_free_space: bool = True
    clearing_weight_factor: float = 0.5
    decay_per_s: float = 0.0

    def __post_init__(self) -> None:
        s = "integration"
        _require(1.0 <= self.truncation_voxels <= 32.0, s, "truncation_voxels",
                 "must be in [1, 32]", self.truncation_voxels)
        _require(self.min_depth_m >= 0.0, s, "min_depth_m", "must be >= 0", self.min_depth_m)
        _require(self.max_depth_m > self.min_depth_m, s, "max_depth_m",
                 f"must be > min_depth_m ({self.min_depth_m})", self.max_depth_m)
        _require(self.weighting in WEIGHTING_MODES, s, "weighting",
                 f"must be one of {list(WEIGHTING_MODES)}", self.weighting)
        _require(self.max_weight > 0.0, s, "max_weight", "must be > 0", self.max_weight)
        _require(0 <= self.alloc_stride_px <= 16, s, "alloc_stride_px",
                 "must be in [0, 16] (0 = automatic)", self.alloc_stride_px)
        _require(0.0 < self.clearing_weight_factor <= 1.0, s, "clearing_weight_factor",
                 "must be in (0, 1]", self.clearing_weight_factor)
        _require(self.decay_per_s >= 0.0, s, "decay_per_s", "must be >= 0 (0 = off)",
                 self.decay_per_s)


#: Values of ``mesh.method``.
MESH_METHODS = ("marching_cubes", "poisson")
#: Fields of :class:`PoissonConfig`; :class:`MeshConfig` holds each as ``poisson_<field>``.
POISSON_FIELDS = tuple(f.name for f in dataclasses.fields(PoissonConfig))
_POISSON_PREFIX = "poisson_"


@dataclass
class MeshConfig:
    """Mesh extraction: the live mesh (always incremental marching cubes) and the exported one
    (``mesh.ply`` of replay and of the map directories saved by the node).

    The fields ``poisson_depth`` ... ``poisson_batch_blocks`` are those of
    :class:`~recon_ros.core.poisson.PoissonConfig` with the prefix ``poisson_`` (octree depth,
    screening, density trimming, crop to observed space, ...), documented there, with its
    defaults; they only matter with ``method: poisson``.

    Attributes:
        min_weight: a cube is meshed only when all 8 corner voxels have at least this weight
            (Poisson: voxels with less weight count as unobserved).
        method: mesher of exported meshes (:meth:`~recon_ros.core.mapper.Mapper.export_mesh`):
            ``marching_cubes`` (the live mesh, open where the map is unobserved) or
            ``poisson`` (screened Poisson of oriented TSDF surface points, trimmed to observed
            space: smoother, more triangles, much slower).
    """

    min_weight: float = 1e-3
    method: str = "marching_cubes"
    poisson_depth: int = PoissonConfig.depth
    poisson_max_depth: int = PoissonConfig.max_depth
    poisson_scale: float = PoissonConfig.scale
    poisson_point_weight: float = PoissonConfig.point_weight
    poisson_samples_per_node: float = PoissonConfig.samples_per_node
    poisson_linear_fit: bool = PoissonConfig.linear_fit
    poisson_density_quantile: float = PoissonConfig.density_quantile
    poisson_crop_distance_voxels: float = PoissonConfig.crop_distance_voxels
    poisson_n_threads: int = PoissonConfig.n_threads
    poisson_batch_blocks: int = PoissonConfig.batch_blocks

    def __post_init__(self) -> None:
        s = "mesh"
        _require(self.min_weight > 0.0, s, "min_weight", "must be > 0", self.min_weight)
        _require(self.method in MESH_METHODS, s, "method",
                 f"must be one of {list(MESH_METHODS)}", self.method)
        try:
            self.poisson()
        except ConfigError as exc:  # name the field of this section
            raise ConfigError(str(exc).replace("poisson.", f"{s}.{_POISSON_PREFIX}", 1)) from exc

    def poisson(self) -> PoissonConfig:
        """The Poisson mesher's settings of this section."""
        return PoissonConfig(**{name: getattr(self, _POISSON_PREFIX + name)
                                for name in POISSON_FIELDS})


@dataclass
class OccupancyConfig:
    """Occupied voxels and the 2D grid for Nav2, both in the map frame (z up).

    Attributes:
        min_height_m: lower edge of the height band projected into the 2D grid, map z, metres.
        max_height_m: upper edge of that band.
        resolution_m: 2D cell size; ``0`` means "the voxel size".
        occupied_threshold_voxels: an observed voxel is occupied when its TSDF is below this
            many voxels. The default 0.75 (> sqrt(2)/2) marks every 2D cell that a vertical
            surface passes through, so obstacles are never thinned.
        free_below_m: a 2D cell is free only when free space was seen in its column at or
            below this map height (and nothing occupied in the band). Seeing the space above a
            cabinet free says nothing about the cabinet, so such cells stay unknown.
        min_weight: voxels with less accumulated weight count as unknown.
        free_space_stride_px: pixel stride of the rays that carve free space into the 2D grid
            (and that find the blocks the ESDF's 3D free-space pass visits).
    """

    min_height_m: float = 0.05
    max_height_m: float = 1.5
    resolution_m: float = 0.0
    occupied_threshold_voxels: float = 0.75
    free_below_m: float = 0.4
    min_weight: float = 1e-3
    free_space_stride_px: int = 16

    def __post_init__(self) -> None:
        s = "occupancy"
        _require(self.max_height_m > self.min_height_m, s, "max_height_m",
                 f"must be > min_height_m ({self.min_height_m})", self.max_height_m)
        _require(self.resolution_m >= 0.0, s, "resolution_m", "must be >= 0 (0 = voxel size)",
                 self.resolution_m)
        _require(-4.0 <= self.occupied_threshold_voxels <= 4.0, s, "occupied_threshold_voxels",
                 "must be in [-4, 4]", self.occupied_threshold_voxels)
        _require(self.min_height_m <= self.free_below_m <= self.max_height_m, s, "free_below_m",
                 "must lie within [min_height_m, max_height_m]", self.free_below_m)
        _require(self.min_weight > 0.0, s, "min_weight", "must be > 0", self.min_weight)
        _require(1 <= self.free_space_stride_px <= 64, s, "free_space_stride_px",
                 "must be in [1, 64]", self.free_space_stride_px)


FUSION_METHODS = ("tsdf", "latent", "stereo", "rgb")


@dataclass
class FusionConfig:
    """How depth is fused into the map.

    Attributes:
        method: ``tsdf`` (classical projective TSDF fusion, with color), ``latent`` (learned
            fusion in a latent feature volume, NeuralFusion-style; the TSDF is decoded from it
            lazily for meshing, occupancy and export; geometry only, no color) or ``stereo``
            (no depth sensor: posed color images, depth by multi-view plane-sweep stereo on
            keyframes, fused by TSDF fusion; see the ``stereo`` section and
            :meth:`~recon_ros.core.mapper.Mapper.integrate_color`) or ``rgb`` (no depth
            sensor: posed color keyframes grouped into fragments whose TSDF an Atlas-style
            network predicts, merged into the map; see the ``rgb`` section).
        weights: weight file of the latent model; ``""`` = the shipped default
            (``recon_ros/models/weights/latent_fusion_small.pt``). The latent feature channels
            and samples per ray are those of the weights.
        max_count: cap of the per-voxel update count of the latent running average (lower
            values let the map adapt faster to change).
        allow_weights_mismatch: run latent weights whose training voxel size or truncation
            (voxels) differ from ``volume.voxel_size_m`` / ``integration.truncation_voxels``
            by more than 1 %, with a warning; false = refuse (ConfigError).
        occupancy_threshold: latent fusion: an observed voxel is occupied (occupied voxels,
            the 2D grid) when the decoded occupancy head's probability is at least this
            (instead of the TSDF sign rule of ``occupancy.occupied_threshold_voxels``). Low by
            default: the head is trained on the sign of the true SDF at voxel centres, and at
            0.5 it marked about 10 % of true obstacle cells free (see docs/latent_fusion.md).
    """

    method: str = "tsdf"
    weights: str = ""
    max_count: float = 64.0
    allow_weights_mismatch: bool = False
    occupancy_threshold: float = 0.1

    def __post_init__(self) -> None:
        s = "fusion"
        _require(self.method in FUSION_METHODS, s, "method",
                 f"must be one of {list(FUSION_METHODS)}", self.method)
        _require(isinstance(self.weights, str), s, "weights", "must be a path or \"\"",
                 self.weights)
        _require(self.max_count >= 1.0, s, "max_count", "must be >= 1", self.max_count)
        _require(isinstance(self.allow_weights_mismatch, bool), s, "allow_weights_mismatch",
                 "must be true or false", self.allow_weights_mismatch)
        _require(0.0 < self.occupancy_threshold < 1.0, s, "occupancy_threshold",
                 "must be in (0, 1)", self.occupancy_threshold)


#: Fields of :class:`StereoConfig` that are :class:`PlaneSweepConfig` settings (same names).
PLANE_SWEEP_FIELDS = tuple(f.name for f in dataclasses.fields(PlaneSweepConfig))


@dataclass
class StereoConfig:
    """Color-only mapping (``fusion.method: stereo``): keyframes chosen by camera motion, the
    depth of each by plane-sweep stereo against nearby keyframes
    (:mod:`recon_ros.core.plane_sweep`), fused like a depth camera's.

    The fields ``min_depth_m`` ... ``min_consistent_views`` are those of
    :class:`~recon_ros.core.plane_sweep.PlaneSweepConfig` (hypothesis range, matching window,
    compute scale, source views, filters), documented there, with its defaults.

    Attributes:
        keyframe_translation_m: a frame becomes a keyframe when its optical centre moved at
            least this far from the last keyframe's, metres.
        keyframe_rotation_deg: ... or when it turned at least this much, degrees.
        window: keyframes kept as candidate source views (the most recent ones).
        min_baseline_m: a source view lies at least this far from the reference, metres.
        max_source_rotation_deg: a source view is turned at most this much from the
            reference, degrees.
        reference_delay: the depth of a keyframe is computed when this many newer keyframes
            exist, so that its source views lie on both sides of it along the path (better
            under occlusion); 0 = at once, from older keyframes only. The delayed keyframes
            left at the end of a stream are computed by ``Mapper.finish_color``.
    """

    min_depth_m: float = PlaneSweepConfig.min_depth_m
    max_depth_m: float = PlaneSweepConfig.max_depth_m
    num_depths: int = PlaneSweepConfig.num_depths
    window_radius_px: int = PlaneSweepConfig.window_radius_px
    image_scale: float = PlaneSweepConfig.image_scale
    num_sources: int = PlaneSweepConfig.num_sources
    best_k: int = PlaneSweepConfig.best_k
    min_score: float = PlaneSweepConfig.min_score
    uniqueness_ratio: float = PlaneSweepConfig.uniqueness_ratio
    min_texture_std: float = PlaneSweepConfig.min_texture_std
    consistency_steps: int = PlaneSweepConfig.consistency_steps
    min_consistent_views: int = PlaneSweepConfig.min_consistent_views
    keyframe_translation_m: float = 0.1
    keyframe_rotation_deg: float = 5.0
    window: int = 8
    min_baseline_m: float = 0.1
    max_source_rotation_deg: float = 30.0
    reference_delay: int = 1

    def __post_init__(self) -> None:
        s = "stereo"
        try:
            self.plane_sweep()
        except ConfigError as exc:  # same field names: name the section of this file
            raise ConfigError(str(exc).replace("plane_sweep.", f"{s}.", 1)) from exc
        _require_keyframe_motion(s, self.keyframe_translation_m, self.keyframe_rotation_deg)
        _require(_is_int(self.window) and self.window >= self.num_sources + 1, s, "window",
                 f"must be an integer >= num_sources + 1 = {self.num_sources + 1}",
                 self.window)
        _require(math.isfinite(self.min_baseline_m) and self.min_baseline_m > 0, s,
                 "min_baseline_m", "must be a finite number > 0 m", self.min_baseline_m)
        _require(0.0 < self.max_source_rotation_deg <= 180.0, s, "max_source_rotation_deg",
                 "must be in (0, 180] degrees", self.max_source_rotation_deg)
        _require(_is_int(self.reference_delay) and 0 <= self.reference_delay < self.window,
                 s, "reference_delay", f"must be an integer in [0, window = {self.window})",
                 self.reference_delay)

    def plane_sweep(self) -> PlaneSweepConfig:
        """The plane-sweep settings of this section."""
        return PlaneSweepConfig(**{name: getattr(self, name) for name in PLANE_SWEEP_FIELDS})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Values of ``rgb.view_fusion`` (those of :mod:`recon_ros.models.atlas`).
RGB_VIEW_FUSIONS = ("average", "context")


@dataclass
class RgbConfig:
    """Color-only mapping with a learned model (``fusion.method: rgb``): keyframes chosen by
    camera motion are grouped into fragments; an Atlas-style network predicts each fragment's
    TSDF from its keyframes, which is merged into the map (:mod:`recon_ros.core.rgb_mapping`).

    The fragment's box, image size and view count come from the weights' training
    configuration (their metadata); the map's ``volume.voxel_size_m`` must equal the weights'
    training voxel size.

    Attributes:
        weights: Atlas weight file; ``""`` = the shipped weights of ``view_fusion``.
        view_fusion: ``average`` (running mean over views, Atlas) or ``context``
            (softmax-weighted, Pix2Vox); picks the shipped weights, and must match the
            architecture of a given file.
        keyframe_translation_m: a frame becomes a keyframe when its optical centre moved at
            least this far from the last keyframe's, metres.
        keyframe_rotation_deg: ... or when it turned at least this much, degrees.
        views_per_fragment: keyframes per fragment; 0 = the weights' training view count.
        fragment_overlap: keyframes a fragment shares with the previous one (the last ones of
            it); a fragment is predicted every ``views_per_fragment - fragment_overlap`` new
            keyframes.
        fragment_weight: weight of each fragment's voxels in the map's weighted average (a
            depth frame's voxels weigh 1 with ``integration.weighting: constant``).
        floor_height_m: map height of the floor, metres: a fragment's lowest voxel layer sits
            where the weights' training put it relative to the floor (the synthetic rooms'
            floor is at z = 0).
        color: color the fragment's voxels with the mean color of the keyframes they project
            into (occlusion ignored); false = an uncolored map.
    """

    weights: str = ""
    view_fusion: str = "average"
    keyframe_translation_m: float = 0.2
    keyframe_rotation_deg: float = 7.5
    views_per_fragment: int = 0
    fragment_overlap: int = 4
    fragment_weight: float = 1.0
    floor_height_m: float = 0.0
    color: bool = True

    def __post_init__(self) -> None:
        s = "rgb"
        _require(isinstance(self.weights, str), s, "weights", 'must be a path or ""',
                 self.weights)
        _require(self.view_fusion in RGB_VIEW_FUSIONS, s, "view_fusion",
                 f"must be one of {list(RGB_VIEW_FUSIONS)}", self.view_fusion)
        _require_keyframe_motion(s, self.keyframe_translation_m, self.keyframe_rotation_deg)
        _require(_is_int(self.views_per_fragment) and 0 <= self.views_per_fragment <= 64, s,
                 "views_per_fragment", "must be an integer in [0, 64] (0 = the weights')",
                 self.views_per_fragment)
        _require(_is_int(self.fragment_overlap) and self.fragment_overlap >= 0
                 and (self.views_per_fragment == 0
                      or self.fragment_overlap < self.views_per_fragment), s,
                 "fragment_overlap", "must be an integer >= 0 and < views_per_fragment",
                 self.fragment_overlap)
        _require(isinstance(self.fragment_weight, (int, float))
                 and math.isfinite(self.fragment_weight) and self.fragment_weight > 0, s,
                 "fragment_weight", "must be a finite number > 0", self.fragment_weight)
        _require(isinstance(self.floor_height_m, (int, float))
                 and math.isfinite(self.floor_height_m), s, "floor_height_m",
                 "must be a finite number (metres)", self.floor_height_m)
        _require(isinstance(self.color, bool), s, "color", "must be true or false",
                 self.color)


@dataclass
class MapConfig:
    """Bounds of the map around the robot (memory stays bounded on long runs).

    Attributes:
        clearing_radius_m: blocks whose centre is farther than this from the robot are
            dropped after every frame, and so are 2D free-space tiles farther than this in the
            plane (nvblox ``map_clearing_radius_m``); 0 = keep everything. The robot is the
            node's ``robot_frame`` (replay: the camera).
        max_memory_mb: budget of the voxel storage (TSDF, weight, color, latent features)
            and its index, MiB; when a frame exceeds it, the blocks farthest from the robot
            are evicted first and storage never grows past it. 0 = no budget.
    """

    clearing_radius_m: float = 0.0
    max_memory_mb: float = 0.0

    def __post_init__(self) -> None:
        _require(self.clearing_radius_m >= 0.0, "map", "clearing_radius_m",
                 "must be >= 0 (0 = off)", self.clearing_radius_m)
        _require(self.max_memory_mb == 0.0 or self.max_memory_mb >= 1.0, "map",
                 "max_memory_mb", "must be 0 (off) or >= 1", self.max_memory_mb)


@dataclass
class EsdfConfig:
    """Euclidean signed distance field for planners (3D, block-sparse, incremental).

    Attributes:
        enabled: maintain the 3D ESDF (costs a projective free-space pass per frame and a
            wavefront update per output); off = no distance queries and no ESDF slice (the
            costmaps, built from the 2D grid, stay available).
        max_distance_m: distances are propagated this far from obstacles; farther free
            space reads exactly this value (nvblox ``esdf_integrator_max_distance_m``).
        slice_height_m: map-frame z of the published horizontal distance slice, metres.
        robot_radius_m: inscribed radius of the robot: costmap cells this close to an
            obstacle cell are "inscribed" (99), unknown ones included (Nav2 with
            ``inflate_unknown: false``), metres.
        inflation_radius_m: beyond ``robot_radius_m`` the cost decays exponentially (at most
            97) and is 0 farther than this from an obstacle cell (Nav2 InflationLayer
            ``inflation_radius``, in whole cells: ``ceil(radius / resolution)``), metres.
        cost_scaling_factor: exponential decay rate of the inflated cost, 1/m (Nav2
            InflationLayer ``cost_scaling_factor``).
    """

    enabled: bool = True
    max_distance_m: float = 2.0
    slice_height_m: float = 0.5
    robot_radius_m: float = 0.3
    inflation_radius_m: float = 0.55
    cost_scaling_factor: float = 3.0

    def __post_init__(self) -> None:
        s = "esdf"
        _require(0.0 < self.max_distance_m <= 20.0, s, "max_distance_m", "must be in (0, 20] m",
                 self.max_distance_m)
        _require(self.robot_radius_m >= 0.0, s, "robot_radius_m", "must be >= 0",
                 self.robot_radius_m)
        _require(self.inflation_radius_m >= self.robot_radius_m, s, "inflation_radius_m",
                 f"must be >= robot_radius_m ({self.robot_radius_m})", self.inflation_radius_m)
        _require(self.cost_scaling_factor > 0.0, s, "cost_scaling_factor", "must be > 0",
                 self.cost_scaling_factor)


@dataclass
class CostmapConfig:
    """The Nav2-style costmaps built from the 2D grid's obstacles and their distance field.

    Attributes:
        local_size_m: edge of the square rolling window around the robot published as the
            local costmap, metres; 0 = no local costmap.
    """

    local_size_m: float = 6.0

    def __post_init__(self) -> None:
        _require(0.0 <= self.local_size_m <= 200.0, "costmap", "local_size_m",
                 "must be in [0, 200] m (0 = off)", self.local_size_m)


@dataclass
class TimingConfig:
    """Per-stage timing of the mapper (``Mapper.timer``, the node status's ``timings_ms``);
    see :mod:`recon_ros.core.timing`.

    Attributes:
        mode: ``off`` (nothing timed, no cost), ``sampled`` (the stages of one frame in
            ``sample_every``; on CUDA with events read once complete, so the host never waits
            for the device) or ``every_stage`` (every stage of every frame, the device
            synchronised before and after each: exact figures for benchmarks, two host waits
            per stage on CUDA).
        sample_every: ``sampled`` times frames 0, N, 2N, ... for N = this, frames.
    """

    mode: str = "sampled"
    sample_every: int = 10

    def __post_init__(self) -> None:
        _require(self.mode in TIMING_MODES, "timing", "mode",
                 f"must be one of {list(TIMING_MODES)}", self.mode)
        _require(self.sample_every >= 1, "timing", "sample_every", "must be >= 1",
                 self.sample_every)


@dataclass
class RefineConfig:
    """Test-time refinement of the TSDF after each depth frame is fused
    (:class:`~recon_ros.core.refine.TsdfRefiner`; ``fusion.method: tsdf`` only).

    A few Adam steps on the TSDF (and color) of the blocks the frame changed, so that the map
    rendered at the frame's pose matches its depth and color; weights are never changed.
    Measured in ``docs/rendering.md`` (``benchmarks/refine.py``).

    Attributes:
        enabled: refine after every depth frame (off by default: see the measurement).
        steps: gradient steps per frame.
        learning_rate_m: Adam step size of the TSDF, metres.
        color_learning_rate: Adam step size of the color, RGB units (0-255).
        stride_px: render and compare every ``stride_px``-th pixel in both directions.
        depth_weight: weight of the depth L1 (metres) of rendered vs measured depth.
        color_weight: weight of the photometric L1 (RGB / 255; registered color only).
        free_space_weight: weight of the free-space hinge (metres): samples in front of the
            measured depth should have a TSDF at least their distance to it (clipped to the
            truncation).
        free_space_samples: free-space samples per compared pixel, evenly spaced over the
            truncation in front of the measured depth.
        eikonal_weight: weight of ``(|grad tsdf| - 1)^2`` over observed voxels near the
            surface (the TSDF is stored in metres, so its gradient should have norm 1).
    """

    enabled: bool = False
    steps: int = 5
    learning_rate_m: float = 0.002
    color_learning_rate: float = 2.0
    stride_px: int = 4
    depth_weight: float = 1.0
    color_weight: float = 0.1
    free_space_weight: float = 1.0
    free_space_samples: int = 4
    eikonal_weight: float = 0.01

    def __post_init__(self) -> None:
        s = "refine"
        _require(isinstance(self.enabled, bool), s, "enabled", "must be true or false",
                 self.enabled)
        _require(_is_int(self.steps) and 1 <= self.steps <= 100, s, "steps",
                 "must be an integer in [1, 100]", self.steps)
        _require(_is_int(self.stride_px) and 1 <= self.stride_px <= 32, s, "stride_px",
                 "must be an integer in [1, 32]", self.stride_px)
        _require(_is_int(self.free_space_samples) and 0 <= self.free_space_samples <= 32, s,
                 "free_space_samples", "must be an integer in [0, 32]",
                 self.free_space_samples)
        for name in ("learning_rate_m", "color_learning_rate"):
            value = getattr(self, name)
            _require(isinstance(value, (int, float)) and math.isfinite(value) and value > 0, s,
                     name, "must be a finite number > 0", value)
        for name in ("depth_weight", "color_weight", "free_space_weight", "eikonal_weight"):
            value = getattr(self, name)
            _require(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, s,
                     name, "must be a finite number >= 0", value)
        _require(self.depth_weight + self.color_weight + self.free_space_weight
                 + self.eikonal_weight > 0, s, "depth_weight",
                 "and the other loss weights cannot all be 0", self.depth_weight)


SECTIONS: dict[str, type] = {
    "volume": VolumeConfig,
    "integration": IntegrationConfig,
    "mesh": MeshConfig,
    "occupancy": OccupancyConfig,
    "fusion": FusionConfig,
    "stereo": StereoConfig,
    "rgb": RgbConfig,
    "map": MapConfig,
    "esdf": EsdfConfig,
    "costmap": CostmapConfig,
    "timing": TimingConfig,
    "refine": RefineConfig,
}


@dataclass
class MapperConfig:
    """Everything the :class:`~recon_ros.core.mapper.Mapper` needs, one section per component."""

    volume: VolumeConfig = field(default_factory=VolumeConfig)
    integration: IntegrationConfig = field(default_factory=IntegrationConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    stereo: StereoConfig = field(default_factory=StereoConfig)
    rgb: RgbConfig = field(default_factory=RgbConfig)
    map: MapConfig = field(default_factory=MapConfig)
    esdf: EsdfConfig = field(default_factory=EsdfConfig)
    costmap: CostmapConfig = field(default_factory=CostmapConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "MapperConfig":
        """Build from nested ``{section: {field: value}}``; unknown keys raise ConfigError."""
        data = data or {}
        unknown = set(data) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; "
                              f"known: {sorted(SECTIONS)}")
        sections = {}
        for name, klass in SECTIONS.items():
            values = data.get(name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"config section {name!r} must be a mapping")
            check_known_keys(klass, values, name)
            try:
                sections[name] = klass(**values)
            except TypeError as exc:
                raise ConfigError(f"section {name!r}: {exc}") from exc
        return cls(**sections)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "MapperConfig":
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"config {path} must hold a mapping of sections")
        return cls.from_dict(data)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def with_overrides(self, **sections: dict[str, Any]) -> "MapperConfig":
        """A copy with some fields replaced, e.g. ``cfg.with_overrides(volume={"device": "cuda"})``."""
        data = self.to_dict()
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        return MapperConfig.from_dict(data)
