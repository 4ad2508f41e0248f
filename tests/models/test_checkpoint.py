"""Checkpoint paths, files and metadata: one naming rule for save and load, no surprises
on disk (modes, JSON, other people's files)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models import DEFAULT_MODEL, load_forecaster
from models.checkpoint import foreign_file, load_checkpoint, paths_of, save_checkpoint
from models.features import N_FEATURES
from models.gru import GaussianGRU


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
