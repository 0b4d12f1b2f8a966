"""The mapper node's parameters: one table, declared once, mirrored by ``config/mapper.yaml``.

Every ROS parameter of ``recon_mapper`` is a row of :data:`PARAMETERS` (name, default,
description, units). Rows named ``<section>.<field>`` mirror a field of the core's
:class:`~recon_ros.core.config.MapperConfig` and take their default from it, so the table
cannot drift from the core; the other rows configure the node itself. The node declares
exactly these parameters, validates every change with :func:`validate` (the core config is
rebuilt, so a bad value is rejected with the core's :class:`ConfigError` message), and the
documentation's parameter table is :func:`markdown_table`.

This module imports no ROS package (only the ROS-free core), so it can be used by tests and
documentation tools anywhere.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from recon_ros.core.config import SECTIONS, MapperConfig
from recon_ros.core.errors import ConfigError
from recon_ros.core.mapper import COLOR_METHODS

__all__ = [
    "COLOR_TRANSPORTS",
    "INPUT_QOS",
    "PARAMETERS",
    "Param",
    "by_name",
    "check_color_input",
    "config_values",
    "core_config",
    "defaults",
    "markdown_table",
    "peer_topics",
    "validate",
]

#: Values of ``input_qos``.
INPUT_QOS = ("sensor_data", "reliable")
#: Values of ``color_transport``: ``auto`` (sensor_msgs/Image, used once it arrives: a
#: depth-only camera needs no setting), ``raw`` (sensor_msgs/Image, expected: frames without
#: color are counted), ``compressed`` (sensor_msgs/CompressedImage on
#: ``<color_image_topic>/compressed``, expected), ``none`` (depth only, color not subscribed).
COLOR_TRANSPORTS = ("auto", "raw", "compressed", "none")
_TOPIC_RE = re.compile(r"^[A-Za-z_~{][A-Za-z0-9_/{}~]*$")


@dataclass(frozen=True)
class Param:
    """One ROS parameter.

    Attributes:
        name: ROS name; ``section.field`` for core parameters.
        default: default value (its Python type fixes the ROS parameter type).
        description: what it does (shown by ``ros2 param describe``).
        units: unit of the value (``m``, ``Hz``, ``s``, ...), empty if none.
        read_only: only settable at start-up (params file / command line).
    """

    name: str
    default: Any
    description: str
    units: str = ""
    read_only: bool = False

    @property
    def section(self) -> str | None:
        """The core config section this parameter mirrors, or None for node parameters."""
        head, _, tail = self.name.partition(".")
        return head if tail and head in SECTIONS else None

    @property
    def field(self) -> str:
        """The core config field name (the part after the section)."""
        return self.name.partition(".")[2]


def _core(section: str, field: str, description: str, units: str = "") -> Param:
    """A row mirroring ``MapperConfig.<section>.<field>``; the default comes from the core."""
    klass = SECTIONS[section]
    default = next(f for f in dataclasses.fields(klass) if f.name == field).default
    return Param(f"{section}.{field}", default, description, units)


_NODE_PARAMS: tuple[Param, ...] = (
    Param("map_frame", "map", "TF frame of the map and of every output (mesh, grid, cloud).",
          read_only=True),
    Param("robot_frame", "",
          "TF frame whose origin is the robot position, the centre of map.clearing_radius_m "
          "and map.max_memory_mb eviction, e.g. base_link; looked up at each depth image's "
          "stamp (waiting up to tf_timeout_s while its TF lags behind, like the camera pose). "
          "\"\" = the camera's position. When it is not available the frame is still "
          "integrated, centred on the camera (counted in the status, logged)."),
    Param("cameras", ["camera"],
          "Namespaces of the cameras, relative to the node's namespace; the topics below are "
          "subscribed inside each.", read_only=True),
    Param("depth_image_topic", "depth/image_raw",
          "Depth image topic inside each camera namespace (16UC1 mm or 32FC1 m); not "
          "subscribed with a color-only fusion.method (stereo, rgb), nor its camera_info.",
          read_only=True),
    Param("depth_info_topic", "depth/camera_info",
          "Depth CameraInfo topic inside each camera namespace.", read_only=True),
    Param("color_image_topic", "color/image_raw",
          "Color image topic inside each camera namespace (rgb8/bgr8/rgba8/bgra8/mono8); "
          "the compressed transport subscribes this name + /compressed.", read_only=True),
    Param("color_info_topic", "color/camera_info",
          "Color CameraInfo topic inside each camera namespace.", read_only=True),
    Param("color_transport", "auto",
          "How color arrives: auto (Image, used once it arrives; depth-only cameras need no "
          "setting), raw (Image, expected: frames without it are counted), compressed "
          "(CompressedImage, jpeg/png, expected) or none (depth only). With a color-only "
          "fusion.method color is what is mapped: auto = raw, none is invalid.",
          read_only=True),
    Param("input_qos", "sensor_data",
          "QoS of the image and camera_info subscriptions: sensor_data (best effort, matches "
          "any publisher) or reliable (needs a reliable publisher; large images survive "
          "lossy transports).", read_only=True),
    Param("queue_size", 30,
          "Depth and color messages kept per camera; when full the oldest is dropped "
          "(counted as 'queue overflow'). 30 is 2 s at 15 Hz: room for the map work's "
          "bursts (mesh and distance-field updates) on a few CPU cores; about 1.5 MB per "
          "640x480 depth + color frame.", "messages", read_only=True),
    Param("tick_rate_hz", 30.0,
          "Rate of the integration timer; one tick integrates every ready frame for up to "
          "one period.", "Hz"),
    Param("mesh_rate_hz", 2.0, "Rate of incremental mesh updates (0 = never).", "Hz"),
    Param("occupancy_rate_hz", 1.0,
          "Rate of the occupancy grid (in full, or as map_updates when its size and origin "
          "are unchanged) and the occupied-voxel cloud (0 = never).", "Hz"),
    Param("esdf_rate_hz", 1.0,
          "Rate of the planner outputs: the ESDF slice (~/esdf_slice, if esdf.enabled) and "
          "the global and local costmaps (~/costmap, ~/local_costmap) (0 = never).", "Hz"),
    Param("status_rate_hz", 1.0,
          "Rate of the JSON status message; timings and latencies cover one period.", "Hz"),
    Param("tf_timeout_s", 0.5,
          "How long a frame waits for its TF, camera_info and color before it is dropped "
          "(steady clock).", "s"),
    Param("tf_cache_s", 30.0, "History kept per dynamic TF edge.", "s", read_only=True),
    Param("color_max_offset_s", 0.02,
          "Largest |color stamp - depth stamp| for pairing a color image with a depth image, "
          "and the longest a depth image waits for its color once color flows (before the "
          "first color image, depth never waits).", "s"),
    Param("drop_log_period_s", 5.0,
          "Dropped frames are logged at most once per period (the first drop of each reason "
          "is always logged); so is an unavailable robot_frame.", "s", read_only=True),
    Param("cpu_threads", 1,
          "Torch intra-op threads on the CPU (0 = torch's default, one per core). 1 avoids "
          "OpenMP stalls when other processes (camera driver, RViz) share the cores.",
          "threads", read_only=True),
    Param("map_dir", "recon_map",
          "Directory that ~/save_map writes and ~/load_map reads, and that ~/save_map_as and "
          "~/load_map_from use when their request's path is empty (relative to the working "
          "directory)."),
    Param("load_map_on_start", "",
          "If set, the map saved in this directory (or this checkpoint file) is loaded at "
          "start-up, with the configuration it was made with; the node exits with an error "
          "if it cannot be loaded.", read_only=True),
    Param("autosave_dir", "",
          "If set, the map is saved into this directory when the node shuts down."),
    Param("quality_every_frames", 0,
          "Before fusing every this-many-th integrated frame (once the map holds a block), "
          "render the map at the frame's pose, about 80 px wide, and compare with its depth: "
          "the status's quality (share of the frame the map explains, inlier ratio at 5 cm, "
          "mean absolute error) (0 = off).", "frames"),
    Param("render_min_interval_s", 2.0,
          "~/render refuses a call sooner than this after the previous render: a render holds "
          "the map work (benchmarks/render.py, one thread of the 2-core VM: about 1.1 s at "
          "320x240, 4.1 s at 640x480).", "s"),
    Param("render_max_pixels", 76800,
          "~/render images with more pixels (width x height) are scaled down to this, aspect "
          "kept (76800 = 320x240; raise it on a GPU).", "px"),
    Param("map_sharing.publish_deltas", False,
          "Publish the own map's changed blocks (recon_ros_interfaces/MapDelta) on "
          "map_sharing.delta_topic every map_sharing.delta_period_s, and all of them to a new "
          "subscriber, so other robots can merge them. Only the own measurements are sent, "
          "never blocks received from peers.", read_only=True),
    Param("map_sharing.delta_topic", "map_deltas",
          "Topic of the published deltas, relative to the node's namespace (robot1/map_deltas "
          "for a node in namespace robot1).", read_only=True),
    Param("map_sharing.delta_period_s", 1.0,
          "Period of the delta messages (steady clock).", "s", read_only=True),
    Param("map_sharing.max_message_bytes", 1000000,
          "Largest data of one delta message: a bigger delta is split into several messages "
          "(uncompressed size; a message compresses to a fraction of it).", "bytes"),
    Param("map_sharing.robot_id", "",
          "The source id the deltas carry (\"\" = the node's fully qualified name); peers keep "
          "one layer per source id, so every robot needs its own.", read_only=True),
    Param("map_sharing.peer_topics", [""],
          "Delta topics of other robots to merge into the published and saved map (mesh, "
          "grid, costmaps, ~/render, saves), e.g. [/robot2/map_deltas]; \"\" entries are "
          "ignored ([\"\"] = none: ROS parameters cannot type an empty list). Deltas of "
          "another voxel size, block size, truncation or map frame are rejected (counted "
          "in the status's map_sharing, logged).", read_only=True),
)

_CORE_PARAMS: tuple[Param, ...] = (
    _core("volume", "voxel_size_m", "Voxel edge length.", "m"),
    _core("volume", "block_size", "Voxels per block edge (4, 8 or 16).", "voxels"),
    _core("volume", "device", "Torch device of the map, e.g. cpu or cuda:0."),
    _core("volume", "dtype", "Voxel storage dtype: float32 or float16."),
    _core("volume", "initial_capacity_blocks",
          "Blocks allocated up front (storage doubles when full).", "blocks"),
    _core("integration", "truncation_voxels", "TSDF truncation distance.", "voxels"),
    _core("integration", "min_depth_m", "Depth readings below are ignored.", "m"),
    _core("integration", "max_depth_m", "Depth readings above are ignored.", "m"),
    _core("integration", "weighting",
          "Measurement weight: constant or inverse_square (1/z^2)."),
    _core("integration", "max_weight",
          "Cap of the accumulated voxel weight (lower adapts faster to change)."),
    _core("integration", "behind_surface_drop",
          "Down-weight measurements behind the observed surface (as voxblox)."),
    _core("integration", "alloc_stride_px",
          "Pixel stride used to find the blocks a frame touches (0 = automatic).", "px"),
    _core("integration", "compile",
          "Fuse the voxel update with torch.compile (one-off compile at the first frame)."),
    _core("integration", "clear_free_space",
          "Update every allocated block in the camera's view, not only those near the "
          "measured surface, so space seen through becomes free (objects that moved away "
          "disappear); in-view blocks left holding free space only are released."),
    _core("integration", "clearing_weight_factor",
          "In (0, 1]: a surface or inside voxel seen more than a truncation in front of the "
          "measured surface has its weight multiplied by this before the free update (1 = "
          "plain weighted average; 0.5 forgets a removed object within about "
          "log2(max_weight) frames)."),
    _core("integration", "decay_per_s",
          "Exponential weight decay rate per second of sensor time; voxels falling below "
          "mesh.min_weight become unobserved and empty blocks are released (0 = off; one "
          "pass over the whole map per frame).", "1/s"),
    _core("mesh", "min_weight", "Marching cubes only meshes cubes whose corners have at "
          "least this weight."),
    _core("mesh", "method",
          "Mesher of the saved mesh.ply (~/save_map, ~/save_map_as, autosave): marching_cubes "
          "or poisson (screened Poisson, trimmed to observed space: smoother, more triangles, "
          "about 20x slower to mesh). ~/mesh and ~/mesh_blocks stay marching cubes."),
    _core("mesh", "poisson_depth", "mesh.method poisson: octree depth of the solve (0 = "
          "automatic: finest cell at most one voxel, up to mesh.poisson_max_depth)."),
    _core("mesh", "poisson_max_depth", "Upper bound of the automatic octree depth (time and "
          "memory grow about 4x per level)."),
    _core("mesh", "poisson_scale", "Ratio of the solve cube's edge to the surface points' "
          "bounding cube edge."),
    _core("mesh", "poisson_point_weight", "Screening weight: interpolation of the points "
          "against smoothness (0 = unscreened Poisson)."),
    _core("mesh", "poisson_samples_per_node", "Minimum surface points per octree node (more "
          "smooths noisy points)."),
    _core("mesh", "poisson_linear_fit", "Place iso-vertices by linear interpolation instead "
          "of the solver's fit."),
    _core("mesh", "poisson_density_quantile", "Fraction of vertices with the lowest Poisson "
          "density removed, in [0, 1) (0 = none)."),
    _core("mesh", "poisson_crop_distance_voxels", "Vertices farther than this from the "
          "TSDF's zero level, or outside observed space, are removed.", "voxels"),
    _core("mesh", "poisson_n_threads", "Threads of the Poisson solve (0 = as many as torch "
          "uses: cpu_threads). Keep 1 on a robot: Open3D's multi-threaded solve segfaults "
          "now and then (isl-org/Open3D#6828), which kills the node.", "threads"),
    _core("mesh", "poisson_batch_blocks", "Blocks read per batch when collecting the "
          "surface points (bounds memory).", "blocks"),
    _core("occupancy", "min_height_m", "Lower edge of the height band of the 2D grid "
          "(map z).", "m"),
    _core("occupancy", "max_height_m", "Upper edge of the height band of the 2D grid "
          "(map z).", "m"),
    _core("occupancy", "resolution_m", "2D cell size (0 = the voxel size).", "m"),
    _core("occupancy", "occupied_threshold_voxels",
          "A voxel is occupied when its TSDF is below this many voxels.", "voxels"),
    _core("occupancy", "free_below_m",
          "A 2D cell is free only if free space was seen in its column at or below this map "
          "height (and nothing occupied in the band).", "m"),
    _core("occupancy", "min_weight", "Voxels with less weight count as unknown."),
    _core("occupancy", "free_space_stride_px",
          "Pixel stride of the rays that carve free space into the 2D grid.", "px"),
    _core("fusion", "method",
          "tsdf (classical fusion, with color) or latent (learned latent fusion, geometry "
          "only) map depth images; stereo (plane-sweep stereo on keyframes) and rgb (learned, "
          "Atlas-style fragments) map color images only: the node then subscribes color "
          "image and camera_info, no depth. Changed at run time only within the same input "
          "kind (depth or color-only); the inputs are subscribed at start-up."),
    _core("fusion", "weights",
          "Weight file of the latent model (\"\" = the shipped default)."),
    _core("fusion", "max_count",
          "Cap of the per-voxel update count of the latent running average."),
    _core("fusion", "allow_weights_mismatch",
          "Run latent weights trained for another voxel size or truncation (more than 1 % "
          "apart) with a warning; false = refuse them."),
    _core("fusion", "occupancy_threshold",
          "Latent fusion: an observed voxel is occupied (occupied voxels, 2D grid) when the "
          "decoded occupancy head's probability is at least this."),
    _core("stereo", "min_depth_m", "fusion.method stereo: nearest depth hypothesis of the "
          "plane sweep.", "m"),
    _core("stereo", "max_depth_m", "Farthest depth hypothesis of the plane sweep.", "m"),
    _core("stereo", "num_depths", "Depth hypotheses, uniform in inverse depth."),
    _core("stereo", "window_radius_px", "Half size of the ZNCC matching window, at the "
          "compute scale.", "px"),
    _core("stereo", "image_scale", "Images are resampled by this factor in (0, 1] before "
          "matching."),
    _core("stereo", "num_sources", "Most source keyframes matched against a reference."),
    _core("stereo", "best_k", "A hypothesis costs the mean of its best_k lowest per-view "
          "costs (tolerates occlusion)."),
    _core("stereo", "min_score", "Smallest aggregated ZNCC of an accepted depth."),
    _core("stereo", "uniqueness_ratio", "An accepted depth's cost is at most this times the "
          "best other local minimum's."),
    _core("stereo", "min_texture_std", "Smallest grey-value standard deviation of a "
          "matching window (flatter windows get no depth)."),
    _core("stereo", "consistency_steps", "A source view confirms a depth when its own best "
          "hypothesis lies within this many hypotheses."),
    _core("stereo", "min_consistent_views", "Source views that must confirm a depth; "
          "keyframes with fewer source views get no depth map."),
    _core("stereo", "keyframe_translation_m", "A frame becomes a keyframe when the camera "
          "moved this far since the last keyframe.", "m"),
    _core("stereo", "keyframe_rotation_deg", "... or turned this much.", "deg"),
    _core("stereo", "window", "Most recent keyframes kept as candidate source views.",
          "keyframes"),
    _core("stereo", "min_baseline_m", "Smallest distance of a source keyframe from the "
          "reference.", "m"),
    _core("stereo", "max_source_rotation_deg", "Largest rotation of a source keyframe from "
          "the reference.", "deg"),
    _core("stereo", "reference_delay", "A keyframe's depth is computed once this many newer "
          "keyframes exist (source views on both sides; 0 = at once).", "keyframes"),
    _core("rgb", "weights", "fusion.method rgb: Atlas weight file (\"\" = the shipped "
          "weights of view_fusion); volume.voxel_size_m must equal its training voxel size."),
    _core("rgb", "view_fusion", "average (running mean over views) or context (Pix2Vox "
          "softmax weighting); must match the weights."),
    _core("rgb", "keyframe_translation_m", "A frame becomes a keyframe when the camera moved "
          "this far since the last keyframe.", "m"),
    _core("rgb", "keyframe_rotation_deg", "... or turned this much.", "deg"),
    _core("rgb", "views_per_fragment", "Keyframes per fragment (0 = the weights' training "
          "view count).", "keyframes"),
    _core("rgb", "fragment_overlap", "Keyframes a fragment shares with the previous one.",
          "keyframes"),
    _core("rgb", "fragment_weight", "Weight of a fragment's voxels in the map's weighted "
          "average."),
    _core("rgb", "floor_height_m", "Map height of the floor; fragments sit on it as in "
          "training.", "m"),
    _core("rgb", "color", "Color voxels with the mean color of the keyframes they project "
          "into (occlusion ignored)."),
    _core("map", "clearing_radius_m",
          "Blocks whose centre is farther than this from the robot (robot_frame, else the "
          "camera) are dropped after every frame, and so are 2D free-space tiles farther "
          "than this in the plane (0 = keep everything).", "m"),
    _core("map", "max_memory_mb",
          "Budget of the voxel storage and its index; beyond it the blocks farthest from the "
          "robot are evicted first and storage never grows past it (0 = no budget).", "MiB"),
    _core("esdf", "enabled",
          "Maintain the 3D Euclidean signed distance field (a free-space pass per frame, an "
          "incremental update per output) and publish its slice ~/esdf_slice; false = no "
          "distance field (the costmaps are still published)."),
    _core("esdf", "max_distance_m",
          "Distances are propagated this far from obstacles; farther free space reads this "
          "value.", "m"),
    _core("esdf", "slice_height_m", "Map z of the ~/esdf_slice plane.", "m"),
    _core("esdf", "robot_radius_m",
          "Inscribed radius of the robot: costmap cells this close to an obstacle are "
          "inscribed (99).", "m"),
    _core("esdf", "inflation_radius_m",
          "Costmap cells up to this far from an obstacle get an exponentially decaying cost "
          "(Nav2 InflationLayer inflation_radius).", "m"),
    _core("esdf", "cost_scaling_factor",
          "Decay rate of the inflated cost, 252 exp(-factor (d - robot_radius_m)) in Nav2's "
          "0-252 scale (Nav2 InflationLayer cost_scaling_factor).", "1/m"),
    _core("costmap", "local_size_m",
          "Edge of the square ~/local_costmap window centred on the robot (robot_frame, else "
          "the camera) (0 = no local costmap).", "m"),
    _core("timing", "mode",
          "Stage timings of the status (timings_ms from the core): off (none, no cost), "
          "sampled (one frame in timing.sample_every; on CUDA with events, the host never "
          "waits) or every_stage (every frame, the device synchronised around each stage: "
          "two host waits per stage on CUDA, for benchmarks)."),
    _core("timing", "sample_every",
          "In sampled mode, frames 0, N, 2N, ... are timed for N = this.", "frames"),
    _core("refine", "enabled",
          "Test-time refinement: after each depth frame is fused, a few gradient steps on the "
          "TSDF and color of the blocks it changed so that the map rendered at its pose "
          "matches it (fusion.method tsdf only; off: no measured gain, see docs/rendering.md)."),
    _core("refine", "steps", "Gradient (Adam) steps per frame.", "steps"),
    _core("refine", "learning_rate_m", "Adam step size of the TSDF.", "m"),
    _core("refine", "color_learning_rate", "Adam step size of the color (RGB 0-255).",
          "RGB units"),
    _core("refine", "stride_px",
          "Render and compare every stride_px-th pixel in both directions.", "px"),
    _core("refine", "depth_weight", "Weight of the depth L1 (metres) of render vs frame."),
    _core("refine", "color_weight",
          "Weight of the color L1 (RGB / 255) of render vs frame (registered color only)."),
    _core("refine", "free_space_weight",
          "Weight of the free-space hinge: samples in front of the measured depth should "
          "hold a TSDF of at least their distance to it (clipped to the truncation)."),
    _core("refine", "free_space_samples",
          "Free-space samples per compared pixel over the truncation in front of the depth.",
          "samples"),
    _core("refine", "eikonal_weight",
          "Weight of (|grad tsdf| - 1)^2 over observed voxels near the surface."),
)

#: Every parameter of the mapper node, node parameters first, then the core's.
PARAMETERS: tuple[Param, ...] = _NODE_PARAMS + _CORE_PARAMS


def by_name() -> dict[str, Param]:
    """``{name: Param}`` of :data:`PARAMETERS`."""
    return {p.name: p for p in PARAMETERS}


def defaults() -> dict[str, Any]:
    """``{name: default}`` of every parameter."""
    return {p.name: p.default for p in PARAMETERS}


def core_config(values: dict[str, Any]) -> MapperConfig:
    """The core config built from flat parameter values (``{"volume.voxel_size_m": 0.05}``).

    Raises:
        ConfigError: a value is invalid (the message names the field and the reason).
    """
    nested: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for p in _CORE_PARAMS:
        if p.name in values:
            nested[p.section or ""][p.field] = values[p.name]
    return MapperConfig.from_dict(nested)


def config_values(config: MapperConfig) -> dict[str, Any]:
    """Flat parameter values of a core config (typed like the table's defaults)."""
    nested = config.to_dict()
    return {p.name: type(p.default)(nested[p.section or ""][p.field]) for p in _CORE_PARAMS}


def _check_rate(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise ConfigError(f"{name}={value!r} is invalid: must be a finite number >= 0 "
                          "(0 disables)")


def _check_topic(name: str, value: str) -> None:
    if not _TOPIC_RE.match(value) or "//" in value or value.endswith("/"):
        raise ConfigError(f"{name}={value!r} is invalid: not a valid relative topic name")


def peer_topics(values: dict[str, Any]) -> list[str]:
    """The ``map_sharing.peer_topics`` to subscribe (without the ignored "" entries)."""
    return [str(t) for t in values["map_sharing.peer_topics"] if str(t)]


def _check_map_sharing(values: dict[str, Any]) -> None:
    period = values["map_sharing.delta_period_s"]
    if not (math.isfinite(period) and period > 0.0):
        raise ConfigError(f"map_sharing.delta_period_s={period!r} is invalid: must be > 0")
    if values["map_sharing.max_message_bytes"] < 1024:
        raise ConfigError(f"map_sharing.max_message_bytes="
                          f"{values['map_sharing.max_message_bytes']!r} is invalid: must be "
                          ">= 1024")
    _check_topic("map_sharing.delta_topic", values["map_sharing.delta_topic"])
    topics = peer_topics(values)
    if len(set(topics)) != len(topics):
        raise ConfigError(f"map_sharing.peer_topics={topics!r} is invalid: repeated topic")
    for topic in topics:  # absolute (another robot's namespace) or relative
        _check_topic("map_sharing.peer_topics", topic.removeprefix("/"))


def check_color_input(method: str, color_transport: str) -> None:
    """A color-only ``fusion.method`` (:data:`~recon_ros.core.mapper.COLOR_METHODS`: the node
    subscribes color image and camera_info, no depth) needs color: ``color_transport`` must
    not be ``none``.

    Raises:
        ConfigError: it is.
    """
    if method in COLOR_METHODS and color_transport == "none":
        raise ConfigError(f"color_transport='none' is invalid with fusion.method={method!r}: "
                          "color-only mapping needs the color images (auto, raw or "
                          "compressed)")


def validate(values: dict[str, Any]) -> MapperConfig:
    """Check a complete set of parameter values; returns the core config they describe.

    Raises:
        ConfigError: the first invalid value, with the reason.
    """
    for name in ("tick_rate_hz", "mesh_rate_hz", "occupancy_rate_hz", "esdf_rate_hz",
                 "status_rate_hz"):
        _check_rate(name, values[name])
    for name in ("tick_rate_hz", "status_rate_hz"):
        if values[name] <= 0.0:
            raise ConfigError(f"{name}={values[name]!r} is invalid: must be > 0")
    for name in ("tf_timeout_s", "color_max_offset_s", "render_min_interval_s"):
        if not (math.isfinite(values[name]) and values[name] >= 0.0):
            raise ConfigError(f"{name}={values[name]!r} is invalid: must be >= 0")
    for name in ("tf_cache_s", "drop_log_period_s"):
        if not (math.isfinite(values[name]) and values[name] > 0.0):
            raise ConfigError(f"{name}={values[name]!r} is invalid: must be > 0")
    if values["quality_every_frames"] < 0:
        raise ConfigError(f"quality_every_frames={values['quality_every_frames']!r} is invalid: "
                          "must be >= 0 (0 = off)")
    if values["render_max_pixels"] < 1:
        raise ConfigError(f"render_max_pixels={values['render_max_pixels']!r} is invalid: must "
                          "be >= 1")
    if values["cpu_threads"] < 0:
        raise ConfigError(f"cpu_threads={values['cpu_threads']!r} is invalid: must be >= 0")
    if values["queue_size"] < 1:
        raise ConfigError(f"queue_size={values['queue_size']!r} is invalid: must be >= 1")
    if values["input_qos"] not in INPUT_QOS:
        raise ConfigError(f"input_qos={values['input_qos']!r} is invalid: must be one of "
                          f"{list(INPUT_QOS)}")
    if values["color_transport"] not in COLOR_TRANSPORTS:
        raise ConfigError(f"color_transport={values['color_transport']!r} is invalid: must be "
                          f"one of {list(COLOR_TRANSPORTS)}")
    if not str(values["map_frame"]).strip("/"):
        raise ConfigError("map_frame='' is invalid: must be a frame id")
    robot_frame = str(values["robot_frame"])
    if robot_frame and not robot_frame.strip("/"):
        raise ConfigError(f"robot_frame={robot_frame!r} is invalid: must be a frame id or \"\" "
                          "(the camera)")
    cameras = list(values["cameras"])
    if not cameras or len(set(cameras)) != len(cameras):
        raise ConfigError(f"cameras={cameras!r} is invalid: must be a non-empty list of "
                          "distinct namespaces")
    for ns in cameras:
        _check_topic("cameras", ns)
    for name in ("depth_image_topic", "depth_info_topic", "color_image_topic",
                 "color_info_topic"):
        _check_topic(name, values[name])
    if not str(values["map_dir"]):
        raise ConfigError("map_dir='' is invalid: must be a directory")
    _check_map_sharing(values)
    check_color_input(values["fusion.method"], values["color_transport"])
    return core_config(values)


def _format(value: Any) -> str:
    """A default as YAML would write it, in backticks."""
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        items = ", ".join('""' if v == "" else str(v) for v in value)
        return f"`[{items}]`"
    return f"`{value}`"


def markdown_table() -> str:
    """The parameter table as Markdown (for ``docs/ros_node.md``)."""
    rows = ["| parameter | default | units | description |", "|---|---|---|---|"]
    for p in PARAMETERS:
        desc = (p.description + (" Start-up only." if p.read_only else "")).replace("|", "\\|")
        rows.append(f"| `{p.name}` | {_format(p.default)} | {p.units} | {desc} |")
    return "\n".join(rows) + "\n"
