"""``recon-ros merge``: two sessions of one room (real bags replayed by the real CLI) merge into
one map directory; mismatched maps are refused with a clear error."""

from pathlib import Path

import pytest

from recon_ros.core.mapper import Mapper
from recon_ros.io.map_files import read_ply
from recon_ros.io.synthetic import default_camera, make_demo_scene, room_scan_trajectory
from recon_ros.io.synthetic.trajectory import Trajectory
from recon_ros.io.synthetic_bag import write_scene_bag

from .test_cli import run

FRAMES = 12


def _half(loop: Trajectory, part: slice) -> Trajectory:
    return Trajectory(loop.base_xy_yaw[part], loop.pitch_rad[part], loop.stamps_ns[part],
                      loop.rig)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two replayed map directories: the first and the second half of a room scan."""
    scene = make_demo_scene()
    loop = room_scan_trajectory(scene, FRAMES)
    root = tmp_path_factory.mktemp("sessions")
    maps = []
    for i, part in enumerate((slice(0, FRAMES // 2), slice(FRAMES // 2, FRAMES))):
        bag = write_scene_bag(root / f"bag{i}", scene, default_camera(160, 120),
                              _half(loop, part)).path
        run("replay", str(bag), "--out", str(root / f"map{i}"), "--voxel-size-m", "0.08",
            "--quality-every", "0", "--render-views", "0")
        maps.append(root / f"map{i}")
    return maps[0], maps[1]


def test_two_sessions_merge_into_one_map_directory(sessions, tmp_path: Path) -> None:
    a, b = sessions
    out = run("merge", str(a), str(b), "--out", str(tmp_path / "merged")).stdout
    assert "merged 2 maps" in out
    merged = Mapper.load(tmp_path / "merged" / "map.pt")
    first, second = Mapper.load(a / "map.pt"), Mapper.load(b / "map.pt")
    assert merged.frames_integrated == first.frames_integrated + second.frames_integrated
    assert merged.volume.num_blocks > max(first.volume.num_blocks, second.volume.num_blocks)
    faces = read_ply(tmp_path / "merged" / "mesh.ply").num_faces
    assert faces > max(read_ply(a / "mesh.ply").num_faces, read_ply(b / "mesh.ply").num_faces)
    assert (tmp_path / "merged" / "map.yaml").exists()


def test_mismatched_or_single_maps_are_refused(sessions, tmp_path: Path) -> None:
    a, _ = sessions
    scene = make_demo_scene()
    bag = write_scene_bag(tmp_path / "bag", scene, default_camera(160, 120),
                          room_scan_trajectory(scene, 3)).path
    run("replay", str(bag), "--out", str(tmp_path / "fine"), "--voxel-size-m", "0.05",
        "--quality-every", "0", "--render-views", "0")
    bad = run("merge", str(a), str(tmp_path / "fine"), "--out", str(tmp_path / "m"),
              check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "different voxel_size_m" in bad.stderr
    single = run("merge", str(a), "--out", str(tmp_path / "m"), check=False)
    assert single.returncode == 2 and "at least two maps" in single.stderr


def test_merge_with_transforms(sessions, tmp_path: Path) -> None:
    """``--transform identity`` for both maps is the plain merge; a map moved by a whole-voxel
    shift (4x4 matrix file) lands where the matrix says; a bad spec or count is exit 2."""
    import numpy as np
    import torch

    a, b = sessions
    run("merge", str(a), str(b), "--out", str(tmp_path / "plain"))
    run("merge", str(a), str(b), "--out", str(tmp_path / "ident"), "--transform", "identity",
        "--transform", "0,0,0,0,0,0,1")
    plain, ident = (Mapper.load(tmp_path / d / "map.pt").volume for d in ("plain", "ident"))
    assert torch.equal(plain.index.slot_keys, ident.index.slot_keys)
    assert torch.equal(plain.tsdf, ident.tsdf) and torch.equal(plain.weight, ident.weight)
    matrix = tmp_path / "T.txt"
    np.savetxt(matrix, [[1, 0, 0, 0.8], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    out = run("merge", str(a), str(a), "--out", str(tmp_path / "moved"), "--transform",
              "identity", "--transform", str(matrix)).stdout
    assert "new blocks" in out
    moved = Mapper.load(tmp_path / "moved" / "map.pt").volume
    first = Mapper.load(a / "map.pt").volume
    assert moved.num_blocks > first.num_blocks  # the copy lies 0.8 m (10 voxels) along x
    for spec, message in (("1,2,3", "is not 'identity', not x,y,z,qx,qy,qz,qw"),
                          ("0,0,0,0,0,0,3", "quaternion has length 3")):
        bad = run("merge", str(a), str(b), "--out", str(tmp_path / "bad"), "--transform",
                  "identity", "--transform", spec, check=False)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert message in bad.stderr
    count = run("merge", str(a), str(b), "--out", str(tmp_path / "bad"), "--transform",
                "identity", check=False)
    assert count.returncode == 2 and "given 1 times for 2 maps" in count.stderr
    assert not (tmp_path / "bad").exists()
