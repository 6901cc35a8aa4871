"""Shared pytest configuration: paper-scale checks run only with ``--runslow``; one torch thread per test process;
the tests run in a scratch directory, so the verbs' default outputs (runs/, evaluations/, predictions/, analysis/,
molt-demo/) never land in the checkout."""
import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run paper-scale checks (Swin-V2-L, full HTS-AT); minutes on a CPU")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="paper-scale check: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The tests' tiny models are latency-bound: one intra-op thread is as fast on an idle CPU and much faster on a
    shared one (OpenMP threads spin waiting for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def scratch_working_directory(tmp_path_factory):
    """Every test (and every process it starts) works in one scratch directory of the session."""
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)


@pytest.fixture(scope="session")
def ave_data(tmp_path_factory):
    """A small generated AVE set, prepared: 16 clips (8 classes, 64 px, 4 fps, 12 / 2 / 2 clips per split).

    Shared by every test of the session that needs one: tests read it and write only in their own folders.
    """
    from molt.tasks.ave.prepared import ensure_prepared
    from molt.tasks.ave.synthetic import generate_ave

    root = tmp_path_factory.mktemp("ave_data")
    generate_ave(root, num_videos=16, seed=0, image_size=64, fps=4, workers=1, show_progress=False)
    ensure_prepared(root, show_progress=False)
    return root


@pytest.fixture(scope="session")
def ave_run(ave_data, tmp_path_factory):
    """The run folder of one epoch of ``molt train ave`` (tiny preset) on :func:`ave_data`: ``checkpoints/`` and
    ``adapters/best``. Tests that evaluate or predict with it write only outside it (``--out``)."""
    from molt.app.cli import main

    out = tmp_path_factory.mktemp("ave_run")
    assert main(["--quiet", "train", "ave", "--data", str(ave_data), "--epochs", "1", "--out", str(out)]) == 0
    return out / "ave_molt_tiny" / "version_0"
