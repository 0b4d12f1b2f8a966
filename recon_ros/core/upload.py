"""Host -> device transfers of frames that do not make the host wait (pinned staging buffers).

A copy from ordinary (pageable) host memory to a CUDA device blocks the calling thread until
the copy has run, behind everything already queued on the stream. Copying the array into a
page-locked (pinned) buffer first and then uploading with ``non_blocking=True`` returns at once.
A pinned buffer is reused only after the upload that read it has completed (an event per
buffer; a ring of :data:`RING` buffers per name, so the wait is for a transfer queued frames
ago). On the CPU the arrays are used as they are (no copy).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["HostStaging", "RING"]

#: Pinned buffers per name.
RING = 3


class HostStaging:
    """Uploads numpy arrays to ``device``, through pinned buffers when it is a CUDA device.

    Args:
        device: the target device.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._pinned = self.device.type == "cuda"
        self._rings: dict[str, list[tuple[torch.Tensor, torch.cuda.Event]]] = {}
        self._next: dict[str, int] = {}

    def upload(self, name: str, array: np.ndarray | torch.Tensor, dtype: torch.dtype
               ) -> torch.Tensor:
        """``array`` as a ``dtype`` tensor on the device. ``name`` identifies the stream of
        arrays (e.g. ``"depth"``); buffers are reallocated when its shape or dtype changes.
        On the CPU the result may share memory with ``array``; a tensor already on a
        device is converted there."""
        if isinstance(array, torch.Tensor) and array.device.type != "cpu":
            return array.to(self.device, dtype)
        if isinstance(array, np.ndarray):  # (read-only buffers, e.g. decoded messages: copied)
            array = torch.as_tensor(np.require(array, requirements=("C", "W")))
        host = array.contiguous().to(dtype)
        if not self._pinned:
            return host
        ring = self._rings.setdefault(name, [])
        i = self._next.get(name, 0)
        self._next[name] = (i + 1) % RING
        if i >= len(ring) or ring[i][0].shape != host.shape or ring[i][0].dtype != dtype:
            buffer = torch.empty(host.shape, dtype=dtype, pin_memory=True)
            entry = (buffer, torch.cuda.Event())
            ring[i:i + 1] = [entry]
        buffer, done = ring[i]
        done.synchronize()  # the upload that last read this buffer (RING frames ago)
        buffer.copy_(host)
        out = buffer.to(self.device, non_blocking=True)
        done.record(torch.cuda.current_stream(self.device))
        return out
