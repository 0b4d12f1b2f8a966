"""``recon-ros replay-many``: three small bags on Ray (2 CPUs) give the maps of sequential
``replay``; a corrupt bag fails alone with its reason (exit code 2); no Ray, a clear error.

One local Ray instance serves the module (the CLI joins it with ``--ray-address``); the
corrupt-bag test starts the CLI's own embedded instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from recon_ros.core.config import MapperConfig
from recon_ros.core.mapper import Mapper
from recon_ros.io.map_files import read_ply
from recon_ros.io.synthetic import default_camera, make_random_scene, room_scan_trajectory
from recon_ros.io.synthetic_bag import write_scene_bag
from recon_ros.offline import replay_bag

from .test_cli import run

ray = pytest.importorskip("ray")

FRAMES = 12
ARGS = ("--voxel-size-m", "0.08", "--quality-every", "0", "--render-views", "0")


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three 12-frame 160x120 bags of different rooms, each in a folder named ``bag``."""
    root = tmp_path_factory.mktemp("fleet")
    paths = []
    for seed in range(3):
        scene = make_random_scene(seed)
        paths.append(write_scene_bag(root / f"scene{seed}" / "bag", scene,
                                     default_camera(160, 120),
                                     room_scan_trajectory(scene, FRAMES)).path)
    return paths


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray instance limited to 2 CPUs for the module."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning",
             _temp_dir=tempfile.mkdtemp(prefix="recon-ray-test-"))
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_replay_many_on_ray_equals_sequential_replay(bags, ray_address, tmp_path):
    out = tmp_path / "fleet"
    res = run("replay-many", *map(str, bags), "--out", str(out), "--ray-address", ray_address,
              "--workers", "2", *ARGS)
    assert "replay-many summary" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 3 and summary["failed"] == 0 and summary["workers"] == 2
    names = [b["name"] for b in summary["bags"]]
    assert names == ["scene0-bag", "scene1-bag", "scene2-bag"]  # shared names qualified
    cfg = MapperConfig.from_dict({"volume": {"voxel_size_m": 0.08}})
    for bag, entry in zip(bags, summary["bags"]):
        assert entry["frames"] == FRAMES and entry["drops"] == 0 and entry["peak_rss_mb"] > 0
        alone = replay_bag(bag, tmp_path / f"alone-{entry['name']}", cfg, quality_every=0,
                           render_views=0)
        a = Mapper.load(alone.outputs["checkpoint"]).volume
        b = Mapper.load(out / entry["name"] / "map.pt").volume
        assert torch.equal(a.index.slot_keys, b.index.slot_keys)
        n = a.num_blocks
        for x, y in ((a.tsdf, b.tsdf), (a.weight, b.weight), (a.color, b.color)):
            torch.testing.assert_close(x[:n], y[:n], atol=1e-5, rtol=0)
        mesh = read_ply(out / entry["name"] / "mesh.ply")
        assert mesh.num_vertices == read_ply(alone.outputs["mesh"]).num_vertices


def test_a_corrupt_bag_fails_alone_with_its_reason(bags, tmp_path):
    corrupt = tmp_path / "corrupt.mcap"
    corrupt.write_bytes(b"\x89MCAP0\r\n" + os.urandom(512))  # an MCAP that stops short
    out = tmp_path / "fleet"
    res = run("replay-many", str(bags[0]), str(corrupt), str(bags[1]), str(tmp_path / "none"),
              "--out", str(out), "--workers", "2", *ARGS, check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "2 of 4 bags failed: corrupt, none" in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    status = {b["name"]: (b["ok"], b["reason"]) for b in summary["bags"]}
    assert status["scene0-bag"][0] and status["scene1-bag"][0]
    assert not status["corrupt"][0] and "corrupt.mcap" in status["corrupt"][1]
    assert status["none"] == (False, f"no such bag: {tmp_path / 'none'}")
    assert (out / "scene0-bag" / "map.pt").is_file()
    assert (out / "scene1-bag" / "mesh.ply").is_file()
    assert "failed" in res.stdout and "corrupt.mcap" in res.stdout  # the table's row


def test_without_ray_the_error_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from recon_ros.cli import main; "
            f"sys.argv = ['recon-ros', 'replay-many', 'x', '--out', {str(tmp_path)!r}]; main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "needs Ray, which is not installed: pip install ray" in res.stderr


def test_output_names_are_unique():
    from recon_ros.fleet import plan_jobs

    jobs = plan_jobs(["a/bag", "b/bag", "c/x.mcap", "c/x.mcap", "y.db3"], "out")
    assert [j.name for j in jobs] == ["a-bag", "b-bag", "c-x", "c-x-2", "y"]
    assert jobs[0].out_dir == Path("out") / "a-bag"
