"""`sensorcast bench` end to end at tiny sizes: every scenario runs and reports sane numbers.

These are not timed tests: nothing here asserts that the machine is fast, only
that each scenario measures sensorcast and its baseline, that the numbers are
positive and finite, that the ratio is sensorcast / baseline of the medians,
and that the JSON file carries every field and the machine info. The MQTT and
start-up scenarios start their own mosquitto on a free port.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.bench_report import Row, Target, table
from pipeline.cli import main

FIELDS = {"scenario", "metric", "unit", "sensorcast_runs", "baseline_runs", "baseline", "target",
          "note", "extra", "sensorcast", "baseline_value", "ratio", "met"}  # fmt: skip
needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed",
)


def bench(tmp_path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    """Run ``sensorcast bench --quick FLAGS``; the JSON it wrote (the table checked too)."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out), *flags]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:5] == ["scenario", "metric", "sensorcast",
                                                   "baseline", "ratio"]  # fmt: skip
    document = json.loads(out.read_text())
    assert {"cpu_count", "python", "versions"} <= set(document["machine"])
    assert document["machine"]["versions"]["torch"]
    return document


def check_row(row: dict[str, Any], runs: int) -> None:
    assert set(row) == FIELDS
    assert len(row["sensorcast_runs"]) == len(row["baseline_runs"]) == runs
    for value in (*row["sensorcast_runs"], *row["baseline_runs"]):
        assert math.isfinite(value) and value > 0, row
    assert row["sensorcast"] == statistics.median(row["sensorcast_runs"])
    assert row["baseline_value"] == statistics.median(row["baseline_runs"])
    assert row["ratio"] == pytest.approx(row["sensorcast"] / row["baseline_value"])
    assert row["met"] in (True, False, None)
    assert (row["met"] is None) == (row["target"] is None)
    assert row["baseline"] and row["note"]


def nab_folder(root: Path) -> Path:
    """A NAB-shaped root with one small ``timestamp,value`` series."""
    data = root / "data" / "artificialNoAnomaly"
    data.mkdir(parents=True)
    times = pd.date_range("2014-04-01", periods=400, freq="5min").strftime("%Y-%m-%d %H:%M:%S")
    value = 50 + 10 * np.sin(np.arange(400) / 20)
    pd.DataFrame({"timestamp": times, "value": value.round(4)}).to_csv(
        data / "art_daily_sine.csv", index=False
    )
    return root


def test_replay_against_river(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nab = nab_folder(tmp_path / "nab")
    document = bench(tmp_path, capsys, "--scenario", "replay", "--runs", "3", "--nab", str(nab))
    rows = document["rows"]
    assert [row["metric"] for row in rows] == [
        "NAB throughput",
        "50 synthetic streams throughput",
        "50 synthetic streams, Parquet out throughput",
    ]
    for row in rows:
        check_row(row, 3)
        assert row["unit"] == "readings/s"
        assert row["extra"]["river_readings"] <= row["extra"]["readings"]
    assert rows[0]["extra"]["readings"] == 400
    assert rows[1]["extra"]["readings"] == rows[2]["extra"]["readings"] == 50 * 40


@needs_mosquitto
def test_mqtt_against_bare_paho(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = bench(tmp_path, capsys, "--scenario", "mqtt", "--runs", "1")
    rows = {row["metric"]: row for row in document["rows"]}
    assert set(rows) == {"throughput", "latency p50", "latency p99"}
    for row in rows.values():
        check_row(row, 1)
    assert rows["latency p50"]["sensorcast"] <= rows["latency p99"]["sensorcast"]
    assert rows["throughput"]["target"] == ">= 0.8x baseline"
    # the probe timed a forecast for every paced reading, as the bare subscriber did the readings
    probed = rows["latency p50"]["extra"]["sensorcast_samples"]
    assert probed == rows["latency p99"]["extra"]["baseline_samples"] and probed[0] > 0


def test_the_probe_frames_whole_packets_and_keeps_a_cut_one() -> None:
    from pipeline.bench_load import frame, whole_packets

    big, small = frame(b"t/a", b"x" * 300, 5), frame(b"t", b"y", 6)  # 2- and 1-byte lengths
    buf = bytearray(big + small[:3])
    assert whole_packets(buf) == [(0x32, big[3:])]
    assert buf == small[:3]  # waits for the rest
    buf += small[3:]
    assert whole_packets(buf) == [(0x32, small[2:])] and not buf


def test_a_late_paced_slice_never_repeats_a_streams_time() -> None:
    from pipeline.bench_load import paced_slice, whole_packets

    # 7 readings over 3 streams: the slice ran late and wraps round the streams twice
    buf = bytearray(b"".join(paced_slice("s", 3, range(10, 17), 1_700_000_000.0004)))
    seen = set()
    for _, body in whole_packets(buf):
        topic_end = 2 + (body[0] << 8 | body[1])
        reading = json.loads(body[topic_end + 2 :])  # after the packet id
        seen.add((bytes(body[2:topic_end]), reading["ts"]))
        assert 0 <= reading["ts"] - 1_700_000_000.0 < 1e-5  # still the slice's ms
    assert len(seen) == 7


def test_memory_per_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 20,000 streams: a column of fewer (under glibc's 128 KiB mmap threshold) may be
    # placed in heap pages that were resident before, and its growth not show
    flags = ("--scenario", "memory", "--runs", "1", "--memory-streams", "20000")
    (row,) = bench(tmp_path, capsys, *flags)["rows"]
    check_row(row, 1)
    assert row["metric"] == "20,000 streams"
    (run,) = row["extra"]["runs"]
    assert run["streams_in_table"] == 20_000 + 1  # and the warm-up stream
    # the growth cannot be less than what the table's columns hold
    assert row["sensorcast"] >= 0.9 * run["columns_per_stream"]


@needs_mosquitto
def test_startup_to_ready(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (row,) = bench(tmp_path, capsys, "--scenario", "startup", "--runs", "1")["rows"]
    check_row(row, 1)
    assert row["unit"] == "s"
    assert row["extra"]["snapshot_bytes"] > 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--runs", "0"], "--runs: 0 must be at least 1"),
        (["--streams", "0"], "--streams: 0 must be a whole number of at least 1"),
        (["--streams", "-5"], "--streams: -5 must be a whole number of at least 1"),
        (["--steps", "0"], "--steps: 0 must be"),
        (["--river-readings", "-1"], "--river-readings: -1 must be"),
        (["--mqtt-streams", "0"], "--mqtt-streams: 0 must be"),
        (["--mqtt-readings", "0"], "--mqtt-readings: 0 must be"),
        (["--startup-streams", "0"], "--startup-streams: 0 must be"),
        (["--latency-seconds", "nan"], "--latency-seconds: nan must be a positive finite"),
        (["--latency-seconds", "inf"], "--latency-seconds: inf must be a positive finite"),
        (["--latency-seconds", "0"], "--latency-seconds: 0 must be a positive finite"),
        (["--memory-streams", "abc"], "--memory-streams: 'abc' must be comma-separated whole"),
        (["--memory-streams", ","], "--memory-streams: ',' must be comma-separated whole"),
        (["--memory-streams", ""], "--memory-streams: '' must be comma-separated whole"),
        (["--memory-streams", "2000,0"], "--memory-streams: '2000,0' must be"),
        (["--memory-streams", "1.5"], "--memory-streams: '1.5' must be"),
        (["--nab", "/nonexistent/nab"], "--nab: /nonexistent/nab does not exist"),
    ],
)
def test_bad_flags_are_one_line_before_any_run(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # every scenario, so that a flag of a later one is checked before the first starts
    assert main(["bench", "--quick", "--runs", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sensorcast: error: ") and message in err, err
    assert len(err.splitlines()) == 1  # also: no "bench: replay ..." line, nothing ran


@pytest.mark.parametrize("content", ["nothing", "not a csv", "a file"])
def test_a_nab_folder_without_csv_files_is_refused_before_the_synthetic_runs(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    nab = tmp_path / "nab"
    if content == "a file":
        nab.write_text("timestamp,value\n")
        why = "is not a folder"
    else:
        (nab / "data").mkdir(parents=True)
        if content == "not a csv":
            (nab / "data" / "readme.txt").write_text("hello")
        why = "holds no *.csv files"
    assert main(["bench", "--quick", "--runs", "1", "--scenario", "replay", "--nab", str(nab)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sensorcast: error: --nab: {nab} {why}"), err
    assert len(err.splitlines()) == 1  # the synthetic runs never started


def test_rows_report_medians_and_targets() -> None:
    fast = Row("s", "m", "readings/s", [3.0, 1.0, 2.0], [1.0, 1.0, 4.0], "b",
               Target(value=2.0, ratio=1.5))  # fmt: skip
    assert (fast.sensorcast, fast.baseline_value, fast.ratio, fast.met) == (2.0, 1.0, 2.0, True)
    slow = Row("s", "m", "ms", [30.0], [10.0], "b", Target(value=20.0, at_least=False))
    assert (slow.ratio, slow.met) == (3.0, False)
    text = table([fast, slow])
    assert ">= 1.5x baseline" in text and "<= 20 ms" in text and "NO" in text


def test_an_unwritable_json_path_is_refused_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    command = ["bench", "--scenario", "replay", "--quick", "--json", str(blocker / "x.json")]
    assert main(command) == 2
    captured = capsys.readouterr()
    assert f"--json: {blocker} is a file" in captured.err and len(captured.err.splitlines()) == 1
    assert "bench: replay" not in captured.err  # refused before the scenario started
