"""``sensorcast demo``: the bundled real logs through the default pipeline.

No set-up beyond the install: it replays every bundled log (thermostats, a
weather station, an ocean buoy, an industrial machine) through the same
engine the daemon runs and prints per-stream accuracy and the most striking
anomalies it flagged.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import InputFileError
from pipeline.replay import add_pipeline_arguments, build_engine, csv_source, run_to_end
from pipeline.summary import Scoreboard, TopAnomalies, run_summary, score_table

BUNDLED = Path(__file__).resolve().parents[1] / "data"


def register(commands: Any) -> None:
    parser = commands.add_parser("demo", help="replay the bundled sensor logs and show results")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("SENSORCAST_DATA", BUNDLED)),
        help="folder of logs to replay (default: the bundled data/; env SENSORCAST_DATA)",
    )
    add_pipeline_arguments(parser)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    parser.set_defaults(run=run_demo, format="auto", columns=None, speed="max", timezone=None)


def demo_logs(folder: Path) -> list[Path]:
    logs = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix in (".csv", ".txt", ".dat") and not p.name.startswith(("LICENSE", "README"))
    )
    if not logs:
        msg = f"{folder}: no .csv/.txt/.dat logs here; pass --data with a folder of sensor logs"
        raise InputFileError(msg)
    return logs


def run_demo(args: argparse.Namespace) -> int:
    logs = demo_logs(args.data)
    print(f"sensorcast demo: {len(logs)} real sensor logs from {args.data}, model {args.model}")
    engine = build_engine(args)
    scoreboard, top = Scoreboard(), TopAnomalies(10)
    seconds = run_to_end(engine, csv_source(args, logs), [scoreboard, top], args.progress, True)
    print()
    print(score_table(scoreboard.scores() + [scoreboard.total()], engine.config.interval))
    print("\nMost striking anomalies flagged:")
    print(top.table())
    print()
    print(run_summary(engine.stats, len(engine.table), seconds))
    sys.stdout.flush()
    return 0
