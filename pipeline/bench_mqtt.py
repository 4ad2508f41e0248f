"""``bench --scenario mqtt``: a publisher process -> a private mosquitto -> the daemon.

Throughput: the publisher sends ``readings`` QoS 1 readings over ``streams``
streams as fast as the broker takes them; sensorcast's rate is readings over
the time from the first publish to the daemon's ``sensorcast_steps_total``
counting all of them (forecasts are published in the same tick). The baseline
is a bare paho subscriber (QoS 1, MQTT 5, like the daemon) that only counts
messages, fed by the same publisher through the same broker in the same run,
on another topic root so the daemon idles meanwhile.

Latency: at half of sensorcast's measured rate the publisher stamps each
reading with its send time; a paho subscriber on ``sensorcast/forecast/#``
reads the stamp back from each forecast (publish -> forecast received). The
baseline is the bare subscriber's publish -> message received at the same rate.
Each run also reads the daemon's own latency histogram before and after
(``sensorcast_forecast_latency_seconds``: a message's arrival to its forecasts
handed to the sink), so that a run says how much of its tail is inside the
daemon and how much is the broker's two trips and the machine.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bench_broker import BenchBroker, free_port
from pipeline.bench_report import Row, Target, median

T0 = 1_600_000_000  # event time of the warm-up; each run starts 10^6 s later
BASELINE_ROOT = "bench"  # the bare subscriber's topics, which the daemon does not take
BARE = "bare paho subscriber (QoS 1) counting messages, same publisher and broker, same run"


@dataclass(frozen=True, slots=True)
class MqttSize:
    streams: int = 10_000
    readings: int = 50_000
    latency_seconds: float = 5.0


def load(mode: str, port: int, *args: str) -> subprocess.Popen[str]:
    """A ``pipeline.bench_load`` process; its JSON result is its last stdout line."""
    command = [sys.executable, "-m", "pipeline.bench_load", mode, "--port", str(port), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen[str], timeout: float = 600.0) -> dict[str, Any]:
    out, _ = process.communicate(timeout=timeout)
    if process.returncode:
        msg = f"bench load process {process.args!r} failed with exit code {process.returncode}"
        raise RuntimeError(msg)
    return dict(json.loads(out.strip().splitlines()[-1]))


def counter(port: int, *args: str, mode: str = "count") -> subprocess.Popen[str]:
    """A bare subscriber (or the ``probe``), returned once it is subscribed."""
    process = load(mode, port, *args)
    if process.stdout is None or process.stdout.readline().strip() != "ready":
        msg = f"bench: the {mode} subscriber did not subscribe"
        raise RuntimeError(msg)
    return process


# -- the daemon ---------------------------------------------------------------------------


def daemon_env() -> dict[str, str]:
    """One thread for torch: the issue's budget is one core for the pipeline."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start_daemon(
    broker_port: int, metrics_port: int, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """``sensorcast run`` against the bench's broker; stderr goes to ``log`` (a pipe nobody
    reads would fill up and stall the daemon)."""
    command = [
        sys.executable, "-m", "pipeline.cli", "run",
        "--broker", f"mqtt://127.0.0.1:{broker_port}",
        "--metrics-port", str(metrics_port),
        "--metrics-max-streams", "0",  # the bench scrapes often; per-stream series are not the load
        "--client-id", f"bench-{broker_port}-{metrics_port}",
        "--log-level", "warning",
        *extra,
    ]  # fmt: skip
    with open(log, "ab") as err:
        return subprocess.Popen(command, env=daemon_env(), stderr=err)


def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(10)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status)
    except OSError:
        return 0


def wait_ready(
    daemon: subprocess.Popen[bytes], metrics_port: int, log: Path, timeout: float = 60.0
) -> float:
    """Poll ``/readyz`` every 5 ms; the monotonic time it first said 200."""
    url = f"http://127.0.0.1:{metrics_port}/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_status(url) == 200:
            return time.monotonic()
        if daemon.poll() is not None:
            err = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            msg = f"bench: the daemon exited with {daemon.returncode} before ready:\n{err}"
            raise RuntimeError(msg)
        time.sleep(0.005)
    msg = f"bench: the daemon was not ready within {timeout} s"
    raise TimeoutError(msg)


def scrape(port: int) -> list[str]:
    """The lines of the daemon's ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode().splitlines()


def metrics(port: int) -> dict[str, float]:
    """Unlabelled samples (and stage seconds) of the daemon's ``/metrics``."""
    return samples(scrape(port))


def samples(lines: list[str]) -> dict[str, float]:
    """Unlabelled samples (and stage seconds) of ``/metrics`` lines."""
    out = {}
    for line in lines:
        name, _, value = line.rpartition(" ")
        if line.startswith("sensorcast_") and ("{" not in name or "stage=" in name):
            out[name] = float(value)
    return out


FORECASTS_PUBLISHED = 'sensorcast_messages_published_total{kind="forecast"} '


def forecasts_published(lines: list[str]) -> float:
    """Forecast messages the daemon's sink has handed over to its MQTT client."""
    for line in lines:
        if line.startswith(FORECASTS_PUBLISHED):
            return float(line[len(FORECASTS_PUBLISHED) :])
    return 0.0


LATENCY_BUCKET = 'sensorcast_forecast_latency_seconds_bucket{le="'


def latency_buckets(port: int) -> dict[float, float]:
    """The daemon's own latency histogram: cumulative counts by upper bound (seconds,
    ``inf`` the last)."""
    out = {}
    for line in scrape(port):
        if line.startswith(LATENCY_BUCKET):
            bound, _, count = line[len(LATENCY_BUCKET) :].partition('"} ')
            out[float(bound)] = float(count)  # "+Inf" parses as inf
    return out


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float:
    """Prometheus' ``histogram_quantile`` of cumulative bucket counts: linear within
    the bucket that holds the q-th observation; the largest finite bound when that is
    the ``+Inf`` bucket; NaN with no observations."""
    bounds = sorted(cumulative)
    total = cumulative.get(math.inf, 0.0)
    if not total:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if cumulative[bound] >= rank:
            if bound == math.inf:
                return bounds[-2] if len(bounds) > 1 else math.nan
            inside = cumulative[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative[bound]
    return math.nan


def daemon_latency(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """What the daemon's histogram saw between two scrapes: its p99 (ms, by
    ``histogram_quantile``) and the share of messages it forecast within 10 ms."""
    seen = {bound: count - before.get(bound, 0.0) for bound, count in after.items()}
    total = seen.get(math.inf, 0.0)
    within = seen.get(0.01, math.nan) / total if total else math.nan
    return {"daemon_p99_ms": 1000 * histogram_quantile(0.99, seen), "daemon_within_10ms": within}


def wait_steps(
    port: int, steps: float, timeout: float, remaining: float = 1.0, delivered: bool = False
) -> float:
    """Poll until the daemon made ``steps`` steps (and, if ``delivered``, the broker
    acknowledged the forecast of every one of them); the monotonic time it did.

    Delivered is two scrapes: one in which the sink has counted a forecast for each
    step (it counts them once handed to its client and tracked; one a step, as the
    bench drops no reading), then a later one with nothing unconfirmed. One scrape
    could see the steps made and nothing unconfirmed while the engine's last tick was
    still on its way to the sink (it happened: the next run's subscriber then got
    thousands of forecasts of the run before).

    Each scrape costs the daemon CPU (a real Prometheus scrapes every 15 s, not
    50 times a second), so it is polled every 100 ms while over a quarter of the
    ``remaining`` steps are left (over 0.1 s of work even at 100,000 steps/s),
    then every 20 ms for a precise finish.
    """
    deadline = time.monotonic() + timeout
    handed_over = False
    while time.monotonic() < deadline:
        lines = scrape(port)
        sample = samples(lines)
        done = sample.get("sensorcast_steps_total", 0.0)
        if done >= steps and not delivered:
            return time.monotonic()
        if handed_over and not sample.get("sensorcast_publish_pending", 0.0):
            return time.monotonic()
        if not handed_over and forecasts_published(lines) >= steps:
            handed_over = True
            continue  # the next scrape, at once, may find them all confirmed
        time.sleep(0.1 if steps - done > 0.25 * remaining else 0.02)
    msg = f"bench: the daemon did not reach {steps:.0f} steps within {timeout:.0f} s"
    raise TimeoutError(msg)


# -- one measurement each -------------------------------------------------------------------


@dataclass
class Rig:
    """The broker, the running daemon and the size: what every measurement needs."""

    broker_port: int
    metrics_port: int
    size: MqttSize

    def publish_args(self, root: str, readings: int, t0: int) -> list[str]:
        return ["--root", root, "--streams", str(self.size.streams),
                "--readings", str(readings), "--t0", str(t0)]  # fmt: skip

    def timeout(self, readings: int) -> float:
        return 120.0 + readings / 100  # even a very slow machine takes 100 readings/s

    def daemon_rate(self, readings: int, t0: int) -> float:
        before = metrics(self.metrics_port).get("sensorcast_steps_total", 0.0)
        publisher = load("publish", self.broker_port, *self.publish_args("sensors", readings, t0))
        done = wait_steps(
            self.metrics_port, before + readings, self.timeout(readings), readings, delivered=True
        )
        return readings / (done - result(publisher)["started"])

    def bare_rate(self, readings: int) -> float:
        bare = counter(self.broker_port, "--filter", f"{BASELINE_ROOT}/#",
                       "--readings", str(readings), "--idle", "30")  # fmt: skip
        args = self.publish_args(BASELINE_ROOT, readings, T0)
        started = result(load("publish", self.broker_port, *args))["started"]
        counted = result(bare, self.timeout(readings))
        if counted["count"] < readings:
            msg = f"bench: the bare subscriber got {counted['count']} of {readings} messages"
            raise RuntimeError(msg)
        return float(readings / (counted["done"] - started))

    def latency(
        self, root: str, subscribe: str, field: str, rate: float, watch: str = "count"
    ) -> dict[str, Any]:
        """p50/p99 (ms) of publish -> received on ``subscribe`` at ``rate`` readings/s, by
        the bare paho subscriber (``count``) or the raw-socket probe (``probe``)."""
        seconds = self.size.latency_seconds
        rate = round(rate, 1)  # as the pacer is told it: it sends int(rate * seconds)
        expect = int(rate * seconds)
        # a watcher stops at ``expect`` messages; the idle limit only ends a run that lost
        # some, and must outlast a stall of a busy machine rather than cut a run short
        watcher = counter(self.broker_port, "--filter", subscribe, "--latency", field,
                          "--readings", str(expect), "--idle", "10", mode=watch)  # fmt: skip
        pace = ["--root", root, "--streams", str(self.size.streams),
                "--rate", f"{rate:.1f}", "--seconds", str(seconds)]  # fmt: skip
        before = latency_buckets(self.metrics_port) if watch == "probe" else {}
        result(load("pace", self.broker_port, *pace))
        timed = result(watcher, self.timeout(expect))
        if watch == "probe":  # the daemon's own share of the time, over the same run
            timed |= daemon_latency(before, latency_buckets(self.metrics_port))
        return timed


def throughput(rig: Rig, runs: int) -> tuple[list[float], list[float]]:
    size = rig.size
    rig.daemon_rate(size.streams, T0)  # warm-up: every stream enters the state table
    ours, bare = [], []
    for run in range(runs):
        bare.append(rig.bare_rate(size.readings))
        ours.append(rig.daemon_rate(size.readings, T0 + (run + 1) * 1_000_000))
    return ours, bare


Latencies = list[dict[str, Any]]  # per run: p50_ms, p99_ms, n


def latencies(rig: Rig, runs: int, rate: float) -> tuple[Latencies, Latencies]:
    ours: Latencies = []
    bare: Latencies = []
    for _ in range(runs):
        bare.append(rig.latency(BASELINE_ROOT, f"{BASELINE_ROOT}/#", "ts", rate))
        ours.append(rig.latency("sensors", "sensorcast/forecast/#", "timestamp", rate, "probe"))
    return ours, bare


def rows(
    ours: list[float], bare: list[float], lat: tuple[Latencies, Latencies], rate: float,
    size: MqttSize, stages: dict[str, float],
) -> list[Row]:  # fmt: skip
    note = f"{size.readings:,} readings over {size.streams:,} streams per run (QoS 1 JSON)."
    lat_note = (f"publish -> forecast received at {rate:,.0f} readings/s (half of sensorcast's "
                f"median rate), {size.latency_seconds:g} s per run; baseline: publish -> "
                "message received by a bare paho subscriber at the same rate.")  # fmt: skip
    mine, base = lat
    inside = median([r["daemon_p99_ms"] for r in mine])
    lat_note += (f" Inside the daemon (a message's arrival to its forecasts handed to the "
                 f"sink, its own histogram): p99 {inside:.3g} ms, the median run's; the rest "
                 "is the broker's two trips and the machine.")  # fmt: skip
    samples = {"sensorcast_samples": [r["n"] for r in mine],
               "baseline_samples": [r["n"] for r in base], "rate": rate,
               "daemon_p99_ms": [r["daemon_p99_ms"] for r in mine],
               "daemon_within_10ms": [r["daemon_within_10ms"] for r in mine]}  # fmt: skip
    return [
        Row("mqtt", "throughput", "readings/s", ours, bare, BARE, Target(ratio=0.8), note,
            {"daemon_stage_seconds": stages}),
        Row("mqtt", "latency p50", "ms", [r["p50_ms"] for r in mine],
            [r["p50_ms"] for r in base], "bare paho subscriber", None, lat_note, samples),
        Row("mqtt", "latency p99", "ms", [r["p99_ms"] for r in mine],
            [r["p99_ms"] for r in base], "bare paho subscriber",
            Target(value=20, at_least=False), lat_note, dict(samples)),
    ]  # fmt: skip


def run(runs: int, size: MqttSize) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="sensorcast-bench-") as tmp:
        with BenchBroker(Path(tmp)) as broker:
            rig = Rig(broker.port, free_port(), size)
            log = Path(tmp) / "daemon.log"
            daemon = start_daemon(broker.port, rig.metrics_port, log)
            try:
                wait_ready(daemon, rig.metrics_port, log)
                ours, bare = throughput(rig, runs)
                stages = {k: v for k, v in metrics(rig.metrics_port).items() if "stage" in k}
                rate = median(ours) / 2
                lat = latencies(rig, runs, rate)
            finally:
                stop_daemon(daemon)
    return rows(ours, bare, lat, rate, size, stages)
