"""recon_mapper's standard interfaces as a process over DDS: ``~/save_map_as`` /
``~/load_map_from`` (recon_ros_interfaces, a path in the request) while frames stream in,
``load_map_on_start``, ``/diagnostics``, ``~/mesh_blocks`` (indexed meshes) sent again in
full to every new subscriber, also one that joins while another leaves, and the saved mesh by
``mesh.method`` (Poisson) while the live mesh stays marching cubes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from .conftest import ROS_SKIP_REASON, SynthSequence

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from recon_ros_interfaces.msg import Mesh  # noqa: E402
from recon_ros_interfaces.srv import LoadMap, SaveMap  # noqa: E402

from recon_ros.core.mapper import Mapper  # noqa: E402
from recon_ros.io.map_files import read_ply  # noqa: E402
from recon_ros.offline import CHECKPOINT_FILE, GRID_FILE, MESH_FILE  # noqa: E402

from .helpers import (  # noqa: E402
    RELIABLE,
    VENV_BIN,
    Harness,
    Process,
    child_env,
    mesh_state,
    mesh_vertices,
    next_domain_id,
    wait_for,
)
from .launch_spec import mapper_command  # noqa: E402

EXTRA = {"map_dir": "maps"}
pytestmark = pytest.mark.parametrize("mapper_run", [EXTRA], indirect=True, ids=["services"])
T0 = 1_700_000_000_000_000_000
#: Streaming rate: a save (about 2 s here) spans several frames.
RATE_HZ = 5.0


def _stream(run, seq: SynthSequence, n: int, t0: int, during=None) -> list[int]:
    """Publish ``n`` frames (the sequence looped) at :data:`RATE_HZ` without waiting for
    their integration; ``during()`` is called after the first third. Returns the stamps."""
    h = run.harness
    h.wait_subscribed()
    h.publish_static(seq.tf_static(t0))
    period_ns = int(1e9 / RATE_HZ)
    stamps = []
    for k in range(n):
        if k == n // 3 and during is not None:
            during()
        stamp = t0 + k * period_ns
        h.publish_frame(seq.frames[k % len(seq)], stamp, seq.tf(k, stamp))
        stamps.append(stamp)
        time.sleep(period_ns / 1e9)
    return stamps


def _triangles_from_blocks(msgs: list[Mesh]) -> dict[tuple[int, int, int], np.ndarray]:
    """What a ~/mesh_blocks subscriber holds after ``msgs``: block index -> (T, 3, 3)."""
    held: dict[tuple[int, int, int], np.ndarray] = {}
    for msg in msgs:
        if msg.clear:
            held.clear()
        for block in msg.blocks:
            key = tuple(int(i) for i in block.index)
            vertices = np.asarray(block.vertices, np.float32).reshape(-1, 3)
            if len(vertices) == 0:
                held.pop(key, None)
                continue
            triangles = np.asarray(block.triangles, np.int64).reshape(-1, 3)
            assert triangles.max() < len(vertices)
            assert len(block.colors) in (0, vertices.size)
            held[key] = vertices[triangles]
    return held


def _sorted_triangles(triangles: np.ndarray) -> np.ndarray:
    """(T, 3, 3) -> rows of rounded corner coordinates in a canonical order."""
    flat = np.round(np.asarray(triangles, np.float64).reshape(len(triangles), 9) * 1e5)
    return flat[np.lexsort(flat.T[::-1])]


def test_save_during_streaming_drops_no_frame(mapper_run, sequence: SynthSequence) -> None:
    """Frames keep being taken in and integrated while the files are written: none is
    dropped (default queue_size), and frames are integrated between the request and the
    response (a save on the map work's thread would integrate none meanwhile)."""
    h, workdir = mapper_run.harness, mapper_run.workdir
    calls = []
    integrated_at = {}

    def save() -> None:
        integrated_at["request"] = h.status()["frames_integrated"]
        future = h.call_async("save_map_as", SaveMap, SaveMap.Request(path="streaming/map"))
        future.add_done_callback(lambda _: integrated_at.setdefault(
            "response", h.status()["frames_integrated"]))
        calls.append(future)

    n = 3 * len(sequence)
    _stream(mapper_run, sequence, n, T0, during=save)
    status = h.wait_integrated(n)
    camera = status["cameras"]["camera"]
    assert camera["drops"] == {} and camera["integrated"] == n, camera
    response = wait_for(lambda: calls[0].done() and calls[0].result(), 60, "the save")
    assert response.success, response.message
    assert integrated_at["response"] > integrated_at["request"], integrated_at
    directory = workdir / "streaming" / "map"
    assert response.path == str(directory.resolve())
    saved = Mapper.load(directory / CHECKPOINT_FILE)
    assert 0 < saved.frames_integrated < n  # a map of the frames integrated by then


def test_typed_save_and_load_take_paths(mapper_run) -> None:
    h, workdir = mapper_run.harness, mapper_run.workdir
    frames = h.status()["frames_integrated"]
    assert frames > 0
    response = h.call("save_map_as", SaveMap, SaveMap.Request(path=str(workdir / "typed")))
    assert response.success, response.message
    assert response.path == str((workdir / "typed").resolve())
    for name in (MESH_FILE, GRID_FILE, CHECKPOINT_FILE):
        assert (workdir / "typed" / name).is_file(), name
    # empty path: the map_dir parameter, as the Trigger alias ~/save_map
    response = h.call("save_map_as", SaveMap)
    assert response.success and response.path == str((workdir / "maps").resolve())

    assert h.call("reset").success
    h.wait_status(lambda s: s["frames_integrated"] == 0, 30, "an empty map")
    response = h.call("load_map_from", LoadMap, LoadMap.Request(path=str(workdir / "typed")))
    assert response.success, response.message
    assert response.path == str((workdir / "typed" / CHECKPOINT_FILE).resolve())
    assert response.frames_integrated == frames
    h.wait_status(lambda s: s["frames_integrated"] == frames, 30, "the loaded map")
    # a checkpoint file is accepted too; a missing map is refused and the map kept
    checkpoint = str(workdir / "maps" / CHECKPOINT_FILE)
    assert h.call("load_map_from", LoadMap, LoadMap.Request(path=checkpoint)).success
    missing = workdir / "no_such_map"
    response = h.call("load_map_from", LoadMap, LoadMap.Request(path=str(missing)))
    assert not response.success and str(missing) in response.message
    assert response.path == "" and response.frames_integrated == 0
    assert h.status()["frames_integrated"] == frames


def test_load_map_on_start(mapper_run, tmp_path) -> None:
    saved = mapper_run.workdir / "typed"
    frames = Mapper.load(saved / CHECKPOINT_FILE).frames_integrated
    domain = next_domain_id()
    proc = Process(mapper_command(VENV_BIN, extra={"load_map_on_start": str(saved),
                                                   "status_rate_hz": "20.0"}),
                   child_env(domain, tmp_path / "log"), tmp_path / "mapper.log", cwd=tmp_path)
    harness = Harness(domain)
    try:
        harness.wait_status(lambda s: s["frames_integrated"] == frames, 60,
                            "the map loaded at start")
    finally:
        harness.close()
        assert proc.stop() == 0
    refused = Process(mapper_command(VENV_BIN, extra={"load_map_on_start": str(tmp_path / "x")}),
                      child_env(domain, tmp_path / "log2"), tmp_path / "refused.log",
                      cwd=tmp_path)
    assert refused.wait(60) == 2, refused.log()[-2000:]
    assert f"cannot start: cannot load map {tmp_path / 'x'}" in refused.log()


def test_diagnostics(mapper_run) -> None:
    h = mapper_run.harness
    name = h.mapper.rpartition("/")[2]
    msgs: list[DiagnosticArray] = []
    h.node.create_subscription(DiagnosticArray, "/diagnostics", msgs.append, RELIABLE)
    array = wait_for(lambda: msgs and msgs[-1], 30, "/diagnostics")
    by_name = {s.name: s for s in array.status}
    assert set(by_name) == {f"{name}: map", f"{name}: camera camera", f"{name}: tf"}
    assert all(s.hardware_id == name for s in array.status)
    values = {kv.key: kv.value for kv in by_name[f"{name}: map"].values}
    assert int(values["frames_integrated"]) == h.status()["frames_integrated"]
    camera = by_name[f"{name}: camera camera"]
    assert camera.level in (DiagnosticStatus.OK, DiagnosticStatus.WARN)  # idle camera: WARN
    assert "integrated" in {kv.key for kv in camera.values}


def test_mesh_blocks_resent_to_every_new_subscriber(mapper_run) -> None:
    h = mapper_run.harness
    markers = mesh_state(h.wait_mesh_settled())
    expected = _sorted_triangles(np.concatenate([t for t in markers.values()]))

    first: list[Mesh] = []
    sub = h.node.create_subscription(Mesh, f"{h.mapper}/mesh_blocks", first.append, RELIABLE)
    wait_for(lambda: first and first[0].clear, 30, "a full mesh for the first subscriber")
    held = _triangles_from_blocks(first)
    np.testing.assert_array_equal(_sorted_triangles(np.concatenate(list(held.values()))),
                                  expected)
    # one leaves while another joins: the subscriber count stays 1, the newcomer still gets
    # everything
    second: list[Mesh] = []
    h.destroy_subscription(sub)
    h.node.create_subscription(Mesh, f"{h.mapper}/mesh_blocks", second.append, RELIABLE)
    wait_for(lambda: second and second[0].clear, 30, "a full mesh for the second subscriber")
    assert _triangles_from_blocks(second).keys() == held.keys()


def test_save_writes_the_mesh_of_mesh_method(mapper_run, sequence: SynthSequence) -> None:
    """With ``mesh.method: poisson`` (set, then ``~/reset``: a map parameter) ``~/save_map_as``
    writes the screened Poisson mesh of the saved map and says so, while the live mesh
    (``~/mesh``) stays the marching-cubes one. Last in this module: it changes the map."""
    h, workdir = mapper_run.harness, mapper_run.workdir
    (result,) = h.set_parameters({"mesh.method": "poisson"})
    assert result.successful, result.reason
    assert h.call("reset").success
    h.wait_status(lambda s: s["frames_integrated"] == 0 and not s["config_pending"], 30,
                  "an empty map with the new parameters")
    _stream(mapper_run, sequence, len(sequence), T0 + 10**12)
    h.wait_integrated(len(sequence))
    response = h.call("save_map_as", SaveMap, SaveMap.Request(path="poisson"))
    assert response.success, response.message
    assert "mesh: poisson" in response.message
    saved = Mapper.load(workdir / "poisson" / CHECKPOINT_FILE)
    assert saved.config.mesh.method == "poisson" and saved.frames_integrated == len(sequence)
    ply = read_ply(workdir / "poisson" / MESH_FILE)
    marching = saved.mesh()
    # the file: the Poisson mesh of the saved map (Open3D's solve may differ in the last
    # triangles between processes), far from the marching-cubes count
    assert ply.num_faces == pytest.approx(saved.export_mesh().num_faces, rel=0.01)
    assert abs(ply.num_faces - marching.num_faces) > 0.2 * marching.num_faces
    # the markers: marching cubes (counted from the messages: the status's mesh message count
    # includes ~/mesh_blocks, which an earlier test subscribed to)
    wait_for(lambda: len(mesh_vertices(mesh_state(list(h.mesh_msgs))))
             == 3 * marching.num_faces, 30, "the live marching-cubes mesh")
