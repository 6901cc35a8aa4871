"""Durable atomic writes: what was renamed into place survives a power loss, not just a killed process.

Part of molt-av (Apache-2.0). Files are written under a temporary name and renamed (``os.replace``), so a reader
never sees half a file; :func:`replace_durably` also flushes the file's data to disk before the rename and the
directory entry after it (``fsync``), so a crash of the machine cannot leave the new name pointing at missing
data. Used for training checkpoints, feature-cache chunks and prepared data sets; :func:`atomic_json` writes a JSON
record (a prepared index, a cache manifest) that way.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

__all__ = ["atomic_json", "fsync_path", "replace_durably"]


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
