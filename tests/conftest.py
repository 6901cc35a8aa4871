"""Shared pytest configuration: paper-scale checks run only with ``--runslow``."""
import pytest


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
