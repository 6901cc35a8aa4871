"""Shared pytest configuration: paper-scale checks run only with ``--runslow``; where the real annotation fixtures
are."""
import os
from pathlib import Path

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



SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def shared_fixture_dir(name: str, marker: str, environment: str | None = None) -> Path | None:
    """A folder of real annotation files: ``$environment``, ``tests/fixtures/<name>`` or ``../shared/fixtures/<name>``
    (the first holding ``marker``), or ``None``."""
    here = Path(__file__).resolve().parent
    candidates = [os.environ.get(environment) if environment else None, here / "fixtures" / name,
                  SHARED_FIXTURES / name]
    for candidate in candidates:
        if candidate and (Path(candidate) / marker).is_file():
            return Path(candidate)
    return None


def needs_shared_fixtures(found: Path | None, what: str):
    """Skip when ``../shared`` is absent (a checkout on its own); when it is there, a missing file is a failure."""
    return pytest.mark.skipif(found is None and not SHARED_FIXTURES.parent.is_dir(),
                              reason=f"{what}: ../shared/fixtures is not beside this checkout")


def backward_and_check_side_gradients(model, backbones, out) -> None:
    """Back-propagate a loss on both modalities' fused tokens and check that every trainable parameter of the
    method got a gradient and no frozen backbone parameter did."""
    (out.visual.square().mean() + out.audio.square().mean()).backward()
    for name, parameter in model.method.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for backbone in backbones:
        assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
