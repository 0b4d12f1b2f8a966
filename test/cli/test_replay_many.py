"""``recon-ros replay-many``: three small bags on Ray (2 CPUs) give the maps of sequential
``replay``; a corrupt bag fails alone with its reason (exit code 2); no Ray, a clear error;
a bag cut into time windows (``--window-s``) merges into the map of the whole bag.

One local Ray instance serves the module (the CLI joins it with ``--ray-address``); the
corrupt-bag test starts the CLI's own embedded instance."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from recon_ros.core.config import MapperConfig
from recon_ros.core.mapper import Mapper
from recon_ros.fleet import (BagJob, FleetError, ReplayOptions, merge_window_maps, plan_jobs,
                             replay_many, replay_one)
from recon_ros.io.map_files import read_ply
from recon_ros.io.rosbag_source import StampWindow, bag_time_span
from recon_ros.io.synthetic import default_camera, make_random_scene, room_scan_trajectory
from recon_ros.io.synthetic_bag import write_scene_bag
from recon_ros.offline import replay_bag

from ..core.test_merge import sorted_blocks
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
    jobs = plan_jobs(["a/bag", "b/bag", "c/x.mcap", "c/x.mcap", "y.db3"], "out")
    assert [j.name for j in jobs] == ["a-bag", "b-bag", "c-x", "c-x-2", "y"]
    assert jobs[0].out_dir == Path("out") / "a-bag"


# ------------------------------------------------------------------------------ time windows
#: Plain weighted averaging (as in test/core/test_merge.py), no free-space clearing: merging
#: the windows' maps then equals mapping the whole bag up to float rounding.
PLAIN = {"volume": {"voxel_size_m": 0.08},
         "integration": {"max_weight": 1e6, "clearing_weight_factor": 1.0,
                         "behind_surface_drop": False, "clear_free_space": False}}
#: 12 frames at 10 Hz span 1.1 s of log time: 0.5 s windows hold 5, 5 and 2 frames.
WINDOW_S = 0.5


def test_plan_jobs_cuts_bags_into_windows(bags, tmp_path):
    """Windows of WINDOW_S from the bag's start, the first without start and the last without
    end; a bag no longer than a window, or that cannot be opened, is one whole-bag job."""
    corrupt = tmp_path / "corrupt.mcap"
    corrupt.write_bytes(b"\x89MCAP0\r\n" + os.urandom(512))
    jobs = plan_jobs([bags[0], corrupt, tmp_path / "none"], tmp_path / "out", WINDOW_S)
    assert [j.name for j in jobs] == ["bag-w000", "bag-w001", "bag-w002", "corrupt", "none"]
    assert [j.bag_name for j in jobs] == ["bag", "bag", "bag", "corrupt", "none"]
    assert jobs[1].out_dir == tmp_path / "out" / "bag-w001" and jobs[1].bag == bags[0]
    start, end = bag_time_span(bags[0])
    assert end - start == 1_100_000_001  # (end: just after the last message)
    edges = [start + 500_000_000, start + 1_000_000_000]
    assert [j.window for j in jobs[:3]] == [StampWindow(None, edges[0]), StampWindow(*edges),
                                            StampWindow(edges[1], None)]
    assert jobs[3].window is None and jobs[4].window is None
    (whole,) = plan_jobs([bags[0]], tmp_path / "out", 1.2)
    assert (whole.name, whole.window) == ("bag", None)
    assert [j.window for j in plan_jobs([bags[0]], tmp_path / "out")] == [None]
    for bad in (-1.0, float("nan"), float("inf"), 1e-12):
        with pytest.raises(FleetError, match="must be a finite number of seconds >= 1e-9"):
            plan_jobs([bags[0]], tmp_path / "out", bad)
    with pytest.raises(FleetError, match=r"names given to more than one job: \['bag-w001'\]"):
        plan_jobs([bags[0], tmp_path / "bag-w001"], tmp_path / "out", WINDOW_S)
    # 1.1 s in windows of 1 ms: 1,101 tasks, over the cap
    with pytest.raises(FleetError, match=r"into 1101 tasks \(at most 1000\); choose a longer"):
        plan_jobs([bags[0]], tmp_path / "out", 0.001)


def test_window_maps_merge_without_failed_or_empty_windows(bags, tmp_path):
    """Without Ray: the windows' replays, one marked failed, merge into the bag's directory
    from the others; a window without images is mapped (empty, ok) and not merged; with no
    window mapped there is no merged map; latent fusion refuses to merge windows."""
    cfg = MapperConfig.from_dict(PLAIN)
    options = ReplayOptions(quality_every=0, render_views=0)
    out = tmp_path / "out"
    jobs = plan_jobs([bags[1]], out, WINDOW_S)
    jobs.append(BagJob(bags[1], "bag-w003", out / "bag-w003", "bag", StampWindow(end_ns=1)))
    outcomes = [replay_one(job, cfg, options) for job in jobs]
    assert [(o.ok, o.frames, o.drops) for o in outcomes] == [(True, 5, 0), (True, 5, 0),
                                                             (True, 2, 0), (True, 0, 0)]
    assert outcomes[3].window_ns == (None, 1) and outcomes[1].window_ns == (
        jobs[1].window.start_ns, jobs[1].window.end_ns)
    outcomes[1] = dataclasses.replace(outcomes[1], ok=False, reason="task died: killed")
    merge = merge_window_maps("bag", list(zip(jobs, outcomes)), out / "bag")
    assert merge.ok and merge.reason == "" and merge.frames == 7
    assert (merge.merged, merge.empty, merge.failed) == (["bag-w000", "bag-w002"],
                                                         ["bag-w003"], ["bag-w001"])
    merged = Mapper.load(out / "bag" / "map.pt")
    assert merged.frames_integrated == 7 and (out / "bag" / "mesh.ply").is_file()
    first, last = (Mapper.load(out / n / "map.pt") for n in ("bag-w000", "bag-w002"))
    assert merged.volume.num_blocks >= max(first.volume.num_blocks, last.volume.num_blocks)
    failed = [dataclasses.replace(o, ok=False) for o in outcomes]
    none = merge_window_maps("bag", list(zip(jobs, failed)), tmp_path / "none")
    assert not none.ok and none.reason == "no window could be mapped"
    assert not (tmp_path / "none").exists()
    latent = MapperConfig.from_dict({"fusion": {"method": "latent"}})
    with pytest.raises(FleetError, match="latent-fusion maps .* cannot be merged"):
        replay_many([bags[1]], out, latent, window_s=WINDOW_S, merge_windows=True)


def test_bad_window_options_are_one_line_errors(bags, tmp_path):
    for args, message in ((["--window-s", "-1"], "must be a finite number of seconds"),
                          (["--merge-windows"], "--merge-windows needs --window-s > 0")):
        res = run("replay-many", str(bags[0]), "--out", str(tmp_path / "o"), *args,
                  check=False)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_windows_of_a_bag_on_ray_merge_into_the_whole_bag(bags, ray_address, tmp_path):
    """``--window-s``: one Ray task per window, each its own map, then merged into OUT/bag/:
    the same blocks, TSDF and weights (float rounding) and frame count as one replay of the
    whole bag; summary.json records the windows and the merge."""
    config = tmp_path / "plain.yaml"
    MapperConfig.from_dict(PLAIN).to_yaml(config)
    out = tmp_path / "fleet"
    res = run("replay-many", str(bags[2]), "--out", str(out), "--ray-address", ray_address,
              "--workers", "2", "--window-s", str(WINDOW_S), "--config", str(config),
              "--quality-every", "0", "--render-views", "0")
    assert "merged windows" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["window_s"] == WINDOW_S and summary["failed"] == 0
    windows = ["bag-w000", "bag-w001", "bag-w002"]
    assert [b["name"] for b in summary["bags"]] == windows
    assert [b["frames"] for b in summary["bags"]] == [5, 5, 2]
    assert [b["window_ns"][0] is None for b in summary["bags"]] == [True, False, False]
    (merge,) = summary["merged"]
    assert merge["ok"] and merge["name"] == "bag" and merge["merged"] == windows
    assert merge["failed"] == merge["empty"] == [] and merge["frames"] == FRAMES
    assert merge["out_dir"] == str(out / "bag")
    for name in windows:
        assert (out / name / "map.pt").is_file() and (out / name / "mesh.ply").is_file()
    alone = replay_bag(bags[2], tmp_path / "alone", MapperConfig.from_dict(PLAIN),
                       quality_every=0, render_views=0)
    whole, merged = Mapper.load(alone.outputs["checkpoint"]), Mapper.load(out / "bag" / "map.pt")
    assert merged.frames_integrated == whole.frames_integrated == FRAMES
    keys_w, tsdf_w, weight_w = sorted_blocks(whole)
    keys_m, tsdf_m, weight_m = sorted_blocks(merged)
    np.testing.assert_array_equal(keys_w, keys_m)
    torch.testing.assert_close(weight_m, weight_w, atol=1e-4, rtol=0)
    seen = weight_w > 0
    torch.testing.assert_close(tsdf_m[seen], tsdf_w[seen], atol=1e-5, rtol=0)
