"""``sensorcast bench``: throughput, latency, memory and start-up against baselines.

Every scenario measures sensorcast and its baseline in the same run (machines
are noisy; a ratio taken side by side says more than an absolute number),
repeats both ``--runs`` times and reports medians. The scenarios live in
``bench_replay``, ``bench_mqtt``, ``bench_memory`` and ``bench_startup``; this
module only parses flags, picks sizes and prints. ``--quick`` shrinks every
size so the whole bench runs in seconds (the test suite uses it); its numbers
show the bench works, not how fast the machine is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bench_broker import mosquitto_binary
from pipeline.bench_report import Row, table, write_json
from pipeline.config import positive_finite
from pipeline.errors import ConfigError, UserError
from pipeline.writable import writable_file

SCENARIOS = ("replay", "mqtt", "memory", "startup")
BUNDLED_NAB = Path(__file__).resolve().parents[1] / "data" / "nab"


@dataclass(frozen=True, slots=True)
class Sizes:
    """Every size flag's default, full and ``--quick``."""

    streams: int  # synthetic replay streams
    steps: int  # synthetic replay steps per stream
    river_readings: int
    mqtt_streams: int
    mqtt_readings: int
    latency_seconds: float
    memory_streams: tuple[int, ...]
    river_memory_streams: int
    startup_streams: int


FULL = Sizes(1_000, 500, 10_000, 10_000, 50_000, 5.0, (100_000, 1_000_000), 50, 10_000)
# --quick memory: 20,000 streams, so that every column (8 B a stream) outgrows glibc's
# 128 KiB mmap threshold; smaller ones may land in heap pages resident before, and the
# growth then comes out below what the table holds
QUICK = Sizes(50, 40, 300, 50, 500, 0.5, (20_000,), 3, 50)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "bench",
        help="measure throughput, latency, memory and start-up against baselines",
        description="Benchmarks, each against its baseline in the same run (medians of "
        "--runs runs): replay readings/s vs per-stream River, MQTT daemon vs a bare paho "
        "subscriber (throughput, latency at half load), memory per stream, start-up to ready.",
    )
    parser.add_argument("--scenario", default="all", choices=(*SCENARIOS, "all"))
    parser.add_argument("--json", metavar="FILE", help="also write the results and machine info")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks, not numbers")
    parser.add_argument("--nab", metavar="DIR", help="NAB root or folder of NAB CSVs for replay "
                        "(default: the bundled data/nab when present)")  # fmt: skip
    add_size_arguments(parser)
    parser.set_defaults(run=run_bench)


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    sizes = parser.add_argument_group("sizes (defaults: the issue's; --quick: tiny)")
    add = sizes.add_argument
    add("--streams", type=int, help=f"replay: synthetic streams ({FULL.streams:,})")
    add("--steps", type=int, help=f"replay: steps per synthetic stream ({FULL.steps})")
    add("--river-readings", type=int, help=f"replay: River's subsample ({FULL.river_readings:,})")
    add("--mqtt-streams", type=int, help=f"mqtt: streams ({FULL.mqtt_streams:,})")
    add("--mqtt-readings", type=int, help=f"mqtt: readings per run ({FULL.mqtt_readings:,})")
    add("--latency-seconds", type=float, help=f"mqtt: paced seconds ({FULL.latency_seconds:g})")
    add("--memory-streams", help="memory: comma-separated stream counts (100000,1000000)")
    add("--startup-streams", type=int, help=f"startup: streams in the snapshot "
        f"({FULL.startup_streams:,})")  # fmt: skip


def sizes(args: argparse.Namespace) -> Sizes:
    """The defaults (full or quick) with every size flag given on top."""
    base = QUICK if args.quick else FULL
    memory = base.memory_streams
    if args.memory_streams is not None:
        memory = memory_counts(args.memory_streams)
    picked = {name: getattr(args, name, None) for name in Sizes.__dataclass_fields__}
    given = {k: v for k, v in picked.items() if v is not None and k != "memory_streams"}
    return Sizes(**{**_fields(base), **given, "memory_streams": memory})


def memory_counts(text: str) -> tuple[int, ...]:
    """``--memory-streams``: comma-separated whole numbers of streams, at least one.

    >>> memory_counts("2000, 1_000_000")
    (2000, 1000000)
    """
    try:
        counts = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        msg = (f"--memory-streams: {text!r} must be comma-separated whole numbers of "
               "streams, each at least 1, e.g. 100000,1000000")  # fmt: skip
        raise ConfigError(msg)
    return counts


def _fields(s: Sizes) -> dict[str, Any]:
    return {name: getattr(s, name) for name in Sizes.__dataclass_fields__}


COUNT_FLAGS = ("streams", "steps", "river_readings", "mqtt_streams", "mqtt_readings",
               "startup_streams")  # fmt: skip


def check(args: argparse.Namespace, s: Sizes, chosen: Sequence[str]) -> None:
    """Every flag, before any scenario starts: one line naming the flag and the fix."""
    if args.runs < 1:
        msg = f"--runs: {args.runs} must be at least 1 (3, the default, for a result)"
        raise ConfigError(msg)
    for name in COUNT_FLAGS:
        if getattr(s, name) < 1:
            flag = "--" + name.replace("_", "-")
            msg = f"{flag}: {getattr(s, name)} must be a whole number of at least 1"
            raise ConfigError(msg)
    positive_finite(s.latency_seconds, "--latency-seconds", "seconds", "5")
    if args.nab is not None:
        check_nab(args.nab)
    if args.json is not None:
        check_json(args.json, args.nab)  # before the runs, not after
    needs_broker = [name for name in chosen if name in ("mqtt", "startup")]
    if needs_broker:
        mosquitto_binary(needs_broker[0])


def check_nab(given: str) -> None:
    """A folder of NAB CSVs that parse, with at least one reading among them."""
    from pipeline.bench_replay import nab_files

    folder = Path(given)
    if not given:
        msg = "--nab: '' is not a folder name; give a NAB root or a folder of NAB CSV files"
        raise ConfigError(msg)
    if not folder.is_dir():
        why = "does not exist" if not folder.exists() else "is not a folder"
        msg = f"--nab: {folder} {why}; give a NAB root or a folder of NAB CSV files"
        raise ConfigError(msg)
    files = nab_files(folder)
    if not files:
        msg = f"--nab: {folder} holds no *.csv files; give a NAB root or a folder of NAB CSVs"
        raise ConfigError(msg)
    try:
        found = has_a_reading(files)
    except UserError as exc:  # a file the replay could not read: it names the file
        msg = f"--nab: {exc}"
        raise ConfigError(msg) from exc
    if not found:
        msg = f"--nab: {folder} holds no readings; give a folder of NAB CSVs with rows"
        raise ConfigError(msg)


def has_a_reading(files: Sequence[Path]) -> bool:
    """Whether ``files`` hold a reading; every file's head is read, as the replay does."""
    from connectors.csv_source import CsvSource

    source = CsvSource(files)
    try:
        while (batch := source.poll(65_536, 0.0)) is not None:
            if len(batch):
                return True
        return False
    finally:
        source.close()


def check_json(given: str, nab: str | None) -> None:
    """A file that can be written, and not a NAB series (one now or, a CSV, next run)."""
    from pipeline.bench_replay import nab_data

    if not given:
        msg = "--json: '' is not a file name; give one, e.g. --json bench.json"
        raise ConfigError(msg)
    path = writable_file(given, "--json")
    folders = [Path(nab)] if nab else []
    folders += [BUNDLED_NAB] if BUNDLED_NAB.is_dir() else []
    for folder in folders:
        if path.suffix == ".csv" and _is_under(path, nab_data(folder)):
            msg = f"--json: {path} is a CSV file in the NAB folder {folder}; writing it "
            msg += "would replace or add a series: give a file outside it, e.g. bench.json"
            raise ConfigError(msg)


def _is_under(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def nab_folder(args: argparse.Namespace) -> Path | None:
    if args.nab is not None:
        return Path(args.nab)
    return BUNDLED_NAB if BUNDLED_NAB.is_dir() and not args.quick else None


def scenarios(args: argparse.Namespace, s: Sizes) -> dict[str, Callable[[], list[Row]]]:
    from pipeline import bench_memory, bench_mqtt, bench_replay, bench_startup

    replay = bench_replay.ReplaySize(s.streams, s.steps, s.river_readings)
    mqtt = bench_mqtt.MqttSize(s.mqtt_streams, s.mqtt_readings, s.latency_seconds)
    return {
        "replay": lambda: bench_replay.run(args.runs, replay, nab_folder(args)),
        "mqtt": lambda: bench_mqtt.run(args.runs, mqtt),
        "memory": lambda: bench_memory.run(args.runs, s.memory_streams, s.river_memory_streams),
        "startup": lambda: bench_startup.run(args.runs, s.startup_streams),
    }


def run_bench(args: argparse.Namespace) -> int:
    """Every chosen scenario, then the table and the JSON file: written whole once all of
    them ran (a scenario that fails leaves a previous file as it was)."""
    s = sizes(args)
    chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
    check(args, s, chosen)
    jobs = scenarios(args, s)
    rows: list[Row] = []
    for name in chosen:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        rows += jobs[name]()
    print(table(rows))
    if args.json is not None:
        arguments = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
        nab = nab_folder(args)
        settings = {**_fields(s), "runs": args.runs, "nab": str(nab) if nab else None}
        write_json(args.json, rows, arguments, settings)
    return 0
