"""Per-stage wall-clock timing that is honest on asynchronous devices (CUDA is synchronized)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


class StageTimer:
    """Records the duration of named stages, in milliseconds.

    Args:
        device: the device whose queued work must finish before a stage's clock stops.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.samples: dict[str, list[float]] = defaultdict(list)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.samples[stage].append((time.perf_counter() - start) * 1e3)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {count, median_ms, mean_ms, p95_ms, total_ms}}``."""
        out = {}
        for stage, values in self.samples.items():
            a = np.asarray(values)
            out[stage] = {"count": int(a.size), "median_ms": float(np.median(a)),
                          "mean_ms": float(a.mean()), "p95_ms": float(np.percentile(a, 95)),
                          "total_ms": float(a.sum())}
        return out

    def clear(self) -> None:
        self.samples.clear()
