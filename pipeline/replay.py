"""``sensorcast replay``: CSV logs through the same engine the daemon runs."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import (
    DAY,
    LONGEST_LATENESS,
    LONGEST_WINDOW,
    PipelineConfig,
    parse_duration,
)
from pipeline.detect import default_detector
from pipeline.engine import Engine
from pipeline.errors import ConfigError, InputFileError, SinkError
from pipeline.log_specs import check_columns, column_list, empty_range, split_spec
from pipeline.protocols import Sink
from pipeline.runner import Runner, Schedule
from pipeline.summary import Scoreboard, run_summary, score_table
from pipeline.types import VerdictBatch
from pipeline.writable import beside, not_a_folder, not_an_input, writable_file

if TYPE_CHECKING:
    from connectors.mqtt_client import TlsFiles

REPLAY_CHUNK = 65_536  # readings per engine tick: big chunks keep the model calls few
PATH_EXAMPLES = {"--out": "a file such as steps.csv (- for CSV on stdout)",
                 "--state": "a file such as replay.snap",
                 "--to": "a broker URL such as mqtt://localhost:1883"}  # fmt: skip


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "replay",
        help="replay CSV logs through the pipeline",
        description="Replay CSV logs (files or directories) through the streaming pipeline "
        "and write one row per step: forecast, 90% interval, anomaly score and flag.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="CSV files or directories")
    add_input_arguments(parser)
    add_pipeline_arguments(parser)
    add_run_arguments(parser)
    parser.add_argument(
        "--to",
        metavar="URL",
        help="publish the readings to mqtt://host:port (or mqtts:// for TLS) instead (as "
        "{root}/{stream}, JSON value/ts, for a daemon with --topic-template '{root}/#'); "
        "pace with --speed",
    )
    parser.add_argument("--root", default="sensors", help="topic root for --to (sensors)")
    for flag, what in TLS_FLAGS.items():
        parser.add_argument(flag, metavar="FILE", help=f"with --to: {what} (turns TLS on)")
    parser.set_defaults(run=run_replay)


TLS_FLAGS = {"--tls-ca": "the broker's CA certificate (default: the system's CAs)",
             "--tls-cert": "a client certificate (needs --tls-key)",
             "--tls-key": "the client certificate's key, without a passphrase"}  # fmt: skip


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a pipeline run (with add_pipeline_arguments): --to reads none of them."""
    parser.add_argument(
        "--out",
        help="write steps to FILE.csv, FILE.jsonl, FILE.parquet, FILE.arrow (or .feather) or - "
        "(CSV on stdout)",
    )
    parser.add_argument(
        "--state",
        metavar="FILE",
        help="resume from this snapshot if it exists, and write it at the end "
        "(open windows then stay open for the next run)",
    )
    parser.add_argument(
        "--dropped-rows",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write a row (with the reason, no forecast) for each dropped reading (default: on)",
    )
    parser.add_argument("--scores", action="store_true", help="print per-stream accuracy")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="auto", choices=("auto", "long", "wide", "nab"))
    parser.add_argument(
        "--columns", help="wide format: comma-separated value columns to replay (default: all)"
    )
    parser.add_argument("--speed", default="max", help="max (default) or N for N x real time")
    parser.add_argument(
        "--start", help="skip readings before this time (ISO 8601, naive in --timezone; epoch)"
    )
    parser.add_argument("--end", help="stop after this time (as --start)")
    parser.add_argument("--timezone", help="zone of naive timestamps, e.g. Europe/Dublin (UTC)")


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", default="0", help="tumbling window, e.g. 60s; 0 = per reading")
    parser.add_argument("--lateness", default="0", help="allowed out-of-order lateness, e.g. 30s")
    parser.add_argument("--model", default="default", help="default, persistence or a checkpoint")
    parser.add_argument("--interval", type=float, default=0.9, help="interval coverage (0.9)")


LONGEST = {"--window": LONGEST_WINDOW, "--lateness": LONGEST_LATENESS}  # as settings allow


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    if not 0 < args.interval < 1:  # NaN too; PipelineConfig would name its field, not the flag
        msg = f"--interval: {args.interval} must be a coverage between 0 and 1, e.g. 0.9"
        raise ConfigError(msg)
    return PipelineConfig(
        window=bounded_duration(args.window, "--window"),
        lateness=bounded_duration(args.lateness, "--lateness"),
        interval=args.interval,
        report_dropped=getattr(args, "dropped_rows", False),
    )


def bounded_duration(text: str, flag: str) -> float:
    """--window or --lateness in seconds, within the bounds the daemon's settings allow."""
    seconds = parse_duration(text, flag)
    if seconds > LONGEST[flag]:
        msg = f"{flag}: {text} is out of range; use 0 to {LONGEST[flag] / DAY:.0f}d, e.g. 60s"
        raise ConfigError(msg)
    return seconds


def build_engine(args: argparse.Namespace) -> Engine:
    from models import load_forecaster

    config = pipeline_config(args)
    return Engine(load_forecaster(args.model, config.interval), default_detector(), config)


def csv_source(args: argparse.Namespace, paths: Sequence[str | Path]) -> Any:
    """The logs named by ``paths``; ``LOG:COL,COL`` picks columns of that log only."""
    from connectors.csv_source import ChainedSource, CsvSource

    check_columns(args, paths)
    default = column_list(args.columns)
    start, end = time_range(args)
    options = {
        "format": args.format,
        "speed": parse_speed(args.speed),
        "timezone": args.timezone,
        "start": start,
        "end": end,
    }
    specs = [split_spec(str(path)) for path in paths]
    if all(columns is None for _, columns in specs):
        return CsvSource([path for path, _ in specs], columns=default, **options)
    groups = _spec_files(specs)  # named together: a/x.csv:T b/x.csv:T are two streams
    return ChainedSource(
        [
            CsvSource(files, columns=columns or default, **options)
            for files, (_, columns) in zip(groups, specs, strict=True)
        ]
    )


def _spec_files(specs: Sequence[tuple[str, list[str] | None]]) -> list[list[Any]]:
    """Each spec's files, named as one set; a column of one file picked by two specs is
    an InputFileError (its readings would all be dropped as late the second time)."""
    from connectors.csv_formats import expand_groups

    groups = expand_groups([[path] for path, _ in specs])
    picked: dict[Path, dict[str, str]] = {}  # file -> column ("*": every one) -> its spec
    for files, (path, columns) in zip(groups, specs, strict=True):
        spec = f"{path}:{','.join(columns)}" if columns else path
        wanted = columns or ["*"]
        for file in files:
            earlier = picked.setdefault(file.path.resolve(), {})
            clash = [earlier[c] for c in (*wanted, "*") if c in earlier]
            if clash or (earlier and not columns):  # "*" clashes with any column
                msg = f"{spec}: picks columns of {file.path} that "
                msg += f"{(clash or list(earlier.values()))[0]} picks too; "
                msg += "name each column of a log once"
                raise InputFileError(msg)
            earlier.update(dict.fromkeys(wanted, spec))
    return groups


def input_files(paths: Sequence[str | Path]) -> list[Path]:
    """The log files ``paths`` name (``LOG:COL`` specs and folders included), unread,
    each once."""
    from connectors.csv_formats import expand_groups

    groups = expand_groups([[split_spec(str(path))[0]] for path in paths])
    files = {file.path.resolve(): file.path for files in groups for file in files}
    return list(files.values())


def time_range(args: argparse.Namespace) -> tuple[float | None, float | None]:
    """--start and --end in epoch seconds, checked here so that a mistake names the flags
    and shows the times as they were typed (CsvSource would name its own arguments)."""
    from connectors.csv_source import known_zone

    if args.timezone is not None and not known_zone(args.timezone):
        raise _unknown_zone(args.timezone)
    first, last = getattr(args, "start", None), getattr(args, "end", None)
    start = parse_time(first, "--start", args.timezone)
    end = parse_time(last, "--end", args.timezone)
    if start is not None and end is not None and start > end:
        msg = f"--start: {first} is after --end {last}; give a --start before the --end"
        raise ConfigError(msg)
    return start, end


def _unknown_zone(timezone: str | None) -> ConfigError:
    return ConfigError(f"--timezone: {timezone!r} is not an IANA zone such as 'Europe/Dublin'")


def parse_time(text: str | None, flag: str, timezone: str | None = None) -> float | None:
    """Epoch seconds from ISO 8601 (naive: in ``timezone``, else UTC, as the logs' times
    are read) or an epoch number (milliseconds above 1e11, as in the logs).

    >>> parse_time("2014-01-01T00:00:00Z", "--start"), parse_time("1700000000000", "--end")
    (1388534400.0, 1700000000.0)
    >>> parse_time("2014-01-01 01:00", "--start", "Europe/Berlin")
    1388534400.0
    """
    if text is None:
        return None
    from connectors.timestamps import MS_THRESHOLD

    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number / 1000 if abs(number) > MS_THRESHOLD else number
    import pandas as pd

    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        msg = f"{flag}: {text!r} is not a time; write ISO 8601 (2014-01-01T00:00:00Z) or epoch s"
        raise ConfigError(msg) from exc
    if stamp.tzinfo is not None:
        return float(stamp.timestamp())
    try:
        stamp = stamp.tz_localize(timezone or "UTC", ambiguous="raise")
    except KeyError as exc:  # zoneinfo's ZoneInfoNotFoundError
        raise _unknown_zone(timezone) from exc
    except ValueError as exc:  # skipped or repeated by a daylight-saving change
        msg = f"{flag}: {text!r} does not exist or is ambiguous in {timezone}; give its offset, "
        msg += "e.g. 2024-03-31T03:30:00+02:00"
        raise ConfigError(msg) from exc
    return float(stamp.timestamp())


def parse_speed(text: str) -> float | None:
    """``max`` (or ``inf``) -> None (no pacing); a positive number -> that many times real
    time."""
    if text == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = -1.0
    if not speed > 0:
        msg = f"--speed: {text!r} must be 'max' or a positive number, e.g. 60"
        raise ConfigError(msg)
    return None if speed == math.inf else speed  # infinitely fast: no pacing, as max


@dataclass
class Progress:
    """A step counter on stderr, only where someone is watching."""

    enabled: bool

    def __post_init__(self) -> None:
        self._bar: Any = None
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(unit=" steps", unit_scale=True, desc="replay", file=sys.stderr)

    def update(self, verdicts: VerdictBatch) -> None:
        if self._bar is not None:
            self._bar.update(len(verdicts))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _refuse_unsnapshotted(args: argparse.Namespace) -> None:
    """A River baseline's snapshot could never be resumed (its models are Python objects,
    and its fingerprint a token of this process): refused before the replay, not after."""
    from models import RIVER

    if args.state and args.model in RIVER:
        msg = f"--state: {args.model} keeps its models in Python objects, which a snapshot "
        msg += "cannot hold; drop --state, or use --model default, persistence or a checkpoint"
        raise ConfigError(msg)


def run_replay(args: argparse.Namespace) -> int:
    _refuse_empty(args)
    if not args.to and (given := [f for f in TLS_FLAGS if getattr(args, _dest(f))]):
        msg = f"{given[0]}: the TLS files are for --to (publishing to a broker); drop it, "
        msg += "or add --to mqtts://host:8883"
        raise ConfigError(msg)
    if args.to:
        _refuse_run_flags(args)
        return publish_replay(args)
    _refuse_unsnapshotted(args)
    engine = build_engine(args)
    source = csv_source(args, args.paths)
    state = writable_file(args.state, "--state") if args.state else None  # now, not at the end
    for path, flag in ((args.out, "--out"), (args.state, "--state")):
        if path and path != "-":
            not_an_input(path, source.files, flag)
    if args.out and args.out != "-":
        not_a_folder(Path(args.out), "--out")  # --state: writable_file checked it
    if args.out and args.state and Path(args.out).resolve() == Path(args.state).resolve():
        msg = f"--state: {args.state} is also the --out file; give two different files"
        raise ConfigError(msg)
    if state is not None and state.exists():
        engine.restore(state)
        source.seek(engine.table.positions)
    sinks: list[Sink] = []
    if args.out:
        from connectors.file_sink import open_file_sink

        sinks.append(open_file_sink(args.out))
    scoreboard = Scoreboard()
    if args.scores:  # it costs a pass over every verdict; only --scores reads it
        sinks.append(scoreboard)

    # the snapshot is written before --out is committed and renamed into place after it:
    # a snapshot that cannot be written (a full disk) leaves --out as it was
    pending = beside(state, "pending") if state is not None else None

    def check() -> None:
        dropped = sum(engine.stats.dropped.values())
        if not (engine.stats.readings or dropped) and (
            empty := empty_range(", ".join(args.paths), args)
        ):
            raise empty  # nothing in range: an error, as in evaluate and train
        if pending is not None:
            from connectors.csv_source import file_positions

            # by resolved path: the next run may name the logs from elsewhere (./a.csv)
            engine.table.positions = file_positions(engine.table.positions)
            engine.snapshot(pending)

    try:
        seconds = run_to_end(engine, source, sinks, args.progress, state is None, check)
    except BaseException:
        if pending is not None:
            pending.unlink(missing_ok=True)
        raise
    if state is not None and pending is not None:
        os.replace(pending, state)
    report = sys.stderr if args.out == "-" else sys.stdout
    if args.scores:
        print(score_table(scoreboard.scores(), engine.config.interval), file=report)
    print(run_summary(engine.stats, len(engine.table), seconds), file=report)
    return 0


def _refuse_empty(args: argparse.Namespace) -> None:
    """``--out ''`` (an unset variable in a script, say) would otherwise mean no --out."""
    for flag, example in PATH_EXAMPLES.items():
        if (value := getattr(args, flag[2:])) is not None and not value.strip():
            msg = f"{flag}: {value!r} is empty; give {example}, or drop the flag"
            raise ConfigError(msg)


def _refuse_run_flags(args: argparse.Namespace) -> None:
    """--to publishes the readings and runs no pipeline: a flag of the run would do nothing."""
    run = argparse.ArgumentParser(add_help=False)
    add_pipeline_arguments(run)
    add_run_arguments(run)
    given = [
        action.option_strings[-1 if getattr(args, action.dest) is False else 0]
        for action in run._actions
        if getattr(args, action.dest) != action.default
    ]
    if given:
        flags = ", ".join(given)
        msg = f"--to: publishes the readings without running the pipeline, so {flags} would "
        msg += "do nothing; drop them, or drop --to"
        raise ConfigError(msg)


def run_to_end(
    engine: Engine,
    source: Any,
    sinks: list[Sink],
    progress: bool | None,
    flush_at_end: bool,
    check: Callable[[], None] | None = None,
) -> float:
    """Run the source dry; return the wall seconds it took. ``check`` runs after the
    run and may refuse its result: then, as when the run fails, the file sinks drop
    their rows and leave their files as they were."""
    bar = Progress(sys.stderr.isatty() if progress is None else progress)
    runner = Runner(
        engine,
        source,
        sinks,
        max_items=REPLAY_CHUNK,
        schedule=Schedule(idle_check=0, eviction=0),
        on_verdicts=bar.update,
        flush_at_end=flush_at_end,
    )
    started = time.perf_counter()
    try:
        runner.run()
        if check is not None:
            check()
    except BaseException:
        for sink in sinks:
            getattr(sink, "discard", sink.close)()
        raise
    finally:
        bar.close()
        source.close()
    for sink in sinks:
        sink.close()
    return time.perf_counter() - started


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def tls_files(args: argparse.Namespace) -> TlsFiles:
    """--to's TLS files (``connectors.mqtt_client.TlsFiles``), checked as the daemon checks
    its ``mqtt.tls_*`` settings."""
    from connectors.mqtt_client import TlsFiles
    from pipeline.settings_schema import check_key, check_readable

    for flag in TLS_FLAGS:
        path = getattr(args, _dest(flag)) or ""
        check = check_key if flag == "--tls-key" else check_readable
        if problem := check(path):
            msg = f"{flag}: {path} {problem}"
            raise ConfigError(msg)
    if bool(args.tls_cert) != bool(args.tls_key):
        pair = ["--tls-cert", "--tls-key"]
        given, missing = pair if args.tls_cert else pair[::-1]
        msg = f"{given} needs {missing}: a client certificate comes with its key; give both"
        raise ConfigError(msg)
    return TlsFiles(args.tls_ca or "", args.tls_cert or "", args.tls_key or "")


def publish_replay(args: argparse.Namespace) -> int:
    """``--to``: the logs into a broker, as a simulator or load generator."""
    from connectors.mqtt_client import publisher_client
    from connectors.mqtt_publisher import publish_source
    from connectors.topics import check_prefix

    if problem := check_prefix(args.root):
        msg = f"--root: {problem}; give a topic root such as sensors"
        raise ConfigError(msg)
    tls = tls_files(args)
    source = csv_source(args, args.paths)
    client = publisher_client(args.to, f"sensorcast-replay-{os.getpid()}", tls=tls)
    started = time.perf_counter()
    try:
        counters = publish_source(source, client, args.root)
    except SinkError as exc:
        msg = f"--to {args.to}: {exc}"
        raise SinkError(msg) from exc
    finally:
        client.disconnect()
        client.loop_stop()
    if not counters.readings and (empty := empty_range(", ".join(args.paths), args)):
        raise empty
    seconds = time.perf_counter() - started
    rate = counters.readings / seconds if seconds > 0 else 0.0
    text = f"published {counters.readings} readings to {args.to} under {args.root}/ "
    text += f"in {seconds:.2f} s ({rate:,.0f}/s)"
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(counters.skipped.items()))
    text += f"; rows skipped: {skipped}" if skipped else ""
    text += f"; {counters.missing} empty cells or missing-value codes" if counters.missing else ""
    print(text)
    return 0
