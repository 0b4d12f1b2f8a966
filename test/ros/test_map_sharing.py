"""Map sharing between two robots over DDS: two mapper processes in namespaces ``robot1`` and
``robot2``, each publishing ``map_deltas`` and listening to the other's (as docs/ros_node.md
shows), each fed half of one scan of the synthetic room. Each robot's published and saved map
holds the blocks only the other saw, its own map never does (no echo), and a peer's blocks
count once however often they arrive. Bad deltas are counted and logged, never applied."""

from __future__ import annotations

import array
import json
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from .conftest import FAST, ROS_SKIP_REASON, SynthSequence

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from recon_ros_interfaces.msg import MapDelta  # noqa: E402
from recon_ros_interfaces.srv import SaveMap  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from recon_ros.core.config import MapperConfig  # noqa: E402
from recon_ros.core.mapper import Mapper  # noqa: E402
from recon_ros.offline import CHECKPOINT_FILE, CONFIG_FILE  # noqa: E402

from .helpers import (  # noqa: E402
    RELIABLE,
    VENV_BIN,
    Harness,
    Process,
    child_env,
    next_domain_id,
    wait_for,
)
from .launch_spec import mapper_command, write_overlay  # noqa: E402

ROBOTS = ("robot1", "robot2")
T0 = 1_700_000_000_000_000_000
RATE_HZ = 5.0
#: Generous: two mappers and the test share two loaded cores.
TIMEOUT_S = 120.0


def _node(robot: str) -> str:
    return f"/{robot}/recon_mapper"


@pytest.fixture(scope="module")
def robots(tmp_path_factory: pytest.TempPathFactory):
    """Both mapper processes (namespaces robot1, robot2) and a harness whose ``mapper`` is
    robot2; ``statuses[robot]`` holds each node's latest status."""
    workdir = tmp_path_factory.mktemp("map_sharing")
    domain = next_domain_id()
    procs: dict[str, Process] = {}
    for robot in ROBOTS:
        other = ROBOTS[1 - ROBOTS.index(robot)]
        overlay = write_overlay(workdir / f"{robot}.yaml", {
            "map_sharing.publish_deltas": True, "map_sharing.delta_period_s": 0.5,
            "map_sharing.peer_topics": [f"/{other}/map_deltas"],
            # small messages: a snapshot takes several (exercises the split)
            "map_sharing.max_message_bytes": 200_000})
        cmd = mapper_command(VENV_BIN, overlay=overlay, camera="camera",
                             extra={**FAST, "map_dir": f"{robot}_maps"})
        cmd += ["-r", f"__ns:=/{robot}"]
        procs[robot] = Process(cmd, child_env(domain, workdir / "ros_log"),
                               workdir / f"{robot}.log", cwd=workdir)
    harness = Harness(domain, mapper=_node("robot2"))
    statuses: dict[str, dict[str, Any]] = {}

    def record(robot: str):
        def on_status(msg: String) -> None:
            statuses[robot] = json.loads(msg.data)
        return on_status

    for robot in ROBOTS:
        harness.node.create_subscription(String, f"{_node(robot)}/status", record(robot),
                                         RELIABLE)
    try:
        logs = lambda: "\n".join(f"{r} log:\n{p.log()[-4000:]}" for r, p in procs.items())  # noqa: E731
        wait_for(lambda: all(r in statuses for r in ROBOTS), TIMEOUT_S,
                 "both mappers' first status", logs)
        yield harness, statuses, procs, workdir
    finally:
        harness.close()
        for proc in procs.values():
            if proc.alive():
                proc.stop()


def _stream(harness: Harness, robot: str, seq: SynthSequence, indices: range, t0: int) -> None:
    """Frames ``indices`` of ``seq`` (32FC1 depth: exactly the offline depth) to robot's
    camera at RATE_HZ, TF on the shared /tf."""
    camera = f"{robot}/camera"
    harness.wait_subscribed(TIMEOUT_S, camera=camera)
    period_ns = int(1e9 / RATE_HZ)
    for n, i in enumerate(indices):
        stamp = t0 + n * period_ns
        harness.publish_frame(seq.frames[i], stamp, seq.tf(i, stamp), encoding="32FC1",
                              camera=camera)
        time.sleep(period_ns / 1e9)


def _observed_keys(mapper: Mapper) -> set[int]:
    vol = mapper.volume
    n = vol.num_blocks
    seen = (vol.weight[:n] > 0).any(dim=1)
    return set(vol.index.slot_keys[seen].tolist())


def test_each_robot_maps_what_only_the_other_saw(robots, sequence: SynthSequence) -> None:
    harness, statuses, procs, workdir = robots
    half = len(sequence) // 2
    parts = {"robot1": range(0, half), "robot2": range(half, len(sequence))}
    harness.publish_static(sequence.tf_static(T0))
    for k, robot in enumerate(ROBOTS):
        _stream(harness, robot, sequence, parts[robot], T0 + k * 10**10)

    def dump() -> str:
        return json.dumps({r: statuses.get(r) for r in ROBOTS}, indent=1)[:6000] + "\n" + \
            "\n".join(f"{r} log:\n{p.log()[-3000:]}" for r, p in procs.items())

    wait_for(lambda: all(statuses[r]["frames_integrated"] == len(parts[r]) for r in ROBOTS),
             TIMEOUT_S, "every frame integrated", dump)

    # each robot sent deltas covering all its frames, and the other received all of them
    def caught_up() -> bool:
        for robot in ROBOTS:
            other = ROBOTS[1 - ROBOTS.index(robot)]
            sent = statuses[other]["map_sharing"]
            received = statuses[robot]["map_sharing"]["received"].get(_node(other), {})
            if sent["frames_sent"] != len(parts[other]) or \
                    received.get("messages") != sent["sent"].get("messages"):
                return False
        return True

    wait_for(caught_up, TIMEOUT_S, "each robot to hold the other's blocks", dump)
    for robot in ROBOTS:
        other = ROBOTS[1 - ROBOTS.index(robot)]
        sharing = statuses[robot]["map_sharing"]
        assert sharing["source_id"] == _node(robot)
        assert set(sharing["received"]) == {_node(other)}, sharing  # nothing echoed back
        assert sharing["rejected"] == {}, sharing
        assert sharing["sent"]["snapshots"] >= 1 and sharing["sent"]["messages"] >= 2, sharing
        # the own map holds only the own measurements: it has fewer blocks than the shared
        assert statuses[robot]["map"]["blocks"] < sharing["shared_blocks"], sharing

    # robot2's saved map holds the blocks only robot1 observed
    response = harness.call("save_map_as", SaveMap, SaveMap.Request(path="robot2_shared"),
                            timeout=TIMEOUT_S)
    assert response.success, response.message
    directory = Path(response.path)
    saved = Mapper.load(directory / CHECKPOINT_FILE)
    config = MapperConfig.from_yaml(directory / CONFIG_FILE)
    offline = {}
    for robot in ROBOTS:
        offline[robot] = Mapper(config)
        for i in parts[robot]:
            offline[robot].integrate(sequence.frames[i])
    only_robot1 = _observed_keys(offline["robot1"]) - set(
        offline["robot2"].volume.index.slot_keys.tolist())
    assert len(only_robot1) > 20
    held = _observed_keys(saved)
    assert len(only_robot1 & held) >= 0.95 * len(only_robot1)
    # counted once: the blocks only robot1 saw carry robot1's weights, not a multiple
    keys = torch.tensor(sorted(only_robot1 & held), dtype=torch.int64)
    weights = [m.volume.weight[m.volume.index.lookup(keys)].double().numpy()
               for m in (saved, offline["robot1"])]
    assert weights[0].sum() == pytest.approx(weights[1].sum(), rel=0.05)
    assert np.allclose(weights[0], weights[1], atol=0.5)


def test_bad_deltas_are_rejected_and_counted(robots) -> None:
    """Deltas of another map frame or geometry, undecodable ones and ones carrying the
    receiver's own source id are not applied: counted by reason, the node keeps running."""
    harness, statuses, procs, _ = robots
    wait_for(lambda: "robot2" in statuses, TIMEOUT_S, "robot2's status")
    blocks = statuses["robot2"]["map_sharing"]["shared_blocks"]
    publisher = harness.node.create_publisher(MapDelta, "/robot1/map_deltas", RELIABLE)
    wait_for(lambda: publisher.get_subscription_count() > 0, TIMEOUT_S, "robot2 subscribed")

    def delta(**fields: Any) -> MapDelta:
        msg = MapDelta(source_id="/intruder", voxel_size_m=0.05, block_size=8,
                       truncation_m=0.2, encoding="zlib;shuffle;float32;tsdf,weight",
                       num_blocks=1)
        msg.header.frame_id = "map"
        msg.data = array.array("B", zlib.compress(b"\0" * 100))
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg

    odom = delta()
    odom.header.frame_id = "odom"
    for msg in (odom, delta(voxel_size_m=0.1), delta(), delta(source_id=_node("robot2"))):
        publisher.publish(msg)
    expected = {"map frame": 1, "geometry": 1, "malformed": 1, "own source id": 1}
    wait_for(lambda: statuses["robot2"]["map_sharing"]["rejected"] == expected, TIMEOUT_S,
             f"rejections {expected}",
             lambda: json.dumps(statuses["robot2"]["map_sharing"]) + procs["robot2"].log()[-3000:])
    assert statuses["robot2"]["map_sharing"]["shared_blocks"] == blocks
    assert "/intruder" not in statuses["robot2"]["map_sharing"]["received"]
    assert all(p.alive() for p in procs.values())
    log = procs["robot2"].log()
    assert "another geometry (voxel_size_m 0.1 != 0.05)" in log
    assert "in frame 'odom'" in log
