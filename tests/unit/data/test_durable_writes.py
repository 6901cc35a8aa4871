"""Checkpoints, feature-cache chunks and prepared data are fsynced before and after their atomic rename."""
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
    synced = Path(events[0][1])
    assert synced.parent == tmp_path and synced.name.startswith(".index.json.") and synced.name.endswith(".tmp")
    assert events[1][1] == str(tmp_path / "index.json")
    assert events[2][1] == str(tmp_path)
    assert (tmp_path / "index.json").read_text().startswith("{")
    assert [path.name for path in tmp_path.iterdir()] == ["index.json"]   # no temporary file left


def test_writers_of_the_same_file_at_once_each_use_their_own_temporary_file(tmp_path):
    # the ranks of a distributed extraction all write the cache's manifest when they find none
    def write(index):
        for _ in range(20):
            atomic_json(tmp_path / "manifest.json", {"writer": index})

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, range(4)))          # re-raises any writer's error
    assert json.loads((tmp_path / "manifest.json").read_text())["writer"] in range(4)
    assert [path.name for path in tmp_path.iterdir()] == ["manifest.json"]


def test_no_checkpoint_cache_or_prepared_writer_renames_without_syncing():
    # the application (checkpoints, results), the feature cache, saved adapters and prepared data; generated
    # synthetic sets are not in the list: a crashed generator is simply rerun
    writers = sorted({*SRC.glob("app/**/*.py"), *SRC.glob("features/*.py"), *SRC.glob("checkpoints*.py"),
                      *SRC.glob("methods/*.py"), SRC / "model.py", SRC / "data" / "prepared.py",
                      *SRC.glob("tasks/*/prepared.py")})
    assert SRC / "app" / "train.py" in writers and len(writers) > 20
    plain = [str(path.relative_to(SRC)) for path in writers if "os.replace(" in path.read_text()]
    assert plain == []
