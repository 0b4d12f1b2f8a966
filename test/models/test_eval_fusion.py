"""The unbiased fusion evaluation (``recon-ros eval-fusion-unbiased``): the speckle filter, the
free-space-observed voxel mask, the volume metrics and goal checks on hand-made cases with
known answers, the new noise kinds, and the command end to end on a tiny condition."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recon_ros.core.block_hash import pack_coords
from recon_ros.io.synthetic import default_camera
from recon_ros.io.synthetic.noise import NoiseConfig, add_flying_pixels, apply_noise, rect_labels
from recon_ros.models.evaluate_fusion import (CLASSICAL, Condition, FusionEvalConfig, Readout,
                                              _MethodRun, _score, _Sequence, free_space_mask,
                                              goal_checks, parse_compare, speckle_filter)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_speckle_filter_removes_small_blob_keeps_surfaces() -> None:
    depth = np.full((20, 24), 2.0, np.float32)
    depth[3:5, 3:5] = 3.0  # planted 4-pixel blob
    depth[10:18, 10:18] = 3.0  # a 64-pixel surface
    depth[0, 20] = 0.0  # invalid pixel stays invalid
    out = speckle_filter(depth, max_speckle_px=10, max_rel_diff=0.05)
    expected = depth.copy()
    expected[3:5, 3:5] = 0.0
    np.testing.assert_array_equal(out, expected)
    # a 2 % step still connects neighbours: nothing is a speckle
    ramp = np.full((6, 6), 2.0, np.float32)
    ramp[2:3, 2:3] = 2.04
    np.testing.assert_array_equal(speckle_filter(ramp, 4, 0.05), ramp)


def test_free_space_mask_excludes_space_behind_a_wall() -> None:
    camera = default_camera(32, 24)
    depth = np.full((24, 32), 2.0)  # a wall 2 m in front of the camera (solid for z > 2)
    centres = torch.tensor([[0.0, 0.0, 1.0],  # in front: observed
                            [0.0, 0.0, 2.1],  # behind, within truncation: observed
                            [0.0, 0.0, 2.5],  # behind the wall: excluded
                            [5.0, 0.0, 1.0],  # outside the image: excluded
                            [0.0, 0.0, -1.0]], dtype=torch.float64)  # behind the camera
    sdf = 2.0 - centres[:, 2]
    mask = free_space_mask(centres, sdf, [depth], [np.eye(4)], camera, 0.2, 5.0)
    assert mask.tolist() == [True, True, False, False, False]
    # the SDF condition: a voxel in front of the surface but deep inside a solid is excluded
    sdf[0] = -0.5
    assert free_space_mask(centres, sdf, [depth], [np.eye(4)], camera, 0.2, 5.0).tolist()[0] \
        is False
    # beyond max depth the surface is not fused, so nothing counts
    assert not free_space_mask(centres, 2.0 - centres[:, 2], [depth], [np.eye(4)], camera, 0.2,
                               1.5).any()


def test_readout_lookup() -> None:
    r = Readout(torch.tensor([3, 7, 9]), torch.tensor([0.1, -0.2, 0.3]), 0.5)
    assert r.lookup(torch.tensor([7, 8, 3, 10])).tolist() == pytest.approx([-0.2, 0.5, 0.1, 0.5])
    assert Readout(torch.zeros(0, dtype=torch.int64), torch.zeros(0), 0.5).lookup(
        torch.tensor([1])).tolist() == [0.5]


class _Wall:
    """A scene stand-in: solid for z > 2 m."""

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        return 2.0 - p[:, 2]


def _run(voxels: list[tuple[int, int, int]], tsdf: list[float]) -> _MethodRun:
    keys, order = torch.sort(pack_coords(torch.tensor(voxels, dtype=torch.int64)))
    return _MethodRun(Readout(keys, torch.tensor(tsdf)[order], 0.2), 0.01, 0.02,
                      {0.02: 0.5, 0.05: 0.9}, 0.1, 1.0)


def test_volume_metrics_known_answer() -> None:
    """Voxels 0.1 m, truncation 0.2 m, wall at z = 2: voxels at z = 1.0 and 1.9 are scored,
    z = 2.5 (behind the wall) is not; hand-computed MADs."""
    cfg = FusionEvalConfig(voxel_size_m=0.1, truncation_voxels=2.0, max_depth_m=5.0)
    cond = Condition("c", sigma=0.01, outliers=0.05, width=32, height=24, voxel_size_m=0.1)
    seq = _Sequence(7, _Wall(), default_camera(32, 24), [np.eye(4)],  # type: ignore[arg-type]
                    [np.full((24, 32), 2.0, np.float32)], np.zeros((0, 3)), None)  # type: ignore
    a, b, behind = (0, 0, 10), (0, 0, 19), (0, 0, 25)
    runs = {"latent": _run([a, b, behind], [0.2, 0.05, -0.2])}
    clean = {"latent": _run([b], [0.1])}  # a unobserved: reads +0.2
    ref = {"latent": _run([a, b], [0.2, 0.08])}
    r = _score(cfg, cond, seq, runs, clean, ref)
    m = r.methods["latent"]
    assert r.voxels == 2
    # truth: a -> clamp(1.0) = 0.2, b -> 0.1
    assert m.mad_gt_m == pytest.approx((0.0 + 0.05) / 2, abs=1e-6)
    assert m.mad_clean_m == pytest.approx((0.0 + 0.05) / 2, abs=1e-6)
    assert m.mad_outlier_m == pytest.approx((0.0 + 0.03) / 2, abs=1e-6)
    assert (m.accuracy_m, m.fscore[0.05], m.obstacles_marked_free) == (0.01, 0.9, 0.1)
    no_outliers = _score(cfg, cond.outlier_free(), seq, runs, clean, ref).methods["latent"]
    assert math.isnan(no_outliers.mad_outlier_m)


def _means(latent_outlier: float, latent_f: float) -> dict[str, dict[str, float]]:
    base = {"MAD vs true SDF cm": 2.0, "MAD vs own noise-free cm": 1.0,
            "outlier-caused MAD cm": 1.0, "acc cm": 1.0, "comp cm": 1.0, "F@2cm": 0.5,
            "F@5cm": 0.8, "obstacles marked free": 0.1}
    m = {c: dict(base) for c in CLASSICAL}
    m["tsdf+minw"]["outlier-caused MAD cm"] = 0.8  # the best classical one
    m["latent"] = base | {"outlier-caused MAD cm": latent_outlier, "F@5cm": latent_f}
    return m


def test_goal_checks_compare_with_best_classical() -> None:
    cfg = FusionEvalConfig()
    checks = goal_checks(cfg, {"sigma 0.01, 5% outliers": _means(0.6, 0.81),
                               "sigma 0.01, 10% outliers": _means(0.61, 0.8)})
    assert [ok for _, ok, _ in checks] == [True, True, False, False]
    assert "tsdf+minw 0.80" in checks[0][2]
    clean = {m: v | {"outlier-caused MAD cm": float("nan")}
             for m, v in _means(1.0, 0.8).items()}
    clean["latent"]["acc cm"] = 1.06  # 6 % worse than TSDF fusion
    checks = goal_checks(cfg, {"noise-free": clean})
    assert {name.split(": ")[1].split(" within")[0]: ok for name, ok, _ in checks}["acc cm"] \
        is False
    assert sum(ok for _, ok, _ in checks) == len(checks) - 1


def test_condition_selection() -> None:
    conds = FusionEvalConfig(sigmas=(0.01,), outliers=(0.0, 0.05),
                             conditions=("indist", "vga")).condition_list()
    assert [c.name for c in conds[:3]] == ["noise-free", "sigma 0.01, 0% outliers",
                                           "sigma 0.01, 5% outliers"]
    assert (conds[3].width, conds[3].height, conds[3].scenes) == (640, 480, 1)
    assert conds[2].outlier_free().key() == conds[1].key()
    with pytest.raises(ValueError, match="unknown conditions"):
        FusionEvalConfig(conditions=("nope",)).condition_list()


def test_flying_pixels_and_rect_outliers() -> None:
    depth = np.full((6, 8), 1.0, np.float32)
    depth[:, 4:] = 3.0
    out, mask = add_flying_pixels(depth, 1.0, 0.1, np.random.default_rng(0))
    assert mask[:, 3:5].all() and mask.sum() == 12  # both sides of the step
    assert ((out[mask] > 1.0) & (out[mask] < 3.0)).all()
    np.testing.assert_array_equal(out[~mask], depth[~mask])
    labels = rect_labels((40, 50), 0.1, 7, np.random.default_rng(1))
    assert (labels > 0).mean() >= 0.1 and labels.max() >= 2
    # disabled stages draw nothing: the default config's output is unchanged by new fields
    d = np.full((12, 16), 2.0, np.float32)
    base = NoiseConfig(multiplicative_sigma=0.01, outlier_fraction=0.1)
    np.testing.assert_array_equal(apply_noise(d, base, 3), apply_noise(d, NoiseConfig(
        multiplicative_sigma=0.01, outlier_fraction=0.1, flying_pixel_jump_m=0.5), 3))


def _eval_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "recon_ros.cli", "eval-fusion-unbiased",
                           *args], capture_output=True, text=True, timeout=900, env=env)


def test_command_end_to_end(tmp_path: Path) -> None:
    """The CLI runs every method, ``--compare`` adding one latent method per weight file."""
    from recon_ros.models.checkpoint import DEFAULT_WEIGHTS

    out = tmp_path / "report.md"
    proc = _eval_cli("--out-md", str(out), "--json-out", str(tmp_path / "r.json"), "--csv-out",
                     str(tmp_path / "r.csv"), "--conditions", "rects", "--scenes", "1",
                     "--frames", "3", "--width", "32", "--height", "24", "--compare",
                     f"again={DEFAULT_WEIGHTS}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert "## noise-free" in text and "## rects" in text and "| latent |" in text
    assert "| latent:again |" in text
    data = json.loads((tmp_path / "r.json").read_text())
    conds = [r["condition"] for r in data["runs"]]
    assert conds[0] == "noise-free" and len(conds) == 3
    assert conds[1].startswith("rects") and conds[1].endswith("no outliers")
    assert conds[2].startswith("rects") and data["goals"]
    with (tmp_path / "r.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * len(conds)
    assert {r["method"] for r in rows} == {*CLASSICAL, "latent", "latent:again"}


def test_command_refuses_a_bad_compare_value(tmp_path: Path) -> None:
    proc = _eval_cli("--out-md", str(tmp_path / "r.md"), "--compare", "big")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--compare wants NAME=WEIGHTS" in proc.stderr and "got 'big'" in proc.stderr
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("items, error", [
    (["big"], "wants NAME=WEIGHTS"), (["=w.pt"], "wants NAME=WEIGHTS"),
    (["a="], "wants NAME=WEIGHTS"), (["a=x.pt", "a=y.pt"], "'a' given twice")])
def test_parse_compare_refuses(items: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_compare(items)


def test_parse_compare_pairs() -> None:
    assert parse_compare([" a = x.pt", "b=y=z.pt"]) == (("a", "x.pt"), ("b", "y=z.pt"))
    assert parse_compare([]) == ()


def test_goal_checks_per_compared_weights() -> None:
    means = _means(0.6, 0.81)
    means["latent:new"] = dict(means["latent"]) | {"outlier-caused MAD cm": 0.7}
    checks = goal_checks(FusionEvalConfig(), {"sigma 0.01, 5% outliers": means})
    assert [(name.split(":")[0], ok) for name, ok, _ in checks] == [
        ("sigma 0.01, 5% outliers", True), ("sigma 0.01, 5% outliers", True),
        ("[latent", False), ("[latent", True)]
    assert checks[2][0].startswith("[latent:new] ") and "latent:new 0.70" in checks[2][2]


def test_compare_weights_end_to_end(tmp_path: Path) -> None:
    """``--compare`` adds a latent method per weight file; the shipped weights compared with
    themselves give the same numbers as ``latent``."""
    from recon_ros.models.checkpoint import DEFAULT_WEIGHTS

    args = ["--out-md", str(tmp_path / "report.md"), "--json-out", str(tmp_path / "r.json"),
            "--csv-out", str(tmp_path / "r.csv"), "--conditions", "rects", "--scenes", "1",
            "--frames", "3", "--width", "32", "--height", "24", "--compare",
            f"again={DEFAULT_WEIGHTS}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "recon_ros.models.evaluate_fusion", *args],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    for run in data["runs"]:
        a, b = run["methods"]["latent"], run["methods"]["latent:again"]
        for key in ("mad_gt_m", "accuracy_m", "obstacles_marked_free"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    assert any(g["goal"].startswith("[latent:again] ") for g in data["goals"])
    assert "| latent:again |" in (tmp_path / "report.md").read_text()
