"""Checkpoints, feature-cache chunks and prepared data are fsynced before and after their atomic rename."""
import os

from helpers import ROOT
from molt.data import files
from molt.data.files import atomic_json

SRC = ROOT / "src" / "molt"


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
    # the application (checkpoints, results), the feature cache, saved adapters and prepared data; generated
    # synthetic sets are not in the list: a crashed generator is simply rerun
    writers = sorted({*SRC.glob("app/**/*.py"), *SRC.glob("features/*.py"), *SRC.glob("checkpoints*.py"),
                      *SRC.glob("methods/*.py"), SRC / "model.py", SRC / "data" / "prepared.py",
                      *SRC.glob("tasks/*/prepared.py")})
    assert SRC / "app" / "train.py" in writers and len(writers) > 20
    plain = [str(path.relative_to(SRC)) for path in writers if "os.replace(" in path.read_text()]
    assert plain == []
