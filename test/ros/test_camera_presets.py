"""The camera presets (config/*.yaml overlays for camera drivers and simulators): each parses,
sets only known parameters with their declared types, validates, documents the command line
it is tested with, and makes a real mapper subscribe the topics its driver publishes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from recon_ros.ros import parameters as P

from .conftest import ROS_SKIP_REASON
from .launch_spec import LAUNCH_DIR, REPO, mapper_command, module_constants
from .test_parameters import _flatten

#: config/*.yaml files that are not camera presets.
NOT_PRESETS = {"mapper.yaml", "nav2_costmap.yaml"}
PRESETS = sorted(p for p in (REPO / "config").glob("*.yaml") if p.name not in NOT_PRESETS)
#: What each preset's driver publishes, from the driver's documentation and source (not from
#: the preset): the camera namespace (the mapping launch file's ``camera`` argument) and the
#: depth, depth camera_info, color and color camera_info topics inside it.
DRIVER_TOPICS: dict[str, tuple[str, tuple[str, str, str, str]]] = {
    "realsense_d435.yaml": ("camera/camera", (
        "aligned_depth_to_color/image_raw", "aligned_depth_to_color/camera_info",
        "color/image_raw", "color/camera_info")),
    "zed2.yaml": ("zed/zed_node", (
        "depth/depth_registered", "depth/camera_info",
        "rgb/color/rect/image", "rgb/color/rect/camera_info")),
    "oak_d.yaml": ("oak", (
        "stereo/image_raw", "stereo/camera_info", "rgb/image_raw", "rgb/camera_info")),
    "orbbec_femto_astra.yaml": ("camera", (
        "depth/image_raw", "depth/camera_info", "color/image_raw", "color/camera_info")),
    "gazebo_rgbd_camera.yaml": ("rgbd_camera", (
        "depth_image", "camera_info", "image", "camera_info")),
    "isaac_sim_camera.yaml": ("camera", ("depth", "camera_info", "rgb", "camera_info")),
}
TOPIC_PARAMETERS = ("depth_image_topic", "depth_info_topic", "color_image_topic",
                    "color_info_topic")


def _overlay(path: Path) -> dict[str, Any]:
    """The flat ``name: value`` parameters a preset sets (it must hold nothing else)."""
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ["/**"] and list(doc["/**"]) == ["ros__parameters"], list(doc)
    return _flatten(doc["/**"]["ros__parameters"])


def test_every_preset_has_its_driver_topics() -> None:
    assert {p.name for p in PRESETS} == set(DRIVER_TOPICS)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_sets_known_parameters_that_validate(path: Path) -> None:
    overlay = _overlay(path)
    defaults = P.defaults()
    assert set(overlay) <= set(defaults), f"unknown: {set(overlay) - set(defaults)}"
    # rcl refuses a value whose type differs from the declared one (e.g. 4 for a double)
    wrong = {k: v for k, v in overlay.items() if type(v) is not type(defaults[k])}
    assert not wrong, f"type differs from the parameter's: {wrong}"
    P.validate({**defaults, **overlay})


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_names_the_driver_topics_and_its_command_line(path: Path) -> None:
    overlay = _overlay(path)
    namespace, topics = DRIVER_TOPICS[path.name]
    assert tuple(overlay[name] for name in TOPIC_PARAMETERS) == topics
    comment = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    launch = re.search(r"ros2 launch recon_ros mapping\.launch\.py camera:=(\S+)", comment)
    assert launch and launch.group(1) == namespace, "the comment's launch line"
    assert f"overlay_file:=$(ros2 pkg prefix recon_ros)/share/recon_ros/config/{path.name}" \
        in comment


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_mapper_subscribes_the_driver_topics(path: Path, tmp_path: Path) -> None:
    """The mapper started as mapping.launch.py starts it with the preset subscribes exactly
    the driver's topics (and TF), and every parameter of the preset reached it."""
    pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)
    from recon_ros.ros.intake import INTAKE_SUFFIX

    from .helpers import VENV_BIN, Harness, Process, child_env, next_domain_id, wait_for

    namespace, topics = DRIVER_TOPICS[path.name]
    domain = next_domain_id()
    proc = Process(mapper_command(VENV_BIN, overlay=path, camera=namespace),
                   child_env(domain, tmp_path / "log"), tmp_path / "mapper.log", cwd=tmp_path)
    harness = Harness(domain)
    try:
        name = module_constants(LAUNCH_DIR / "mapping.launch.py")["MAPPER_NAME"]
        expected = {f"/{namespace}/{t}" for t in topics} | {"/tf", "/tf_static"}
        intake = name + INTAKE_SUFFIX  # the node of the intake thread holds the inputs
        subscribed = wait_for(lambda: expected <= harness.graph(intake, "subscriber")
                              and harness.graph(intake, "subscriber"), 60,
                              "the driver's topics", lambda: proc.log()[-3000:])
        assert subscribed == expected
        overlay = _overlay(path)
        assert harness.get_parameters(sorted(overlay)) == overlay
    finally:
        harness.close()
        assert proc.stop() == 0
