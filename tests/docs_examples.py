"""The Python examples of README.md and docs/: where they are and how a test runs them.

Every ```` ```python ```` block of ``README.md`` and ``docs/**/*.md`` is an example that must run. The blocks of one
file run in order, in one namespace (a later block may use what an earlier one defined), in a fresh working
directory, on the tiny random-weight backbones and generated data. A block preceded by the line
:data:`INTEGRATION_MARKER` (an HTML comment, invisible on the page) is slow (it generates clips or trains): the unit
tier (``tests/unit/test_docs_examples.py``) runs the file's other blocks, the integration tier
(``tests/integration/test_slow_docs_examples.py``) runs the whole file.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
INTEGRATION_MARKER = "<!-- docs-example: integration -->"
_FENCE = re.compile(r"^(`{3,})(\S*)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Example:
    path: Path
    line: int
    code: str
    integration: bool

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def markdown_files() -> list[Path]:
    """README.md and every page of the documentation."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line of the opening fence, language, body)`` of every fenced code block of a markdown text."""
    return [(text.count("\n", 0, match.start()) + 1, match.group(2), match.group(3)) for match in _FENCE.finditer(text)]


def python_examples(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    examples = []
    for line, language, body in fenced_blocks(text):
        if language != "python":
            continue
        previous = next((lines[i].strip() for i in range(line - 2, -1, -1) if lines[i].strip()), "")
        examples.append(Example(path, line, body, previous == INTEGRATION_MARKER))
    return examples


def files_with_examples(*, integration: bool) -> list[Path]:
    """Files with at least one unit-tier example (``integration=False``) or one integration-tier example."""
    return [path for path in markdown_files()
            if any(example.integration == integration for example in python_examples(path))]


def run_examples(examples: list[Example], workdir: Path) -> None:
    """Run the blocks in order in one namespace, inside ``workdir``; a failure names the block's file and line."""
    namespace: dict = {"__name__": "__docs_example__"}
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        for example in examples:
            code = compile(example.code, str(example), "exec")
            try:
                exec(code, namespace)
            except Exception as error:
                raise AssertionError(f"the example at {example} fails: {type(error).__name__}: {error}") from error
    finally:
        os.chdir(cwd)
