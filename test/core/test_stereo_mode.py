"""Color-only mapping (``fusion.method: stereo``): the ``stereo`` config section, keyframe
gating of :class:`~recon_ros.core.stereo_mapping.StereoDepthFrames`, the ``Mapper`` contract
and the quality of a stereo map of the demo room against its exact surface, with depth TSDF
fusion of the same poses as the ceiling."""

from __future__ import annotations

import re

import numpy as np
import pytest

from recon_ros.core.config import MapperConfig, StereoConfig
from recon_ros.core.errors import ConfigError, FrameError
from recon_ros.core.frame import Frame
from recon_ros.core.mapper import Mapper
from recon_ros.core.stereo_mapping import StereoDepthFrames
from recon_ros.evaluation import MeshMetrics, mesh_metrics
from recon_ros.io.synthetic import (
    default_camera,
    make_demo_scene,
    render,
    room_scan_trajectory,
    visible_surface_points,
)

W, H, FRAMES = 160, 120, 30
#: At 160x120 the images are matched at full size.
STEREO = {"image_scale": 1.0}


def stereo_config(**stereo: float) -> MapperConfig:
    return MapperConfig().with_overrides(fusion={"method": "stereo"},
                                         stereo={**STEREO, **stereo})


def translation(x: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = x
    return T


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("field, value, reason", [
    ("num_depths", 2, "stereo.num_depths=2 is invalid: must be an integer >= 3"),
    ("best_k", 5, "stereo.best_k=5 is invalid"),
    ("window", 4, "stereo.window=4 is invalid: must be an integer >= num_sources + 1 = 5"),
    ("keyframe_translation_m", -0.1, "stereo.keyframe_translation_m=-0.1 is invalid"),
    ("keyframe_rotation_deg", 200.0, "stereo.keyframe_rotation_deg=200.0 is invalid"),
    ("min_baseline_m", 0.0, "stereo.min_baseline_m=0.0 is invalid"),
    ("max_source_rotation_deg", 0.0, "stereo.max_source_rotation_deg=0.0 is invalid"),
    ("reference_delay", 8, "stereo.reference_delay=8 is invalid: must be an integer in "
     "[0, window = 8)"),
    ("reference_delay", 1.0, "stereo.reference_delay=1.0 is invalid"),
])
def test_config_rejects_bad_stereo_values_naming_the_field(field: str, value: float,
                                                            reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        MapperConfig.from_dict({"fusion": {"method": "stereo"}, "stereo": {field: value}})


def test_config_accepts_stereo_and_rejects_a_motionless_keyframe_rule() -> None:
    cfg = MapperConfig.from_dict({"fusion": {"method": "stereo"},
                                  "stereo": {"num_depths": 48, "reference_delay": 0}})
    assert cfg.fusion.method == "stereo" and cfg.stereo.plane_sweep().num_depths == 48
    with pytest.raises(ConfigError, match="cannot both be 0"):
        StereoConfig(keyframe_translation_m=0.0, keyframe_rotation_deg=0.0)
    with pytest.raises(ConfigError, match=r"fusion.method='sgm' is invalid: must be one of "
                                          r"\['tsdf', 'latent', 'stereo', 'rgb'\]"):
        MapperConfig.from_dict({"fusion": {"method": "sgm"}})
    with pytest.raises(ConfigError, match="unknown key"):
        MapperConfig.from_dict({"stereo": {"keyframes": 3}})


# ------------------------------------------------------------------ keyframes, contract
def test_frames_too_close_are_not_keyframes_and_give_no_depth() -> None:
    camera = default_camera(64, 48)
    image = np.zeros((48, 64, 3), np.uint8)
    frames = StereoDepthFrames(StereoConfig(keyframe_translation_m=0.1,
                                            keyframe_rotation_deg=5.0))
    for i, x in enumerate([0.0, 0.03, 0.06, 0.09, 0.12, 0.15, 0.2, 0.21]):
        assert frames.add(image, camera, translation(x), i) is None
    # keyframes at x = 0 and 0.12; 0.2 and 0.21 lie less than 0.1 m from 0.12
    assert [k.index for k in frames.selector.keyframes] == [0, 4]
    assert (frames.frames_seen, frames.keyframes, frames.depth_frames) == (8, 2, 0)
    # turning 6 degrees in place makes a keyframe
    c, s = np.cos(np.radians(6.0)), np.sin(np.radians(6.0))
    turned = translation(0.12)
    turned[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    frames.add(image, camera, turned, 9)
    assert frames.keyframes == 3
    # every keyframe has at most one source view 0.1 m away: no depth map
    assert frames.finish() == [] and frames.without_sources >= 1
    with pytest.raises(FrameError, match="color image is 64x47"):
        frames.add(image[:47], camera, translation(1.0), 10)


def test_mapper_contract_depth_in_stereo_mode_and_color_in_tsdf_mode_are_refused() -> None:
    camera = default_camera(32, 24)
    frame = Frame(depth=np.ones((24, 32), np.float32), camera=camera, T_world_cam=np.eye(4))
    with pytest.raises(ConfigError, match="fusion.method is 'stereo'.*integrate_color"):
        Mapper(stereo_config()).integrate(frame)
    with pytest.raises(ConfigError, match="color-only input needs fusion.method: stereo"):
        Mapper(MapperConfig()).integrate_color(np.zeros((24, 32, 3), np.uint8), camera,
                                               np.eye(4), 0)


# --------------------------------------------------------------------- demo room quality
@pytest.fixture(scope="module")
def demo_maps() -> tuple[Mapper, MeshMetrics, MeshMetrics]:
    """The demo room scan (FRAMES poses, W x H, noise-free renders) mapped from color only
    and, as the ceiling, from the exact depth with TSDF fusion; both scored against the
    surface the camera saw (F-score at 5 cm)."""
    scene = make_demo_scene()
    camera = default_camera(W, H)
    trajectory = room_scan_trajectory(scene, FRAMES)
    renders = [render(scene, camera, T) for T in trajectory.poses]
    truth = visible_surface_points(scene, trajectory, camera, stride=2, max_range_m=5.0)
    stereo = Mapper(stereo_config())
    depth = Mapper(MapperConfig())
    for i, (T, r) in enumerate(zip(trajectory.poses, renders)):
        stereo.integrate_color(r.color, camera, T, i * 100_000_000)
        depth.integrate(Frame(depth=r.depth, camera=camera, T_world_cam=T, color=r.color,
                              stamp_ns=i * 100_000_000))
    stereo.finish_color()
    return (stereo, mesh_metrics(stereo.mesh(), truth, (0.02, 0.05)),
            mesh_metrics(depth.mesh(), truth, (0.02, 0.05)))


def test_stereo_map_of_the_demo_room_is_accurate_and_mostly_complete(demo_maps) -> None:
    mapper, stereo, depth = demo_maps
    s = mapper.stereo
    # the scan moves more than 0.1 m per frame: every frame is a keyframe; all but the
    # first ones (no source views yet) get a depth map
    assert s.keyframes == FRAMES
    assert s.depth_frames == mapper.frames_integrated >= FRAMES - 3
    # measured (160x120, 30 frames): stereo F@5cm 0.76 (accuracy 3.3 cm, completeness
    # 6.8 cm); depth TSDF fusion of the same poses F@5cm 0.97
    assert stereo.fscore[0.05] >= 0.65, stereo
    assert stereo.accuracy_m <= 0.05 and stereo.precision[0.05] >= 0.75, stereo
    assert depth.fscore[0.05] >= 0.95 and depth.fscore[0.05] > stereo.fscore[0.05]
    assert mapper.has_color and mapper.occupancy_grid().data.size > 0
