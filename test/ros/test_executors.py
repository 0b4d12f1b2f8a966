"""The executor the node entry points spin (recon_ros.ros.executors): the events executor where
rclpy has it, the single-threaded fallback where it does not (Humble, Jazzy before rclpy
7.1.4; simulated here by making ``rclpy.experimental`` unimportable), RECON_ROS_EXECUTOR
honoured and logged by both console scripts, and a mapper that maps on the fallback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROS_SKIP_REASON, SynthSequence

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

from recon_ros.core.errors import ConfigError
from recon_ros.ros.executors import ENV_VAR, choose_executor, events_executor_class

from .helpers import VENV_BIN, Process, child_env, next_domain_id
from .launch_spec import LAUNCH_DIR, node_command, node_specs

FALLBACK_LOG = f"executor: SingleThreadedExecutor ({ENV_VAR}=single_threaded)"


@pytest.fixture(scope="module", autouse=True)
def _fallback_executor() -> Iterator[None]:
    """The module's mapper (``mapper_run``) spins the fallback executor."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_VAR, "single_threaded")
        yield


@pytest.fixture
def without_events_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    """``from rclpy.experimental import ...`` fails, as on Humble."""
    monkeypatch.setitem(sys.modules, "rclpy.experimental", None)


def test_auto_picks_the_events_executor_where_rclpy_has_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    events = events_executor_class()
    assert events is not None and events.__name__ == "EventsExecutor"  # Kilted wheels here
    monkeypatch.delenv(ENV_VAR)
    assert choose_executor() == (events, f"{ENV_VAR} unset: auto")
    monkeypatch.setenv(ENV_VAR, "events")
    assert choose_executor()[0] is events


def test_auto_falls_back_without_the_events_executor(
        monkeypatch: pytest.MonkeyPatch, without_events_executor: None) -> None:
    assert events_executor_class() is None
    for value in ("", "auto"):
        monkeypatch.setenv(ENV_VAR, value)
        executor, why = choose_executor()
        assert executor is SingleThreadedExecutor
        assert "EventsExecutor is not available" in why and "Humble" in why, why
    monkeypatch.setenv(ENV_VAR, "events")
    with pytest.raises(ConfigError, match="events is invalid here"):
        choose_executor()


@pytest.mark.parametrize(("value", "expected"), [("single_threaded", SingleThreadedExecutor),
                                                 ("multi_threaded", MultiThreadedExecutor)])
def test_explicit_choices(monkeypatch: pytest.MonkeyPatch, value: str, expected: type) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    assert choose_executor() == (expected, f"{ENV_VAR}={value}")


def test_unknown_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "events_executor")
    with pytest.raises(ConfigError, match=r"'events_executor' is invalid: must be one of "
                                          r"\['auto', 'events', 'single_threaded'"):
        choose_executor()


def test_node_modules_import_and_spin_without_the_events_executor(tmp_path: Path) -> None:
    """A fresh interpreter where ``rclpy.experimental`` cannot be imported (an rclpy without
    the events executor) imports every node module and spins a node on the fallback."""
    script = textwrap.dedent("""
        import sys
        sys.modules["rclpy.experimental"] = None
        import rclpy
        from rclpy.node import Node
        import recon_ros.ros.bag_player, recon_ros.ros.mapper_node, recon_ros.ros.sim_camera_node
        from recon_ros.ros.executors import make_executor
        rclpy.init()
        node = Node("executor_probe")
        executor = make_executor(node)
        executor.spin_once(timeout_sec=0.01)
        print("spun", type(executor).__name__)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
    """)
    env = child_env(next_domain_id(), tmp_path / "log")
    env.pop(ENV_VAR, None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "spun SingleThreadedExecutor"
    assert (f"executor: SingleThreadedExecutor ({ENV_VAR} unset: auto; "
            "rclpy.experimental.EventsExecutor is not available") in out.stderr, out.stderr


def test_mapper_maps_on_the_fallback_executor(mapper_run, sequence: SynthSequence) -> None:
    h = mapper_run.harness
    assert FALLBACK_LOG in mapper_run.proc.log()
    h.wait_subscribed()
    t0 = 1_700_000_000_000_000_000
    h.publish_static(sequence.tf_static(t0))
    frames = 6
    for k in range(frames):
        stamp = t0 + k * 100_000_000
        h.publish_frame(sequence.frames[k], stamp, sequence.tf(k, stamp))
        h.wait_integrated(k + 1)  # one at a time: independent of the machine's speed
    cam = h.camera_status()
    assert cam["integrated"] == frames and cam["drops"] == {}, cam
    assert h.wait_mesh_settled(), "no mesh published"
    assert h.get_parameters(["input_qos"]) == {"input_qos": "reliable"}  # parameter services


def test_sim_camera_spins_the_executor_the_variable_names(mapper_run) -> None:
    (spec,) = [s for s in node_specs(LAUNCH_DIR / "demo.launch.py")
               if s.executable == "recon_sim_camera"]
    cmd = node_command(VENV_BIN, spec, {"rate_hz": "10.0", "width": "160", "height": "120",
                                        "frames_per_loop": "12"})
    env = child_env(mapper_run.domain_id, mapper_run.workdir / "cam_log")
    h = mapper_run.harness
    done = h.status()["frames_integrated"]

    env[ENV_VAR] = "multi_threaded"
    camera = Process(cmd, env, mapper_run.workdir / "sim_camera.log")
    try:
        h.wait_integrated(done + 5, 120)
    finally:
        rc = camera.stop()
    assert rc == 0, camera.log()[-2000:]
    assert f"executor: MultiThreadedExecutor ({ENV_VAR}=multi_threaded)" in camera.log()

    env[ENV_VAR] = "threaded"
    refused = Process(cmd, env, mapper_run.workdir / "sim_camera_refused.log")
    assert refused.wait(120) == 2, refused.log()[-2000:]
    assert f"cannot start: {ENV_VAR}='threaded' is invalid" in refused.log()
