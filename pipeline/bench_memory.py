"""``bench --scenario memory``: resident memory per stream in the state table.

Each measurement is a fresh process (``python -m pipeline.bench_memory``), so
nothing the bench itself allocated counts. sensorcast: the daemon's engine
(default model loaded, default detector), warmed up with one stream; then N
streams each take one reading (a step through the model, so every column and
the key index are filled) in ticks of 65,536; the RSS growth over N is the
cost of a stream. Freed temporaries are handed back to the OS (``malloc_trim``)
before reading RSS, so only what the table keeps is counted. The baseline is
the River pipeline of the replay scenario (SNARIMAX + HalfSpaceTrees) per
stream, measured on a few streams and divided the same way.
"""

from __future__ import annotations

import ctypes
import gc
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.bench_report import Row, Target

MEMORY_TARGET = Target(value=1024, at_least=False)  # bytes per stream at 10^6 streams
TICK = 65_536  # readings per engine call, as replay uses
RIVER_READINGS = 5  # per River stream: enough for every model part to exist


def rss() -> int:
    """Resident bytes of this process, after handing freed heap back to the OS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: RSS then also counts freed-but-kept heap
        pass
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


def stream_keys(first: int, n: int) -> list[str]:
    return [f"site-{s % 1000}/dev-{s}/temperature" for s in range(first, first + n)]


def sensorcast_growth(streams: int) -> dict[str, float]:
    """RSS growth per stream of an engine with ``streams`` streams, model loaded."""
    from models import load_forecaster
    from pipeline.config import PipelineConfig
    from pipeline.detect import default_detector
    from pipeline.engine import Engine
    from pipeline.types import ReadingBatch

    config = PipelineConfig(max_streams=streams + 1)  # + the warm-up stream
    engine = Engine(load_forecaster("default", config.interval), default_detector(), config)

    def tick(keys: list[str]) -> None:
        n = len(keys)
        index, seq = np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int64)
        batch = ReadingBatch(streams=tuple(keys), stream_index=index, seq=seq,
                             timestamp=np.full(n, 1.6e9), value=np.full(n, 20.5),
                             partition="bench")  # fmt: skip
        engine.process(batch)

    tick(stream_keys(-1, 1))  # warm-up: compiled kernels, first allocations
    before = rss()
    for first in range(0, streams, TICK):
        tick(stream_keys(first, min(TICK, streams - first)))
    grown = rss() - before
    table = engine.table
    return {"per_stream": grown / streams, "rss_before": before, "rss_after": before + grown,
            "columns_per_stream": table.bytes_per_stream(), "capacity": table.capacity,
            "streams_in_table": len(table)}  # fmt: skip


def river_growth(streams: int) -> dict[str, float]:
    """RSS growth per stream of per-stream River pipelines."""
    from pipeline.bench_replay import RiverStream

    warm = RiverStream()  # imports and River's first allocations
    for i in range(RIVER_READINGS):
        warm.step(20.0 + i)
    before = rss()
    kept = [RiverStream() for _ in range(streams)]
    for stream in kept:
        for i in range(RIVER_READINGS):
            stream.step(20.0 + 0.1 * i)
    return {"per_stream": (rss() - before) / streams, "streams": streams}


def measure(kind: str, streams: int) -> dict[str, float]:
    """One measurement in a fresh process."""
    command = [sys.executable, "-m", "pipeline.bench_memory", kind, str(streams)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800,
                         env=_one_thread())  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _one_thread() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(runs: int, sizes: Sequence[int], river_streams: int) -> list[Row]:
    river = [measure("river", river_streams)["per_stream"] for _ in range(runs)]
    rows = []
    for n in sizes:
        found = [measure("sensorcast", n) for _ in range(runs)]
        first = found[0]
        note = (f"RSS growth of a fresh process (model loaded) / streams; state table "
                f"columns alone: {first['columns_per_stream']:.0f} B/stream, capacity "
                f"{first['capacity']:,.0f} slots. River measured on {river_streams} "
                "streams.")  # fmt: skip
        rows.append(Row("memory", f"{n:,} streams", "bytes/stream",
                        [f["per_stream"] for f in found], river,
                        "per-stream River SNARIMAX + HalfSpaceTrees objects",
                        MEMORY_TARGET if n >= 1_000_000 else None, note,
                        {"runs": found}))  # fmt: skip
    return rows


def main(argv: Sequence[str]) -> int:
    kind, streams = argv[0], int(argv[1])
    growth = sensorcast_growth if kind == "sensorcast" else river_growth
    print(json.dumps(growth(streams)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
