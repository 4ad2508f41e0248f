"""``sensorcast check-config``: validate settings and print them, secrets redacted.

The output is itself a valid config file: every key with its effective value
(durations and sizes in readable units), a comment naming where each value that
was set came from, the password only as ``***``. Errors end like every user
mistake: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.settings import Settings, load_settings
from pipeline.settings_schema import CONFIG_ENV, KEY, PASSWORD_ENV, Key, toml_value
from pipeline.writable import probe_folder


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "check-config",
        help="validate a config file and print the effective settings",
        description="Load FILE plus the SENSORCAST_* environment, validate every setting "
        "and print the result as TOML (the password redacted), with where each value "
        "that was set came from.",
    )
    parser.add_argument(
        "file",
        nargs="?",
        type=Path,
        metavar="FILE",
        help=f"TOML settings (default: ${CONFIG_ENV}, else only defaults and environment)",
    )
    parser.set_defaults(run=run_check_config)


def run_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    probe_state_dir(settings)
    print(render(settings), end="")
    return 0


def probe_state_dir(settings: Settings) -> None:
    """What the daemon checks at start: ``state.dir`` can be made and written in; else
    a ConfigError naming the key and where it was set, before any snapshot fails."""
    directory = settings.state.dir
    if directory is None:
        return
    origin = settings.sources.get("state.dir")
    probe_folder(directory, f"state.dir ({origin})" if origin else "state.dir")


def render(settings: Settings) -> str:
    """The settings as commented TOML that loads back to the same settings."""
    lines = ["# sensorcast settings as loaded (defaults < file < environment < flags)"]
    for section, table in settings.redacted().items():
        lines += ["", f"[{section}]"]
        lines += [_line(settings, section, name, value) for name, value in table.items()]
    return "\n".join(lines) + "\n"


def _line(settings: Settings, section: str, name: str, value: object) -> str:
    if section == "mqtt" and name == "password":
        if not value:
            return f"# password: not set (mqtt.password_file or {PASSWORD_ENV})"
        return f"# password: {value} (from {settings.password_source.describe()})"
    notes = []
    if f"{section}.{name}" in settings.sources:
        notes.append(f"from {settings.sources[f'{section}.{name}']}")
    if section == "mqtt" and name == "broker":
        mqtt = settings.mqtt
        notes.append(f"host {mqtt.host}, port {mqtt.port}, TLS {'on' if mqtt.tls else 'off'}")
    comment = f"  # {'; '.join(notes)}" if notes else ""
    return f"{name} = {_readable(KEY[f'{section}.{name}'], value)}{comment}"


def _readable(key: Key, value: object) -> str:
    """Durations and sizes in the largest unit that states them exactly.

    >>> _readable(KEY["pipeline.idle_timeout"], 120.0), _readable(KEY["mqtt.max_payload"], 65536)
    ('"2m"', '"64KiB"')
    """
    units: dict[str, float] = {}
    if key.kind == "duration":
        units = {"d": 86_400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    elif key.kind == "size":
        units = {"MiB": 1024**2, "KiB": 1024}
    if not units or not isinstance(value, int | float):
        return toml_value(value)
    if value == 0:
        return toml_value("0")
    for unit, size in units.items():
        count = round(value / size)
        if count and count * size == value:
            return toml_value(f"{count}{unit}")
    return toml_value(value)
