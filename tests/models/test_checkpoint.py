"""Checkpoint paths, files and metadata: one naming rule for save and load, no surprises
on disk (modes, JSON, other people's files)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from models import DEFAULT_MODEL, load_forecaster
from models.checkpoint import foreign_file, load_checkpoint, paths_of, save_checkpoint
from models.features import N_FEATURES
from models.gru import GaussianGRU
from pipeline.errors import ModelLoadError, SinkError


def network() -> GaussianGRU:
    torch.manual_seed(0)
    return GaussianGRU(N_FEATURES, hidden=4)


@pytest.mark.parametrize(
    ("name", "weights", "metadata"),
    [
        ("m.safetensors", "m.safetensors", "m.json"),
        ("m.json", "m.safetensors", "m.json"),
        ("v1.2.json", "v1.2.safetensors", "v1.2.json"),
        ("my.ckpt", "my.ckpt/model.safetensors", "my.ckpt/model.json"),
        ("ck/v1.2/", "ck/v1.2/model.safetensors", "ck/v1.2/model.json"),
        ("ck/v1.2", "ck/v1.2/model.safetensors", "ck/v1.2/model.json"),
        ("m.json/", "m.json/model.safetensors", "m.json/model.json"),
        ("model", "model/model.safetensors", "model/model.json"),
    ],
)
def test_save_and_load_read_a_path_by_the_same_rule(tmp_path, name, weights, metadata):
    out = f"{tmp_path}/{name}"
    assert paths_of(out) == (tmp_path / weights, tmp_path / metadata)
    assert save_checkpoint(network(), out, {"training": {}}) == tmp_path / metadata
    assert (tmp_path / weights).is_file()
    fingerprint = json.loads((tmp_path / metadata).read_text())["fingerprint"]
    assert load_checkpoint(out).fingerprint.startswith(fingerprint + ";")


def test_an_existing_folder_is_a_folder_whatever_its_name(tmp_path):
    (tmp_path / "odd.json").mkdir()
    assert paths_of(tmp_path / "odd.json") == (
        tmp_path / "odd.json/model.safetensors",
        tmp_path / "odd.json/model.json",
    )


def test_the_shipped_model_still_loads():
    assert DEFAULT_MODEL.suffix == ".json"
    assert load_checkpoint(DEFAULT_MODEL).fingerprint.startswith("sha256:")
    assert load_forecaster("default") is not None


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0)
    os.umask(old)
    yield
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_get_the_mode_the_umask_allows(tmp_path, umask, mask, mode):
    os.umask(mask)
    written = save_checkpoint(network(), tmp_path / "m", {"training": {}})
    for path in (written, written.with_suffix(".safetensors")):
        assert path.stat().st_mode & 0o777 == mode, path  # a daemon's own user can read 0644


def test_metadata_is_strict_json(tmp_path):
    def refuse(constant: str) -> None:
        msg = f"{constant} is not JSON"
        raise AssertionError(msg)

    meta = {"metrics": {"val_mase": None}}
    written = save_checkpoint(network(), tmp_path / "m", meta)
    assert json.loads(written.read_text(), parse_constant=refuse)["metrics"]["val_mase"] is None


def test_a_nan_never_reaches_the_disk(tmp_path):
    with pytest.raises(ValueError, match="not JSON compliant"):
        save_checkpoint(network(), tmp_path / "m", {"metrics": {"val_mase": math.nan}})
    assert not any(tmp_path.rglob("*"))  # not even a temp file or the folder


def test_foreign_files_are_told_from_checkpoints(tmp_path):
    assert foreign_file(tmp_path / "new") is None  # nothing there yet
    save_checkpoint(network(), tmp_path / "old", {"training": {}})
    assert foreign_file(tmp_path / "old") is None  # an earlier checkpoint may be replaced
    assert foreign_file(tmp_path / "old/model.safetensors") is None
    (tmp_path / "notes.json").write_text('{"todo": "buy milk"}')
    assert foreign_file(tmp_path / "notes.json") == tmp_path / "notes.json"
    (tmp_path / "bin.json").write_bytes(b"\xff\x00")
    assert foreign_file(tmp_path / "bin.safetensors") == tmp_path / "bin.json"
    (tmp_path / "w.safetensors").write_text("someone's weights, no metadata")
    assert foreign_file(tmp_path / "w.json") == tmp_path / "w.safetensors"


def test_an_old_version_of_the_format_may_be_replaced(tmp_path: Path):
    (tmp_path / "m.json").write_text('{"format": "sensorcast-gru", "version": 0}')
    assert foreign_file(tmp_path / "m.json") is None


# -- damaged and foreign checkpoints: one ModelLoadError naming the file and the problem -----


def resign(metadata: Path, weights: Path, **changes: object) -> None:
    """Rewrite ``metadata`` with ``changes``, its fingerprint that of ``weights`` now."""
    meta = json.loads(metadata.read_text())
    meta["fingerprint"] = "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    metadata.write_text(json.dumps({**meta, **changes}))


def saved_pair(tmp_path: Path) -> tuple[Path, Path]:
    save_checkpoint(network(), tmp_path / "m", {"training": {}})
    return paths_of(tmp_path / "m")


def refused(path: Path | str) -> str:
    with pytest.raises(ModelLoadError) as caught:
        load_checkpoint(path)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_truncated_weights_are_called_truncated(tmp_path):
    weights, _ = saved_pair(tmp_path)
    whole = weights.read_bytes()
    for size in (0, 7, 100, len(whole) - 1):
        weights.write_bytes(whole[:size])
        message = refused(tmp_path / "m")
        assert message.startswith(f"{weights}: does not match the fingerprint in model.json")
        assert message.endswith(
            "the file is truncated or damaged; copy the checkpoint again, or retrain"
        )


def test_weights_of_another_size_name_both_sizes(tmp_path):
    weights, metadata = saved_pair(tmp_path)  # 4 units
    save_checkpoint(GaussianGRU(N_FEATURES, hidden=16), tmp_path / "wide", {"training": {}})
    weights.write_bytes((tmp_path / "wide/model.safetensors").read_bytes())
    assert refused(tmp_path / "m") == (
        f"{weights}: does not match the fingerprint in model.json; the pair is from two "
        "different trainings (they are 16 units in 1 layer, where model.json describes 4 units "
        "in 1 layer): copy a checkpoint's two files together"
    )
    resign(metadata, weights)  # a hand-made pair: the fingerprint fits, the sizes do not
    assert refused(tmp_path / "m") == (
        f"{weights}: tensors do not fit a GRU of this architecture (they are 16 units in 1 "
        "layer, where model.json describes 4 units in 1 layer); they belong to another "
        "network: give them with their own .json, or retrain"
    )


@pytest.mark.parametrize(
    ("tensors", "expected"),
    [
        ("nan", "tensor gru.weight_ih_l0 holds NaN or infinite weights; they are corrupt"),
        ("int32", "tensor gru.bias_hh_l0 holds int32, not floats"),
        ("extra", "tensor extra belongs to no GRU forecaster, where model.json describes 4"),
        ("missing", "tensor head.bias is missing, where model.json describes 4 units"),
        ("bf16", "tensors of a type this sensorcast cannot read (BF16)"),
    ],
)
def test_weights_that_are_not_a_gru_s_are_refused(tmp_path, tensors, expected):
    weights, metadata = saved_pair(tmp_path)
    state = {k: v.detach().clone() for k, v in network().state_dict().items()}
    if tensors == "nan":
        state["gru.weight_ih_l0"][0, 0] = math.nan
    elif tensors == "int32":
        state = {k: v.to(torch.int32) for k, v in state.items()}
    elif tensors == "extra":
        state["extra"] = torch.zeros(3)
    elif tensors == "missing":
        del state["head.bias"]
    else:
        state = {k: v.to(torch.bfloat16) for k, v in state.items()}
    weights.write_bytes(save(state))
    resign(metadata, weights)
    message = refused(tmp_path / "m")
    assert message.startswith(f"{weights}: ") and expected in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"architecture": [1]}, "no architecture (an object with kind, hidden, layers and "
         "features, found [1]); retrain with `sensorcast train`"),
        ({"architecture": None}, "no architecture"),
        ({"architecture": "gru"}, "no architecture"),
        ({"fingerprint": None}, "no sha256 fingerprint of the weights (found None)"),
        ({"fingerprint": 5}, "no sha256 fingerprint of the weights (found 5)"),
        ({"version": True}, "checkpoint version True, this sensorcast reads 1"),
        ({"version": "1"}, "checkpoint version '1', this sensorcast reads 1"),
    ],
)  # fmt: skip
def test_metadata_of_the_wrong_shape_is_refused(tmp_path, change, expected):
    weights, metadata = saved_pair(tmp_path)
    resign(metadata, weights, **change)
    assert refused(tmp_path / "m").startswith(f"{metadata}: {expected}")


@pytest.mark.parametrize("size", [True, 4.0, "4", 0, None])
def test_sizes_must_be_whole_numbers(tmp_path, size):
    weights, metadata = saved_pair(tmp_path)
    meta = json.loads(metadata.read_text())
    meta["architecture"]["hidden"] = size  # JSON's true would pass for 1 in Python
    resign(metadata, weights, architecture=meta["architecture"])
    assert refused(tmp_path / "m") == (
        f"{metadata}: architecture has no valid hidden/layers sizes (hidden {size!r}, layers "
        "1: each a whole number of at least 1); retrain it"
    )


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "an empty file"),
        (b"  \n", "an empty file"),
        (b"\xff\xfe not text", "'utf-8' codec can't decode byte 0xff"),
        (b"[" * 100_000 + b"]" * 100_000, "maximum recursion depth exceeded"),
        (b'{"hidden": ' + b"9" * 5000 + b"}", "Exceeds the limit (4300 digits)"),
    ],
)
def test_metadata_that_is_not_json_is_one_error_never_a_crash(tmp_path, content, why):
    (tmp_path / "x.json").write_bytes(content)
    message = refused(tmp_path / "x.json")
    assert message.startswith(f"{tmp_path / 'x.json'}: not a sensorcast checkpoint (")
    assert why in message
    assert message.endswith("; give the .json that `sensorcast train` wrote")
    assert foreign_file(tmp_path / "x.json") == tmp_path / "x.json"  # --out refuses it too


def test_a_file_named_as_a_folder_is_told_to_drop_the_slash(tmp_path):
    _, metadata = saved_pair(tmp_path)
    assert (
        refused(f"{metadata}/")
        == f"{metadata}/: a file, not a checkpoint directory; drop the trailing /"
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", "--model '': names no model; choose one of default, persistence"),
        ("  ", "--model '  ': names no model; choose one of default, persistence"),
        ("{tmp}/model.bin", "--model: {tmp}/model.bin is a file, not a checkpoint "
         "(NAME.safetensors with NAME.json, or a directory holding model.safetensors and "
         "model.json); give one, or one of default, persistence, river-holtwinters, "
         "river-snarimax"),
        ("/dev/null", "--model: /dev/null is a file, not a checkpoint"),
        ("{tmp}/gone/", "{tmp}/gone/: no such checkpoint; give a checkpoint directory"),
        ("{tmp}/gone", "{tmp}/gone: no such checkpoint; give a checkpoint directory"),
        ("nope", "--model: unknown model 'nope'; choose one of default, persistence"),
    ],
)  # fmt: skip
def test_model_specs_that_name_no_checkpoint(tmp_path, monkeypatch, spec, expected):
    monkeypatch.chdir(tmp_path)  # "" is not the current directory, which holds a checkpoint
    save_checkpoint(network(), tmp_path, {"training": {}})
    (tmp_path / "model.bin").write_bytes(b"someone's weights")
    with pytest.raises(ModelLoadError) as caught:
        load_forecaster(spec.format(tmp=tmp_path))
    assert str(caught.value).startswith(expected.format(tmp=tmp_path))


# -- a save interrupted between its two renames --------------------------------------------


def other_network() -> GaussianGRU:
    torch.manual_seed(1)
    return GaussianGRU(N_FEATURES, hidden=4)


def failing_second_replace(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """os.replace that renames the weights, then raises ``error`` for the metadata."""
    real = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if str(dst).endswith(".json"):
            raise error
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_save_that_fails_between_its_renames_leaves_the_earlier_checkpoint(
    tmp_path, monkeypatch, error
):
    save_checkpoint(network(), tmp_path / "m", {"training": {}})
    before = {p.name: p.read_bytes() for p in tmp_path.joinpath("m").iterdir()}
    failing_second_replace(monkeypatch, error)
    with pytest.raises(SinkError if isinstance(error, OSError) else KeyboardInterrupt):
        save_checkpoint(other_network(), tmp_path / "m", {"training": {}})
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in tmp_path.joinpath("m").iterdir()}
    assert after == before  # the earlier pair, whole, and no temporary file beside it
    load_checkpoint(tmp_path / "m")


def test_a_first_save_that_fails_between_its_renames_leaves_nothing(tmp_path, monkeypatch):
    failing_second_replace(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(SinkError, match="No space left on device"):
        save_checkpoint(network(), tmp_path / "m", {"training": {}})
    assert not any(tmp_path.joinpath("m").iterdir())


def test_a_save_that_crashed_between_its_renames_is_told_how_to_finish(tmp_path):
    # what a killed process leaves: the new weights renamed, the new metadata still in
    # its temporary file, the earlier metadata in place
    weights, metadata = saved_pair(tmp_path)
    save_checkpoint(other_network(), tmp_path / "new", {"training": {}})
    new_weights, new_metadata = paths_of(tmp_path / "new")
    os.replace(new_weights, weights)
    leftover = metadata.with_name(f".{metadata.name}.4242.tmp")
    os.replace(new_metadata, leftover)
    message = refused(tmp_path / "m")
    assert message.startswith(f"{weights}: does not match the fingerprint in model.json")
    assert message.endswith(f"finish it with `mv {leftover} {metadata}`")
    os.replace(leftover, metadata)
    load_checkpoint(tmp_path / "m")
