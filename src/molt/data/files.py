"""Durable atomic writes: what was renamed into place survives a power loss, not just a killed process.

Part of molt-av (Apache-2.0). Files are written under a temporary name and renamed (``os.replace``), so a reader
never sees half a file; :func:`replace_durably` also flushes the file's data to disk before the rename and the
directory entry after it (``fsync``), so a crash of the machine cannot leave the new name pointing at missing
data. Used for training checkpoints, feature-cache chunks and prepared data sets; :func:`atomic_json` writes a JSON
record (a prepared index, a cache manifest) that way.

Places that cannot take what is to be written (a full disk, a read-only share) are :class:`StorageError`: the
writers check the free space first (:func:`check_free_space`), reserve the blocks of the files they fill through a
memory map (:func:`preallocate`: a full disk then fails at allocation instead of killing the process with SIGBUS
at a write) and turn the operating system's errors into one sentence (:func:`storage_error`).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

__all__ = ["atomic_json", "fsync_path", "replace_durably", "StorageError", "format_bytes", "check_free_space",
           "preallocate", "storage_error", "READ_ONLY_ERRNOS"]

# what writing into a read-only place fails with: EROFS (read-only file system), EACCES / EPERM (permissions)
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a directory's) data to disk; directories are skipped where the OS cannot open them."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):  # directories cannot be opened on some systems (Windows)
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_durably(temporary: str | os.PathLike, path: str | os.PathLike) -> None:
    """``fsync`` ``temporary``, rename it to ``path`` (atomic on POSIX), then ``fsync`` the directory."""
    fsync_path(temporary)
    os.replace(temporary, path)
    fsync_path(Path(path).parent)


def atomic_json(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as JSON to ``path`` durably and atomically: a temporary file of its own beside it
    (``.NAME.XXXXXXXX.tmp``, so that processes writing the same file at once, such as the ranks of a distributed
    extraction, never share one), then :func:`replace_durably`."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(json.dumps(payload, indent=1))
    replace_durably(temporary, path)


class StorageError(ValueError):
    """A place cannot take what is to be written: not enough free space, or a read-only directory.

    A ``ValueError`` because the user fixes it (free space, another output directory): the command line prints it
    as one line and exits with code 2. ``errno`` is the operating system's error number (``ENOSPC``, ``EROFS``).
    """

    def __init__(self, message: str, error_number: int | None = None) -> None:
        super().__init__(message)
        self.errno = error_number


def format_bytes(size: float) -> str:
    """``size`` bytes for a person: kB below a megabyte, MB below a gigabyte, else GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if abs(size) >= scale:
            return f"{size / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{size / 1e3:.1f} kB"


def check_free_space(directory: str | os.PathLike, needed: int, *, what: str, fix: str) -> None:
    """A :class:`StorageError` (``what`` needs so much in ``directory``, so much is free, then ``fix``) when the
    file system of ``directory`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise StorageError(f"{what} needs {format_bytes(needed)} in {directory}, only {format_bytes(free)} free: "
                           f"{fix}", errno.ENOSPC)


def preallocate(path: str | os.PathLike, size: int) -> None:
    """Reserve ``size`` bytes of disk for ``path`` (``posix_fallocate``), so that writing it through a memory map
    cannot fail later; a full disk raises ``OSError(ENOSPC)`` here. A file system or platform without the call
    leaves the file as it is."""
    if not hasattr(os, "posix_fallocate"):
        return
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(descriptor)


def storage_error(error: OSError, directory: str | os.PathLike, *, what: str, fix: str) -> StorageError | None:
    """``error`` as a :class:`StorageError` when it says ``directory`` is full or read-only (``what`` could not be
    written there; ``fix`` says what to do instead), else ``None`` (another fault: let it through)."""
    if error.errno == errno.ENOSPC:
        return StorageError(f"{what}: the disk holding {directory} is full ({error.strerror}): {fix}", errno.ENOSPC)
    if error.errno in READ_ONLY_ERRNOS:
        return StorageError(f"{what}: {directory} is read-only ({error.strerror}): {fix}", error.errno)
    return None
