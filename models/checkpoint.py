"""Checkpoints: weights in safetensors, metadata in JSON beside them.

``NAME.safetensors`` holds only tensors (loading it never unpickles anything);
``NAME.json`` holds the architecture, the feature spec, the training-data
manifest (files and their sha256), metrics, and the fingerprint: the sha256 of
the weights file, checked on load. A checkpoint path may name either file or a
directory holding ``model.safetensors`` and ``model.json``: a path ending in
``.safetensors`` or ``.json`` names the files (unless it is an existing
directory); any other path (``my.ckpt``, ``ck/v1.2/``, ``out``) names a directory.
Saving and loading read a path by this same rule.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from models.compiled_gru import GruWeights
from models.features import FEATURES
from models.rnn import RnnForecaster
from pipeline.errors import ModelLoadError, SinkError

if TYPE_CHECKING:
    from models.gru import GaussianGRU

FORMAT = "sensorcast-gru"
VERSION = 1
FILE_SUFFIXES = (".safetensors", ".json")


def paths_of(path: str | Path) -> tuple[Path, Path]:
    """(weights, metadata) for a checkpoint named by a directory or either file."""
    names_folder = str(path).endswith(("/", os.sep))  # Path() drops a trailing slash
    path = Path(path)
    if path.suffix in FILE_SUFFIXES and not names_folder and not path.is_dir():
        return path.with_suffix(".safetensors"), path.with_suffix(".json")
    return path / "model.safetensors", path / "model.json"


def foreign_file(path: str | Path) -> Path | None:
    """The file of checkpoint ``path`` that exists but belongs to no sensorcast checkpoint.

    Saving over it would destroy something the user had; an earlier checkpoint (any
    version) may be replaced.
    """
    weights, metadata = paths_of(path)
    if metadata.exists():
        try:
            meta = json.loads(metadata.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return metadata
        return None if isinstance(meta, dict) and meta.get("format") == FORMAT else metadata
    return weights if weights.exists() else None  # weights without metadata: not ours to judge


def save_checkpoint(network: GaussianGRU, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write weights and metadata (temp files, then renames); return the metadata path.

    Raises SinkError when the files cannot be written (a full disk, say); nothing that
    was there before is touched then, and no temp file is left behind. ``meta`` must be
    plain JSON: an undefined metric is None, never NaN (NaN is not JSON).
    """
    from safetensors.torch import save

    weights, metadata = paths_of(path)
    tmp_weights = weights.with_name(f".{weights.name}.{os.getpid()}.tmp")
    tmp_meta = metadata.with_name(f".{metadata.name}.{os.getpid()}.tmp")
    tensors = {name: t.detach().contiguous() for name, t in network.state_dict().items()}
    data = save(tensors)
    meta = {
        **meta,
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture(network),
        "fingerprint": "sha256:" + hashlib.sha256(data).hexdigest(),
    }
    text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
        _write(tmp_weights, data)
        _write(tmp_meta, text.encode())
        os.replace(tmp_weights, weights)
        os.replace(tmp_meta, metadata)
    except OSError as exc:
        tmp_weights.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
        msg = f"cannot write the checkpoint {weights}: {exc.strerror or exc}"
        raise SinkError(msg) from exc
    return metadata


def _write(path: Path, data: bytes) -> None:
    """``data`` in a new file, on disk before it is renamed into place.

    A plain open() gives the mode the umask allows (0644 under 022), as any file the
    user writes; a mkstemp file would stay 0600, unreadable to a service's own user.
    """
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def architecture(network: GaussianGRU) -> dict[str, Any]:
    return {
        "kind": "gru",
        "hidden": network.hidden,
        "layers": network.layers,
        "features": list(FEATURES),
    }


def fingerprint_of(weights: Path) -> str:
    return "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()


def load_checkpoint(path: str | Path, coverage: float = 0.9) -> RnnForecaster:
    """The forecaster a checkpoint describes, or ModelLoadError saying what is wrong."""
    weights, metadata = paths_of(path)
    _require_given(path, weights, metadata)
    meta = read_metadata(metadata)
    arch = _architecture(meta, metadata)
    try:
        fingerprint = fingerprint_of(weights)
    except OSError as exc:
        msg = f"{weights}: cannot read the weights beside {metadata.name} ({exc.strerror}); "
        msg += "a checkpoint is both files: copy them together"
        raise ModelLoadError(msg) from exc
    if fingerprint != meta.get("fingerprint"):
        msg = f"{weights}: does not match the fingerprint in {metadata.name}; the pair is "
        msg += "from two different trainings (or the weights were altered)"
        raise ModelLoadError(msg)
    sizes = GruWeights({}, len(FEATURES), arch["hidden"], arch["layers"])
    return RnnForecaster(_load_weights(sizes, weights), meta["fingerprint"], coverage)


def _require_given(path: str | Path, weights: Path, metadata: Path) -> None:
    """ModelLoadError naming what the user gave when it is not there or holds neither file;
    a missing companion of a file that is there is named by the loader."""
    if not Path(path).exists():
        msg = f"{path}: no such checkpoint; give a checkpoint directory, its .safetensors or "
        msg += "its .json file"
        raise ModelLoadError(msg)
    if not weights.exists() and not metadata.exists():
        msg = f"{path}: no checkpoint in it (no {weights.name} or {metadata.name}); give the "
        msg += "--out of a `sensorcast train` run"
        raise ModelLoadError(msg)


def read_metadata(metadata: Path) -> dict[str, Any]:
    try:
        meta = json.loads(metadata.read_text())
    except FileNotFoundError as exc:
        msg = f"{metadata}: no such checkpoint metadata beside the weights; a checkpoint is "
        msg += "both files: copy them together"
        raise ModelLoadError(msg) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{metadata}: not a sensorcast checkpoint ({exc})"
        raise ModelLoadError(msg) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        msg = f"{metadata}: not a sensorcast checkpoint (no format {FORMAT!r})"
        raise ModelLoadError(msg)
    if meta.get("version") != VERSION:
        msg = f"{metadata}: checkpoint version {meta.get('version')!r}, this sensorcast reads "
        msg += f"{VERSION}; retrain with `sensorcast train`"
        raise ModelLoadError(msg)
    return meta


def _architecture(meta: dict[str, Any], metadata: Path) -> dict[str, Any]:
    arch = meta.get("architecture", {})
    if arch.get("kind") != "gru" or arch.get("features") != list(FEATURES):
        msg = f"{metadata}: a checkpoint from another architecture or feature set "
        msg += f"({arch.get('kind')!r}, features {arch.get('features')!r}); retrain it"
        raise ModelLoadError(msg)
    hidden, layers = arch.get("hidden"), arch.get("layers")
    if not (isinstance(hidden, int) and isinstance(layers, int) and hidden > 0 and layers > 0):
        msg = f"{metadata}: architecture has no valid hidden/layers sizes"
        raise ModelLoadError(msg)
    return dict(arch)


def _load_weights(sizes: GruWeights, weights: Path) -> GruWeights:
    """The tensors of ``weights`` as numpy float32 (no torch), checked against ``sizes``."""
    try:
        tensors = load_file(str(weights))
    except (OSError, SafetensorError, TypeError, ValueError) as exc:  # numpy: no such dtype
        msg = f"{weights}: unreadable weights ({exc}); the file is truncated or not safetensors"
        raise ModelLoadError(msg) from exc
    expected = sizes.shapes()
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != found:
        msg = f"{weights}: tensors do not fit a GRU of this architecture "
        msg += f"(expected {sorted(expected)}, found {sorted(found)})"
        raise ModelLoadError(msg)
    arrays = {name: np.ascontiguousarray(t, np.float32) for name, t in tensors.items()}
    return GruWeights(arrays, sizes.n_features, sizes.hidden, sizes.layers)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
