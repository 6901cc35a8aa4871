"""Durable atomic writes, and reading the text files a user did not write (annotation, split and config files).

Writes: what was renamed into place survives a power loss, not just a killed process.

Part of molt-av (Apache-2.0). Files are written under a temporary name and renamed (``os.replace``), so a reader
never sees half a file; :func:`replace_durably` also flushes the file's data to disk before the rename and the
directory entry after it (``fsync``), so a crash of the machine cannot leave the new name pointing at missing
data. Used for training checkpoints, feature-cache chunks and prepared data sets; :func:`atomic_json` writes a JSON
record (a prepared index, a cache manifest) that way.

Reads: :func:`read_text` decodes UTF-8 with or without a byte-order mark and any line ending (``\\n``, ``\\r\\n``,
``\\r``, as Windows editors write them); :func:`read_json` parses JSON; both name the file, the line and the fix in
a ``ValueError``. :func:`check_name` keeps a name read from such a file (a video id, a clip name) from leading
outside the folder it is looked up in.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

#: the fix that ends a message about one line of a file a user did not write
LINE_FIX = "correct or remove that line"

__all__ = ["LINE_FIX", "atomic_json", "fsync_path", "replace_durably", "read_text", "read_lines", "read_names",
           "read_json", "check_name"]


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
