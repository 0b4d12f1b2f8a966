"""Per-stage timing that can be switched off, sampled, or made exact on asynchronous devices.

Modes (``timing.mode`` in the config):

- ``off``: a stage is not timed at all (no clock, no device synchronisation).
- ``sampled``: the stages of one frame in ``sample_every`` are timed, frames 0, N, 2N, ... as
  counted by :meth:`StageTimer.next_frame`. On CUDA a stage records a pair of timing events on
  the current stream and the host never waits: the pairs are read by
  :meth:`StageTimer.summary` once their end event has completed (GPU time between the two).
  On the CPU, which has no queue of work, the wall clock is exact and costs nothing.
- ``every_stage``: every stage of every frame, wall clock, the device synchronised before and
  after each stage: exact figures for benchmarks, at two host waits per stage on CUDA.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import numpy as np
import torch

#: Values of ``StageTimer.mode`` (and of the config's ``timing.mode``).
TIMING_MODES = ("off", "sampled", "every_stage")


class StageTimer:
    """Records the duration of named stages, in milliseconds.

    Args:
        device: the device the stages run on (CUDA: events or synchronisation, see the
            module docstring).
        mode: ``off``, ``sampled`` or ``every_stage``.
        sample_every: in ``sampled`` mode, one frame in this many is timed, frames.

    Attributes:
        samples: ``{stage: [ms, ...]}`` of the durations read so far (in ``sampled`` mode on
            CUDA, :meth:`summary` reads the completed events into it).
        frame: index of the current frame (see :meth:`next_frame`); -1 before the first,
            whose stages count as frame 0's.
    """

    def __init__(self, device: torch.device | str = "cpu", mode: str = "every_stage",
                 sample_every: int = 1) -> None:
        if mode not in TIMING_MODES:
            raise ValueError(f"timing mode {mode!r} is not one of {list(TIMING_MODES)}")
        if sample_every < 1:
            raise ValueError(f"sample_every={sample_every} must be >= 1")
        self.device = torch.device(device)
        self.mode = mode
        self.sample_every = sample_every
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.frame = -1
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    def next_frame(self) -> None:
        """Start the next frame: stages from now on belong to it (``Mapper.integrate`` calls
        this first)."""
        self.frame += 1

    @property
    def active(self) -> bool:
        """Whether a stage started now is timed."""
        if self.mode == "sampled":
            return max(self.frame, 0) % self.sample_every == 0
        return self.mode == "every_stage"

    def __call__(self, stage: str) -> AbstractContextManager[None]:
        """A context manager timing its block as ``stage`` (a no-op when not :attr:`active`)."""
        if not self.active:
            return nullcontext()
        if self.mode == "sampled" and self.device.type == "cuda":
            return self._events(stage)
        return self._wall_clock(stage, synchronize=self.mode == "every_stage")

    @contextmanager
    def _wall_clock(self, stage: str, synchronize: bool) -> Iterator[None]:
        """Wall clock around the block; with ``synchronize``, CUDA work queued before and
        inside it is waited for, so the figure is the block's whole cost."""
        sync = synchronize and self.device.type == "cuda"
        if sync:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                torch.cuda.synchronize(self.device)
            self.samples[stage].append((time.perf_counter() - start) * 1e3)

    @contextmanager
    def _events(self, stage: str) -> Iterator[None]:
        """CUDA timing events on the current stream around the block, read later."""
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record(torch.cuda.current_stream(self.device))
        try:
            yield
        finally:
            end.record(torch.cuda.current_stream(self.device))
            self._pending.append((stage, start, end))

    def _read_events(self) -> None:
        """Move the durations of the event pairs whose end has completed into
        :attr:`samples`; the others stay pending (this never waits for the device)."""
        waiting = []
        for stage, start, end in self._pending:
            if end.query():
                self.samples[stage].append(start.elapsed_time(end))
            else:
                waiting.append((stage, start, end))
        self._pending = waiting

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {count, median_ms, mean_ms, p95_ms, total_ms}}`` of the timed stages."""
        self._read_events()
        out = {}
        for stage, values in self.samples.items():
            a = np.asarray(values)
            out[stage] = {"count": int(a.size), "median_ms": float(np.median(a)),
                          "mean_ms": float(a.mean()), "p95_ms": float(np.percentile(a, 95)),
                          "total_ms": float(a.sum())}
        return out

    def clear(self) -> None:
        """Forget every duration, read or pending (the frame count goes on)."""
        self.samples.clear()
        self._pending.clear()
