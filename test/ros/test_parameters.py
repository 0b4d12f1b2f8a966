"""The node's parameter table: it mirrors the core config, config/mapper.yaml and the docs
list exactly its entries, validation rejects bad values with the core's reason, and (with a
real process) every entry is declared and reaches the node and the core config."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from recon_ros.core.config import SECTIONS, MapperConfig
from recon_ros.core.errors import ConfigError
from recon_ros.ros import parameters as P

from .conftest import ROS_SKIP_REASON
from .launch_spec import REPO

#: A valid value other than the default for every parameter, except :data:`SAME` (``cpu`` is
#: the only device of every test machine; the weights are the shipped ones; no map to load). A new parameter
#: must be added here.
NON_DEFAULT: dict[str, Any] = {
    "map_frame": "world",
    "robot_frame": "base_link",
    "cameras": ["cam_a", "cam_b"],
    "depth_image_topic": "depth/image_rect_raw",
    "depth_info_topic": "depth/info",
    "color_image_topic": "rgb/image",
    "color_info_topic": "rgb/info",
    "color_transport": "compressed",
    "input_qos": "reliable",
    "queue_size": 7,
    "tick_rate_hz": 20.0,
    "mesh_rate_hz": 1.5,
    "occupancy_rate_hz": 0.5,
    "esdf_rate_hz": 0.25,
    "status_rate_hz": 4.0,
    "tf_timeout_s": 0.25,
    "tf_cache_s": 20.0,
    "color_max_offset_s": 0.01,
    "drop_log_period_s": 2.0,
    "cpu_threads": 2,
    "map_dir": "saved",
    "load_map_on_start": "",
    "autosave_dir": "auto",
    "quality_every_frames": 5,
    "render_min_interval_s": 0.5,
    "render_max_pixels": 19200,
    "map_sharing.publish_deltas": True,
    "map_sharing.delta_topic": "shared/map_deltas",
    "map_sharing.delta_period_s": 2.5,
    "map_sharing.max_message_bytes": 65536,
    "map_sharing.robot_id": "robot_a",
    "map_sharing.peer_topics": ["/robot_b/map_deltas", "robot_c/map_deltas"],
    "volume.voxel_size_m": 0.04,
    "volume.block_size": 4,
    "volume.device": "cpu",
    "volume.dtype": "float16",
    "volume.initial_capacity_blocks": 1024,
    "integration.truncation_voxels": 3.0,
    "integration.min_depth_m": 0.2,
    "integration.max_depth_m": 4.0,
    "integration.weighting": "inverse_square",
    "integration.max_weight": 50.0,
    "integration.behind_surface_drop": False,
    "integration.alloc_stride_px": 2,
    "integration.compile": True,
    "integration.clear_free_space": False,
    "integration.clearing_weight_factor": 0.25,
    "integration.decay_per_s": 0.1,
    "mesh.min_weight": 0.01,
    "mesh.method": "poisson",
    "mesh.poisson_depth": 7,
    "mesh.poisson_max_depth": 9,
    "mesh.poisson_scale": 1.2,
    "mesh.poisson_point_weight": 2.0,
    "mesh.poisson_samples_per_node": 2.0,
    "mesh.poisson_linear_fit": True,
    "mesh.poisson_density_quantile": 0.05,
    "mesh.poisson_crop_distance_voxels": 2.0,
    "mesh.poisson_n_threads": 2,
    "mesh.poisson_batch_blocks": 256,
    "occupancy.min_height_m": 0.1,
    "occupancy.max_height_m": 1.2,
    "occupancy.resolution_m": 0.1,
    "occupancy.occupied_threshold_voxels": 0.4,
    "occupancy.min_weight": 0.01,
    "occupancy.free_below_m": 0.3,
    "occupancy.free_space_stride_px": 4,
    "fusion.method": "latent",
    "fusion.weights": "",
    "fusion.max_count": 32.0,
    "fusion.allow_weights_mismatch": True,  # the weights' 5 cm voxels vs 4 cm here
    "fusion.occupancy_threshold": 0.6,
    "stereo.min_depth_m": 0.3,
    "stereo.max_depth_m": 6.0,
    "stereo.num_depths": 64,
    "stereo.window_radius_px": 3,
    "stereo.image_scale": 1.0,
    "stereo.num_sources": 3,
    "stereo.best_k": 1,
    "stereo.min_score": 0.5,
    "stereo.uniqueness_ratio": 0.9,
    "stereo.min_texture_std": 0.02,
    "stereo.consistency_steps": 2,
    "stereo.min_consistent_views": 1,
    "stereo.keyframe_translation_m": 0.2,
    "stereo.keyframe_rotation_deg": 10.0,
    "stereo.window": 6,
    "stereo.min_baseline_m": 0.05,
    "stereo.max_source_rotation_deg": 45.0,
    "stereo.reference_delay": 2,
    "rgb.weights": "",
    "rgb.view_fusion": "context",
    "rgb.keyframe_translation_m": 0.3,
    "rgb.keyframe_rotation_deg": 10.0,
    "rgb.views_per_fragment": 6,
    "rgb.fragment_overlap": 2,
    "rgb.fragment_weight": 2.0,
    "rgb.floor_height_m": 0.1,
    "rgb.color": False,
    "map.clearing_radius_m": 10.0,
    "map.max_memory_mb": 512.0,
    "esdf.enabled": False,
    "esdf.max_distance_m": 3.0,
    "esdf.slice_height_m": 0.3,
    "esdf.robot_radius_m": 0.25,
    "esdf.inflation_radius_m": 0.8,
    "esdf.cost_scaling_factor": 5.0,
    "costmap.local_size_m": 4.0,
    "timing.mode": "every_stage",
    "timing.sample_every": 5,
    "refine.enabled": False,
    "refine.steps": 3,
    "refine.learning_rate_m": 0.001,
    "refine.color_learning_rate": 1.0,
    "refine.stride_px": 8,
    "refine.depth_weight": 0.5,
    "refine.color_weight": 0.2,
    "refine.free_space_weight": 0.5,
    "refine.free_space_samples": 2,
    "refine.eikonal_weight": 0.1,
}
#: (load_map_on_start needs a saved map: test_map_services.py starts a node with one.)
SAME = {"volume.device", "fusion.weights", "rgb.weights", "load_map_on_start",
        "refine.enabled"}  # (refinement needs fusion.method tsdf; NON_DEFAULT has latent)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_table_mirrors_the_core_config() -> None:
    core_rows = {p.name: p for p in P.PARAMETERS if p.section is not None}
    fields = {f"{section}.{f.name}": f.default for section, klass in SECTIONS.items()
              for f in dataclasses.fields(klass)}
    assert set(core_rows) == set(fields)
    assert {name: p.default for name, p in core_rows.items()} == fields
    assert len({p.name for p in P.PARAMETERS}) == len(P.PARAMETERS)
    # the first matching suffix decides (``_per_s`` before ``_s``)
    suffix_units = {"_per_s": "1/s", "_m": "m", "_hz": "Hz", "_s": "s", "_px": "px",
                    "_voxels": "voxels", "_mb": "MiB"}
    for p in P.PARAMETERS:
        assert p.description.endswith("."), p.name
        suffix = next((s for s in suffix_units if p.name.endswith(s)), None)
        if suffix is not None:
            assert p.units == suffix_units[suffix], p.name


def test_defaults_are_valid_and_build_the_core_default() -> None:
    assert P.validate(P.defaults()) == MapperConfig()
    assert P.config_values(MapperConfig()) == {p.name: p.default for p in P.PARAMETERS
                                               if p.section is not None}


def test_config_yaml_lists_every_parameter_with_its_default() -> None:
    doc = yaml.safe_load((REPO / "config/mapper.yaml").read_text())
    values = _flatten(doc["/**"]["ros__parameters"])
    assert values == P.defaults()


def test_realsense_overlay_sets_only_known_valid_parameters() -> None:
    doc = yaml.safe_load((REPO / "config/realsense_d435.yaml").read_text())
    overlay = _flatten(doc["/**"]["ros__parameters"])
    assert set(overlay) <= set(P.by_name())
    P.validate({**P.defaults(), **overlay})


def test_docs_carry_the_generated_table() -> None:
    docs = (REPO / "docs/ros_node.md").read_text()
    assert P.markdown_table() in docs, "regenerate the table: python -c 'from " \
        "recon_ros.ros.parameters import markdown_table; print(markdown_table())'"


@pytest.mark.parametrize("name, value, reason", [
    ("volume.voxel_size_m", 0.0, "volume.voxel_size_m=0.0 is invalid"),
    ("volume.block_size", 5, "must be 4, 8 or 16"),
    ("integration.max_depth_m", 0.05, "must be > min_depth_m"),
    ("occupancy.max_height_m", 0.0, "must be > min_height_m"),
    ("tick_rate_hz", 0.0, "must be > 0"),
    ("mesh_rate_hz", math.inf, "must be a finite number >= 0"),
    ("queue_size", 0, "must be >= 1"),
    ("color_transport", "theora", "must be one of"),
    ("input_qos", "best_effort", "must be one of"),
    ("cameras", [], "non-empty list"),
    ("cameras", ["a", "a"], "distinct"),
    ("depth_image_topic", "depth//image", "not a valid relative topic name"),
    ("map_dir", "", "must be a directory"),
    ("drop_log_period_s", 0.0, "must be > 0"),
    ("cpu_threads", -1, "must be >= 0"),
    ("quality_every_frames", -1, "must be >= 0 (0 = off)"),
    ("render_min_interval_s", math.nan, "render_min_interval_s=nan is invalid: must be >= 0"),
    ("render_max_pixels", 0, "must be >= 1"),
    ("map_sharing.delta_period_s", 0.0, "map_sharing.delta_period_s=0.0 is invalid: must be > 0"),
    ("map_sharing.max_message_bytes", 100, "must be >= 1024"),
    ("map_sharing.delta_topic", "/abs", "not a valid relative topic name"),
    ("map_sharing.peer_topics", ["/r2/map_deltas", "/r2/map_deltas"], "repeated topic"),
    ("map_sharing.peer_topics", ["/r2//map_deltas"], "not a valid relative topic name"),
    ("robot_frame", "/", "must be a frame id or"),
    ("integration.clearing_weight_factor", 0.0,
     "integration.clearing_weight_factor=0.0 is invalid: must be in (0, 1]"),
    ("integration.decay_per_s", -1.0, "must be >= 0 (0 = off)"),
    ("map.clearing_radius_m", -1.0, "map.clearing_radius_m=-1.0 is invalid"),
    ("map.max_memory_mb", -1.0, "map.max_memory_mb=-1.0 is invalid: must be 0 (off) or >= 1"),
    ("map.max_memory_mb", 0.5, "must be 0 (off) or >= 1"),
    ("esdf_rate_hz", -1.0, "esdf_rate_hz=-1.0 is invalid: must be a finite number >= 0"),
    ("esdf.inflation_radius_m", 0.1, "esdf.inflation_radius_m=0.1 is invalid: must be >= "
     "robot_radius_m"),
    ("costmap.local_size_m", -1.0, "costmap.local_size_m=-1.0 is invalid"),
    ("timing.mode", "always", "timing.mode='always' is invalid: must be one of"),
    ("timing.sample_every", 0, "timing.sample_every=0 is invalid: must be >= 1"),
    ("stereo.num_depths", 2, "stereo.num_depths=2 is invalid: must be an integer >= 3"),
    ("mesh.method", "tetrahedra", "mesh.method='tetrahedra' is invalid: must be one of "
     "['marching_cubes', 'poisson']"),
    ("mesh.poisson_depth", 1, "mesh.poisson_depth=1 is invalid: must be 0 (automatic) or an "
     "integer in [2, 16]"),
    ("mesh.poisson_density_quantile", 1.0,
     "mesh.poisson_density_quantile=1.0 is invalid: must be in [0, 1)"),
    ("mesh.poisson_crop_distance_voxels", 0.0,
     "mesh.poisson_crop_distance_voxels=0.0 is invalid: must be a finite number > 0"),
])
def test_validate_rejects_with_a_reason(name: str, value: Any, reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        P.validate({**P.defaults(), name: value})


def test_non_default_values_cover_the_table_and_are_valid() -> None:
    assert set(NON_DEFAULT) == set(P.by_name())
    for name, value in NON_DEFAULT.items():
        if name not in SAME:
            assert value != P.defaults()[name], name
    P.validate(NON_DEFAULT)


def test_every_parameter_is_declared_and_reaches_node_and_core(tmp_path: Path) -> None:
    pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)
    from .helpers import VENV_BIN, Harness, Process, child_env, next_domain_id, wait_for
    from .launch_spec import mapper_command, module_constants, write_overlay

    # the launch file sets cameras from its `camera` argument
    overlay = write_overlay(tmp_path / "overlay.yaml",
                            {k: v for k, v in NON_DEFAULT.items() if k != "cameras"})
    domain = next_domain_id()
    # the launch file passes one camera namespace; the others come from the command line
    cmd = mapper_command(VENV_BIN, overlay=overlay, camera="cam_a")
    cmd += ["-p", "cameras:=[cam_a, cam_b]"]
    proc = Process(cmd, child_env(domain, tmp_path / "log"), tmp_path / "mapper.log",
                   cwd=tmp_path)
    harness = Harness(domain)
    try:
        name = module_constants(REPO / "launch/mapping.launch.py")["MAPPER_NAME"]
        harness.wait_status(lambda s: True, 60, "the first status")
        assert harness.get_parameters(sorted(NON_DEFAULT)) == NON_DEFAULT
        # node parameters: the subscriptions follow cameras, topic names and color transport
        from recon_ros.ros.intake import INTAKE_SUFFIX  # the input subscriptions' node
        subs = wait_for(lambda: harness.graph(name + INTAKE_SUFFIX, "subscriber"), 30,
                        "subscriptions")
        for cam in NON_DEFAULT["cameras"]:
            assert {f"/{cam}/depth/image_rect_raw", f"/{cam}/depth/info",
                    f"/{cam}/rgb/image/compressed", f"/{cam}/rgb/info"} <= subs, subs
        status = harness.status()
        assert set(status["cameras"]) == set(NON_DEFAULT["cameras"])
        # core parameters: the map the node saves carries exactly them
        assert harness.call("save_map").success
        saved = MapperConfig.from_yaml(tmp_path / "saved" / "config.yaml")
        assert saved == P.core_config(NON_DEFAULT)
        assert proc.stop() == 0
        assert (tmp_path / "auto" / "map.pt").is_file()
    finally:
        harness.close()
        if proc.alive():
            proc.stop()
