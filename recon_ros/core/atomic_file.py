"""Crash-safe file replacement: write under a temporary name beside the target, flush it to
disk, rename it onto the target, flush the directory.

A file written through :func:`atomic_path` holds, after a crash or SIGKILL at any instant (and,
on file systems that honour ``fsync``, after a power cut), either its previous content or the
complete new one, never a torn mix. :func:`exchange_paths` swaps two whole directory trees in
one step where the platform can (Linux ``renameat2(RENAME_EXCHANGE)``);
``recon_ros.io.map_files.replace_directory`` builds map directories with both.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

__all__ = ["atomic_path", "exchange_paths", "fsync_dir", "fsync_file", "is_temporary_name"]

PathLike = str | os.PathLike[str]

#: Temporary names are ``.<stem>.tmp-<pid>-<8 hex><suffix>``: hidden, and ending like the target,
#: since writers such as Open3D and OpenCV choose the file format by the extension.
_TEMPORARY_NAME = re.compile(r"\..*\.tmp-\d+-[0-9a-f]{8}(\.[^.]*)?")

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
#: errno values by which renameat2 says the kernel or the file system cannot exchange.
_EXCHANGE_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


def is_temporary_name(name: str) -> bool:
    """Whether a file name is one :func:`atomic_path` writes to (left behind by a crash)."""
    return _TEMPORARY_NAME.fullmatch(name) is not None


def fsync_file(path: PathLike) -> None:
    """Flush a file's content to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: PathLike) -> None:
    """Flush a directory's entries (new names, renames) to disk; nothing where directories
    cannot be opened (Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for the ``with`` block to write the new content to.

    When the block ends normally, the file is flushed to disk and renamed onto ``path`` (then
    the directory is flushed): ``path`` switches from its old content to the complete new one
    in one step. When the block raises (or is interrupted), the temporary file is removed and
    ``path`` is untouched. The temporary file is not created here, so the writer creates it
    with the usual permissions; the parent directory must exist.

        >>> with atomic_path("map.yaml") as tmp:
        ...     tmp.write_text(text)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@cache
def _renameat2() -> Callable[..., int] | None:
    """libc's ``renameat2`` (Linux, glibc >= 2.28), None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


def exchange_paths(a: PathLike, b: PathLike) -> bool:
    """Swap two existing paths (files or whole directory trees) in one atomic step: at every
    instant each name holds one of the two complete trees.

    Returns:
        True when swapped; False, with nothing changed, where the platform or the file system
        cannot (not Linux, old glibc or kernel, a file system without ``RENAME_EXCHANGE``).

    Raises:
        OSError: any other failure (a path does not exist, no permission, ...).
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _EXCHANGE_UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))
