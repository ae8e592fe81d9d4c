"""The README stays true: every `python cli.py` command it shows names a command and options that
exist, with a value where an option takes one (parsed by the command's own click parser; the files
it names are the reader's, so they are not opened)."""

import re
import shlex

import click
import pytest

import cli
from tests.conftest import ROOT


def readme_commands():
    """(line number, argv after `python cli.py`) of every command line in the README's code blocks."""
    text = (ROOT / "README.md").read_text()
    lines, pending = [], None
    for number, line in enumerate(text.splitlines(), 1):  # a line ending in \ continues on the next
        if pending:
            line = pending[1] + " " + line.strip()
            number = pending[0]
        pending = (number, line[:-1]) if line.endswith("\\") else None
        if not pending:
            lines.append((number, line))
    found, inside = [], False
    for number, line in lines:
        if line.startswith("```"):
            inside = not inside
            continue
        match = re.match(r"\s*python cli\.py (.*)", line) if inside else None
        if match:
            found.append((number, shlex.split(match.group(1), comments=True)))
    return found


def test_the_readme_shows_commands():
    commands = {argv[0] for _, argv in readme_commands()}
    assert len(readme_commands()) > 40 and {"embed", "train-heads", "baselines", "sweep", "audit", "predict"} <= commands


@pytest.mark.parametrize("number, argv", readme_commands(), ids=lambda v: str(v) if isinstance(v, int) else None)
def test_every_readme_command_parses(number, argv):
    assert argv[0] in cli.main.commands, f"README.md:{number}: no command {argv[0]!r}"
    command = cli.main.commands[argv[0]]
    parser = command.make_parser(click.Context(command, info_name=argv[0]))  # parses; converts nothing
    options, arguments, _ = parser.parse_args(args=list(argv[1:]))
    required = [p for p in command.params if getattr(p, "required", False) and p.name not in options]
    assert not required, f"README.md:{number}: {' '.join(argv)} lacks {[p.name for p in required]}"


def test_a_wrong_option_is_caught():
    command = cli.main.commands["sweep"]
    with pytest.raises(click.NoSuchOption):
        command.make_parser(click.Context(command, info_name="sweep")).parse_args(args=["c.h5", "--epochs", "3"])
