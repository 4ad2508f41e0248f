"""`sensorcast bench` end to end at tiny sizes: every scenario runs and reports sane numbers.

These are not timed tests: nothing here asserts that the machine is fast, only
that each scenario measures sensorcast and its baseline, that the numbers are
positive, finite and in a sane range, that each run's ratio is its sensorcast /
its own baseline and the row's ratio their median, that the printed table says
what the JSON file says, and that the file is strict JSON with every field, the
sizes used and the machine info. The MQTT and start-up scenarios start their
own mosquitto on a free port.
"""

from __future__ import annotations

import json
import math
import re
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
          "note", "extra", "sensorcast", "baseline_value", "ratio_runs", "ratio",
          "met"}  # fmt: skip
MACHINE = {"cpu_count", "cpu_model", "python", "versions"}
VERSIONS = {"torch", "numpy", "river", "paho-mqtt"}
needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed",
)


def bench(tmp_path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    """Run ``sensorcast bench --quick FLAGS``; the JSON it wrote (the table checked against it)."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out), *flags]) == 0
    printed = capsys.readouterr().out
    document = strict_json(out)
    assert MACHINE <= set(document["machine"]) and document["machine"]["cpu_count"] >= 1
    assert all(document["machine"]["versions"][name] for name in VERSIONS)
    assert document["settings"]["runs"] == document["arguments"]["runs"]
    assert document["rows"], printed
    check_table(printed, document["rows"])
    return document


def strict_json(path: Path) -> dict[str, Any]:
    """``path`` parsed as JSON proper: NaN and Infinity are refused, as other readers do."""

    def refuse(constant: str) -> None:
        msg = f"{path} holds {constant}, which is not JSON"
        raise AssertionError(msg)

    return dict(json.loads(path.read_text(), parse_constant=refuse))


def check_table(printed: str, rows: list[dict[str, Any]]) -> None:
    """One line a row, in the JSON's order, with the JSON's medians, ratio and verdict."""
    lines = printed.splitlines()
    assert lines[0].split()[:5] == ["scenario", "metric", "sensorcast", "baseline", "ratio"]
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines[2 : 2 + len(rows)]]
    for cell, row in zip(cells, rows, strict=True):
        assert cell[:2] == [row["scenario"], f"{row['metric']} ({row['unit']})"], cell
        for shown, value in zip(cell[2:5], (row["sensorcast"], row["baseline_value"],
                                            row["ratio"]), strict=True):  # fmt: skip
            if value is None:  # NaN: null in the file, "-" in the table
                assert shown == "-", cell
            else:
                assert float(shown.replace(",", "").rstrip("x")) == pytest.approx(value, rel=6e-3)
        assert cell[6] == {None: "-", True: "yes", False: "NO"}[row["met"]]
    runs = {len(row["sensorcast_runs"]) for row in rows}
    assert f"medians of {'/'.join(map(str, sorted(runs)))} run(s)" in printed


def check_row(row: dict[str, Any], runs: int) -> None:
    """Every run of both sides is there, positive and finite; each run's ratio is against
    the baseline of the same run, and the row reports the medians."""
    assert set(row) == FIELDS
    assert len(row["sensorcast_runs"]) == len(row["baseline_runs"]) == runs
    for value in (*row["sensorcast_runs"], *row["baseline_runs"]):
        assert math.isfinite(value) and value > 0, row
    assert row["sensorcast"] == statistics.median(row["sensorcast_runs"])
    assert row["baseline_value"] == statistics.median(row["baseline_runs"])
    pairs = zip(row["sensorcast_runs"], row["baseline_runs"], strict=True)
    assert row["ratio_runs"] == pytest.approx([ours / base for ours, base in pairs])
    assert row["ratio"] == pytest.approx(statistics.median(row["ratio_runs"]))
    if runs == 1:
        assert row["ratio"] == pytest.approx(row["sensorcast"] / row["baseline_value"])
    assert row["met"] in (True, False, None)
    assert (row["met"] is None) == (row["target"] is None)
    assert row["baseline"] and row["note"]


def within(runs: list[float], low: float, high: float) -> bool:
    return all(low < x < high for x in runs)


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


def check_stages(row: dict) -> None:
    """Each timed run says where its time went: every stage took some of it, and the
    stages add up to no more than the run, whose rate they give."""
    runs = row["extra"]["stage_seconds"]
    assert len(runs) == len(row["sensorcast_runs"])
    for seconds, rate in zip(runs, row["sensorcast_runs"], strict=True):
        stages = [seconds[name] for name in ("opening", "reading", "engine", "writing", "closing")]
        assert all(x > 0 for x in stages), seconds
        assert sum(stages) <= seconds["total"], seconds
        assert row["extra"]["readings"] / seconds["total"] == pytest.approx(rate)
    assert "sensorcast's time in its median run: opening " in row["note"]


def test_replay_against_river(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nab = nab_folder(tmp_path / "nab")
    document = bench(tmp_path, capsys, "--scenario", "replay", "--runs", "3", "--nab", str(nab))
    rows = document["rows"]
    assert [row["metric"] for row in rows] == [
        "NAB throughput",
        "50 synthetic streams throughput",
        "50 synthetic streams, Parquet out throughput",
        "50 synthetic streams, Arrow out throughput",
    ]
    for row in rows:
        check_row(row, 3)
        assert row["unit"] == "readings/s"
        # sane: a clock that measured something, not a fast machine
        assert within(row["sensorcast_runs"] + row["baseline_runs"], 0, 1e9), row
        assert 1 <= row["extra"]["river_readings"] <= row["extra"]["readings"]
        check_stages(row)
    assert rows[0]["extra"]["readings"] == rows[0]["extra"]["river_readings"] == 400  # 1 stream
    assert {row["extra"]["readings"] for row in rows[1:]} == {50 * 40}
    # River gets whole streams (40 readings each), as many as fit its 300 of --quick
    assert {row["extra"]["river_readings"] for row in rows[1:]} == {280}
    assert document["settings"]["nab"] == str(nab)


@needs_mosquitto
def test_mqtt_against_bare_paho(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = bench(tmp_path, capsys, "--scenario", "mqtt", "--runs", "1")
    rows = {row["metric"]: row for row in document["rows"]}
    assert list(rows) == ["throughput", "latency p50", "latency p99"]
    for row in rows.values():
        check_row(row, 1)
    throughput, p50, p99 = rows["throughput"], rows["latency p50"], rows["latency p99"]
    assert throughput["target"] == ">= 0.8x baseline"
    assert within(throughput["sensorcast_runs"] + throughput["baseline_runs"], 0, 1e7)
    for side in ("sensorcast_runs", "baseline_runs"):  # per run: p50 <= p99, under a minute
        assert all(a <= b for a, b in zip(p50[side], p99[side], strict=True))
        assert within(p50[side] + p99[side], 0, 60_000)
    # latency is taken at half of the median throughput, in every latency row
    assert p50["extra"]["rate"] == p99["extra"]["rate"] == throughput["sensorcast"] / 2
    # the probe timed a forecast for every paced reading, as the bare subscriber did the readings
    assert p50["extra"] == p99["extra"]
    probed = p50["extra"]["sensorcast_samples"]
    assert probed == p50["extra"]["baseline_samples"] and probed[0] > 0
    # and the daemon's own histogram over the same run: its part of the time, never more
    # than the whole tail (a bucket's bound may pass it by at most one bucket, 25 ms)
    inside, share = p99["extra"]["daemon_p99_ms"], p99["extra"]["daemon_within_10ms"]
    assert within(inside, 0, p99["sensorcast_runs"][0] + 25) and 0 <= share[0] <= 1
    assert "Inside the daemon" in p99["note"]


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
    # --quick's 20,000 streams: a column of fewer (under glibc's 128 KiB mmap threshold) may
    # be placed in heap pages that were resident before, and its growth not show
    (row,) = bench(tmp_path, capsys, "--scenario", "memory", "--runs", "1")["rows"]
    check_row(row, 1)
    assert row["metric"] == "20,000 streams" and row["unit"] == "bytes/stream"
    (run,) = row["extra"]["runs"]
    assert run["streams_in_table"] == 20_000 + 1  # and the warm-up stream
    # the growth cannot be less than what the table's columns hold, nor many times more
    assert 0.9 * run["columns_per_stream"] <= row["sensorcast"] < 10 * run["columns_per_stream"]


def test_memory_sizes_come_from_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ("--scenario", "memory", "--runs", "1", "--memory-streams", "20000,30000")
    rows = bench(tmp_path, capsys, *flags)["rows"]
    assert [row["metric"] for row in rows] == ["20,000 streams", "30,000 streams"]
    for row in rows:
        check_row(row, 1)
    assert rows[0]["baseline_runs"] == rows[1]["baseline_runs"]  # River measured once a run


@needs_mosquitto
def test_startup_to_ready(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (row,) = bench(tmp_path, capsys, "--scenario", "startup", "--runs", "1")["rows"]
    check_row(row, 1)
    assert row["unit"] == "s" and row["target"] == "<= 3 s"
    # bounded by the bench's own time-outs: ready within 60 s, connected within 10 s
    assert within(row["sensorcast_runs"], 0, 60) and within(row["baseline_runs"], 0, 10)
    assert row["extra"]["snapshot_bytes"] > 0
    assert "snapshot of 50 streams" in row["note"]


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
        (["--nab", ""], "--nab: '' is not a folder name; give a NAB root"),
        (["--json", ""], "--json: '' is not a file name; give one, e.g. --json bench.json"),
        (["--runs", "-1"], "--runs: -1 must be at least 1"),
        (["--runs", "abc"], "argument --runs: invalid int value: 'abc'; see sensorcast bench"),
        (["--runs", "2.5"], "argument --runs: invalid int value: '2.5'"),
        (["--scenario", "unknown"], "argument --scenario: invalid choice: 'unknown'"),
        (["--streams", "1e3"], "argument --streams: invalid int value: '1e3'"),
        (["--latency-seconds", "-1"], "--latency-seconds: -1 must be a positive finite"),
        (["--memory-streams", "-5"], "--memory-streams: '-5' must be"),
    ],
)
def test_bad_flags_are_one_line_before_any_run(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # every scenario, so that a flag of a later one is checked before the first starts
    assert exit_code(["bench", "--quick", "--runs", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sensorcast: error: ") and message in err, err
    assert len(err.splitlines()) == 1  # also: no "bench: replay ..." line, nothing ran


def exit_code(argv: list[str]) -> int:
    """``main``'s exit code, also when argparse finds the mistake (it exits instead)."""
    try:
        return main(argv)
    except SystemExit as exited:
        return int(exited.code or 0)


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


def test_the_ratio_is_the_median_of_each_runs_own_ratio() -> None:
    # run by run 10/1, 20/10, 30/5: the median ratio is 6, while the medians' ratio, 20/5,
    # would set a sensorcast run beside the baseline of another
    row = Row("s", "m", "readings/s", [10.0, 20.0, 30.0], [1.0, 10.0, 5.0], "b",
              Target(value=15.0, ratio=5.0))  # fmt: skip
    assert (row.sensorcast, row.baseline_value) == (20.0, 5.0)
    assert (row.ratio_runs, row.ratio, row.met) == ([10.0, 2.0, 6.0], 6.0, True)
    slow = Row("s", "m", "ms", [30.0], [10.0], "b", Target(value=20.0, at_least=False))
    assert (slow.ratio, slow.met) == (3.0, False)
    text = table([row, slow])
    assert ">= 5x baseline" in text and "<= 20 ms" in text and "NO" in text
    assert "medians of 1/3 run(s)" in text and "fewer than 3 runs" in text
    assert "fewer than 3 runs" not in table([row])


def test_medians_of_an_even_count_and_of_a_failed_run() -> None:
    even = Row("s", "m", "ms", [1.0, 4.0], [1.0, 2.0], "b")
    assert (even.sensorcast, even.baseline_value, even.ratio) == (2.5, 1.5, 1.5)  # (1 + 2) / 2
    # a run that measured nothing (NaN) or a baseline of 0 is not sorted in among the others
    failed = Row("s", "m", "ms", [1.0, math.nan, 3.0], [1.0, 1.0, 0.0], "b", Target(value=5.0))
    assert math.isnan(failed.sensorcast) and math.isnan(failed.ratio)
    assert failed.baseline_value == 1.0 and failed.met is False
    assert failed.ratio_runs[0] == 1.0 and math.isnan(failed.ratio_runs[2])


def test_latency_percentiles_are_by_nearest_rank() -> None:
    from pipeline.bench_load import latency_summary

    hundred = [ms / 1000 for ms in range(1, 101)]  # 1..100 ms
    assert latency_summary(hundred) == {"p50_ms": 50.0, "p99_ms": 99.0, "n": 100}
    assert latency_summary([0.002]) == {"p50_ms": 2.0, "p99_ms": 2.0, "n": 1}
    assert math.isnan(latency_summary([])["p99_ms"])


def test_the_daemons_latency_quantile_is_prometheus_histogram_quantile() -> None:
    from pipeline.bench_mqtt import daemon_latency, histogram_quantile

    inf = math.inf
    buckets = {0.001: 10.0, 0.005: 50.0, 0.01: 90.0, 0.025: 100.0, inf: 100.0}
    # rank 99 lies in (0.01, 0.025], 9 of its 10: 0.01 + 0.015 * 0.9
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.0235)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.005)  # (0.001, 0.005], 40 of 40
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.0005)  # the first from 0
    # past the last finite bound: that bound, as Prometheus answers
    assert histogram_quantile(0.99, {0.01: 90.0, inf: 100.0}) == 0.01
    assert math.isnan(histogram_quantile(0.99, {0.01: 0.0, inf: 0.0}))
    # between two scrapes: the difference of the counts
    seen = daemon_latency({0.01: 5.0, inf: 10.0}, {0.01: 95.0, inf: 110.0})
    assert seen == {"daemon_p99_ms": pytest.approx(10.0), "daemon_within_10ms": 0.9}


def test_delivered_waits_for_the_forecasts_handed_over_then_a_later_scrape_confirming_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline import bench_mqtt

    def page(steps: int, forecasts: int, pending: int) -> list[str]:
        return [f"sensorcast_steps_total {steps}",
                f'sensorcast_messages_published_total{{kind="forecast"}} {forecasts}',
                f"sensorcast_publish_pending {pending}"]  # fmt: skip

    pages = iter([
        page(100, 60, 0),  # every step made, nothing unconfirmed: the last tick not yet handed over
        page(100, 100, 40),  # handed over, 40 unconfirmed
        page(100, 100, 0),  # a later scrape: the broker has them all
        page(100, 100, 0),
    ])  # fmt: skip
    scraped = []

    def scrape(port: int) -> list[str]:
        scraped.append(port)
        return next(pages)

    monkeypatch.setattr(bench_mqtt, "scrape", scrape)
    monkeypatch.setattr(bench_mqtt.time, "sleep", lambda seconds: None)
    bench_mqtt.wait_steps(1, 100, timeout=60.0, delivered=True)
    assert len(scraped) == 3
    # counted and unconfirmed-free in the same scrape is not enough: the count may be
    # read before the last forecasts were tracked
    pages = iter([page(100, 100, 0), page(100, 100, 0)])
    scraped.clear()
    bench_mqtt.wait_steps(1, 100, timeout=60.0, delivered=True)
    assert len(scraped) == 2
    pages = iter([page(100, 0, 0)])  # without delivered: the steps alone
    scraped.clear()
    bench_mqtt.wait_steps(1, 100, timeout=60.0)
    assert len(scraped) == 1


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


def test_a_json_path_that_is_a_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--scenario", "replay", "--quick", "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"sensorcast: error: --json: {tmp_path} is a folder; give a file name\n"


@pytest.mark.parametrize("name", ["art_daily_sine.csv", "new.csv"])
def test_a_json_path_in_the_nab_folder_is_refused(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # the series itself would be overwritten; a new CSV there would be read as one next run
    nab = nab_folder(tmp_path / "nab")
    target = nab / "data" / "artificialNoAnomaly" / name
    before = target.read_bytes() if target.exists() else None
    command = ["bench", "--scenario", "replay", "--quick", "--nab", str(nab), "--json", str(target)]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sensorcast: error: --json: {target} is a CSV file in the NAB folder")
    assert len(err.splitlines()) == 1
    assert (target.read_bytes() if target.exists() else None) == before


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"data/x/header-only.csv": "timestamp,value\n"}, "header-only.csv: has no data rows"),
        ({"data/x/garbage.csv": "hello world\n1 2\n"}, "garbage.csv: no time column"),
        ({"data/x/empty.csv": "timestamp,value\n2014-04-01 00:00:00,\n"}, "holds no readings"),
        ({"data/x.csv/readme.txt": "a folder named like a CSV"}, "holds no *.csv files"),
    ],
)
def test_a_nab_folder_that_cannot_be_replayed_is_refused_before_any_run(
    tmp_path: Path, files: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    nab = tmp_path / "nab"
    for name, text in files.items():
        (nab / name).parent.mkdir(parents=True, exist_ok=True)
        (nab / name).write_text(text)
    assert main(["bench", "--quick", "--runs", "1", "--scenario", "replay", "--nab", str(nab)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sensorcast: error: --nab: ") and message in err, err
    assert len(err.splitlines()) == 1  # nothing ran


def test_a_missing_mosquitto_is_named_before_the_replay_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline import bench_broker

    monkeypatch.setattr(bench_broker.shutil, "which", lambda name: None)
    monkeypatch.setattr(bench_broker, "MOSQUITTO", str(tmp_path / "no-mosquitto"))
    assert main(["bench", "--quick", "--runs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sensorcast: error: --scenario mqtt: needs mosquitto"), err
    assert len(err.splitlines()) == 1  # the replay and memory scenarios never started


# -- the run and the JSON file, with scenarios that only hand back rows -------------------


def fake_scenarios(
    monkeypatch: pytest.MonkeyPatch, ran: list[str], fail: str = "", then: Any = None
) -> None:
    """Scenarios that return fixed rows at once (``fail`` raises); ``then`` runs after each."""
    from pipeline import bench as bench_module

    def job(name: str) -> Any:
        def rows() -> list[Row]:
            ran.append(name)
            if then is not None:
                then()
            if name == fail:
                msg = f"bench: {name} broke"
                raise RuntimeError(msg)
            runs = ([4.0, 2.0, 6.0], [2.0, 1.0, 0.0])  # the last run's baseline measured 0
            return [Row(name, "m", "readings/s", *runs, "fake", Target(ratio=1.5))]

        return rows

    chosen = {name: job(name) for name in bench_module.SCENARIOS}
    monkeypatch.setattr(bench_module, "scenarios", lambda args, s: chosen)
    monkeypatch.setattr(bench_module, "mosquitto_binary", lambda scenario: "mosquitto")


def test_every_scenario_runs_in_order_and_nan_is_written_as_null(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []
    fake_scenarios(monkeypatch, ran)
    out = tmp_path / "bench.json"
    assert main(["bench", "--json", str(out)]) == 0
    assert ran == ["replay", "mqtt", "memory", "startup"]
    document = strict_json(out)
    assert [row["scenario"] for row in document["rows"]] == ran
    for row in document["rows"]:
        # runs 4/2 and 2/1 give 2, the third run's 6/0 is no number: null, and so is the median
        assert row["ratio_runs"] == [2.0, 2.0, None] and row["ratio"] is None
        assert (row["sensorcast"], row["baseline_value"], row["met"]) == (4.0, 1.0, False)
    assert document["settings"]["memory_streams"] == [100_000, 1_000_000]
    assert document["settings"]["runs"] == 3
    check_table(capsys.readouterr().out, document["rows"])
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left beside it


def test_a_failing_scenario_leaves_the_previous_json_as_it_was(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran: list[str] = []
    fake_scenarios(monkeypatch, ran, fail="memory")
    out = tmp_path / "bench.json"
    out.write_text('{"rows": "the previous run"}\n')
    with pytest.raises(RuntimeError, match="memory broke"):
        main(["bench", "--json", str(out)])
    assert ran == ["replay", "mqtt", "memory"]
    assert out.read_text() == '{"rows": "the previous run"}\n'
    assert list(tmp_path.iterdir()) == [out]


def test_a_json_folder_gone_by_the_end_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "out"
    fake_scenarios(monkeypatch, [], then=lambda: shutil.rmtree(folder, ignore_errors=True))
    out = folder / "bench.json"
    assert main(["bench", "--scenario", "replay", "--json", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "bench: replay ..." and len(err) == 2, err
    assert err[1].startswith(f"sensorcast: error: --json: cannot write {out} ("), err
