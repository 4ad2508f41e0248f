"""`sensorcast demo`: embedded broker, bundled logs, the real daemon, a live table."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from pipeline.cli import main


def test_demo_runs_the_daemon_on_the_bundled_logs_and_ends_by_itself(capsys):
    started = time.monotonic()
    assert main(["demo", "--duration", "5", "--speed", "7200", "--no-live"]) == 0
    took = time.monotonic() - started
    out = capsys.readouterr().out
    assert out.startswith("sensorcast demo: broker mqtt://127.0.0.1:")
    for stream in (
        "Changping/TEMP",
        "buoy_44005_2012/PRES",
        "datatest/Temperature",
        "Occupancy_Estimation/S1_Temp",
        "machine_temperature_system_failure",
    ):
        assert re.search(rf"^{re.escape(stream)} +\d", out, re.M), stream
    total = re.search(r"^all streams +(\d+) ", out, re.M)
    assert total is not None and int(total.group(1)) > 1000
    summary = re.search(r"^streams 9  readings (\d+)  steps (\d+)", out, re.M)
    assert summary is not None and summary.group(1) == summary.group(2)  # nothing lost
    anomalies_reported_as_flagged(out)
    assert "metrics were served on http://127.0.0.1:" in out
    assert took < 60


def test_live_table_redraws_with_colour_for_anomalies(capsys):
    assert main(["demo", "--duration", "2", "--speed", "7200", "--live"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[H\x1b[2J" in out and "published" in out


def test_demo_without_its_logs_says_where_it_looked(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is missing; pass --data with the folder holding the bundled logs" in err
    assert str(tmp_path) in err


def test_a_bundled_log_that_cannot_be_read_is_one_line_before_anything_starts(tmp_path, capsys):
    import shutil

    from pipeline.demo import DEMO_LOGS

    data = Path(__file__).resolve().parents[1] / "data"
    for log in DEMO_LOGS:
        (tmp_path / log.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data / log.path, tmp_path / log.path)
    emptied = tmp_path / DEMO_LOGS[0].path
    emptied.write_text("")
    assert main(["demo", "--no-live", "--duration", "5", "--data", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert (
        out == ""
        and err
        == f"sensorcast: error: {emptied}: file is empty; expected a header line and data rows\n"
    )


def anomalies_reported_as_flagged(out):
    """The summary's anomaly count, checked against what the report lists."""
    summary = re.search(r"^streams \d+  readings (\d+)  steps (\d+)  anomalies (\d+)", out, re.M)
    assert summary is not None and summary.group(1) == summary.group(2)  # nothing lost
    flagged = int(summary.group(3))
    assert ("Most striking anomalies flagged:" in out) == (flagged > 0)
    assert ("No anomaly was flagged." in out) == (flagged == 0)
    return flagged


@pytest.mark.parametrize("speed", ["10000000", "1e308"])
def test_a_speed_beyond_the_broker_is_backpressure_and_the_demo_stops_at_its_duration(
    speed, capsys
):
    # the embedded broker takes about a thousand messages a second: the publishers wait
    # for its acknowledgements (a thread error would fail the test: warnings are errors)
    started = time.monotonic()
    assert main(["demo", "--duration", "2", "--speed", speed, "--no-live"]) == 0
    took = time.monotonic() - started
    out = capsys.readouterr().out
    assert anomalies_reported_as_flagged(out) >= 0
    published = re.search(r"^streams 9  readings (\d+)", out, re.M)
    assert published is not None and int(published.group(1)) > 100
    # 2 s publishing + at most CATCH_UP (5 s) + start-up and shut-down; it used to run on
    assert took < 30


def test_a_demo_that_flags_nothing_says_so(capsys):
    # a minute of each log a second for one second: every stream is still warming up
    assert main(["demo", "--duration", "1", "--speed", "60", "--no-live"]) == 0
    out = capsys.readouterr().out
    assert anomalies_reported_as_flagged(out) == 0
    assert "No anomaly was flagged." in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--speed", "inf"], "--speed: inf must be a positive finite number"),
        (["--speed", "nan"], "--speed: nan must be a positive finite number"),
        (["--speed", "0"], "--speed: 0 must be a positive finite number"),
        (["--duration", "inf"], "--duration: inf must be a positive finite number (seconds)"),
        (["--duration", "-1"], "--duration: -1 must be a positive finite number (seconds)"),
        (
            ["--broker", "http://127.0.0.1:1883"],
            "--broker: 'http://127.0.0.1:1883' must start with mqtt://",
        ),
        (
            ["--broker", "mqtt://127.0.0.1:x"],
            "--broker: 'mqtt://127.0.0.1:x' has a bad host or port",
        ),
    ],
)
def test_bad_flags_are_one_line_before_anything_starts(flags, message, tmp_path, capsys):
    # --data is empty too: the flags are checked before the logs, the broker or the daemon
    assert main(["demo", "--data", str(tmp_path), *flags]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("sensorcast: error: ") and message in captured.err
    assert len(captured.err.splitlines()) == 1 and not captured.out


def test_an_unreachable_broker_fails_fast_naming_broker(capsys):
    from connectors.embedded_broker import free_port

    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    assert main(["demo", "--duration", "60", "--broker", url]) == 2
    took = time.monotonic() - started
    captured = capsys.readouterr()
    assert captured.err.startswith(f"sensorcast: error: --broker: cannot reach {url}")
    assert len(captured.err.splitlines()) == 1 and not captured.out
    assert took < 10
