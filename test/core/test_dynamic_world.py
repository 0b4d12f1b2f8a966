"""End to end: the mapper on a world that changes between two passes over the same path
(design.md section 6, "Dynamic scenes").

The benchmark scene (:func:`recon_ros.io.synthetic.make_dynamic_scene`) is scanned twice
along the same loop; a box, a cylinder and a table stand during the first pass only, a crate
during the second only. After the first pass the removed objects must be in the map (so the
second-pass checks cannot pass vacuously); after the second they must be gone from the mesh
and from the 2D grid where the cameras saw free space, the crate must be mapped, and the rest
of the scene must keep its F-score. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from recon_ros.core import Frame, Mapper, MapperConfig
from recon_ros.evaluation import DynamicMetrics, dynamic_metrics
from recon_ros.io.synthetic import (
    ChangeGroundTruth,
    DynamicScene,
    NoiseConfig,
    Scene,
    Trajectory,
    change_ground_truth,
    default_camera,
    iter_frames,
    make_dynamic_scene,
    visible_surface_points,
)

FRAMES_PER_LOOP = 36
CAMERA = default_camera(160, 120)
VOXEL_M = 0.05
MAX_RANGE_M = 5.0
THRESHOLD_M = 0.05


@dataclass
class Recording:
    """The rendered two-pass sequence and what a perfect map holds after each pass."""

    scene: DynamicScene
    trajectory: Trajectory
    frames: list[Frame]
    changes: ChangeGroundTruth
    static_pass1: np.ndarray  # (P, 3) surface seen in pass 1 (with the removed objects)
    static_pass2: np.ndarray  # (Q, 3) surface seen in pass 2 (the final scene)


def _static_truth(scene: Scene, poses: np.ndarray) -> np.ndarray:
    """(P, 3) the surface of ``scene`` seen from ``poses`` (every pixel)."""
    return visible_surface_points(scene, poses, CAMERA, max_range_m=MAX_RANGE_M)


def _config(dtype: str) -> MapperConfig:
    return MapperConfig.from_dict({"volume": {"voxel_size_m": VOXEL_M, "dtype": dtype}})


@pytest.fixture(scope="module")
def recording() -> Recording:
    scene, traj = make_dynamic_scene(0, FRAMES_PER_LOOP)
    noise = NoiseConfig(kinect_axial=True, max_range_m=MAX_RANGE_M)
    frames = list(iter_frames(scene, CAMERA, traj, noise=noise, seed=0))
    occ = _config("float32").occupancy
    changes = change_ground_truth(scene, CAMERA, traj, resolution_m=VOXEL_M,
                                  min_height_m=occ.min_height_m, max_height_m=occ.max_height_m,
                                  free_below_m=occ.free_below_m, max_range_m=MAX_RANGE_M)
    n, poses = len(traj), traj.poses
    return Recording(scene, traj, frames, changes,
                     _static_truth(scene.scene_at(0), poses[:FRAMES_PER_LOOP]),
                     _static_truth(scene.scene_at(n - 1), poses[FRAMES_PER_LOOP:]))


def _report(label: str, m: DynamicMetrics) -> None:
    """Print the figures (shown with ``pytest -s``)."""
    print(f"\n[dynamic world] {label}: " + ", ".join(f"{k} {v}" for k, v in m.as_rows())
          + f" (points {m.n_removed_points} removed, {m.n_added_points} added; "
            f"{m.n_footprint_cells} footprint cells)")


@pytest.fixture(scope="module", params=["float32", "float16"])
def passes(request: pytest.FixtureRequest, recording: Recording
           ) -> tuple[str, DynamicMetrics, DynamicMetrics]:
    """Map pass 1, score it, map pass 2 on top, score again."""
    dtype = request.param
    mapper = Mapper(_config(dtype))
    changes = recording.changes

    def score(static_gt: np.ndarray) -> DynamicMetrics:
        return dynamic_metrics(mapper.mesh(), mapper.occupancy_grid(), changes.removed_surface,
                               changes.removed_footprint_seen_free_xy, changes.added_surface,
                               static_gt, THRESHOLD_M)

    for f in recording.frames[:FRAMES_PER_LOOP]:
        mapper.integrate(f)
    first = score(recording.static_pass1)
    _report(f"{dtype} after pass 1", first)
    for f in recording.frames[FRAMES_PER_LOOP:]:
        mapper.integrate(f)
    second = score(recording.static_pass2)
    _report(f"{dtype} after pass 2", second)
    return dtype, first, second


def test_first_pass_maps_the_objects_that_will_be_removed(
        passes: tuple[str, DynamicMetrics, DynamicMetrics]) -> None:
    dtype, first, _ = passes
    problems = []
    if not first.removed_surface_kept > 0.9:
        problems.append(f"removed objects' surface mapped {first.removed_surface_kept:.3f}")
    if not first.removed_footprint_occupied > 0.9:
        problems.append(f"their footprint occupied {first.removed_footprint_occupied:.3f}")
    if not first.added_surface_recall < 0.1:
        problems.append(f"crate mapped before it appears: {first.added_surface_recall:.3f}")
    if not first.static_fscore >= 0.95:
        problems.append(f"F-score {first.static_fscore:.3f}")
    assert not problems, f"{dtype} after pass 1: " + "; ".join(problems)


def test_second_pass_clears_removed_objects_and_adds_the_new_one(
        passes: tuple[str, DynamicMetrics, DynamicMetrics]) -> None:
    dtype, _, second = passes
    problems = []
    if not second.removed_surface_kept < 0.05:
        problems.append(f"removed surface kept {second.removed_surface_kept:.3f} (>= 0.05)")
    if not second.removed_footprint_occupied < 0.05:
        problems.append(f"removed footprint still occupied "
                        f"{second.removed_footprint_occupied:.3f} (>= 0.05)")
    # Measured 0.92: what is missing is the crate's lowest 0.3 m, whose faces the second pass
    # sees only at grazing angles (projective distances ~10x the true ones) after the first
    # pass saw free space there; those voxels need several views to overturn their history.
    if not second.added_surface_recall > 0.85:
        problems.append(f"added surface recall {second.added_surface_recall:.3f} (<= 0.85)")
    if not second.static_fscore >= 0.95:
        problems.append(f"static F-score {second.static_fscore:.3f} (< 0.95)")
    assert not problems, f"{dtype} after pass 2: " + "; ".join(problems)
