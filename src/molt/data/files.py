"""Durable atomic writes, and reading the text files a user did not write (annotation, split and config files).

Writes: what was renamed into place survives a power loss, not just a killed process.

Part of molt-av (Apache-2.0). Files are written under a temporary name and renamed (``os.replace``), so a reader
never sees half a file; :func:`replace_durably` also flushes the file's data to disk before the rename and the
directory entry after it (``fsync``), so a crash of the machine cannot leave the new name pointing at missing
data. Used for training checkpoints, feature-cache chunks and prepared data sets; :func:`atomic_json` writes a JSON
record (a prepared index, a cache manifest) that way.

Places that cannot take what is to be written (a full disk, a read-only share) are :class:`StorageError`: the
writers check the free space first (:func:`check_free_space`), reserve the blocks of the files they fill through a
memory map (:func:`preallocate`: a full disk then fails at allocation instead of killing the process with SIGBUS
at a write) and turn the operating system's errors into one sentence (:func:`storage_error`).

Reads: :func:`read_text` decodes UTF-8 with or without a byte-order mark and any line ending (``\\n``, ``\\r\\n``,
``\\r``, as Windows editors write them); :func:`read_json` parses JSON; both name the file, the line and the fix in
a ``ValueError``. :func:`check_name` keeps a name read from such a file (a video id, a clip name) from leading
outside the folder it is looked up in.
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
           "preallocate", "storage_error", "READ_ONLY_ERRNOS", "LINE_FIX", "read_text", "read_lines", "read_names",
           "read_json", "check_name", "check_output_dir"]

# what writing into a read-only place fails with: EROFS (read-only file system), EACCES / EPERM (permissions)
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
#: the fix that ends a message about one line of a file a user did not write
LINE_FIX = "correct or remove that line"


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


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> None:
    """A ``ValueError`` naming ``flag`` when nothing could be written to ``path`` (an output directory, created
    when missing), checked before any work: the nearest existing folder on its path is a file, or it is read-only or
    without permission. Creates nothing."""
    path = Path(path)
    folder = path.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: {folder} is a file, not a directory; name a directory (it is created when "
                         f"missing) or move the file away")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {folder} is not writable (read-only or no permission); choose a writable "
                         f"directory with {flag}, or make it writable")


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


def read_text(path: str | os.PathLike, *, what: str = "file") -> str:
    """The text of a UTF-8 file (a byte-order mark dropped, line endings made ``\\n``); a ``ValueError`` naming the
    file, the line and the byte when it is not UTF-8, a ``FileNotFoundError`` naming ``what`` when it is missing."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: expected a {what}, found a directory") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        offset = error.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw.count(b"\n", 0, offset) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset}); "
                         f"save the {what} as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_lines(path: str | os.PathLike, *, what: str = "file") -> list[str]:
    """The lines of :func:`read_text` (without their endings)."""
    return read_text(path, what=what).split("\n")


def read_names(path: str | os.PathLike, *, what: str = "file") -> list[str]:
    """The names of a file holding one a line (``categories.txt``, ``ans_vocab.txt``; surrounding spaces and blank
    lines skipped); a ``ValueError`` naming the line of a name given twice."""
    names: dict[str, int] = {}
    for number, line in enumerate(read_lines(path, what=what), start=1):
        name = line.strip()
        if not name:
            continue
        if name in names:
            raise ValueError(f"{path}:{number}: {name!r} already listed on line {names[name]}; remove one of the two "
                             f"lines")
        names[name] = number
    return list(names)


def read_json(path: str | os.PathLike, *, what: str = "JSON file", fix: str = "") -> Any:
    """The JSON value of a UTF-8 file; a ``ValueError`` naming the file, line and column (and ``fix``, or: repair
    or replace it) when it is not valid JSON."""
    path = Path(path)
    text = read_text(path, what=what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg}); "
                         f"{fix or f'repair or replace the {what}'}") from None


def check_name(name: str, where: str, what: str = "name") -> str:
    """``name`` when it is one plain path component (a file or folder name: no ``/`` or ``\\``, not ``.`` or ``..``,
    no NUL, no drive), so that ``folder / name`` stays inside ``folder``; else a ``ValueError`` naming ``where``
    (a file and line)."""
    if (not name or name in (".", "..") or any(c in name for c in "/\\\0") or
            (len(name) > 1 and name[1] == ":")):
        raise ValueError(f"{where}: {what} {name!r} is not a plain file name (it would point outside the data "
                         f"folder); {LINE_FIX}")
    return name
