"""Fixtures of the ROS tests: environment, synthetic frames, and mapper processes.

Modules that need rclpy start with ``pytest.importorskip("rclpy", reason=ROS_SKIP_REASON,
exc_type=ImportError)``, so without (working) ROS wheels they are skipped with that reason;
nothing here imports rclpy at import time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from recon_ros.core.frame import Frame, PinholeCamera
from recon_ros.io.synthetic import (
    Scene,
    Trajectory,
    default_camera,
    iter_frames,
    make_demo_scene,
    room_scan_trajectory,
)

ROS_SKIP_REASON = ("rclpy cannot be imported: the ROS 2 tests need the ROS wheels of the venv "
                   "(run `make venv`)")

# Discovery on loopback only, logs out of the home directory, ament index in this venv (the
# Makefile exports the same; this covers a bare `pytest test/ros`).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("ROS_LOG_DIR", str(Path(__file__).resolve().parents[2] / "build/ros_log"))

#: Settings every test mapper runs with on top of the launch file's (faster outputs, small
#: queue timeouts so the tests do not wait long).
# Test settings. The test publishers are reliable, and exact counts are asserted, so the mapper
# subscribes reliably too: with the default best-effort (sensor_data) QoS, Fast DDS on a loaded
# loopback occasionally loses an image, which made count assertions flaky (seen in CI runs).
FAST = {"status_rate_hz": "20.0", "mesh_rate_hz": "5.0", "occupancy_rate_hz": "5.0",
        "tick_rate_hz": "50.0", "input_qos": "reliable"}


@dataclass
class SynthSequence:
    """A small synthetic RGB-D sequence (160 x 120, one loop around the demo room)."""

    scene: Scene
    camera: PinholeCamera
    trajectory: Trajectory
    frames: list[Frame]

    def tf(self, i: int, stamp: int) -> list[Any]:
        """The dynamic TF of frame ``i`` restamped to ``stamp``."""
        return [(p, c, stamp, t, q) for p, c, _, t, q in self.trajectory.tf_dynamic(i % len(self))]

    def tf_static(self, stamp: int) -> list[Any]:
        return [(p, c, stamp, t, q) for p, c, _, t, q in self.trajectory.tf_static()]

    def __len__(self) -> int:
        return len(self.frames)


@pytest.fixture(scope="session")
def sequence() -> SynthSequence:
    scene = make_demo_scene()
    camera = default_camera(160, 120)
    trajectory = room_scan_trajectory(scene, 12)
    return SynthSequence(scene, camera, trajectory, list(iter_frames(scene, camera, trajectory)))


@pytest.fixture(scope="module")
def ros_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ros_log")


def surface_distance(scene: Scene, points: np.ndarray) -> np.ndarray:
    """|signed distance| of points to the scene's true surface, metres."""
    return np.abs(scene.sdf_np(np.asarray(points, dtype=np.float64)))


@pytest.fixture(scope="module")
def mapper_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Any]:
    """A mapper process started as mapping.launch.py starts it, plus a connected harness.

    Parametrise indirectly with a dict of extra parameters in ``-p`` syntax (merged over
    :data:`FAST`); the key ``"use_sim_time"`` is passed as the launch argument. Map parameters
    (``section.field``) go into the launch file's ``overlay_file``, the others are ``-p``
    arguments: rcl drops a ``-p`` override of a nested name when the params file setting it
    is given twice (as with the launch file's default overlay, the params file itself).
    """
    from .helpers import VENV_BIN, Harness, Process, child_env, next_domain_id
    from .launch_spec import mapper_command, write_overlay

    extra = dict(FAST)
    extra.update(getattr(request, "param", {}) or {})
    use_sim_time = extra.pop("use_sim_time", "false") == "true"
    core = {name: yaml.safe_load(extra.pop(name)) for name in [n for n in extra if "." in n]}
    workdir = tmp_path_factory.mktemp("mapper")
    overlay = write_overlay(workdir / "overlay.yaml", core) if core else None
    domain = next_domain_id()
    cmd = mapper_command(VENV_BIN, overlay=overlay, use_sim_time=use_sim_time, extra=extra)
    proc = Process(cmd, child_env(domain, workdir / "ros_log"), workdir / "mapper.log",
                   cwd=workdir)
    harness = Harness(domain)
    run = MapperRun(proc, harness, workdir, domain)
    try:
        try:
            harness.wait_status(lambda s: True, 60.0, "the mapper's first status")
        except TimeoutError as err:
            raise TimeoutError(f"{err}\nmapper log:\n{proc.log()[-5000:]}") from err
        yield run
    finally:
        harness.close()
        if proc.alive():
            proc.stop()


@dataclass
class MapperRun:
    proc: Any
    harness: Any
    workdir: Path
    domain_id: int
