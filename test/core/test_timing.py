"""recon_ros.core.timing: the three timing modes record what they promise (which frames, which
stages), never wait for the device when sampling, and never change the map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon_ros.core import ConfigError, Frame, Mapper, MapperConfig
from recon_ros.core.config import TimingConfig
from recon_ros.core.sync_audit import SyncOpCounter
from recon_ros.core.timing import TIMING_MODES, StageTimer
from test.core.test_clearing import CAM, pose, scene_depth

STAGES = ("upload", "integrate", "free_space", "esdf_carve", "bound")


def _run_frames(timer: StageTimer, frames: int) -> list[int]:
    """Frames of two stages each; returns the frames during which the timer was active."""
    active = []
    for i in range(frames):
        timer.next_frame()
        if timer.active:
            active.append(i)
        for stage in ("a", "b"):
            with timer(stage):
                pass
    return active


def _counts(timer: StageTimer) -> dict[str, int]:
    return {stage: s["count"] for stage, s in timer.summary().items()}


def _frames(n: int) -> list[Frame]:
    return [Frame(depth=scene_depth(pose(i), obstacle=True), camera=CAM, T_world_cam=pose(i),
                  stamp_ns=(i + 1) * 10**8) for i in range(n)]


def _mapper(device: str, mode: str, sample_every: int = 1) -> Mapper:
    return Mapper(MapperConfig.from_dict({
        "volume": {"voxel_size_m": 0.05, "device": device},
        "timing": {"mode": mode, "sample_every": sample_every}}))


def _blocks_by_coords(mapper: Mapper) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block coordinates, TSDF and weight of the map's blocks, in coordinate order (so that
    the storage slot each block got does not matter)."""
    vol = mapper.volume
    n = vol.num_blocks
    coords = vol.slot_coords(torch.arange(n, device=mapper.device)).cpu().numpy()
    order = np.lexsort(coords.T[::-1])
    return (coords[order], vol.tsdf[:n].cpu().numpy()[order],
            vol.weight[:n].cpu().numpy()[order])


# ------------------------------------------------------------------------------ StageTimer
def test_off_records_nothing() -> None:
    timer = StageTimer("cpu", "off")
    assert _run_frames(timer, 5) == []
    with timer("outside_a_frame"):
        pass
    assert timer.summary() == {} and not timer.samples


@pytest.mark.parametrize("sample_every", [1, 3, 4])
def test_sampled_times_frames_0_n_2n_with_all_their_stages(sample_every: int) -> None:
    timer = StageTimer("cpu", "sampled", sample_every)
    with timer("before_first_frame"):  # counts as frame 0's
        pass
    active = _run_frames(timer, 10)
    assert active == list(range(0, 10, sample_every))
    assert _counts(timer) == {"before_first_frame": 1, "a": len(active), "b": len(active)}


def test_sampling_goes_on_across_clear() -> None:
    """clear() forgets the durations, not the frame count."""
    timer = StageTimer("cpu", "sampled", 4)
    _run_frames(timer, 6)  # frames 0..5: 0 and 4 timed
    timer.clear()
    assert timer.summary() == {}
    assert _run_frames(timer, 6) == [2]  # frames 6..11: only 8 timed
    assert _counts(timer) == {"a": 1, "b": 1}


def test_every_stage_records_every_frame() -> None:
    timer = StageTimer("cpu", "every_stage")
    assert _run_frames(timer, 7) == list(range(7))
    assert _counts(timer) == {"a": 7, "b": 7}
    summary = timer.summary()["a"]
    assert set(summary) == {"count", "median_ms", "mean_ms", "p95_ms", "total_ms"}
    assert summary["total_ms"] >= summary["median_ms"] >= 0.0


def test_timer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="not one of"):
        StageTimer("cpu", "always")
    with pytest.raises(ValueError, match="must be >= 1"):
        StageTimer("cpu", "sampled", 0)


class _FakeEvent:
    """Stands in for ``torch.cuda.Event``: recorded at a fake clock, completed by the test."""

    clock_ms = 0.0
    made: list[_FakeEvent] = []

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.t_ms: float | None = None
        self.done = False
        _FakeEvent.made.append(self)

    def record(self, stream: object = None) -> None:
        self.t_ms = _FakeEvent.clock_ms

    def query(self) -> bool:
        return self.done

    def elapsed_time(self, end: _FakeEvent) -> float:
        assert self.done and end.done, "read before completion (would block)"
        return end.t_ms - self.t_ms


def test_sampled_on_cuda_uses_events_read_once_complete(monkeypatch) -> None:
    """The CUDA path on any machine: events on the current stream, no synchronisation, and
    summary() reads only the pairs whose end event has completed."""
    def no_sync(*args: object) -> None:
        raise AssertionError("torch.cuda.synchronize called in sampled mode")

    _FakeEvent.made = []
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "synchronize", no_sync)
    timer = StageTimer(torch.device("cuda"), "sampled", 2)
    for i in range(4):  # frames 0 and 2 timed
        timer.next_frame()
        with timer("integrate"):
            _FakeEvent.clock_ms += 3.0
    assert len(_FakeEvent.made) == 4 and not timer.samples
    assert timer.summary() == {}  # nothing completed yet
    for event in _FakeEvent.made[:2]:  # frame 0's pair completes
        event.done = True
    assert timer.summary()["integrate"]["count"] == 1
    assert timer.samples["integrate"] == [3.0]
    for event in _FakeEvent.made[2:]:
        event.done = True
    assert timer.summary()["integrate"]["count"] == 2
    timer.next_frame()  # frame 4: recorded, then forgotten by clear() while pending
    with timer("integrate"):
        pass
    timer.clear()
    for event in _FakeEvent.made[4:]:
        event.done = True
    assert timer.summary() == {}


# ------------------------------------------------------------------------------ config
def test_timing_config_defaults_and_validation() -> None:
    cfg = MapperConfig()
    assert cfg.timing == TimingConfig("sampled", 10)
    assert cfg.timing.mode != "every_stage"  # the node's hot path must not synchronise
    assert MapperConfig.from_dict(cfg.to_dict()) == cfg
    for mode in TIMING_MODES:
        assert MapperConfig.from_dict({"timing": {"mode": mode}}).timing.mode == mode
    with pytest.raises(ConfigError, match=r"timing.mode='always' is invalid: must be one of "
                                          r"\['off', 'sampled', 'every_stage'\]"):
        MapperConfig.from_dict({"timing": {"mode": "always"}})
    with pytest.raises(ConfigError, match="timing.sample_every=0 is invalid: must be >= 1"):
        MapperConfig.from_dict({"timing": {"sample_every": 0}})
    with pytest.raises(ConfigError, match="unknown key.*'every'.*section 'timing'"):
        MapperConfig.from_dict({"timing": {"every": 3}})


# ------------------------------------------------------------------------------ Mapper
def test_modes_time_their_frames_and_never_change_the_map(device: str) -> None:
    frames = _frames(5)
    expected = {"off": 0, "sampled": 3, "every_stage": 5}  # sampled: frames 0, 2, 4
    maps = {}
    for mode, count in expected.items():
        mapper = _mapper(device, mode, sample_every=2)
        for frame in frames:
            mapper.integrate(frame)
        grid = mapper.occupancy_grid()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)  # the test's wait, so every event has completed
        counts = {stage: s["count"] for stage, s in mapper.timer.summary().items()}
        assert counts == ({stage: count for stage in STAGES} | {"occupancy": 1} if count else {}
                          ), mode
        maps[mode] = _blocks_by_coords(mapper) + (grid.data.copy(),)
    assert maps["off"][0].shape[0] > 0
    for mode in ("sampled", "every_stage"):
        for a, b in zip(maps["off"], maps[mode]):
            assert np.array_equal(a, b), mode


def test_timing_adds_no_sync_ops() -> None:
    """The host syncs of integrate() (counted as on CUDA) are the same in every mode."""
    torch.set_num_threads(1)
    frames = _frames(3)
    ops = {}
    for mode in TIMING_MODES:
        mapper = _mapper("cpu", mode)
        with SyncOpCounter("cuda") as counter:
            for frame in frames:
                mapper.integrate(frame)
        ops[mode] = counter.ops
        assert counter.total > 0, mode  # the audit sees the path
    assert ops["sampled"] == ops["off"] == ops["every_stage"]


def test_sampled_mode_never_synchronizes_cuda(device: str, monkeypatch) -> None:
    if not device.startswith("cuda"):
        pytest.skip("needs --device cuda:N (the CPU path is covered with fake events above)")
    calls = []
    real_sync = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: calls.append(a))
    frames = _frames(4)
    mapper = _mapper(device, "sampled", sample_every=2)
    for frame in frames:
        mapper.integrate(frame)
    mapper.timer.summary()  # reading the events does not wait either
    assert calls == []
    every = _mapper(device, "every_stage")
    every.integrate(frames[0])
    assert len(calls) >= 2 * len(STAGES)  # the patch sees the synchronising mode
    real_sync(device)
    summary = mapper.timer.summary()
    assert {s["count"] for s in summary.values()} == {2}, summary
    assert all(s["median_ms"] >= 0.0 for s in summary.values())
