"""``sensorcast state inspect FILE``: what a snapshot or a journal holds.

Reads the file without a model, so it works on any snapshot, even one the
running pipeline would refuse; the output says why it would be refused (schema,
fingerprints), which is what an operator wants to know after a deploy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from pipeline.daemon import JOURNAL_FILE, SNAPSHOT_FILE
from pipeline.errors import ConfigError, SnapshotError, UserError
from pipeline.journal import MAGIC, summarize
from pipeline.snapshot import SCHEMA_VERSION, ZIP_MAGIC, inspect_snapshot

GIVE = f"give a snapshot ({SNAPSHOT_FILE}) or journal ({JOURNAL_FILE}) from state.dir"


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "state",
        help="look into the state directory: snapshots and journals",
        description="Tools for the daemon's state directory (state.dir).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    inspect = actions.add_parser(
        "inspect",
        help="print what a snapshot (state.snap) or journal (journal.bin) holds",
        description="Print what a snapshot or journal holds. A snapshot: schema, generation, "
        "model fingerprints, streams, source positions. A journal: generation, how many frames, "
        "housekeeping events (idle closes, evictions), receipts of messages whose readings took "
        "their receive time, readings and streams it holds, and the "
        "first and last reading's event time.",
    )
    inspect.add_argument("file", type=Path, metavar="FILE", help="state.snap or journal.bin")
    inspect.add_argument("--streams", type=int, default=10, metavar="N",
                         help="list the first N streams of a snapshot (default 10)")  # fmt: skip
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(run=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    path: Path = args.file
    if args.streams < 0:
        msg = f"--streams: {args.streams} is negative; give 0 or more, e.g. --streams 10"
        raise ConfigError(msg)
    if path.is_dir():
        raise UserError(_directory_problem(path))
    if not path.is_file():
        msg = f"{path}: no such file; {GIVE}"
        raise UserError(msg)
    is_journal = _kind(path) == "journal"
    info = _journal_info(path) if is_journal else _snapshot_info(path, args.streams)
    print(json.dumps(info, indent=2) if args.json else _as_text(info))
    return 0


def _directory_problem(folder: Path) -> str:
    inside = [folder / name for name in (SNAPSHOT_FILE, JOURNAL_FILE)]
    found = " or ".join(str(path) for path in inside if path.is_file())
    if found:
        return f"{folder} is a directory; give a file in it: {found}"
    return f"{folder} is a directory, with no {SNAPSHOT_FILE} or {JOURNAL_FILE} in it; {GIVE}"


def _kind(path: Path) -> str:
    """``journal`` or ``snapshot`` by the leading bytes, so that any other file is named
    as such instead of with what numpy makes of it (pickles, ``allow_pickle``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(max(len(MAGIC), len(ZIP_MAGIC)))
    except OSError as exc:
        msg = f"{path}: cannot be read ({exc.strerror or exc}); {GIVE}"
        raise UserError(msg) from exc
    if head.startswith(MAGIC):
        return "journal"
    if head.startswith(ZIP_MAGIC):
        return "snapshot"  # a damaged one is named so by inspect_snapshot
    what = "is empty, not" if not head else "not"
    msg = f"{path}: {what} a sensorcast snapshot or journal; {GIVE}"
    raise UserError(msg)


def _snapshot_info(path: Path, streams: int) -> dict[str, Any]:
    try:
        meta = inspect_snapshot(path, streams)
    except SnapshotError as exc:
        raise UserError(str(exc)) from exc
    schema = meta.get("schema")
    readable = schema == SCHEMA_VERSION
    return {
        "file": str(path),
        "kind": "snapshot",
        "schema": schema,
        "readable": readable if readable else f"no: this sensorcast reads {SCHEMA_VERSION}",
        "written_at": _iso(meta.get("written_at")),
        "generation": meta.get("generation"),
        "streams": meta.get("streams"),
        "positions": meta.get("positions", {}),
        "fingerprints": meta.get("fingerprints", {}),
        "arrays": meta.get("arrays", {}),
        "sample": [{**row, "last_t": _iso(row["last_t"])} for row in meta.get("sample", [])],
    }


def _journal_info(path: Path) -> dict[str, Any]:
    try:
        info = summarize(path)
    except SnapshotError as exc:
        raise UserError(str(exc)) from exc
    first, last = info.pop("first_timestamp"), info.pop("last_timestamp")
    return {"file": str(path), "kind": "journal", **info, "first": _iso(first), "last": _iso(last)}


def _iso(seconds: object) -> str | None:
    if not isinstance(seconds, (int, float)):
        return None
    try:
        moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, ValueError, OSError):  # a damaged or hand-edited time: as it is
        return str(seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_text(info: dict[str, Any]) -> str:
    lines = []
    for key, value in info.items():
        if key == "sample":
            continue
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {name}: {item}" for name, item in value.items()]
        else:
            lines.append(f"{key}: {value}")
    sample = info.get("sample") or []
    if sample:
        lines.append(f"first {len(sample)} streams (newest reading applied):")
        width = max(len(row["stream"]) for row in sample)
        lines += [
            f"  {row['stream']:<{width}}  {row['last_t']}  {row['last_value']}" for row in sample
        ]
    return "\n".join(lines)
