"""README.md and the documentation site: relative links resolve, the generated CLI reference covers every verb of
the parser, and the README's commands agree with what CI runs and pins."""
import argparse
import importlib.util
import json
import re

import pytest

from docs_examples import DOCS, ROOT, fenced_blocks, markdown_files
from helpers import needs_shared_fixtures, real_fixtures_root

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where a link is a link."""
    for _, _, body in fenced_blocks(text):
        text = text.replace(body, "")
    return re.sub(r"`[^`\n]+`", "", text)


def _cli_reference():
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(path):
    targets = [target for target in _LINK.findall(_prose(path.read_text(encoding="utf-8")))
               if not re.match(r"[a-z]+:", target) and not target.startswith("#")]
    missing = [target for target in targets if not (path.parent / target.split("#")[0]).exists()]
    assert not missing, f"{path.relative_to(ROOT)}: links to missing files: {missing}"


def test_link_finder_sees_links_and_skips_code():
    text = "See [a](docs/a.md) and ![b](b.png).\n```bash\necho [c](c.md)\n```\n`[d](d.md)` [e](https://x.org)\n"
    assert _LINK.findall(_prose(text)) == ["docs/a.md", "b.png", "https://x.org"]


def test_cli_reference_has_a_section_per_verb_with_its_options():
    from molt.app.cli import build_parser

    cli_reference = _cli_reference()
    parser = build_parser()
    verbs, _ = cli_reference.verb_parsers(parser)
    assert {"demo", "train", "eval", "predict"} <= set(verbs)
    page = cli_reference.cli_reference_markdown(parser)
    for name, sub in verbs.items():
        section = page.split(f"\n## molt {name}\n", 1)[1].split("\n## molt ", 1)[0]
        assert f"usage: molt {name}" in section
        for action in sub._actions:
            if (action.option_strings and action.help is not argparse.SUPPRESS
                    and not isinstance(action, argparse._HelpAction)):
                assert f"`{action.option_strings[-1]}" in section, (name, action.option_strings)
        if sub.epilog:
            assert "```bash\nmolt " + name in section, name


def test_cli_page_is_generated_by_the_configured_hook():
    cli_reference = _cli_reference()
    assert cli_reference.MARKER in (DOCS / cli_reference.PAGE).read_text(encoding="utf-8")
    assert "docs/hooks/cli_reference.py" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def _readme_commands() -> list[str]:
    """The command lines of the README's first code block, comments dropped."""
    _, _, body = fenced_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[0]
    return [line.split("  #")[0].strip() for line in body.splitlines() if line.strip()]


def test_readme_starts_with_two_commands_that_ci_runs():
    install_and_demo, install_and_test = _readme_commands()
    assert install_and_demo.startswith("pip install -c constraints.txt -e ") and install_and_demo.endswith("molt demo")
    install, test = install_and_test.split(" && ")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert install.replace("pip install", "python -m pip install") in ci
    assert test == "python -m pytest -q" and '\n  python -m pytest -q "$@"' in ci and "\ntier\n" in ci
    assert "mkdocs build --strict" in ci


def test_docs_extra_is_pinned_in_constraints():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    pins = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    names = {re.split(r"[\[<>=!~ ]", requirement)[0].lower() for requirement in extras["docs"]}
    assert names and names <= pins, names - pins


REAL = real_fixtures_root()


@needs_shared_fixtures(REAL, "the real annotation files the documentation quotes")
def test_quoted_annotation_lines_are_lines_of_the_real_files():
    """Every annotation line the README and the task pages show as a release's format (AVE records, LLP rows,
    AVSBench-semantic rows, MUSIC-AVQA records) is a line or record of the real file, so the formats shown are the
    releases' own."""
    real_lines = {path.name: set(path.read_text(encoding="utf-8").splitlines())
                  for path in [REAL / "ave" / "Annotations.txt", REAL / "avsbench" / "metadata.csv",
                               *sorted((REAL / "llp").glob("*.csv"))]}
    questions = [record for name in ("avqa-val.json", "avqa-test.json")
                 for record in json.loads((REAL / "music_avqa" / name).read_text(encoding="utf-8"))]
    quoted = 0
    for path in [ROOT / "README.md", *sorted((DOCS / "tasks").glob("*.md"))]:
        for _, language, body in fenced_blocks(path.read_text(encoding="utf-8")):
            for line in body.splitlines() if language in ("text", "json") else []:
                if not line or line[0].isspace():       # blank, or a layout listing's indented line
                    continue
                if line.startswith('{"video_id"'):
                    assert json.loads(line) in questions, (path.name, line)
                elif line.count("&") == 4:
                    assert line in real_lines["Annotations.txt"], (path.name, line)
                elif "\t" in line:
                    assert any(line in lines for name, lines in real_lines.items() if name.endswith(".csv")), line
                elif line.count(",") == 6:
                    assert line in real_lines["metadata.csv"], (path.name, line)
                else:
                    continue
                quoted += 1
    assert quoted >= 20
