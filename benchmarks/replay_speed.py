"""Engine steps per second in replay, default model vs persistence, on one core.

Builds a long-format log of S synthetic streams x T steps (smooth signals with
noise), parses it once, then times only `Engine.process` over the parsed
chunks (65,536 readings each, as replay uses) for each model.

    .venv/bin/python benchmarks/replay_speed.py --streams 1000 --steps 300

The benchmark command of the project (`sensorcast bench`) will replace this.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.csv_source import CsvSource  # noqa: E402
from models import load_forecaster  # noqa: E402
from pipeline.detect import GaussianTailDetector  # noqa: E402
from pipeline.engine import Engine  # noqa: E402


def write_log(path: Path, streams: int, steps: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        f.write("timestamp,stream,value\n")
        for t in range(steps):
            values = 20 + np.sin(t / 30 + np.arange(streams)) + 0.1 * rng.normal(size=streams)
            f.writelines(
                f"{1_600_000_000 + 60 * t},site/dev-{s}/temp,{v:.3f}\n"
                for s, v in enumerate(values)
            )


def steps_per_second(model: str, batches: list) -> float:
    engine = Engine(load_forecaster(model), GaussianTailDetector())
    started, steps = time.perf_counter(), 0
    for batch in batches:
        steps += len(engine.process(batch))
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "log.csv"
        write_log(log, args.streams, args.steps)
        source = CsvSource([log])
        batches = []
        while (batch := source.poll(65_536, 0.0)) is not None:
            batches.append(batch)
    for model in ("default", "persistence"):
        steps_per_second(model, batches[:1])  # compile and warm up
        rate = steps_per_second(model, batches)
        print(f"{model:12} {rate:>12,.0f} steps/s  ({args.streams} streams x {args.steps} steps)")


if __name__ == "__main__":
    main()
