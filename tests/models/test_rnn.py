"""The recurrent forecaster: two execution modes, checkpoints, safety nets, training."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import DEFAULT_MODEL, load_forecaster
from models.checkpoint import load_checkpoint, paths_of, save_checkpoint
from models.compiled_gru import ROW_BY_ROW, ROW_BY_ROW_TICK
from models.features import N_FEATURES, STATS
from models.gru import GaussianGRU
from models.rnn import POST, RnnForecaster, unpack_hidden
from models.train import TrainConfig, build_corpus, train
from pipeline.errors import InputFileError, ModelLoadError
from pipeline.testing import chunk_of

ROOT = Path(__file__).resolve().parents[2]


def small_network(seed: int = 1, hidden: int = 8, layers: int = 2) -> GaussianGRU:
    torch.manual_seed(seed)
    network = GaussianGRU(N_FEATURES, hidden, layers)
    with torch.no_grad():  # untrained heads are all zero: give them something to say
        network.head.weight.normal_(0, 0.3)
    return network


def real_rows() -> list[list[float]]:
    """Real buoy pressure and air temperature, two streams of different length."""
    import pandas as pd

    frame = pd.read_csv(ROOT / "data/buoy/ndbc_44005/buoy_44005_2012.dat", sep=r"\s+")
    pres = frame["PRES"].replace(9999.0, np.nan).dropna().to_numpy()[:400]
    atmp = frame["ATMP"].replace(999.0, np.nan).dropna().to_numpy()[:300]
    return [list(pres), list(atmp)]


@pytest.mark.parametrize(
    ("torch_sequences", "torch_steps"),
    [(True, True), (False, False), (True, False), (False, True)],
    ids=["torch", "compiled", "nn.GRU-vs-compiled-steps", "compiled-vs-gru_cell"],
)
def test_live_steps_equal_sequence_mode_on_real_data(torch_sequences, torch_steps):
    forecaster = RnnForecaster(small_network(), "test")
    forecaster.torch_sequences = torch_sequences  # which sequence mode the rows run through
    forecaster.torch_steps = torch_steps  # and which step mode
    rows = real_rows()
    whole = forecaster.step(forecaster.initial_state(2), chunk_of(rows, interval=3600.0))
    state = forecaster.initial_state(2)
    for t in range(300):
        step = forecaster.step(state, chunk_of([[r[t]] for r in rows], 3600.0, first_step=t))
        np.testing.assert_allclose(step.mean[:, 0], whole.mean[:, t], rtol=0, atol=1e-5)
        np.testing.assert_allclose(step.scale[:, 0], whole.scale[:, t], rtol=1e-5)
        state = step.state
    # and the hidden state carried one step at a time is the sequence's
    np.testing.assert_allclose(hidden_of(state)[1], hidden_of(whole.state)[1], atol=1e-5)


def hidden_of(state: np.ndarray) -> np.ndarray:
    return unpack_hidden(state[:, STATS + POST :], 8 * 2)  # small_network: 2 layers of 8


def many_real_rows(n: int) -> list[list[float]]:
    """``n`` rows cut from the real series at different places, of lengths 1 to 120."""
    pres, atmp = real_rows()
    return [(pres if k % 2 else atmp)[k : k + 1 + (37 * k) % 120] for k in range(n)]


@pytest.mark.parametrize("layers", [1, 2], ids=["one-layer-unpacked", "two-layers-packed"])
@pytest.mark.parametrize("many", [False, True], ids=["row-by-row", "batched"])
def test_the_compiled_sequence_mode_is_nn_gru_on_real_data(layers, many):
    forecaster = RnnForecaster(small_network(layers=layers), "test")
    # of different lengths: the shorter rows stop early
    rows = many_real_rows(3 * ROW_BY_ROW) if many else real_rows()
    outputs = []
    for torch_sequences in (True, False):
        forecaster.torch_sequences = torch_sequences
        state = forecaster.initial_state(len(rows))
        outputs.append(forecaster.step(state, chunk_of(rows, 3600.0)))
    torch_out, compiled = outputs
    np.testing.assert_allclose(compiled.mean, torch_out.mean, rtol=0, atol=1e-5)
    np.testing.assert_allclose(compiled.scale, torch_out.scale, rtol=1e-5)
    hidden = [unpack_hidden(out.state[:, STATS + POST :], 8 * layers) for out in outputs]
    np.testing.assert_allclose(hidden[1], hidden[0], atol=1e-5)


def test_one_layer_without_packing_keeps_each_rows_state_at_its_own_end():
    network = small_network(layers=1)
    x = torch.randn(4, 6, N_FEATURES)  # (B, T, F)
    h = torch.randn(1, 4, 8)  # (L, B, H)
    lengths = torch.tensor([6, 3, 0, 1])  # row 2 has no step: it keeps its state
    with torch.inference_mode():
        y, h_out = network(x, h, lengths)
        torch.testing.assert_close(h_out[:, 2], h[:, 2])
        for b, n in [(0, 6), (1, 3), (3, 1)]:
            y_alone, h_alone = network(x[b : b + 1, :n], h[:, b : b + 1])
            torch.testing.assert_close(h_out[:, b], h_alone[:, 0])
            torch.testing.assert_close(y[b, :n], y_alone[0])


def test_default_model_ships_and_loads():
    forecaster = load_forecaster("default")
    assert isinstance(forecaster, RnnForecaster)
    meta = json.loads(DEFAULT_MODEL.read_text())
    assert meta["fingerprint"] in forecaster.fingerprint
    assert meta["training"]["files"] and all(f["sha256"] for f in meta["training"]["files"])


def test_a_constant_stream_forecasts_its_constant_with_a_small_interval():
    forecaster = load_forecaster("default")
    out = forecaster.step(forecaster.initial_state(1), chunk_of([[21.5] * 200]))
    assert np.all(np.isfinite(out.mean[0])) and np.all(np.isfinite(out.scale[0]))
    assert np.allclose(out.mean[0, 50:], 21.5, atol=1e-3)
    assert np.all(out.scale[0, 50:] < 0.01)


def test_every_forecast_has_an_interval_when_the_network_is_trusted_beyond_its_change():
    # a smooth daily cycle: the network's change is trusted with weights above 1,
    # where a Bernoulli mixture variance w (1 - w) would be negative (NaN scale)
    rows = [20.0 + 5.0 * math.sin(2 * math.pi * i / 24) for i in range(300)]
    forecaster = load_forecaster("default")
    out = forecaster.step(forecaster.initial_state(1), chunk_of([rows], 3600.0))
    assert np.all(np.isfinite(out.scale[0])) and np.all(out.scale[0] > 0)


def test_a_quantised_stream_is_forecast_on_its_own_steps():
    # a random walk read in 0.1 steps: a forecast between two readable values
    # can only lose absolute error against the nearer one of them
    rng = np.random.default_rng(3)
    rows = list(20.0 + 0.1 * np.cumsum(rng.choice([-1, 0, 0, 1], 400)))
    forecaster = load_forecaster("default")
    out = forecaster.step(forecaster.initial_state(1), chunk_of([rows], 3600.0))
    moves = (out.mean[0, 50:] - np.array(rows[50:])) / 0.1
    assert np.allclose(moves, np.round(moves), atol=1e-6)


def test_a_tick_of_many_streams_runs_compiled_and_equals_gru_cell():
    # a live tick of 300 streams (real values, each stream its own history) runs the
    # compiled loop; the same tick through torch.gru_cell gives the same forecasts
    assert 300 > ROW_BY_ROW_TICK  # the batched loop's tick
    compiled = RnnForecaster(small_network(), "test")
    cell = RnnForecaster(small_network(), "test")
    cell.torch_steps = True
    pres, atmp = real_rows()
    rows = [(pres if k % 2 else atmp)[k % 50 : k % 50 + 40] for k in range(300)]
    states = [compiled.initial_state(300), cell.initial_state(300)]
    for t in range(40):
        chunk = chunk_of([[r[t]] for r in rows], 3600.0, first_step=t)
        a, b = compiled.step(states[0], chunk), cell.step(states[1], chunk)
        np.testing.assert_allclose(a.mean, b.mean, rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.scale, b.scale, rtol=1e-5)
        states = [a.state, b.state]
    assert "network" not in vars(compiled)  # no torch module was made for it


def test_a_daemon_loads_and_steps_the_model_without_torch_pandas_or_arrow():
    # importing torch is about a second of a daemon's start-up (or a stall while it
    # serves), pandas and pyarrow half a second: the daemon's modules, its model, live
    # ticks of one step for 1,000 streams, a backlog of three steps each for 1,000
    # streams and their forecasts as MQTT messages never need any of them
    script = """
import sys
import numpy as np
import pipeline.cli
from connectors.records import verdict_records
from pipeline.daemon import Daemon
from pipeline.settings import load_settings
from pipeline.types import ReadingBatch
settings = load_settings(env={}, overrides={"mqtt.broker": "mqtt://127.0.0.1:1"})
engine = Daemon(settings).engine
engine.warm_up()
streams = tuple(f"s/{i}" for i in range(1000))
def tick(t, steps):
    n = 1000 * steps
    return engine.process(ReadingBatch(streams=streams,
        stream_index=np.arange(n, dtype=np.int32) % 1000,
        timestamp=1.7e9 + 60 * (t + np.arange(n) // 1000), value=np.full(n, 20.0 + t),
        seq=np.arange(n, dtype=np.int64)))
tick(0, 1), tick(1, 1)
messages = verdict_records(tick(2, 3))
assert engine.stats.steps == 5000 and len(messages) == 3000, engine.stats.steps
print(sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "pandas", "pyarrow")))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_glitch_costs_a_few_steps_not_the_rest_of_the_stream():
    rows = real_rows()[0]
    glitched = list(rows)
    glitched[200:210] = [900.0] * 10  # a fill value, as buoy M4 sends
    glitched[250:] = [v + 5.0 for v in glitched[250:]]  # and a 5 hPa jump
    forecaster = load_forecaster("default")
    clean = forecaster.step(forecaster.initial_state(1), chunk_of([rows], 3600.0))
    hit = forecaster.step(forecaster.initial_state(1), chunk_of([glitched], 3600.0))
    error_clean = np.abs(np.array(rows[281:]) - clean.mean[0, 280:-1])
    error_hit = np.abs(np.array(glitched[281:]) - hit.mean[0, 280:-1])
    assert error_hit.mean() < 1.5 * error_clean.mean()  # back to normal 30 steps after


# -- checkpoints --------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    network = small_network()
    save_checkpoint(network, tmp_path / "model", {"training": {}})
    loaded = load_checkpoint(tmp_path / "model")
    for name, tensor in network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], tensor)
    chunk = chunk_of(real_rows())
    original = RnnForecaster(network, "x").step(RnnForecaster(network, "x").initial_state(2), chunk)
    again = loaded.step(loaded.initial_state(2), chunk)
    np.testing.assert_array_equal(original.mean, again.mean)


def saved(tmp_path: Path) -> tuple[Path, Path]:
    save_checkpoint(small_network(), tmp_path / "model", {"training": {}})
    return paths_of(tmp_path / "model")


def test_truncated_weights_are_refused(tmp_path):
    weights, _ = saved(tmp_path)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="does not match the fingerprint"):
        load_checkpoint(tmp_path / "model")


def test_metadata_without_its_weights_is_refused(tmp_path):
    weights, metadata = saved(tmp_path)
    weights.unlink()
    with pytest.raises(ModelLoadError, match="cannot read the weights beside model.json"):
        load_checkpoint(metadata)


def test_weights_that_are_not_safetensors_are_refused_without_unpickling(tmp_path):
    weights, metadata = saved(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (marker.write_text, ("executed",))

    weights.write_bytes(pickle.dumps(Exploit()))
    meta = json.loads(metadata.read_text())
    meta["fingerprint"] = "sha256:" + __import__("hashlib").sha256(weights.read_bytes()).hexdigest()
    metadata.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="truncated or not safetensors"):
        load_checkpoint(tmp_path / "model")
    assert not marker.exists()


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    _, metadata = saved(tmp_path)
    meta = json.loads(metadata.read_text())
    meta["architecture"]["features"] = ["something", "else"]
    metadata.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="another architecture or feature set"):
        load_checkpoint(tmp_path / "model")


def test_weights_of_other_shapes_are_refused(tmp_path):
    weights, metadata = saved(tmp_path)
    meta = json.loads(metadata.read_text())
    meta["architecture"]["hidden"] = 16  # the weights are 8 wide
    metadata.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="do not fit a GRU of this architecture"):
        load_checkpoint(tmp_path / "model")


@pytest.mark.parametrize("content", ["", "{not json", '{"format": "something"}', "[1, 2]"])
def test_not_a_checkpoint(tmp_path, content):
    (tmp_path / "x.json").write_text(content)
    with pytest.raises(ModelLoadError, match="not a sensorcast checkpoint"):
        load_checkpoint(tmp_path / "x.json")


# -- training -----------------------------------------------------------------------------


def corpus_of(rows: list[list[float]]):
    steps = {}
    for k, row in enumerate(rows):
        t = np.arange(len(row)) * 3600.0
        dt = np.full(len(row), 3600.0)
        dt[0] = math.nan
        steps[f"s/{k}"] = {
            "timestamp": t,
            "value": np.asarray(row),
            "dt": dt,
            "missing": np.zeros(len(row), np.int32),
            "next_timestamp": t + 3600,
        }
    return build_corpus(steps)


def test_the_same_seed_gives_the_same_weights():
    corpus = corpus_of(real_rows())
    config = TrainConfig(
        epochs=2, seq_len=64, burn_in=8, batch=8, hidden=8, batches=3, seed=7, threads=1
    )
    first, _ = train(corpus, config)
    second, _ = train(corpus, config)
    for name, tensor in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], tensor), name


def test_training_improves_on_persistence_for_predictable_data():
    t = np.arange(3000)
    rows = [list(np.sin(t / (5 + k)) * 10 + k) for k in range(3)]  # smooth: changes predictable
    config = TrainConfig(
        epochs=6, seq_len=64, burn_in=8, batch=16, hidden=16, batches=20, threads=1
    )
    _, history = train(corpus_of(rows), config)
    assert history.epochs[history.best_epoch - 1]["val_mase"] < 0.5


def test_too_little_data_is_a_clear_error():
    with pytest.raises(InputFileError, match="training needs at least"):
        train(corpus_of([[1.0, 2.0, 3.0, 4.0] * 10]), TrainConfig(epochs=1))
