"""`sensorcast demo`: embedded broker, bundled logs, the real daemon, a live table."""

from __future__ import annotations

import re
import time

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
