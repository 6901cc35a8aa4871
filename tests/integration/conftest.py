"""The integration tier: every test here is marked ``integration`` (``-m integration`` selects them from anywhere)."""
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ave_prepared_40(tmp_path_factory):
    """40 generated AVE clips, prepared (32 / 4 / 4 clips: every split divides evenly over two processes); the
    prepared folder, shared by the multi-process tests."""
    from molt.tasks.ave.prepared import ensure_prepared
    from molt.tasks.ave.synthetic import generate_ave

    root = tmp_path_factory.mktemp("ave_40")
    generate_ave(root, num_videos=40, seed=1, image_size=64, fps=4, workers=1, show_progress=False)
    return ensure_prepared(root, show_progress=False)
