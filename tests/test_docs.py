"""The shell examples in README.md and docs/ run, and print what they show."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def examples() -> list[tuple[str, str, list[str]]]:
    """(doc, command, expected output lines) for every `$ ` line in a console block."""
    found = []
    for doc in DOCS:
        for block in BLOCK.findall(doc.read_text()):
            for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
                command, *output = chunk.strip("\n").split("\n")
                found.append((doc.name, command, output))
    return found


def matches(expected: str, actual: str) -> bool:
    """``...`` in an expected line stands for anything."""
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


@pytest.mark.parametrize(("doc", "command", "output"), examples(), ids=lambda x: str(x)[:60])
def test_console_example_runs(tmp_path, doc, command, output):
    (tmp_path / "data").symlink_to(ROOT / "data")
    argv = shlex.split(command)
    assert argv[0] == ".venv/bin/sensorcast", f"{doc}: examples run the project's CLI"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{doc}: {command}\n{done.stderr}"
    lines = done.stdout.splitlines()
    for expected in output:
        assert any(matches(expected, line) for line in lines), f"{doc}: no line like {expected!r}"


def test_there_are_examples_to_run():
    assert len(examples()) >= 3
