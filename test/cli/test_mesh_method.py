"""``recon-ros replay --mesh-method``: the exported mesh.ply by marching cubes (default) or
screened Poisson, named in the summary (real bag file, real subprocesses)."""

import re
from pathlib import Path

import numpy as np
import pytest

from recon_ros.core.mapper import Mapper
from recon_ros.io.map_files import read_ply
from recon_ros.io.synthetic import default_camera, make_demo_scene, room_scan_trajectory
from recon_ros.io.synthetic_bag import write_scene_bag

from .test_cli import run

FRAMES = 12
#: The summary row of the exported mesh: mesher, vertices, triangles, seconds.
MESH_ROW = re.compile(r"mesh \((\w+)\) vertices / triangles / s\W+(\d+) / (\d+) / ([\d.]+)")


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scene = make_demo_scene()
    return write_scene_bag(tmp_path_factory.mktemp("bag") / "bag", scene,
                           default_camera(160, 120), room_scan_trajectory(scene, FRAMES)).path


def _replay(bag: Path, out: Path, *args: str) -> tuple[str, int, int]:
    """Replay at 8 cm voxels; returns the summary's (mesher, vertices, triangles) after
    checking them against the written mesh.ply."""
    summary = run("replay", str(bag), "--out", str(out), "--voxel-size-m", "0.08",
                  *args).stdout
    row = MESH_ROW.search(summary)
    assert row, summary
    method, vertices, triangles = row[1], int(row[2]), int(row[3])
    mesh = read_ply(out / "mesh.ply")
    assert (mesh.num_vertices, mesh.num_faces) == (vertices, triangles)
    assert Mapper.load(out / "map.pt").config.mesh.method == method
    return method, vertices, triangles


def test_replay_writes_the_poisson_mesh_on_request(bag: Path, tmp_path: Path) -> None:
    assert _replay(bag, tmp_path / "mc")[0] == "marching_cubes"
    method, _, triangles = _replay(bag, tmp_path / "poisson", "--mesh-method", "poisson")
    assert method == "poisson" and triangles > 1000
    mc, poisson = read_ply(tmp_path / "mc" / "mesh.ply"), read_ply(tmp_path / "poisson" /
                                                                   "mesh.ply")
    assert poisson.num_faces != mc.num_faces and poisson.colors is not None
    # both meshes lie on the room's surface
    scene = make_demo_scene()
    for mesh in (mc, poisson):
        assert np.abs(scene.sdf_np(mesh.vertices.astype(np.float64))).mean() < 0.05


def test_replay_refuses_an_unknown_mesh_method(bag: Path, tmp_path: Path) -> None:
    out = run("replay", str(bag), "--out", str(tmp_path / "o"), "--mesh-method", "cubes",
              check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "mesh.method='cubes' is invalid: must be one of ['marching_cubes', 'poisson']" \
        in out.stderr
