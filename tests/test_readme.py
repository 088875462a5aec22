"""The README's example output is what the CLI prints today."""

import re
import shlex
from pathlib import Path

from memplan.cli import main

README = (Path(__file__).parent.parent / "README.md").read_text()


def _sessions():
    """($ command, expected output lines) for each command in the README's text blocks."""
    for block in re.findall(r"```text\n(.*?)```", README, re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, *out = chunk.rstrip("\n").split("\n")
            yield command, [line for line in out if line != "..."]


def test_readme_example_output_is_current(capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).parent.parent)
    sessions = list(_sessions())
    assert len(sessions) >= 2
    for command, expected in sessions:
        argv = shlex.split(command.split(";")[0])
        assert argv[0] == "memplan"
        code = main(argv[1:])
        printed = capsys.readouterr().out.splitlines()
        if expected and expected[-1].isdigit():  # `; echo $?` prints the exit code last
            assert code == int(expected.pop())
        assert printed[: len(expected)] == expected, command
