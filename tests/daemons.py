"""Run the real daemon against a real broker, and talk to that broker, in tests."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.daemon import Daemon
from pipeline.settings import load_settings


def settings_for(url: str, **overrides: Any) -> Any:
    given = {"mqtt.broker": url, "metrics.port": 0, "pipeline.max_delay": "20ms"}
    given.update({key.replace("__", "."): value for key, value in overrides.items()})
    return load_settings(env={}, overrides=given)


@functools.cache
def compiled_kernels() -> None:
    """The engine's compiled kernels, compiled (or loaded) once in this process so that
    numba's cache is on disk before a daemon starts: on a fresh checkout the first
    daemon would otherwise spend its start-up, and the test's wait, compiling them."""
    from models import load_forecaster
    from pipeline.config import PipelineConfig
    from pipeline.detect import default_detector
    from pipeline.engine import Engine

    for config in (PipelineConfig(), PipelineConfig(window=60.0, lateness=5.0)):
        Engine(load_forecaster("default"), default_detector(), config).warm_up()


@contextmanager
def running(settings: Any) -> Iterable[Daemon]:
    """The daemon in a thread, subscribed; stopped (drain, flush, snapshot) on the way out."""
    compiled_kernels()
    daemon = Daemon(settings)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started = wait_until(lambda: daemon.source.subscribed.is_set() or bool(errors), 60)
    try:
        assert started, "the daemon did not subscribe within 60 s"
        yield daemon
    finally:
        daemon.request_stop()
        thread.join(30)
    if errors:
        raise errors[0]


def wait_until(condition: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


def client(port: int, client_id: str = "", persistent: bool = False) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


class Collector:
    """Subscribes to ``topic`` and keeps (topic, decoded JSON) of every message."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, Any]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        self._subscribed.wait(5)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.messages.append((message.topic, json.loads(message.payload)))

    def wait_for(self, n: int, timeout: float = 20) -> list[tuple[str, Any]]:
        wait_until(lambda: len(self.messages) >= n, timeout)
        return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


ROOT = Path(__file__).resolve().parents[1]
SUBSCRIBED = 0.5  # seconds after "connected": the daemon's SUBSCRIBE goes out after that log


class DaemonProcess:
    """``sensorcast run ARGS`` in a child process; stdout and stderr go to ``folder``."""

    def __init__(self, folder: Path, *args: str) -> None:
        compiled_kernels()
        folder.mkdir(parents=True, exist_ok=True)
        self.stderr_path = folder / "stderr"
        self.stdout_path = folder / "stdout"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORCAST_")}
        command = [sys.executable, "-m", "pipeline.cli", "run", "--metrics-port", "0", *args]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err)

    @property
    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for_log(self, text: str, timeout: float) -> bool:
        return wait_until(lambda: text in self.output, timeout)

    def wait_connected(self, timeout: float = 60) -> bool:
        """The source (client id ``sensorcast``) is connected; the sink connects before it."""
        found = wait_until(lambda: " as sensorcast\n" in self.output, timeout)
        time.sleep(SUBSCRIBED)
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5) -> int:
        """Send ``sig``; the exit code, or TimeoutExpired when it takes over ``timeout`` s."""
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.running:
            self.process.kill()
        self.process.wait(10)


@contextmanager
def sensorcast_run(folder: Path, *args: str) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(folder, *args)
    try:
        yield daemon
    finally:
        daemon.kill()
