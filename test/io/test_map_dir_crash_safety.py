"""Crash-safe map saving: a save cut short (an exception, SIGKILL) never leaves a torn file or
a map directory whose files come from different maps."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import recon_ros.io.map_files as map_files
import recon_ros.offline as offline
from recon_ros.core.atomic_file import atomic_path, exchange_paths, is_temporary_name
from recon_ros.core.config import MapperConfig
from recon_ros.core.mapper import Mapper
from recon_ros.io.map_files import MapDirectoryError, read_esdf
from recon_ros.io.synthetic import (
    default_camera,
    iter_frames,
    make_demo_scene,
    room_scan_trajectory,
)
from recon_ros.offline import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ESDF_FILE,
    GRID_IMAGE_FILE,
    MAP_FILES,
    MESH_FILE,
    PREVIEW_FILE,
    write_map_outputs,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _room_map(voxel_size_m: float, frames: int = 6, width: int = 80) -> Mapper:
    """The demo room seen by ``frames`` small frames."""
    scene = make_demo_scene()
    mapper = Mapper(MapperConfig.from_dict({"volume": {"voxel_size_m": voxel_size_m}}))
    camera = default_camera(width, width * 3 // 4)
    for frame in iter_frames(scene, camera, room_scan_trajectory(scene, frames)):
        mapper.integrate(frame)
    return mapper


def _contents(directory: Path) -> dict[str, Any]:
    """What each file of a map directory holds, comparable between saves of one map: the
    checkpoint as its config, frame and block counts (its bytes differ from save to save), the
    distance field as its arrays (zip metadata aside), every other file as its bytes.
    Temporary files of a killed save are not map files (see :func:`_leftovers`)."""
    out: dict[str, Any] = {}
    for name in sorted(os.listdir(directory)):
        path = directory / name
        if is_temporary_name(name):
            continue
        if name == CHECKPOINT_FILE:
            mapper = Mapper.load(path)
            out[name] = (yaml.safe_dump(mapper.config.to_dict()), mapper.frames_integrated,
                         mapper.volume.num_blocks)
        elif name == ESDF_FILE:
            esdf = read_esdf(path)
            out[name] = (esdf.voxel_size_m, esdf.indices.tobytes(), esdf.distance.tobytes(),
                         esdf.slice.distance.tobytes())
        else:
            out[name] = path.read_bytes()
    return out


def _leftovers(directory: Path) -> list[str]:
    """Siblings of ``directory`` made by saves into it, and temporary files inside it."""
    siblings = [p.name for p in directory.parent.iterdir()
                if p.name.startswith(directory.name + ".")]
    inside = [n for n in os.listdir(directory) if is_temporary_name(n)] \
        if directory.is_dir() else []
    return sorted(siblings + inside)


def _torn_writer(*args: Any, **kwargs: Any) -> None:
    """A file writer that dies half way: half a file, then an error."""
    Path(args[0]).write_bytes(b"half a file")
    raise OSError("disk full (simulated)")


@pytest.fixture(scope="module")
def two_maps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints of two maps of the demo room at different voxel sizes (every file of their
    map directories differs)."""
    root = tmp_path_factory.mktemp("maps")
    seeds = {}
    for name, voxel in (("a", 0.1), ("b", 0.08)):
        seeds[name] = root / f"{name}.pt"
        _room_map(voxel).save(seeds[name])
    return seeds


# --------------------------------------------------------------------------------------------
# one file
# --------------------------------------------------------------------------------------------

def test_atomic_path_switches_a_file_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "map.yaml"
    target.write_text("old")
    plain_mode = stat.S_IMODE(target.stat().st_mode)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".yaml" and not tmp.exists()
            assert is_temporary_name(tmp.name)
            tmp.write_text("ne")  # cut short half way
            assert target.read_text() == "old"
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["map.yaml"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["map.yaml"]
    # The writer creates the file: the usual permissions, not a private temporary file's.
    assert stat.S_IMODE(target.stat().st_mode) == plain_mode


def test_exchange_paths_swaps_two_directory_trees(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    if not exchange_paths(tmp_path / "a", tmp_path / "b"):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here: saves use the two-rename fallback")
    assert os.listdir(tmp_path / "a") == [] and (tmp_path / "b" / "x").read_text() == "a"
    with pytest.raises(FileNotFoundError):
        exchange_paths(tmp_path / "a", tmp_path / "missing")


def test_checkpoint_write_cut_short_keeps_the_previous_checkpoint(
        tmp_path: Path, two_maps: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "map.pt"
    Mapper.load(two_maps["a"]).save(path)
    before = path.read_bytes()
    monkeypatch.setattr("recon_ros.core.mapper.torch.save",
                        lambda state, f: _torn_writer(f))
    with pytest.raises(OSError, match="simulated"):
        Mapper.load(two_maps["b"]).save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["map.pt"]


def test_every_map_file_arrives_by_rename_from_a_temporary_name(
        tmp_path: Path, two_maps: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """No writer of map files (checkpoint, config, Nav2 map, distance field, mesh, preview)
    writes its file in place: each file of a save is renamed onto its name, complete."""
    replaced = []
    replace = os.replace

    def recording_replace(src: Any, dst: Any) -> None:
        replaced.append((Path(src).name, Path(dst).name))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    write_map_outputs(Mapper.load(two_maps["a"]), tmp_path / "map", checkpoint_first=True)
    assert sorted(dst for _, dst in replaced) == sorted(MAP_FILES)
    assert all(is_temporary_name(src) for src, _ in replaced), replaced


# --------------------------------------------------------------------------------------------
# a map directory
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("writer", ["write_nav2_map", "write_esdf", "write_ply",
                                    "write_preview"])
def test_a_writer_failing_half_way_leaves_the_previous_map(
        tmp_path: Path, two_maps: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        writer: str) -> None:
    """The checkpoint and config of the new map are already written when a later writer
    dies half way through its file: the directory still holds the previous map, every file
    unchanged, and nothing of the failed save is left around."""
    out = tmp_path / "map"
    write_map_outputs(Mapper.load(two_maps["a"]), out)
    before = _contents(out)
    assert set(before) == MAP_FILES
    monkeypatch.setattr(offline, writer, _torn_writer)
    with pytest.raises(OSError, match="simulated"):
        write_map_outputs(Mapper.load(two_maps["b"]), out)
    assert _contents(out) == before
    assert _leftovers(out) == []


@pytest.mark.parametrize("checkpoint_first", [False, True])
def test_a_checkpoint_failing_half_way_leaves_the_previous_map(
        tmp_path: Path, two_maps: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        checkpoint_first: bool) -> None:
    out = tmp_path / "map"
    write_map_outputs(Mapper.load(two_maps["a"]), out)
    before = _contents(out)
    monkeypatch.setattr("recon_ros.core.mapper.torch.save", lambda state, f: _torn_writer(f))
    with pytest.raises(OSError, match="simulated"):
        write_map_outputs(Mapper.load(two_maps["b"]), out, checkpoint_first=checkpoint_first)
    assert _contents(out) == before
    assert _leftovers(out) == []


def test_checkpoint_first_keeps_the_new_checkpoint_when_a_later_file_fails(
        tmp_path: Path, two_maps: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The shutdown save: the new checkpoint and config are in place before the mesh is even
    computed; Open3D failing half way through the mesh after that leaves them with the files
    written so far, all of the new map, and none of the old map's files."""
    import open3d as o3d

    reference = tmp_path / "reference"
    write_map_outputs(Mapper.load(two_maps["b"]), reference)
    new = _contents(reference)
    out = tmp_path / "map"
    write_map_outputs(Mapper.load(two_maps["a"]), out)

    def torn_mesh(path: str, *args: Any, **kwargs: Any) -> bool:
        Path(path).write_bytes(b"half a mesh")
        return False

    monkeypatch.setattr(o3d.io, "write_triangle_mesh", torn_mesh)
    with pytest.raises(OSError, match="open3d could not write"):
        write_map_outputs(Mapper.load(two_maps["b"]), out, checkpoint_first=True)
    got = _contents(out)
    assert set(got) == MAP_FILES - {MESH_FILE, PREVIEW_FILE}
    assert got == {name: new[name] for name in got}
    assert _leftovers(out) == []


def test_checkpoint_first_writes_the_same_directory_as_a_plain_save(
        tmp_path: Path, two_maps: dict[str, Path]) -> None:
    write_map_outputs(Mapper.load(two_maps["a"]), tmp_path / "plain")
    write_map_outputs(Mapper.load(two_maps["b"]), tmp_path / "first")
    paths, _ = write_map_outputs(Mapper.load(two_maps["a"]), tmp_path / "first",
                                 checkpoint_first=True)
    assert _contents(tmp_path / "first") == _contents(tmp_path / "plain")
    assert sorted(p.name for p in paths.values()) == sorted(MAP_FILES - {GRID_IMAGE_FILE})
    assert all(p.parent == tmp_path / "first" for p in paths.values())


def test_a_directory_with_other_files_is_refused_untouched(
        tmp_path: Path, two_maps: dict[str, Path]) -> None:
    out = tmp_path / "map"
    write_map_outputs(Mapper.load(two_maps["a"]), out)
    (out / "notes.txt").write_text("mine")
    before = _contents(out)
    with pytest.raises(MapDirectoryError, match="notes.txt"):
        write_map_outputs(Mapper.load(two_maps["b"]), out)
    assert _contents(out) == before and _leftovers(out) == []


def test_a_symlinked_map_directory_stays_a_symlink(
        tmp_path: Path, two_maps: dict[str, Path]) -> None:
    real = tmp_path / "disk" / "map"
    real.mkdir(parents=True)
    link = tmp_path / "map"
    link.symlink_to(real, target_is_directory=True)
    write_map_outputs(Mapper.load(two_maps["a"]), link, preview=False)
    assert link.is_symlink() and (real / CHECKPOINT_FILE).is_file()
    assert Mapper.load(link / CHECKPOINT_FILE).config.volume.voxel_size_m == 0.1


def test_without_the_one_step_swap_two_renames_replace_the_map(
        tmp_path: Path, two_maps: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Where renameat2(RENAME_EXCHANGE) is missing: the old directory waits at
    ``<dir>.previous`` while the new one is renamed in. A failure of the second rename puts the
    old map back; a crash between the renames (no ``<dir>``, the old map at
    ``<dir>.previous``) is undone by the next save."""
    monkeypatch.setattr(map_files, "exchange_paths", lambda a, b: False)
    out = tmp_path / "map"
    previous = tmp_path / "map.previous"
    write_map_outputs(Mapper.load(two_maps["a"]), out)
    before = _contents(out)

    rename = os.rename

    def second_rename_fails(src: Any, dst: Any) -> None:
        if Path(dst) == out and Path(src) != previous:  # the new map's rename, not the undo
            assert previous.is_dir() and not out.exists()
            raise OSError("rename failed (simulated)")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", second_rename_fails)
    with pytest.raises(OSError, match="simulated"):
        write_map_outputs(Mapper.load(two_maps["b"]), out)
    monkeypatch.setattr(os, "rename", rename)
    assert _contents(out) == before and _leftovers(out) == []

    os.rename(out, previous)  # as a crash between the two renames leaves it
    write_map_outputs(Mapper.load(two_maps["b"]), out)
    assert Mapper.load(out / CHECKPOINT_FILE).config.volume.voxel_size_m == 0.08
    assert _leftovers(out) == []


def test_the_directory_keeps_its_permissions(tmp_path: Path, two_maps: dict[str, Path]
                                             ) -> None:
    out = tmp_path / "map"
    out.mkdir(mode=0o750)
    os.chmod(out, 0o750)
    write_map_outputs(Mapper.load(two_maps["a"]), out, preview=False)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750


# --------------------------------------------------------------------------------------------
# SIGKILL during saves
# --------------------------------------------------------------------------------------------

#: A process that saves two maps alternately into one directory, forever.
SAVER = """
import itertools, sys
from recon_ros.core.mapper import Mapper
from recon_ros.offline import write_map_outputs
out, checkpoint_first = sys.argv[1], sys.argv[2] == "1"
maps = [Mapper.load(path) for path in sys.argv[3:]]
print("saving", flush=True)
for k in itertools.count():
    write_map_outputs(maps[k % len(maps)], out, checkpoint_first=checkpoint_first)
"""

KILLS_PER_MODE = 5


@pytest.mark.parametrize("checkpoint_first", [False, True], ids=["all_at_once", "ckpt_first"])
def test_sigkill_during_saves_leaves_one_loadable_map(
        tmp_path_factory: pytest.TempPathFactory, checkpoint_first: bool) -> None:
    """A real process saving maps of the demo room (4 and 5 cm, about a second per save)
    alternately into one directory is SIGKILLed at random instants, several times; after
    every kill the checkpoint loads and every file in the directory is the file of that
    checkpoint's map, byte for byte (the distance field: array for array). With all files
    committed together the directory is always complete."""
    root = tmp_path_factory.mktemp("kill")
    seeds, expected = {}, {}
    for name, voxel in (("a", 0.04), ("b", 0.05)):
        seeds[name] = root / f"{name}.pt"
        _room_map(voxel, frames=12, width=160).save(seeds[name])
        start = time.perf_counter()
        write_map_outputs(Mapper.load(seeds[name]), root / name)  # the reference directory
        save_s = time.perf_counter() - start
        expected[name] = _contents(root / name)
    out = root / "map"
    write_map_outputs(Mapper.load(seeds["a"]), out)  # a first complete map
    held = "a"

    rng = random.Random(9)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    interrupted = 0
    for _ in range(KILLS_PER_MODE):
        # The saver starts with the map the directory does not hold.
        order = [seeds[name] for name in sorted(seeds, key=lambda name: name == held)]
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(out), str(int(checkpoint_first)),
                                 *map(str, order)], stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "saving\n"
            time.sleep(rng.uniform(0.0, 2.0 * save_s))  # the random instant of the kill
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, "the saver died before it was killed"
        got = _contents(out)
        assert CHECKPOINT_FILE in got and CONFIG_FILE in got, sorted(got)
        held = next((name for name in expected
                     if expected[name][CHECKPOINT_FILE] == got[CHECKPOINT_FILE]), "neither")
        assert held in expected, "the checkpoint is neither of the maps saved"
        mixed = [name for name in got if got[name] != expected[held].get(name)]
        assert not mixed, f"files not of the checkpoint's map: {mixed}"
        if not checkpoint_first:
            assert set(got) == MAP_FILES
        interrupted += bool(_leftovers(out)) or set(got) != MAP_FILES
    # The kills hit saves in progress, not a process between saves.
    assert interrupted >= KILLS_PER_MODE - 1, interrupted
    # The next save clears what the killed ones left.
    write_map_outputs(Mapper.load(seeds["b"]), out, checkpoint_first=checkpoint_first)
    assert _leftovers(out) == [] and _contents(out) == expected["b"]
