"""``sensorcast demo``: the whole daemon on real sensor logs, with nothing to set up.

It starts an embedded MQTT broker (unless ``--broker`` names one), replays the
bundled logs into it at ``--speed`` times real time (one publisher per log, all
at once, each from its own start), runs the daemon against it exactly as
``sensorcast run`` would, serves ``/metrics``, and shows a live table of the
streams. Publishing stops after ``--duration`` seconds of wall time (or at
``--duration`` x ``--speed`` seconds of each log, if that comes first: a speed
the broker cannot keep up with just publishes as fast as it acknowledges); the
daemon then gets up to ``CATCH_UP`` seconds to take what was published. It ends
with per-stream accuracy and the most striking anomalies, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import positive_finite
from pipeline.errors import ConfigError, InputFileError
from pipeline.live import CLEAR, LiveTable
from pipeline.summary import Scoreboard, TopAnomalies, run_summary, score_table
from pipeline.types import VerdictBatch

BUNDLED = Path(__file__).resolve().parents[1] / "data"
ROOT = "demo"  # readings go to demo/<stream>; forecasts to sensorcast/forecast/<stream>
STARTUP_WAIT = 120.0  # seconds for the daemon to subscribe (a first start compiles kernels)
BROKER_WAIT = 5.0  # seconds a --broker has to accept a connection
CATCH_UP = 5.0  # seconds the daemon gets, after publishing stopped, to take what was published
WINDOW = 200  # readings a publisher thread may have unacknowledged: backpressure, and 5
# threads stay within paho's 1,000 in flight (and far from its 65,535 message ids)


@dataclass(frozen=True, slots=True)
class DemoLog:
    path: str  # under the data folder
    columns: tuple[str, ...] | None = None  # wide logs: the streams to replay
    start: float | None = None  # epoch seconds: where in the log to begin


DEMO_LOGS = (
    DemoLog("thermostat/uci_occupancy_detection/datatest.txt", ("Temperature", "CO2")),
    DemoLog("thermostat/uci_room_occupancy_estimation/Occupancy_Estimation.csv", ("S1_Temp",)),
    # two days before the first labelled anomaly (NAB window 2013-12-10 06:25 .. 12-12 05:35)
    DemoLog("nab/realKnownCause/machine_temperature_system_failure.csv", start=1386568800.0),
    DemoLog("weather/beijing_prsa/PRSA_Data_Changping_20130301-20170228.csv", ("TEMP", "PRES")),
    DemoLog("buoy/ndbc_44005/buoy_44005_2012.dat", ("ATMP", "WTMP", "PRES")),
)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="the daemon on the bundled sensor logs, with an embedded broker",
        description="Replay the bundled real sensor logs into an MQTT broker (an embedded one "
        "unless --broker is given) and run the daemon on them, with a live table.",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run (60)")
    parser.add_argument(
        "--speed",
        type=float,
        default=3600.0,
        help="times real time (3600: an hour of each log per second)",
    )
    parser.add_argument("--broker", help="use this broker instead of the embedded one")
    parser.add_argument("--metrics-port", type=int, help="/metrics port (default: a free one)")
    parser.add_argument("--model", default="default", help="default, persistence or a checkpoint")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("SENSORCAST_DATA", BUNDLED)),
        help="folder holding the bundled logs (env SENSORCAST_DATA)",
    )
    parser.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="redraw the table every second (default: on a terminal)",
    )
    parser.set_defaults(run=run_demo)


def demo_logs(folder: Path) -> list[tuple[Path, DemoLog]]:
    found = [(folder / log.path, log) for log in DEMO_LOGS]
    missing = [str(path) for path, _ in found if not path.is_file()]
    if missing:
        msg = f"{missing[0]} is missing; pass --data with the folder holding the bundled logs"
        raise InputFileError(msg)
    from connectors.csv_source import CsvSource

    for path, log in found:  # opening one reads its head: a bad log fails now, in one line
        CsvSource([path], columns=log.columns, start=log.start).close()
    return found


def check_flags(args: argparse.Namespace) -> None:
    """The flags, before anything starts: one line naming the flag and the fix."""
    positive_finite(args.duration, "--duration", "seconds", "60")
    positive_finite(args.speed, "--speed", "times real time", "3600")
    if args.broker is not None:
        from connectors.mqtt_client import broker_address

        broker_address(args.broker, "--broker")


def reach_broker(url: str, timeout: float = BROKER_WAIT) -> None:
    """Fail fast, naming ``--broker``, when nothing accepts connections there."""
    from connectors.mqtt_client import broker_address

    try:
        socket.create_connection(broker_address(url, "--broker")[:2], timeout=timeout).close()
    except OSError as exc:
        msg = (f"--broker: cannot reach {url} within {timeout:g} s ({exc.strerror or exc}); "
               "start the broker, or leave --broker out to use the embedded one")  # fmt: skip
        raise ConfigError(msg) from exc


def run_demo(args: argparse.Namespace) -> int:
    check_flags(args)
    logs = demo_logs(args.data)
    if args.broker is not None:
        reach_broker(args.broker)
    with _broker(args.broker) as url:
        return _run(args, logs, url)


class _broker:
    """The given broker URL, or an embedded broker for the duration of the demo."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.embedded: Any = None

    def __enter__(self) -> str:
        if self.url:
            return self.url
        from connectors.embedded_broker import EmbeddedBroker

        self.embedded = EmbeddedBroker().start()
        return str(self.embedded.url)

    def __exit__(self, *exc: object) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def _run(args: argparse.Namespace, logs: list[tuple[Path, DemoLog]], url: str) -> int:
    from pipeline.daemon import Daemon

    board, top, table = Scoreboard(), TopAnomalies(10), LiveTable()
    daemon = Daemon(_settings(args, url), on_verdicts=_fan_out(board.add, top.add, table.update))
    print(
        f"sensorcast demo: broker {url}, {len(logs)} real sensor logs at {args.speed:g}x "
        f"real time for {args.duration:g} s, model {args.model}"
    )
    started = time.monotonic()
    publishers = _Publishers(url, logs, args.speed, args.duration * args.speed)
    try:
        background = _Background(daemon)
    except BaseException:
        publishers.close()
        raise
    try:
        publishers.start(time.monotonic() + args.duration)
        _watch(daemon, publishers, table, args)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping")
    finally:
        background.stop()
    _report(daemon, board, top, table, time.monotonic() - started)
    return 0


def _settings(args: argparse.Namespace, url: str) -> Any:
    from connectors.embedded_broker import free_port
    from pipeline.settings import load_settings

    port = args.metrics_port if args.metrics_port is not None else free_port()
    overrides = {
        "mqtt.broker": url,
        "mqtt.subscribe": f"{ROOT}/#",
        "mqtt.topic_template": f"{ROOT}/#",
        "mqtt.client_id": f"sensorcast-demo-{os.getpid()}",
        "mqtt.protocol": "3.1.1",  # all the embedded broker speaks
        "pipeline.model": args.model,
        "metrics.port": str(port),
    }
    return load_settings(env={}, overrides=overrides)


def _fan_out(*callbacks: Callable[[VerdictBatch], None]) -> Callable[[VerdictBatch], None]:
    def call_all(verdicts: VerdictBatch) -> None:
        for callback in callbacks:
            callback(verdicts)

    return call_all


class _Background:
    """The daemon on a thread; ``stop`` drains it and re-raises what it died of."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="daemon", daemon=True)
        self.thread.start()
        # subscribed before anything is published: the daemon first warms its compiled
        # kernels up, which on a fresh install compiles them (seconds, once)
        deadline = time.monotonic() + STARTUP_WAIT
        while self.thread.is_alive() and time.monotonic() < deadline:
            if daemon.source.subscribed.wait(0.1):
                break
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # handed to the main thread in stop()
            self.error = exc

    def stop(self) -> None:
        self.daemon.request_stop()
        self.thread.join(60)
        if self.error is not None:
            raise self.error


class _Publishers:
    """One thread per log, publishing its readings into the broker in (scaled) real time
    until its horizon (event time) or the deadline (wall time), whichever comes first."""

    def __init__(
        self, url: str, logs: list[tuple[Path, DemoLog]], speed: float, horizon: float
    ) -> None:
        from connectors.mqtt_client import publisher_client
        from connectors.mqtt_publisher import PublishCounters

        self.client = publisher_client(url, f"sensorcast-demo-publisher-{os.getpid()}", "--broker")
        self.logs, self.speed, self.horizon = logs, speed, horizon
        self.counters = PublishCounters()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.timer: threading.Timer | None = None

    def start(self, deadline: float) -> None:
        from connectors.csv_source import CsvSource
        from connectors.mqtt_publisher import publish_source

        for path, log in self.logs:
            source = CsvSource([path], columns=log.columns, speed=self.speed, start=log.start)
            thread = threading.Thread(
                target=publish_source,
                args=(source, self.client, ROOT),
                kwargs={
                    "horizon": self.horizon,
                    "stop": self.stop,
                    "counters": self.counters,
                    "window": WINDOW,
                },
                daemon=True,
            )
            thread.start()
            self.threads.append(thread)
        self.timer = threading.Timer(max(0.0, deadline - time.monotonic()), self.stop.set)
        self.timer.daemon = True
        self.timer.start()

    @property
    def readings(self) -> int:
        return self.counters.readings

    @property
    def done(self) -> bool:
        return bool(self.threads) and not any(thread.is_alive() for thread in self.threads)

    def close(self) -> None:
        self.stop.set()
        if self.timer is not None:
            self.timer.cancel()
        for thread in self.threads:
            thread.join(10)
        self.client.disconnect()
        self.client.loop_stop()


def _watch(
    daemon: Any, publishers: _Publishers, table: LiveTable, args: argparse.Namespace
) -> None:
    """Show progress until publishing stopped and the daemon has caught up (at most
    ``CATCH_UP`` seconds after that)."""
    live = sys.stdout.isatty() if args.live is None else args.live
    last_line = time.monotonic()
    caught_up_by = None
    try:
        while caught_up_by is None or time.monotonic() < caught_up_by:
            time.sleep(0.2 if publishers.done else 1.0)
            if live:
                print(CLEAR + _status(daemon, publishers) + "\n\n" + table.render(colour=True))
            elif time.monotonic() - last_line >= 10:
                print(_status(daemon, publishers), flush=True)
                last_line = time.monotonic()
            if publishers.done and caught_up_by is None:
                caught_up_by = time.monotonic() + CATCH_UP
            if publishers.done and daemon.source.counters.messages >= publishers.readings:
                break
    finally:
        publishers.close()


def _status(daemon: Any, publishers: _Publishers) -> str:
    stats = daemon.engine.stats
    return (
        f"published {publishers.readings:,}  received {daemon.source.counters.messages:,}"
        f"  steps {stats.steps:,}  anomalies {stats.anomalies:,}  queue {daemon.source.depth}"
    )


def _report(
    daemon: Any, board: Scoreboard, top: TopAnomalies, table: LiveTable, seconds: float
) -> None:
    metrics = daemon.metrics
    print()
    print(table.render())
    print()
    print(score_table(board.scores() + [board.total()], daemon.engine.config.interval))
    flagged = top.table()
    if len(flagged.splitlines()) > 2:  # more than the header and its rule
        print("\nMost striking anomalies flagged:")
        print(flagged)
    else:
        print("\nNo anomaly was flagged.")
    print()
    print(run_summary(daemon.engine.stats, len(daemon.engine.table), seconds))
    if metrics is not None:
        print(f"(metrics were served on http://127.0.0.1:{metrics.port}/metrics)")
