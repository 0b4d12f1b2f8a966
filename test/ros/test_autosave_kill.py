"""recon_mapper killed during its shutdown autosave, as ``ros2 launch`` escalates (SIGINT, then
SIGTERM after 5 s and SIGKILL after 10 s): the map directory still holds one loadable map."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml

from .conftest import ROS_SKIP_REASON, SynthSequence

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from recon_ros.core.atomic_file import is_temporary_name
from recon_ros.core.mapper import Mapper
from recon_ros.io.map_files import read_esdf, read_nav2_map, read_ply
from recon_ros.offline import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ESDF_FILE,
    GRID_FILE,
    MAP_DIR_FILES,
    MESH_FILE,
)

from .helpers import wait_for
from .test_mapper_node import T0, _publish_pass

pytestmark = pytest.mark.parametrize(
    "mapper_run", [{"map_dir": "maps", "autosave_dir": "maps"}], indirect=True,
    ids=["mapper"])


def _assert_files_derive_from_checkpoint(directory: Path, mapper: Mapper) -> None:
    """Every file present is what ``mapper`` (loaded from the directory's checkpoint) gives."""
    names = {p.name for p in directory.iterdir() if not is_temporary_name(p.name)}
    assert names <= MAP_DIR_FILES, names
    assert yaml.safe_load((directory / CONFIG_FILE).read_text()) == mapper.config.to_dict()
    if GRID_FILE in names:
        np.testing.assert_array_equal(read_nav2_map(directory / GRID_FILE).data,
                                      mapper.occupancy_grid().data)
    if ESDF_FILE in names:
        mapper.update_esdf()
        esdf = read_esdf(directory / ESDF_FILE)
        assert esdf.voxel_size_m == mapper.config.volume.voxel_size_m
        assert esdf.num_voxels == len(mapper.esdf.export()["indices"])
    if MESH_FILE in names:
        assert read_ply(directory / MESH_FILE).num_vertices == mapper.mesh().num_vertices


def test_sigkill_right_after_the_autosaved_checkpoint_leaves_the_new_map(
        mapper_run, sequence: SynthSequence) -> None:
    """A complete map of half the frames is saved with ~/save_map into the autosave
    directory; after the other half, SIGINT starts the autosave, which puts the checkpoint in
    place first and logs it (with the time it took); SIGKILL follows at once, while the other
    files are being written. The directory then holds the new checkpoint, and the files beside
    it all derive from it (none is left from the previous map)."""
    h, directory = mapper_run.harness, mapper_run.workdir / "maps"
    half = len(sequence) // 2
    _publish_pass(mapper_run, sequence, list(range(half)), T0)
    response = h.call("save_map")
    assert response.success, response.message
    assert re.search(r" in [0-9.]+ s \(mesh: marching_cubes, \d+ triangles in [0-9.]+ s\): "
                     r"map\.pt, config\.yaml", response.message), response.message
    old_frames = Mapper.load(directory / CHECKPOINT_FILE).frames_integrated
    _publish_pass(mapper_run, sequence, list(range(half, len(sequence))), T0 + 10**10)
    new_frames = h.status()["frames_integrated"]
    assert new_frames > old_frames

    proc = mapper_run.proc
    proc.proc.send_signal(signal.SIGINT)
    wait_for(lambda: re.search(r"autosave: checkpoint .* in place after [0-9.]+ s", proc.log()),
             60, "the autosaved checkpoint", lambda: proc.log()[-3000:])
    proc.stop(signal.SIGKILL)

    log = proc.log()
    assert "Traceback" not in log, log[-3000:]
    # The checkpoint came first: the kill (tens of ms later) cut the rest of the save short.
    assert "autosaved the map to" not in log, log[-3000:]
    mapper = Mapper.load(directory / CHECKPOINT_FILE)
    assert mapper.frames_integrated == new_frames
    _assert_files_derive_from_checkpoint(directory, mapper)
