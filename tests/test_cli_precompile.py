"""``sensorcast precompile``: afterwards a replay and a daemon compile nothing, on this
CPU's build and, with ``--portable``, on another CPU's.

Numba writes an index and a data file for every kernel it compiles into
``NUMBA_CACHE_DIR`` and only reads them when it loads one, so a cache folder
that is unchanged after a run means the run compiled nothing. Another CPU is
played by the marker: one that says the native build is for another CPU makes
this machine what such a host is to the image.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from daemons import Collector, client, sensorcast_run, wait_until

from pipeline import kernels

ROOT = Path(__file__).resolve().parents[1]
THERMOSTAT = ROOT / "data/thermostat/uci_occupancy_detection/datatest.txt"
NAB_FILE = ROOT / "data/nab/realKnownCause/machine_temperature_system_failure.csv"


def cache_files(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    }


def sensorcast(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pipeline.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_after_precompile_replays_and_a_daemon_compile_nothing(mosquitto, tmp_path, monkeypatch):
    cache = tmp_path / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(cache))
    env = dict(os.environ)
    done = sensorcast("precompile", "--portable", env=env)
    assert done.returncode == 0, done.stderr
    assert f"kernels in numba's cache ({cache}), this CPU's and the portable build" in done.stdout
    marker = json.loads((cache / kernels.MARKER).read_text())
    assert marker == {"native": kernels.host_cpu(), "portable": True}
    compiled = cache_files(cache)
    assert sum(name.endswith(".nbc") for name in compiled) >= 20  # every module's kernels

    replays = [
        (str(THERMOSTAT), "--out", str(tmp_path / "steps.csv")),
        (str(THERMOSTAT), "--out", str(tmp_path / "steps.parquet"), "--window", "5m"),
        (str(NAB_FILE), "--out", str(tmp_path / "steps.arrow"), "--model", "persistence"),
    ]
    for args in replays:
        replayed = sensorcast("replay", *args, env=env)
        assert replayed.returncode == 0, replayed.stderr
    assert cache_files(cache) == compiled

    # another CPU: the image's native build is not for it, the portable one is
    marker["native"] = {"name": "another-cpu", "features": "+sse2"}
    (cache / kernels.MARKER).write_text(json.dumps(marker))
    compiled = cache_files(cache)
    replayed = sensorcast("replay", *replays[0], env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert "WARNING pipeline.kernels: the kernel cache in" in replayed.stderr
    assert "loading its portable build" in replayed.stderr
    forecasts = Collector(mosquitto.port, "sensorcast/forecast/#")
    publisher = client(mosquitto.port)
    try:
        with sensorcast_run(tmp_path / "daemon", "--broker", mosquitto.url) as daemon:
            assert daemon.wait_connected(), daemon.output
            assert "compiled for CPU another-cpu" in daemon.output
            assert "loading its portable build" in daemon.output
            for i in range(3):
                payload = json.dumps({"value": 20.0 + i, "ts": 1_700_000_000 + 60 * i})
                publisher.publish("sensors/plant/boiler/temp", payload, qos=1).wait_for_publish(5)
            assert wait_until(lambda: len(forecasts.messages) >= 3, 20), daemon.output
            assert daemon.stop(signal.SIGTERM) == 0
    finally:
        forecasts.close()
        publisher.disconnect()
        publisher.loop_stop()
    assert cache_files(cache) == compiled


def test_portable_without_a_cache_folder_is_one_line_and_compiles_nothing(monkeypatch, capsys):
    """The portable build and its marker need a folder the installed code will read."""
    from pipeline.cli import main

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert main(["precompile", "--portable"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "sensorcast: error: --portable: set NUMBA_CACHE_DIR to the cache folder the "
        "installed code will use\n"
    )


def test_a_cache_folder_that_cannot_be_written_is_one_line_before_compiling(
    tmp_path, monkeypatch, capsys
):
    """A file where the folder should be: said at once, not after a minute of compiling
    (the check runs before any kernel is loaded; nothing is written)."""
    from pipeline.cli import main

    taken = tmp_path / "afile"
    taken.write_text("x")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(taken))
    assert main(["precompile"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"sensorcast: error: NUMBA_CACHE_DIR: {taken} is a file, not a folder")
    assert "unset it to cache beside the code" in err
    assert taken.read_text() == "x"
