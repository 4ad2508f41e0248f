"""What the log arguments of replay, evaluate and train mean: ``LOG:COL,COL`` specs,
``--columns``, and the error for a --start/--end range that holds nothing.

Checked before any log is read, so a mistake names what the user typed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import ConfigError, InputFileError


def column_list(text: str | None) -> list[str] | None:
    """``"TEMP, PRES"`` -> ``["TEMP", "PRES"]``; None (every column) for None or ''."""
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def split_spec(spec: str) -> tuple[str, list[str] | None]:
    """``LOG:COL,COL`` -> (LOG, [COL, COL]); a plain path (even one with a colon) -> (LOG, None).

    >>> split_spec("data/weather.csv:TEMP,PRES"), split_spec("data/weather.csv")
    (('data/weather.csv', ['TEMP', 'PRES']), ('data/weather.csv', None))
    """
    path, sep, columns = spec.rpartition(":")
    if sep and path and not Path(spec).exists():
        if not column_list(columns):
            msg = f"{spec}: no columns after ':'; give LOG:COLUMN,COLUMN, or LOG for all"
            raise ConfigError(msg)
        return path, column_list(columns)
    return spec, None


def check_columns(args: argparse.Namespace, paths: Sequence[str | Path]) -> None:
    """Column picks that would be ignored or misread: refused naming what the user typed."""
    specs = [(str(spec), *split_spec(str(spec))) for spec in paths]
    picked = [spec for spec, _, columns in specs if columns]
    if args.columns and picked:
        msg = f"--columns {args.columns} and {picked[0]} both pick columns; pick them in one "
        msg += "place: LOG:COL,COL for each log, or --columns for every log"
        raise ConfigError(msg)
    if args.columns is not None and not column_list(args.columns):
        msg = f"--columns {args.columns!r} names no column; give COL,COL, or drop --columns"
        raise ConfigError(msg)
    _refuse_repeats([(f"--columns {args.columns}", column_list(args.columns)),
                     *((spec, columns) for spec, _, columns in specs)])  # fmt: skip
    for spec, path, columns in specs:
        if columns or args.columns:
            _only_wide(spec, path, columns or [], args)


def _refuse_repeats(picks: Sequence[tuple[str, list[str] | None]]) -> None:
    """ConfigError for a column named twice in one pick (``--columns TEMP,TEMP`` or
    ``LOG:TEMP,TEMP``): its readings would all be dropped as late the second time."""
    for who, names in picks:
        seen: set[str] = set()
        for name in names or []:
            if name in seen:
                msg = f"{who}: picks {name} twice; name each column of a log once"
                raise ConfigError(msg)
            seen.add(name)


def _only_wide(spec: str, path: str, columns: list[str], args: argparse.Namespace) -> None:
    """InputFileError unless every file of ``path`` is wide: only wide files have columns
    to pick (a nab or long file's streams are not its columns)."""
    from connectors.csv_formats import expand, inspect

    for file in expand([path]):
        layout = inspect(file.path, format=args.format, name=file.name, prefix=file.prefix)
        if layout.format == "wide":
            continue
        picks = ",".join(columns)
        who, fix = f"--columns {args.columns}", "drop --columns"
        if columns:
            who, fix = f"{spec}: {picks}", f"give {path} without :{picks}"
        msg = f"{who} picks columns of a wide log, but {file.path} is a {layout.format} file "
        msg += f"(columns {', '.join(layout.names)}) whose streams are not picked by column; {fix}"
        raise InputFileError(msg)


def empty_range(names: str, args: argparse.Namespace) -> InputFileError | None:
    """The error for logs with nothing between --start and --end; None without those flags."""
    given = [f"--{flag} {value}" for flag in ("start", "end") if (value := getattr(args, flag))]
    if not given:
        return None
    msg = f"{names}: no readings lie in the --start/--end range ({' '.join(given)}); "
    msg += "give a range the logs cover, or drop the flags"
    return InputFileError(msg)
