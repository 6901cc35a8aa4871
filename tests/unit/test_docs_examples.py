"""The Python examples of README.md and docs/ run (the unit-tier blocks of each file; see ``tests/docs_examples.py``
for the rules and the marker that moves a slow block to ``tests/integration/test_slow_docs_examples.py``)."""
import pytest

from docs_examples import ROOT, files_with_examples, python_examples, run_examples


@pytest.mark.parametrize("path", files_with_examples(integration=False), ids=lambda path: str(path.relative_to(ROOT)))
def test_examples_run(path, tmp_path):
    run_examples([example for example in python_examples(path) if not example.integration], tmp_path)


def test_the_api_pages_have_examples():
    """The pages that teach the Python API are among those whose examples run (a renamed fence would drop them)."""
    pages = {str(path.relative_to(ROOT)) for path in files_with_examples(integration=False)}
    assert {"README.md", "docs/python.md", "docs/tasks/ave.md", "docs/tasks/avs.md", "docs/tasks/avqa.md",
            "docs/tasks/avvp.md"} <= pages
