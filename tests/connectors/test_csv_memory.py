"""Replay memory stays flat however long the log: chunks, not whole files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MEASURE = """
import resource, sys
from pipeline.cli import main
assert main(["replay", sys.argv[1], "--no-dropped-rows", "--model", "persistence"]) == 0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def write_log(path: Path, rows: int) -> Path:
    with open(path, "w") as f:
        f.write("timestamp,stream,value\n")
        f.writelines(
            f"{1_600_000_000 + (i // 100) * 60},site/dev-{i % 100}/temp,{(i * 7919) % 1000 / 10}\n"
            for i in range(rows)
        )
    return path


def peak_mib(log: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(log)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_a_ten_times_longer_log_needs_no_more_memory(tmp_path):
    small = write_log(tmp_path / "small.csv", 150_000)
    large = write_log(tmp_path / "large.csv", 1_500_000)  # ~50 MB
    grew = peak_mib(large) - peak_mib(small)
    # Loading the large file whole would take hundreds of MiB (its strings alone).
    assert grew < 40, f"peak memory grew by {grew} MiB for a 10x longer log"
