"""Shared pytest configuration: paper-scale checks run only with ``--runslow``; one torch thread per test process."""
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
