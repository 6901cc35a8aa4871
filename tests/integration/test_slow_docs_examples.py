"""The documentation pages with slow Python examples (marked ``<!-- docs-example: integration -->``, see
``tests/docs_examples.py``), every block of the page in order."""
import pytest

from docs_examples import ROOT, files_with_examples, python_examples, run_examples


@pytest.mark.parametrize("path", files_with_examples(integration=True), ids=lambda path: str(path.relative_to(ROOT)))
def test_pages_with_slow_examples_run(path, tmp_path):
    run_examples(python_examples(path), tmp_path)
