"""Every ``pixdiff`` command in the README's and the docs' shell blocks is accepted by the CLI as
written: the subcommand exists and every flag and positional is one it takes. (What the commands
produce is checked by the tests of each command; this keeps the documents from drifting away
from the flags.)"""

import shlex
from pathlib import Path

import pytest
import torch

from pixdiff.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of each ``pixdiff ...`` line in ```bash blocks, with its ``\\``
    continuation lines joined and its trailing comment dropped."""
    commands, in_block, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_block = line.strip() in ("```bash", "```sh", "```console")
            continue
        if not in_block:
            continue
        if not pending:
            start = number
        pending += " " + line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        words = shlex.split(pending, comments=True)
        pending = ""
        if words and words[0] == "pixdiff":
            commands.append((start, shlex.join(words[1:])))
    return commands


CASES = [
    pytest.param(command, id=f"{doc.name}:{line}")
    for doc in DOCUMENTS
    for line, command in shell_commands(doc.read_text())
]


def test_the_documents_have_commands_to_check():
    assert sum(1 for doc in DOCUMENTS if shell_commands(doc.read_text())) >= 3
    assert len(CASES) >= 60


def test_shell_commands_joins_continuations_and_drops_comments():
    text = "```bash\npixdiff sample --class Bag \\\n  --steps 5   # a comment\nls -l\n```\n"
    assert shell_commands(text) == [(2, "sample --class Bag --steps 5")]
    assert shell_commands("pixdiff outside --a-block\n") == []


@pytest.mark.parametrize("command", CASES)
def test_the_command_parses(command, capsys, monkeypatch):
    # a --device cuda line is written for a GPU machine: parse it as one would
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    try:
        build_parser().parse_args(shlex.split(command))
    except SystemExit as stop:
        pytest.fail(f"pixdiff {command}: {capsys.readouterr().err.strip()} (exit {stop.code})")
