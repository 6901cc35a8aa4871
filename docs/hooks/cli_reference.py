"""MkDocs hook: the CLI reference page (``docs/cli.md``) generated from ``molt.app.cli.build_parser()``.

The page holds an introduction and the marker line :data:`MARKER`; at build time the marker is replaced by one
section per verb (its help, usage, arguments by group, with their defaults and choices, and its examples), read from
the argparse parser itself, so the page cannot disagree with ``molt VERB --help``. Listed in ``mkdocs.yml`` under
``hooks:``; ``tests/unit/test_docs.py`` checks that every verb gets a section.
"""
from __future__ import annotations

import argparse

MARKER = "<!-- molt-cli-reference -->"
PAGE = "cli.md"
USAGE_WIDTH = 100


def verb_parsers(parser: argparse.ArgumentParser) -> tuple[dict[str, argparse.ArgumentParser], dict[str, str]]:
    """The subparsers of ``parser`` by verb name, and each verb's one-line help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return dict(action.choices), helps
    return {}, {}


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = parser.formatter_class(prog=parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    """One table per argument group (positional arguments, options, the verb's own groups), as ``--help`` shows
    them; suppressed arguments and subparsers are left out."""
    formatter = parser.formatter_class(prog=parser.prog, width=USAGE_WIDTH)
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [action for action in group._group_actions if action.help is not argparse.SUPPRESS
                   and not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))]
        if not actions:
            continue
        lines += ["", f"**{group.title}**", "", "| argument | meaning |", "|---|---|"]
        for action in actions:
            if action.option_strings:
                metavar = "" if action.nargs == 0 else " " + formatter._format_args(
                    action, formatter._get_default_metavar_for_optional(action))
                names = ", ".join(f"`{option}{metavar}`" for option in action.option_strings)
            else:
                names = f"`{formatter._metavar_formatter(action, action.dest)(1)[0]}`"
            lines.append(f"| {names} | {_cell(formatter._expand_help(action))} |")
    return lines


def _epilog(parser: argparse.ArgumentParser) -> list[str]:
    """The examples of the epilog (``examples:`` then indented command lines) as a bash block."""
    if not parser.epilog:
        return []
    title, _, body = parser.epilog.partition("\n")
    commands = [line.strip() for line in body.splitlines() if line.strip()]
    return ["", f"**{title.rstrip(':')}**", "", "```bash", *commands, "```"]


def cli_reference_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The generated part of the CLI reference: the ``molt`` command's own options, a table of verbs, then one
    ``## molt VERB`` section per verb."""
    if parser is None:
        from molt.app.cli import build_parser

        parser = build_parser()
    verbs, helps = verb_parsers(parser)
    lines = ["## molt", "", _cell(parser.description or ""), "", "```text", _usage(parser), "```",
             *_arguments(parser), *_epilog(parser), "", "| verb | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#molt-{name}) | {_cell(helps.get(name, ''))} |" for name in verbs]
    for name, sub in verbs.items():
        lines += ["", f"## molt {name}", "", _cell(sub.description or helps.get(name, "")), "", "```text",
                  _usage(sub), "```", *_arguments(sub), *_epilog(sub)]
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """MkDocs event: fill the marker of the CLI page."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{PAGE}: the marker {MARKER} is missing, so the CLI reference would be empty")
    return markdown.replace(MARKER, cli_reference_markdown())
