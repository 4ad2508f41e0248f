"""`replay --to` feeds a daemon through a real broker; its forecasts equal `replay --out`."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
from daemons import Collector, running, settings_for, wait_until

from connectors.csv_source import CsvSource
from connectors.mqtt_client import plain_client
from connectors.mqtt_publisher import publish_source
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "data/thermostat/uci_occupancy_detection/datatest.txt"
END = "2015-02-02T20:00:00Z"  # the first ~340 rows of each stream


def test_forecasts_through_mqtt_equal_replay(mosquitto, tmp_path, capsys):
    args = [str(LOG), "--columns", "Temperature,CO2", "--end", END]
    assert main(["replay", *args, "--out", str(tmp_path / "replay.csv")]) == 0
    expected = pd.read_csv(tmp_path / "replay.csv")
    forecasts = Collector(mosquitto.port, "sensorcast/forecast/#")
    with running(settings_for(mosquitto.url, mqtt__topic_template="sensors/#")) as daemon:
        assert main(["replay", *args, "--to", mosquitto.url]) == 0
        assert f"published {len(expected)} readings" in capsys.readouterr().out
        assert wait_until(lambda: daemon.engine.stats.steps >= len(expected), 20)
        received = forecasts.wait_for(len(expected))
    got = pd.DataFrame([m for _, m in received]).set_index(["stream", "timestamp"]).sort_index()
    want = expected.set_index(["stream", "timestamp"]).sort_index()
    assert got.index.equals(want.index)
    # equal to float tolerance: live ticks and replay chunk the GRU differently
    for column in ("value", "forecast", "lower", "upper", "anomaly_score", "next_forecast"):
        pd.testing.assert_series_equal(
            got[column].astype(float), want[column], check_names=False, rtol=1e-6, atol=1e-5
        )
    forecasts.close()


def test_publishing_keeps_a_bounded_window_in_flight_and_loses_nothing(mosquitto, tmp_path):
    log = tmp_path / "many.csv"
    rows = "".join(f"{1_700_000_000 + i},{i}\n" for i in range(3_000))
    log.write_text("timestamp,value\n" + rows)
    received = Collector(mosquitto.port, "load/#")
    client = plain_client(mosquitto.url, "test-publisher")
    try:
        counters = publish_source(CsvSource([log]), client, "load", window=20)
        stopped = threading.Event()
        stopped.set()
        nothing = publish_source(CsvSource([log]), client, "load", stop=stopped)
    finally:
        client.disconnect()
        client.loop_stop()
    assert counters.readings == 3_000 and nothing.readings == 0
    values = [message["value"] for _, message in received.wait_for(3_000)]
    assert values == [float(i) for i in range(3_000)]  # every one, in order
    received.close()
