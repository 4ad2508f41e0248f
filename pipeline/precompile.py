"""``sensorcast precompile``: compile the pipeline's kernels into numba's cache now.

Numba compiles each kernel at its first call and keeps the machine code in its
cache (``NUMBA_CACHE_DIR`` when set, else ``__pycache__`` beside the source). A
fresh install has no cache, so its first daemon start or replay spends ~15 s
compiling: a container started from a new image pays it at every start, past
the daemon's few seconds to ready. Running this once where the code is
installed (an image build, a post-install step) moves that cost to install
time. It runs the paths the daemon and ``replay`` run, on made-up readings in a
temporary folder, and writes nothing else.

Numba keys its cache by CPU model: run it on the kind of machine that will
serve, or the first start there compiles again, as it would without it; or,
where that machine is not known (an image), with ``--portable``, which also
compiles a build any x86-64 CPU can load (``pipeline.kernels``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import kernels
from pipeline.config import PipelineConfig
from pipeline.detect import default_detector
from pipeline.engine import Engine
from pipeline.errors import ConfigError, SensorcastError
from pipeline.writable import writable_folder

MODELS = ("default", "persistence")  # the forecasters a run can name without a file
OUTPUTS = ("csv", "parquet", "arrow")  # every --out format replay writes
# a windowed, reordering engine runs the window and reorder kernels a plain one skips
CONFIGS = (PipelineConfig(), PipelineConfig(window=60.0, lateness=30.0))
LOG_STREAMS = 40  # more than the row-by-row GRU's limit, so the batched loop runs too
LOG_STEPS = 30


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "precompile",
        help="compile the pipeline's kernels into numba's cache (install time, not first start)",
        description="Run the daemon's and replay's compiled paths once on made-up readings, "
        "so that their kernels are in numba's cache (NUMBA_CACHE_DIR, else beside the "
        "installed code) before the first start. For image builds and post-install steps; "
        "the cache is for this machine's CPU model.",
    )
    parser.add_argument(
        "--portable",
        action="store_true",
        help="also compile a build any x86-64 CPU loads (slower kernels), which a machine "
        "with another CPU then uses instead of compiling at its first start; needs "
        "NUMBA_CACHE_DIR (image builds)",
    )
    parser.set_defaults(run=run_precompile)


def run_precompile(args: argparse.Namespace) -> int:
    folder = os.environ.get("NUMBA_CACHE_DIR")
    if args.portable and not folder:
        msg = "--portable: set NUMBA_CACHE_DIR to the cache folder the installed code will use"
        raise ConfigError(msg)
    if folder:
        _check_cache_folder(folder)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sensorcast-precompile-") as tmp:
        warm_daemon_paths()
        warm_replay_paths(Path(tmp))
    if args.portable:
        compile_portable()
    if folder and not os.environ.get("NUMBA_CPU_NAME"):  # a native build: say for which CPU
        earlier = kernels.read_marker(folder)  # a portable build an earlier run left stays
        portable = args.portable or (earlier is not None and earlier["portable"])
        kernels.record(folder, kernels.host_cpu(), portable)
    where = folder or "__pycache__ beside the installed code"
    builds = "this CPU's and the portable build" if args.portable else "this CPU's build"
    seconds = time.perf_counter() - started
    print(f"precompile: kernels in numba's cache ({where}), {builds}, in {seconds:.1f} s")
    return 0


def _check_cache_folder(folder: str) -> None:
    """NUMBA_CACHE_DIR must be a folder this process can write (made if missing): found
    out now, not after a minute of compiling."""
    fix = "point it at a folder you can write to, or unset it to cache beside the code"
    writable_folder(folder, "NUMBA_CACHE_DIR", fix)


def compile_portable() -> None:
    """The same paths for numba's generic CPU, in a child process: numba reads which CPU
    to compile for once, at import."""
    env = {**os.environ, "NUMBA_CPU_NAME": kernels.PORTABLE_CPU}
    env.pop("NUMBA_CPU_FEATURES", None)  # for the generic CPU numba then takes none
    command = [sys.executable, "-m", "pipeline.cli", "precompile"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"precompile --portable: the portable build failed: {done.stderr.strip()[-500:]}"
        raise SensorcastError(msg)


def warm_daemon_paths() -> None:
    """What the daemon runs before it says ready (``Engine.warm_up``), for every model a
    setting can name and for engines with and without windows."""
    from connectors import json_text
    from models import load_forecaster

    for model in MODELS:
        for config in CONFIGS:
            engine = Engine(load_forecaster(model, config.interval), default_detector(), config)
            engine.warm_up()
    json_text.warm_up()  # the messages of MQTT and the lines of JSON lines


def warm_replay_paths(folder: Path) -> None:
    """A small log through ``replay``'s source, engine and every file sink."""
    from connectors.csv_source import CsvSource
    from connectors.file_sink import open_file_sink
    from models import load_forecaster
    from pipeline.replay import run_to_end

    log = folder / "log.csv"
    write_log(log)
    for model in MODELS:
        for output in OUTPUTS:
            config = PipelineConfig(report_dropped=True)  # replay's default
            engine = Engine(load_forecaster(model, config.interval), default_detector(), config)
            sink = open_file_sink(folder / f"out.{output}")
            run_to_end(engine, CsvSource([log]), [sink], False, flush_at_end=True)


def write_log(path: Path) -> None:
    """``LOG_STREAMS`` streams of ``LOG_STEPS`` minutes in long format, with a value
    that is not a short decimal (the CSV writer's slow path) and one missing."""
    rows = ["time,stream,value"]
    for step in range(LOG_STEPS):
        stamp = f"2024-01-01T00:{step:02d}:00Z"
        values = 20.0 + np.sin(np.arange(LOG_STREAMS) + step) / 3.0
        rows += [f"{stamp},s{i},{v!r}" for i, v in enumerate(values.tolist())]
    rows.append("2024-01-01T00:59:00Z,s0,")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
