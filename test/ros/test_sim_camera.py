"""The no-hardware demo pipeline: recon_sim_camera (compressed color) into recon_mapper, both
started as demo.launch.py starts them."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import ROS_SKIP_REASON, surface_distance

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from recon_ros.io.synthetic import make_demo_scene

from .helpers import (
    VENV_BIN,
    Process,
    child_env,
    mesh_state,
    mesh_vertices,
    parse_marker_array,
)
from .launch_spec import LAUNCH_DIR, node_command, node_specs

FRAMES = 12
pytestmark = pytest.mark.parametrize("mapper_run", [{"color_transport": "compressed"}],
                                     indirect=True, ids=["mapper"])


def test_sim_camera_feeds_the_mapper(mapper_run) -> None:
    (spec,) = [s for s in node_specs(LAUNCH_DIR / "demo.launch.py")
               if s.executable == "recon_sim_camera"]
    cmd = node_command(VENV_BIN, spec, {
        "rate_hz": "10.0", "width": "160", "height": "120", "frames_per_loop": "12",
        "color_transport": "compressed"})
    h = mapper_run.harness
    camera = Process(cmd, child_env(mapper_run.domain_id, mapper_run.workdir / "cam_log"),
                     mapper_run.workdir / "sim_camera.log")
    try:
        # (frames published before discovery completes never reach the mapper)
        h.wait_integrated(FRAMES, 120)
    finally:
        rc = camera.stop()
    assert rc == 0, camera.log()[-2000:]
    status = h.wait_status(lambda s: s["cameras"]["camera"]["queue"]["depth"] == 0 and
                           s["frames_integrated"] == s["cameras"]["camera"]["received"]["depth"],
                           60, "every received frame integrated")
    cam = status["cameras"]["camera"]
    assert cam["drops"] == {} and cam["color_drops"] == {}, cam
    assert cam["received"]["color"] >= cam["received"]["depth"] - 1
    messages = h.wait_mesh_settled()
    # (an update may end with DELETE markers for blocks whose surface vanished: check triangles)
    meshed = [m for msg in messages for m in parse_marker_array(msg) if len(m.corners)]
    assert meshed and all(m.colors is not None for m in meshed), "mesh without colors"
    err = surface_distance(make_demo_scene(), mesh_vertices(mesh_state(messages)))
    assert np.median(err) < 0.015 and np.percentile(err, 99) < 0.06
