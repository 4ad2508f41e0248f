"""`replay --to` feeds a daemon through a real broker; its forecasts equal `replay --out`."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

import pandas as pd
from brokers import Mosquitto, password_config
from daemons import Collector, running, settings_for, wait_until

from connectors.csv_source import CsvSource
from connectors.mqtt_client import publisher_client
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
    client = publisher_client(mosquitto.url, "test-publisher")
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


# -- what --to does when the broker says no, says nothing, or goes away ------------------

SMALL = "".join(f"{1_700_000_000 + 60 * i},{i}\n" for i in range(50))


def small_log(tmp_path: Path) -> Path:
    log = tmp_path / "small.csv"
    log.write_text("timestamp,value\n" + SMALL)
    return log


def test_a_broker_that_refuses_is_one_line_and_a_password_in_the_url_is_never_shown(
    tmp_path, capsys, monkeypatch
):
    extra = password_config(tmp_path / "auth", {"ann": "s3cret-pw"})
    broker = Mosquitto(tmp_path / "broker", extra=extra).start()
    log = str(small_log(tmp_path))
    try:
        assert main(["replay", log, "--to", broker.url]) == 2  # anonymous: not authorised
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--to: broker {broker.url} refused the connection" in err
        with_password = f"mqtt://ann:s3cret-pw@127.0.0.1:{broker.port}"
        assert main(["replay", log, "--to", with_password]) == 2
        err = capsys.readouterr().err
        assert "s3cret-pw" not in err and "embeds a password" in err
        # the user in the URL, the password where the daemon reads it from
        monkeypatch.setenv("SENSORCAST_MQTT_PASSWORD", "s3cret-pw")
        assert main(["replay", log, "--to", f"mqtt://ann@127.0.0.1:{broker.port}"]) == 0
        assert "published 50 readings" in capsys.readouterr().out
    finally:
        broker.stop()


def test_a_listener_that_never_answers_is_one_line_not_a_hang(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("connectors.mqtt_client.CONNECT_SECONDS", 0.5)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never says a word
        port = silent.getsockname()[1]
        assert main(["replay", str(small_log(tmp_path)), "--to", f"mqtt://127.0.0.1:{port}"]) == 2
    assert "did not answer as an MQTT broker within 0.5 s" in capsys.readouterr().err


def test_a_broker_that_goes_away_midway_ends_the_run_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("connectors.mqtt_publisher.STALL_SECONDS", 1.0)
    broker = Mosquitto(tmp_path / "broker").start()
    log = tmp_path / "many.csv"
    log.write_text(
        "timestamp,value\n" + "".join(f"{1_700_000_000 + i},{i}\n" for i in range(200_000))
    )
    killer = threading.Timer(0.3, broker.stop, kwargs={"sig": signal.SIGKILL})
    killer.start()
    try:
        assert main(["replay", str(log), "--to", broker.url]) == 1  # the broker's doing
    finally:
        killer.join()
        broker.stop()
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--to {broker.url}: the broker acknowledged nothing for 1 s; is it still up?" in err


def test_port_0_and_an_empty_range_are_refused(tmp_path, capsys, mosquitto):
    log = str(small_log(tmp_path))
    assert main(["replay", log, "--to", "mqtt://127.0.0.1:0"]) == 2
    assert "has port 0" in capsys.readouterr().err
    assert main(["replay", log, "--to", mosquitto.url, "--start", "2030-01-01"]) == 2
    assert "no readings lie in the --start/--end range" in capsys.readouterr().err


def test_stream_keys_that_topics_must_escape_arrive_as_replay_names_them(
    mosquitto, tmp_path, capsys
):
    log = tmp_path / "odd.csv"
    rows = [f"{1_700_000_000 + 60 * i},{key},{i}" for i in range(3) for key in ("k+1/50%", "a#b/c")]
    log.write_text("timestamp,stream,value\n" + "\n".join(rows) + "\n")
    forecasts = Collector(mosquitto.port, "sensorcast/forecast/#")
    with running(settings_for(mosquitto.url, mqtt__topic_template="sensors/#")) as daemon:
        assert main(["replay", str(log), "--to", mosquitto.url]) == 0
        assert wait_until(lambda: daemon.engine.stats.steps >= 6, 20)
        received = forecasts.wait_for(6)
    forecasts.close()
    assert {message["stream"] for _, message in received} == {"k+1/50%", "a#b/c"}
