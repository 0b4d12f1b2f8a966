"""Counting the torch ops that make the host wait for a CUDA device, on any device.

On CUDA, an op whose result size or value the host needs before it can go on (``.item()``,
``nonzero``, boolean-mask indexing, ``unique``, a device -> host copy, ...) blocks the Python
thread until the GPU has finished everything queued before it: the GPU then idles while Python
issues the next ops. :class:`SyncOpCounter` records, under a ``TorchDispatchMode``, every such
op the code under it issues, so a CPU test can hold the per-frame count of a GPU code path
(the ops are the same on every device; only their cost differs).

What counts (:func:`sync_reason`):

- ``aten._local_scalar_dense``: ``.item()``, ``int()`` / ``float()`` / ``bool()`` of a tensor;
- ``aten.is_nonzero``, ``aten.equal``;
- ``aten.nonzero`` (not ``nonzero_static``), ``masked_select``, every ``unique`` variant;
- ``aten.index`` / ``index_put`` with a boolean index (a mask: its size depends on the data);
- ``aten.repeat_interleave`` without ``output_size``; ``bincount`` (its length is the data's
  max);
- ``aten._linalg_check_errors`` (``linalg.inv`` and friends with error checking);
- copies to the CPU (``aten._to_copy`` / ``copy_`` onto a CPU tensor from a tensor of the
  audited device, which on CPU is every such copy, so CPU -> CPU copies are not counted:
  only ops whose source is on ``device``);
- ``Tensor.tolist()`` of a CPU tensor (it reads memory without dispatching an op; on CUDA it
  copies to the host first, which the previous rule counts).
"""

from __future__ import annotations

import traceback
from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["SyncOpCounter", "sync_reason"]

_ALWAYS = {
    "aten._local_scalar_dense": "item/int/bool of a tensor",
    "aten.is_nonzero": "bool of a tensor",
    "aten.equal": "torch.equal",
    "aten.nonzero": "nonzero",
    "aten.masked_select": "masked_select",
    "aten._unique": "unique",
    "aten._unique2": "unique",
    "aten.unique_dim": "unique",
    "aten.unique_consecutive": "unique",
    "aten.bincount": "bincount",
    "aten._linalg_check_errors": "linalg error check",
}


def _is_mask(index: Any) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


def sync_reason(op_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Why the op ``op_name`` (``aten.<name>``, without overload) with these arguments makes
    the host wait for a CUDA device, or None if it does not. Copies are handled by
    :class:`SyncOpCounter` (they depend on the devices involved)."""
    if op_name in _ALWAYS:
        return _ALWAYS[op_name]
    if op_name in ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"):
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(_is_mask(i) for i in indices if i is not None):
            return "boolean-mask indexing"
    if op_name == "aten.repeat_interleave" and kwargs.get("output_size") is None:
        return "repeat_interleave without output_size"  # (output_size is keyword-only)
    return None


class SyncOpCounter(TorchDispatchMode):
    """Records the ops that would make the host wait for ``device`` (see the module
    docstring), with the reason, while the ``with`` block runs.

    Attributes:
        ops: ``Counter`` of ``"<aten op>: <reason>"``.
        sites: ``Counter`` of ``"<file>:<line> <function>"``, the innermost frame of the
            ``recon_ros`` package that issued each recorded op (with ``sites=True``).
        dispatched: every op dispatched while the block ran, syncing or not (each is at
            least one kernel launch on a GPU).
    """

    def __init__(self, device: torch.device | str, sites: bool = False) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.ops: Counter[str] = Counter()
        self.sites: Counter[str] = Counter()
        self._record_sites = sites
        self.dispatched = 0
        self._tolist = _ToListWatcher(self)

    def __enter__(self) -> "SyncOpCounter":
        self._tolist.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._tolist.__exit__(*exc)

    def record(self, op: str) -> None:
        """Count one sync op (and its package line when sites are recorded)."""
        self.ops[op] += 1
        if self._record_sites:
            self.sites[_package_site()] += 1

    @property
    def total(self) -> int:
        """How many sync ops were recorded."""
        return sum(self.ops.values())

    def _from_device(self, tensor: Any) -> bool:
        return isinstance(tensor, torch.Tensor) and tensor.device.type == self.device.type

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        self.dispatched += 1
        name = f"aten.{func._schema.name.split('::')[-1]}"
        reason = sync_reason(name, args, kwargs)
        if reason is None and self.device.type != "cpu":
            if name == "aten._to_copy" and self._from_device(args[0]) \
                    and str(kwargs.get("device", "")) == "cpu":
                reason = "copy to the host"
            elif name == "aten.copy_" and args[0].device.type == "cpu" \
                    and self._from_device(args[1]):
                reason = "copy to the host"
        if reason is not None:
            self.record(f"{name}: {reason}")
        return func(*args, **kwargs)


class _ToListWatcher(TorchFunctionMode):
    """Counts ``Tensor.tolist()`` of CPU tensors for a :class:`SyncOpCounter` (see the module
    docstring): it dispatches no op the dispatch mode could see."""

    def __init__(self, counter: SyncOpCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if func is torch.Tensor.tolist and args[0].device.type == "cpu":
            self.counter.record("Tensor.tolist: read on the host")
        return func(*args, **(kwargs or {}))


#: Modules whose reads are reported at their caller's line (this one; the compaction helper,
#: whose one read serves the caller's masks).
_TRANSPARENT = ("sync_audit.py", "compaction.py")


def _package_site() -> str:
    """``"<file>:<line> <function>"`` of the innermost caller in ``recon_ros`` outside
    :data:`_TRANSPARENT`, or ``"?"``."""
    for frame in reversed(traceback.extract_stack()):
        if "recon_ros" in frame.filename and not frame.filename.endswith(_TRANSPARENT):
            path = frame.filename[frame.filename.rindex("recon_ros"):]
            return f"{path}:{frame.lineno} {frame.name}"
    return "?"
