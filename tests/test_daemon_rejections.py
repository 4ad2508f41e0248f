"""Dropped readings in the daemon: counted, dead-lettered, and a row per reading on
``{prefix}/dropped/{stream}``, the row replay writes for it."""

from __future__ import annotations

import json

from daemons import Collector, client, running, settings_for, wait_until

from connectors.records import verdict_records
from models import load_forecaster
from pipeline.config import PipelineConfig
from pipeline.detect import default_detector
from pipeline.engine import Engine
from pipeline.types import Reading, ReadingBatch, StreamKey

STREAMS = ("plant/boiler/temp", "plant/pump/pressure")
T0 = 1_700_000_000.0


def sent() -> list[tuple[str, float, float]]:
    """(stream, time, value): three steps per stream, then a duplicate and a late one."""
    return [
        (stream, T0 + t, value + 10 * k)
        for k, stream in enumerate(STREAMS)
        for t, value in ((0, 1.0), (60, 2.0), (120, 3.0), (120, 9.0), (30, 4.0))
    ]


def replay_rows(items: list[tuple[str, float, float]]) -> set[tuple[object, ...]]:
    """(stream, timestamp, value, dropped) of the rows replay writes for dropped readings."""
    engine = Engine(load_forecaster("persistence"), default_detector(),
                    PipelineConfig(report_dropped=True))  # fmt: skip
    batch = ReadingBatch.from_readings([Reading(StreamKey(s), t, v) for s, t, v in items])
    rows = [r for r in verdict_records(engine.process(batch)) if r["dropped"]]
    return {(r["stream"], r["timestamp"], r["value"], r["dropped"]) for r in rows}


def test_each_dropped_reading_gets_replays_row_on_its_streams_dropped_topic(mosquitto):
    items = sent()
    dropped = Collector(mosquitto.port, "sensorcast/dropped/#")
    forecasts = Collector(mosquitto.port, "sensorcast/forecast/#")
    dead = Collector(mosquitto.port, "sensorcast/deadletter")
    publisher = client(mosquitto.port)
    try:
        with running(settings_for(mosquitto.url, pipeline__model="persistence")) as daemon:
            for stream, t, value in items:
                payload = json.dumps({"value": value, "ts": t})
                publisher.publish(f"sensors/{stream}", payload, qos=1).wait_for_publish(5)
            # rejected by the decoder: a dead letter with its payload, no row
            publisher.publish(f"sensors/{STREAMS[0]}", b'{"value": "abc"}', qos=1)
            rows = dropped.wait_for(4)
            assert wait_until(lambda: sum(m["count"] for _, m in dead.messages) == 5, 10)
            stats = daemon.engine.stats
            published_rows = daemon.sink.counters.dropped_readings
        steps = forecasts.wait_for(6)
    finally:
        for collector in (dropped, forecasts, dead):
            collector.close()
        publisher.disconnect()
    got = {(m["stream"], m["timestamp"], m["value"], m["dropped"]) for _, m in rows}
    assert len(rows) == 4 and got == replay_rows(items) and published_rows == 4
    assert {topic for topic, _ in rows} == {f"sensorcast/dropped/{s}" for s in STREAMS}
    assert all(m["forecast"] is None and m["model"] == "persistence" for _, m in rows)
    assert len(steps) == 6 and all("dropped" not in m for _, m in steps)  # steps only
    assert dict(stats.dropped) == {"duplicate": 2, "late": 2, "bad_value": 1}
    assert {m["reason"] for _, m in dead.messages} == {"duplicate", "late", "bad_value"}
