"""How fast the daemon takes readings through a real mosquitto.

Starts mosquitto on a free port, `sensorcast run` against it, then publishes
N QoS 1 readings over S streams with a raw-socket load generator (pre-encoded
PUBLISH packets, so the generator is never the bottleneck) and waits until
the daemon's /metrics count N steps. Prints readings per second, publish to
last step.

    .venv/bin/python benchmarks/mqtt_throughput.py --readings 100000 --streams 1000

The benchmark command of the project (`sensorcast bench`) will replace this.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def remaining_length(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n % 128, n // 128
        out += bytes([byte | (128 if n else 0)])
        if not n:
            return out


def packets(n: int, streams: int) -> list[bytes]:
    """QoS 1 PUBLISH packets of JSON readings, streams interleaved, time increasing."""
    out = []
    for k in range(n):
        topic = f"sensors/site/dev-{k % streams}/temp".encode()
        payload = b'{"value": %d.5, "ts": %d}' % (k % 97, 1_600_000_000 + k // streams)
        body = struct.pack(">H", len(topic)) + topic + struct.pack(">H", k % 65535 + 1) + payload
        out.append(b"\x32" + remaining_length(len(body)) + body)
    return out


def publish(port: int, frames: list[bytes]) -> None:
    """Send ``frames`` keeping at most 30,000 unacknowledged; return when all are acked."""
    client_id = b"bench-publisher"
    connect = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(client_id)) + client_id
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\x10" + remaining_length(len(connect)) + connect)
        s.recv(4)
        acked = [0]

        def count_pubacks() -> None:
            pending = 0
            while acked[0] < len(frames):
                pending += len(s.recv(65536))
                acked[0] += pending // 4
                pending %= 4

        reader = threading.Thread(target=count_pubacks, daemon=True)
        reader.start()
        for i in range(0, len(frames), 2000):
            while i - acked[0] > 30_000:
                time.sleep(0.0005)
            s.sendall(b"".join(frames[i : i + 2000]))
        reader.join(600)


def steps(metrics_port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    line = next(x for x in text.splitlines() if x.startswith("sensorcast_steps_total"))
    return float(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=1_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    mqtt_port, metrics_port = free_port(), free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\n"
        "max_queued_messages 0\nuser root\n"
    )
    broker = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
        stderr=subprocess.DEVNULL,
    )
    daemon = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/sensorcast"),
            "run",
            "--broker",
            f"mqtt://127.0.0.1:{mqtt_port}",
            "--metrics-port",
            str(metrics_port),
            "--log-level",
            "warning",
            "--client-id",
            f"bench-{mqtt_port}",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        frames = packets(args.readings, args.streams)
        time.sleep(3)  # daemon connected and subscribed
        started = time.perf_counter()
        publish(mqtt_port, frames)
        published = time.perf_counter() - started
        while steps(metrics_port) < args.readings:
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    finally:
        daemon.terminate()
        daemon.wait(30)
        broker.terminate()
    print(
        f"{args.readings} readings over {args.streams} streams: published in {published:.2f} s, "
        f"all applied in {seconds:.2f} s -> {args.readings / seconds:,.0f} readings/s"
    )


if __name__ == "__main__":
    sys.exit(main())
