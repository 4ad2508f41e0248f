"""`sensorcast demo` on the bundled logs (until the MQTT daemon lands)."""

from __future__ import annotations

import re

from pipeline.cli import main


def test_demo_replays_every_bundled_log_and_prints_the_tables(capsys):
    assert main(["demo", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sensorcast demo: 6 real sensor logs")
    for stream in (
        "Changping/TEMP",
        "buoy_44005_2012/PRES",
        "datatest/Temperature",
        "Occupancy_Estimation/S1_Temp",
        "machine_temperature_system_failure",
    ):
        assert re.search(rf"^{re.escape(stream)} +\d+ ", out, re.M), stream
    total = re.search(r"^all streams +(\d+) +\S+ +([\d.]+)%", out, re.M)
    assert total is not None and int(total.group(1)) > 700_000
    assert 85.0 < float(total.group(2)) < 95.0  # the 90% intervals hold on real data
    assert "Most striking anomalies flagged:" in out


def test_demo_without_logs_says_where_it_looked(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: no .csv/.txt/.dat logs here; pass --data" in err
