"""The data verbs stopped or short of room for real: a killed ``molt prepare`` leaves no decoding worker behind and
its rerun is clean; SIGTERM / SIGINT stop ``molt prepare`` and ``molt extract`` with exit code 128 + the signal and
one line; a full disk and a read-only mount give one line and exit code 2 (mounts need root: skipped otherwise)."""
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from helpers import mounted_tmpfs
from molt.app.cli import main
from molt.data.prepared import INDEX_FILE
from molt.features import DONE_FILE, FeatureCache

# `molt` with a slow decoder (as on a slow disk), so that a run lasts long enough to be stopped part-way
SLOW_MOLT = '''
import sys
import time

from molt.tasks.ave import prepared

decode = prepared.decode_pcm16


def slow_decode(job):
    time.sleep(0.2)
    return decode(job)


prepared.decode_pcm16 = slow_decode
from molt.app.cli import main

sys.exit(main(sys.argv[1:]))
'''
ARRAYS = ("frames.npy", "audio.npy", "labels.npy")


@pytest.fixture(scope="module")
def root(ave_prepared_40):
    """The generated 40-clip AVE root; its own prepared set (``root/prepared``) is the reference."""
    return ave_prepared_40.parent


def _until(condition, what: str, limit: float = 120.0) -> None:
    """Poll ``condition`` until it holds (a bounded wait, not a timing assumption)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def _start_prepare(root, out, tmp_path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """``molt prepare ave --workers 2`` (slow decoder) started and caught decoding: its process and its workers."""
    script = tmp_path / "slow_molt.py"
    script.write_text(SLOW_MOLT)
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file, not a pipe: a surviving worker cannot hold it
        process = subprocess.Popen([sys.executable, str(script), "-q", "prepare", "ave", "--data", str(root), "--out",
                                    str(out), "--workers", "2"], stdout=subprocess.DEVNULL, stderr=stderr)
    parent = psutil.Process(process.pid)
    _until(lambda: len(parent.children(recursive=True)) >= 2 and list(out.glob("*.partial")), "decoding workers")
    return process, parent.children(recursive=True)


def _survivors(children: list[psutil.Process]) -> list[psutil.Process]:
    """Which of ``children`` are still alive after a bounded wait (killed then, not to outlive a failed test)."""
    _, alive = psutil.wait_procs(children, timeout=30)
    for process in alive:
        process.kill()
    return alive


def test_sigkill_of_prepare_leaves_no_worker_and_the_rerun_is_clean(root, tmp_path):
    out = tmp_path / "prepared"
    process, children = _start_prepare(root, out, tmp_path)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert _survivors(children) == []  # the workers died with their parent: nothing maps the partial files
    assert list(out.glob("*.partial")) and not (out / INDEX_FILE).exists()  # killed part-way
    rerun = subprocess.run([sys.executable, "-m", "molt.app.cli", "-q", "prepare", "ave", "--data", str(root),
                            "--out", str(out), "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(out.glob("*.partial"))
    for name in ARRAYS:
        assert np.array_equal(np.load(out / name), np.load(root / "prepared" / name)), name


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_prepare_exits_with_128_plus_the_signal_and_cleans_up(root, tmp_path, signum):
    out = tmp_path / "prepared"
    process, children = _start_prepare(root, out, tmp_path)
    process.send_signal(signum)
    process.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 128 + signum, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert (f"molt prepare stopped by {signal.Signals(signum).name}: its partial files are removed; run the same "
            f"command again") in lines[0]
    assert _survivors(children) == []
    assert not list(out.glob("*.partial")) and not (out / INDEX_FILE).exists()


def test_a_stopped_extract_keeps_its_chunks_and_resumes(ave_prepared_40, tmp_path):
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "molt.app.cli", "-q", "extract", "ave", "--data", str(ave_prepared_40), "--out",
               str(cache), "--splits", "val", "--batch-size", "1", "--chunk-size", "1", "--accelerator", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _until(lambda: list(cache.glob(f"val/chunk_*/{DONE_FILE}")), "the first complete chunk", limit=300)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert ("molt extract stopped by SIGTERM: the complete chunks are kept; run the same command again to resume"
            in lines[0])
    assert not list(cache.rglob("*.partial"))
    kept = sorted(path.parent.name for path in cache.glob(f"val/chunk_*/{DONE_FILE}"))
    assert kept
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(kept)} already complete" in rerun.stdout
    assert not list(cache.rglob("*.partial")) and FeatureCache(cache, "val").verify() == []


def _one_error(caplog) -> str:
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1, errors
    return errors[0]


def test_prepare_and_extract_onto_a_full_disk(root, ave_prepared_40, tmp_path, caplog, capfd):
    with mounted_tmpfs(tmp_path / "small", "size=2m") as disk:
        caplog.clear()
        assert main(["-q", "prepare", "ave", "--data", str(root), "--out", str(disk / "prepared")]) == 2
        message = _one_error(caplog)
        assert re.search(rf"needs [0-9.]+ MB in {re.escape(str(disk / 'prepared'))}, only [0-9.]+ MB free", message), \
            message
        assert f"molt prepare ave --data {root} --out DIR" in message
        assert not list(disk.rglob("*.partial"))
        caplog.clear()
        assert main(["-q", "extract", "ave", "--data", str(ave_prepared_40), "--out", str(disk / "cache"),
                     "--splits", "train", "--accelerator", "cpu", "--dtype", "float32"]) == 2
        message = _one_error(caplog)
        assert "extracting split 'train' needs" in message and " MB in " in message and "free" in message, message
        assert "0.00 GB" not in message and "--out DIR" in message
        assert not list(disk.rglob("*.partial"))
    assert "Traceback" not in capfd.readouterr().err


def test_a_read_only_data_root(root, ave_prepared_40, tmp_path, caplog, capfd):
    with mounted_tmpfs(tmp_path / "share", "size=32m") as share:
        for name in [path.name for path in root.iterdir() if path.is_file()] + ["AVE"]:
            copy = shutil.copytree if (root / name).is_dir() else shutil.copy
            copy(root / name, share / name)
        subprocess.run(["mount", "-o", "remount,ro", str(share)], check=True)
        prepare_elsewhere = [f"molt prepare ave --data {share} --out DIR", "pass the prepared DIR as --data"]
        for argv, fix in ((["prepare", "ave", "--data", str(share)], prepare_elsewhere),
                          (["train", "ave", "--data", str(share), "--out", str(tmp_path / "runs"), "--epochs", "1"],
                           prepare_elsewhere),
                          (["extract", "ave", "--data", str(ave_prepared_40), "--out", str(share / "cache"),
                            "--splits", "val", "--accelerator", "cpu"],
                           ["extract into another directory (--out DIR)"])):
            caplog.clear()
            assert main(["-q", *argv]) == 2, argv
            message = _one_error(caplog)
            assert f"{share} is read-only" in message, message
            assert all(part in message for part in fix), message
    assert "Traceback" not in capfd.readouterr().err
