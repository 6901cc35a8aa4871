"""Checkpoints, feature-cache chunks and prepared data are fsynced before and after their atomic rename."""
import os
from pathlib import Path

from molt.data import files
from molt.data.files import atomic_json

SRC = Path(__file__).resolve().parents[1] / "src" / "molt"


def test_replace_durably_syncs_the_file_then_renames_then_syncs_the_directory(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                       real_fsync(fd)))
    monkeypatch.setattr(files.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    atomic_json(tmp_path / "index.json", {"rows": []})
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].endswith(".index.json.tmp") and events[1][1] == str(tmp_path / "index.json")
    assert events[2][1] == str(tmp_path)
    assert (tmp_path / "index.json").read_text().startswith("{")


def test_no_checkpoint_cache_or_prepared_writer_renames_without_syncing():
    writers = [SRC / "app" / "train.py", *sorted((SRC / "features").glob("*.py")), SRC / "data" / "prepared.py",
               *sorted((SRC / "tasks").glob("*/prepared.py"))]
    plain = [str(path.relative_to(SRC)) for path in writers if "os.replace(" in path.read_text()]
    assert plain == []
