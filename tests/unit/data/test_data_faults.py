"""Faults of the data verbs (synth, prepare): one line naming the directory and the fix, exit code 2, and nothing
of the user's lost or left half-written.

One row per case, driven through ``molt`` like ``tests/unit/app/test_bad_input.py``: data sets that are not the
verb's to replace, a full disk (the free-space check and the block reservation), read-only data roots."""
import errno
import os
import shutil

import numpy as np
import pytest

from helpers import refused_in_one_line
from molt.data import files
from molt.data.files import StorageError, check_free_space, format_bytes
from molt.data.prepared import INDEX_FILE, OWNER_FILE
from molt.data.synthetic import SYNTH_MARKER
from molt.tasks.ave.prepared import prepare_ave
from molt.tasks.ave.synthetic import generate_ave

FOREIGN_ANNOTATIONS = "Category&VideoID&Quality&StartTime&EndTime\nChurch bell&RUhOCu3LNXM&good&0&10\n"


def _chmod_protects(folder) -> bool:
    """Whether a folder without write permission refuses a new file (not for root, nor on some file systems)."""
    probe = folder / "probe"
    try:
        probe.write_text("x")
    except PermissionError:
        return True
    probe.unlink()
    return False


@pytest.fixture(scope="module")
def world(ave_data, tmp_path_factory):
    """The session's generated AVE root (``data``, prepared), a copy of it without its prepared set (``copy``), a
    folder holding a real-looking data set (``foreign``) and a read-only copy (``read_only``)."""
    base = tmp_path_factory.mktemp("data_faults")
    paths = {"data": ave_data, "copy": base / "copy", "foreign": base / "foreign", "read_only": base / "read_only"}
    shutil.copytree(ave_data, paths["copy"], ignore=shutil.ignore_patterns("prepared"))
    paths["foreign"].mkdir()
    (paths["foreign"] / "Annotations.txt").write_text(FOREIGN_ANNOTATIONS)
    shutil.copytree(ave_data, paths["read_only"], ignore=shutil.ignore_patterns("prepared"))
    paths["read_only"].chmod(0o555)
    yield paths
    paths["read_only"].chmod(0o755)


def _disk_full(monkeypatch):
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1000})())


def _no_blocks_left(monkeypatch):
    def fallocate(descriptor, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "posix_fallocate", fallocate)


def _no_room_for_clips(monkeypatch):
    def write_clip(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("molt.tasks.ave.synthetic.write_clip", write_clip)


def _cases():
    copy = "{copy}"
    synth = ["synth", "ave", "--videos", "4", "--workers", "1", "--out"]
    prepare = ["prepare", "ave", "--workers", "1", "--data", copy]
    fix_prepare = "prepare where there is room and you may write (`molt prepare ave --data {copy} --out DIR`)"
    return [
        ("synth over a data set it did not write", [*synth, "{foreign}"], None,
         ["{foreign} is not empty (Annotations.txt)", "not written by `molt synth`", "another --out",
          "--overwrite"]),
        ("synth over its own set with another seed", [*synth, "{data}", "--seed", "5"], None,
         ["{data} holds a synthetic set generated with other options", "seed 0, now 5", "--overwrite"]),
        ("synth onto a full disk", [*synth, "{copy}/more"], _no_room_for_clips,
         ["molt synth could not write into {copy}/more: the disk holding {copy}/more is full",
          "choose another --out (or free space), then run the command again"]),
        ("prepare into a folder that is not a prepared set", [*prepare, "--out", "{foreign}"], None,
         ["{foreign} is not empty and holds no prepared set", "--out NEW_DIR", "--overwrite"]),
        ("prepare into the prepared set of another root", [*prepare, "--out", "{data}/prepared"], None,
         ["{data}/prepared holds a prepared set of another source", "source_root", "--out NEW_DIR",
          "--overwrite"]),
        ("prepare onto a full disk", prepare, _disk_full,
         ["preparing {copy} needs", "MB in {copy}/prepared, only 1.0 kB free", fix_prepare]),
        ("prepare when the disk fills before the arrays are allocated", prepare, _no_blocks_left,
         ["cannot write {copy}/prepared/frames.npy.partial", "the disk holding {copy}/prepared is full",
          fix_prepare]),
        ("prepare a read-only data root", ["prepare", "ave", "--workers", "1", "--data", "{read_only}"], "read-only",
         ["cannot write the prepared set into {read_only}/prepared", "{read_only} is read-only",
          "molt prepare ave --data {read_only} --out DIR", "pass the prepared DIR as --data"]),
        ("train on a read-only data root", ["train", "ave", "--data", "{read_only}", "--out", "{copy}/runs"],
         "read-only",
         ["{read_only} is read-only", "molt prepare ave --data {read_only} --out DIR",
          "pass the prepared DIR as --data"]),
    ]


def _tree(folder):
    """Every file under ``folder`` with its size and modification time (what a refused verb must not touch)."""
    return {path: (path.stat().st_size, path.stat().st_mtime_ns) for path in sorted(folder.rglob("*"))
            if path.is_file()}


@pytest.mark.parametrize("name, argv, fault, expected", _cases(), ids=[case[0] for case in _cases()])
def test_data_faults_are_one_line_naming_the_directory(world, name, argv, fault, expected, caplog, capfd,
                                                       monkeypatch):
    if fault == "read-only" and not _chmod_protects(world["read_only"]):
        pytest.skip("this user writes into a read-only folder (root): tests/integration/test_data_faults.py "
                    "checks a read-only mount instead")
    if callable(fault):
        fault(monkeypatch)
    fill = {key: str(value) for key, value in world.items()}
    argv = [arg.format(**fill) for arg in argv]
    before = {key: _tree(world[key]) for key in ("data", "foreign")}
    message = refused_in_one_line(argv, caplog, capfd)
    for part in expected:
        assert part.format(**fill) in message, (name, message)
    # nothing of the user's replaced, nothing half-written left
    assert {key: _tree(world[key]) for key in ("data", "foreign")} == before
    assert (world["foreign"] / "Annotations.txt").read_text() == FOREIGN_ANNOTATIONS
    assert not list(world["copy"].rglob("*.partial"))
    assert not (world["copy"] / "prepared" / INDEX_FILE).exists()


def test_sizes_are_written_in_units_that_show_them():
    assert format_bytes(15_000_000) == "15.0 MB"
    assert format_bytes(2_500_000_000) == "2.50 GB"
    assert format_bytes(1000) == "1.0 kB"


def test_free_space_check(tmp_path, monkeypatch):
    check_free_space(tmp_path, 1, what="writing", fix="none needed")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 3_000_000})())
    with pytest.raises(StorageError, match=r"writing needs 15.0 MB in .*, only 3.0 MB free: free some") as caught:
        check_free_space(tmp_path, 15_000_000, what="writing", fix="free some")
    assert caught.value.errno == errno.ENOSPC


def test_synth_again_with_the_same_options_writes_the_same_set(tmp_path):
    """Idempotent: the same generator and options into its own folder (a rerun, or the completion of a killed run)
    need no flag and give the same files."""
    options = dict(num_videos=3, seed=4, image_size=32, fps=4, workers=1, show_progress=False)
    generate_ave(tmp_path, **options)
    first = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    (tmp_path / "Annotations.txt").unlink()  # as a run killed before its last file leaves it
    generate_ave(tmp_path, **options)
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == first
    assert (tmp_path / SYNTH_MARKER).is_file()


def test_overwrite_replaces_a_set_and_its_stale_prepared_copy(tmp_path):
    root = tmp_path / "root"
    generate_ave(root, num_videos=3, seed=4, image_size=32, fps=4, workers=1, show_progress=False)
    prepare_ave(root, root / "prepared", image_size=32, workers=1, show_progress=False)
    with pytest.raises(ValueError, match="seed 4, now 5"):
        generate_ave(root, num_videos=3, seed=5, image_size=32, fps=4, workers=1, show_progress=False)
    assert (root / "prepared" / INDEX_FILE).is_file()
    generate_ave(root, num_videos=3, seed=5, image_size=32, fps=4, workers=1, show_progress=False, overwrite=True)
    assert not (root / "prepared" / INDEX_FILE).exists()  # prepared from the old clips: prepared again on next use


def test_prepare_again_into_its_own_folder_and_overwrite(tmp_path, ave_data):
    """A prepared folder of the same root is prepared again without a flag (``molt prepare`` does that), after a
    killed run too (its partial files are removed); another folder needs ``overwrite``."""
    out = tmp_path / "prepared"
    prepare_ave(ave_data, out, image_size=32, workers=1, limit=2, show_progress=False)
    (out / "frames.npy.partial").write_bytes(b"left by a killed run")
    (out / INDEX_FILE).unlink()
    report = prepare_ave(ave_data, out, image_size=32, workers=1, limit=2, show_progress=False)
    assert len(report.stored) == 2 and not list(out.glob("*.partial"))
    assert (out / OWNER_FILE).is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    prepare_ave(ave_data, other, image_size=32, workers=1, limit=2, show_progress=False, overwrite=True)
    assert (other / INDEX_FILE).is_file() and (other / "notes.txt").read_text() == "mine"
    frames = np.load(other / "frames.npy")
    assert frames.shape[:2] == (2, 10) and np.array_equal(frames, np.load(out / "frames.npy"))
