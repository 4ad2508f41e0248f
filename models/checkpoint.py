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
from safetensors.numpy import load

from models.compiled_gru import GruWeights
from models.features import FEATURES
from models.rnn import RnnForecaster
from pipeline.errors import ModelLoadError, SinkError
from pipeline.writable import beside

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
        except (OSError, ValueError, RecursionError):  # ValueError: not text, not JSON
            return metadata
        return None if isinstance(meta, dict) and meta.get("format") == FORMAT else metadata
    return weights if weights.exists() else None  # weights without metadata: not ours to judge


def save_checkpoint(network: GaussianGRU, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write weights and metadata (temp files, then renames); return the metadata path.

    Raises SinkError when the files cannot be written (a full disk, say); the earlier
    checkpoint there is left whole then, and no temp file is left behind. ``meta`` must be
    plain JSON: an undefined metric is None, never NaN (NaN is not JSON).
    """
    from safetensors.torch import save

    weights, metadata = paths_of(path)
    tmp_weights, tmp_meta = beside(weights), beside(metadata)
    tensors = {name: t.detach().contiguous() for name, t in network.state_dict().items()}
    data = save(tensors)
    meta = {
        **meta,
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture(network),
        "fingerprint": _fingerprint_of(data),
    }
    text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
        _write(tmp_weights, data)
        _write(tmp_meta, text.encode())
    except BaseException as exc:  # an interrupt too: no temp file stays behind
        tmp_weights.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
        _refuse_unwritable(weights, exc)
        raise
    _put_pair(tmp_weights, weights, tmp_meta, metadata)
    return metadata


def _put_pair(tmp_weights: Path, weights: Path, tmp_meta: Path, metadata: Path) -> None:
    """Both renames or neither: the earlier weights (a hard link to them) come back when
    the metadata's rename fails, or is interrupted, after the weights' went through.

    Only a crash between the two renames leaves a mixed pair; the loader then finds the
    new metadata in its temporary file and says how to finish the save.
    """
    earlier = beside(weights, "earlier")
    try:
        os.link(weights, earlier)
    except OSError:  # no earlier weights (or no hard links here): nothing to bring back
        earlier.unlink(missing_ok=True)
    placed = False
    try:
        os.replace(tmp_weights, weights)
        placed = True
        os.replace(tmp_meta, metadata)
    except BaseException as exc:
        if placed and earlier.exists():
            os.replace(earlier, weights)
        elif placed:  # there were none: weights without their metadata help no one
            weights.unlink(missing_ok=True)
        tmp_weights.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
        _refuse_unwritable(weights, exc)
        raise
    finally:
        earlier.unlink(missing_ok=True)


def _refuse_unwritable(weights: Path, exc: BaseException) -> None:
    """SinkError for a file system's refusal (a full disk); an interrupt is the caller's
    to re-raise as it was."""
    if isinstance(exc, OSError):
        msg = f"cannot write the checkpoint {weights}: {exc.strerror or exc}"
        raise SinkError(msg) from exc


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
    return _fingerprint_of(weights.read_bytes())


def _fingerprint_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def load_checkpoint(path: str | Path, coverage: float = 0.9) -> RnnForecaster:
    """The forecaster a checkpoint describes, or ModelLoadError saying what is wrong."""
    weights, metadata = paths_of(path)
    _require_given(path, weights, metadata)
    meta = read_metadata(metadata)
    arch = _architecture(meta, metadata)
    fingerprint = _fingerprint(meta, metadata)
    data = _read_weights(weights, metadata)
    sizes = GruWeights({}, len(FEATURES), arch["hidden"], arch["layers"])
    if _fingerprint_of(data) != fingerprint:
        raise _mismatch(data, sizes, weights, metadata)
    tensors = _parse_weights(data, weights)
    return RnnForecaster(_fit(tensors, sizes, weights, metadata), fingerprint, coverage)


def _mismatch(data: bytes, sizes: GruWeights, weights: Path, metadata: Path) -> ModelLoadError:
    """Weights that are not the ones ``metadata`` was written with: say whether they are
    damaged (truncated, say) or whole weights of another training (of another size?)."""
    msg = f"{weights}: does not match the fingerprint in {metadata.name}"
    try:
        tensors = load(data)
    except (SafetensorError, KeyError, TypeError, ValueError) as exc:
        msg += f" and is not whole safetensors ({exc}): the file is truncated or damaged; "
        return ModelLoadError(msg + "copy the checkpoint again, or retrain")
    if wrong := _misfit(tensors, sizes):
        why = f"{wrong}, where {metadata.name} describes {_size(sizes.hidden, sizes.layers)}"
    else:
        why = "or the weights were altered"
    if finished := _interrupted_save(data, metadata):
        msg += "; a save was interrupted between its two renames and left the matching "
        msg += f"metadata in {finished.name}: finish it with `mv {finished} {metadata}`"
        return ModelLoadError(msg)
    msg += f"; the pair is from two different trainings ({why}): copy a checkpoint's two "
    return ModelLoadError(msg + "files together")


def _interrupted_save(data: bytes, metadata: Path) -> Path | None:
    """The temporary metadata file of a save that crashed after renaming its weights into
    place, if one beside ``metadata`` has these weights' fingerprint."""
    fingerprint = _fingerprint_of(data)
    for candidate in sorted(metadata.parent.glob(f".{metadata.name}.*.tmp")):
        try:
            meta = json.loads(candidate.read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(meta, dict) and meta.get("fingerprint") == fingerprint:
            return candidate
    return None


def _require_given(path: str | Path, weights: Path, metadata: Path) -> None:
    """ModelLoadError naming what the user gave when it is not there or holds neither file;
    a missing companion of a file that is there is named by the loader."""
    if not Path(path).exists():
        msg = f"{path}: no such checkpoint; give a checkpoint directory, its .safetensors or "
        msg += "its .json file"
        raise ModelLoadError(msg)
    if not Path(path).is_dir() and str(path).endswith(("/", os.sep)):
        msg = f"{path}: a file, not a checkpoint directory; drop the trailing /"
        raise ModelLoadError(msg)
    if not weights.exists() and not metadata.exists():
        msg = f"{path}: no checkpoint in it (no {weights.name} or {metadata.name}); give the "
        msg += "--out of a `sensorcast train` run"
        raise ModelLoadError(msg)


def read_metadata(metadata: Path) -> dict[str, Any]:
    text = ""
    try:
        text = metadata.read_text()
        meta = json.loads(text)
    except FileNotFoundError as exc:
        msg = f"{metadata}: no such checkpoint metadata beside the weights; a checkpoint is "
        msg += "both files: copy them together"
        raise ModelLoadError(msg) from exc
    except (OSError, ValueError, RecursionError) as exc:
        # ValueError: not UTF-8, not JSON, or an integer of more digits than Python converts
        empty = isinstance(exc, json.JSONDecodeError) and not text.strip()
        why = "an empty file" if empty else exc
        msg = f"{metadata}: not a sensorcast checkpoint ({why}); give the .json that "
        msg += "`sensorcast train` wrote"
        raise ModelLoadError(msg) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        msg = f"{metadata}: not a sensorcast checkpoint (no format {FORMAT!r})"
        raise ModelLoadError(msg)
    if type(meta.get("version")) is not int or meta["version"] != VERSION:  # not True, not 1.0
        msg = f"{metadata}: checkpoint version {meta.get('version')!r}, this sensorcast reads "
        msg += f"{VERSION}; retrain with `sensorcast train`"
        raise ModelLoadError(msg)
    return meta


def _architecture(meta: dict[str, Any], metadata: Path) -> dict[str, Any]:
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        msg = f"{metadata}: no architecture (an object with kind, hidden, layers and "
        msg += f"features, found {arch!r:.40}); retrain with `sensorcast train`"
        raise ModelLoadError(msg)
    if arch.get("kind") != "gru" or arch.get("features") != list(FEATURES):
        msg = f"{metadata}: a checkpoint from another architecture or feature set "
        msg += f"({arch.get('kind')!r}, features {arch.get('features')!r}); retrain it"
        raise ModelLoadError(msg)
    hidden, layers = arch.get("hidden"), arch.get("layers")
    if not (_count(hidden) and _count(layers)):
        msg = f"{metadata}: architecture has no valid hidden/layers sizes (hidden {hidden!r:.20}, "
        msg += f"layers {layers!r:.20}: each a whole number of at least 1); retrain it"
        raise ModelLoadError(msg)
    return dict(arch)


def _count(value: object) -> bool:
    """A whole number of at least 1 (JSON's true is no size, nor 8.0)."""
    return type(value) is int and value > 0


def _fingerprint(meta: dict[str, Any], metadata: Path) -> str:
    fingerprint = meta.get("fingerprint")
    if not (isinstance(fingerprint, str) and fingerprint.startswith("sha256:")):
        msg = f"{metadata}: no sha256 fingerprint of the weights (found {fingerprint!r:.40}); "
        msg += "retrain with `sensorcast train`"
        raise ModelLoadError(msg)
    return fingerprint


def _read_weights(weights: Path, metadata: Path) -> bytes:
    try:
        return weights.read_bytes()
    except OSError as exc:
        msg = f"{weights}: cannot read the weights beside {metadata.name} ({exc.strerror}); "
        msg += "a checkpoint is both files: copy them together"
        raise ModelLoadError(msg) from exc


def _parse_weights(data: bytes, weights: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as numpy arrays (no torch, never unpickling)."""
    try:
        return load(data)
    except SafetensorError as exc:
        msg = f"{weights}: unreadable weights ({exc}); the file is truncated or not "
        msg += "safetensors: copy the checkpoint again, or retrain"
        raise ModelLoadError(msg) from exc
    except (KeyError, TypeError, ValueError) as exc:  # numpy has no such dtype (BF16)
        why = exc.args[0] if isinstance(exc, KeyError) else exc  # KeyError: 'BF16', quoted
        msg = f"{weights}: tensors of a type this sensorcast cannot read ({why}); a "
        msg += "checkpoint holds float32 weights: retrain with `sensorcast train`"
        raise ModelLoadError(msg) from exc


def _fit(
    tensors: dict[str, np.ndarray], sizes: GruWeights, weights: Path, metadata: Path
) -> GruWeights:
    """``tensors`` as float32, after checking they are the finite weights of ``sizes``."""
    if (wrong := _misfit(tensors, sizes)) is not None:
        msg = f"{weights}: tensors do not fit a GRU of this architecture ({wrong}, where "
        msg += f"{metadata.name} describes {_size(sizes.hidden, sizes.layers)}); they belong "
        msg += "to another network: give them with their own .json, or retrain"
        raise ModelLoadError(msg)
    for name, tensor in sorted(tensors.items()):
        if tensor.dtype.kind != "f":
            msg = f"{weights}: tensor {name} holds {tensor.dtype}, not floats; a checkpoint "
            msg += "holds float32 weights: retrain with `sensorcast train`"
            raise ModelLoadError(msg)
        if not np.isfinite(tensor).all():
            msg = f"{weights}: tensor {name} holds NaN or infinite weights; they are corrupt: "
            msg += "retrain with `sensorcast train`"
            raise ModelLoadError(msg)
    arrays = {name: np.ascontiguousarray(t, np.float32) for name, t in tensors.items()}
    return GruWeights(arrays, sizes.n_features, sizes.hidden, sizes.layers)


def _misfit(tensors: dict[str, np.ndarray], sizes: GruWeights) -> str | None:
    """What in ``tensors`` does not fit a GRU of ``sizes``; None when every tensor fits."""
    expected = sizes.shapes()
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if (hh := found.get("gru.weight_hh_l0")) is not None and len(hh) == 2 and hh[1] > 0:
        layers = sum(f"gru.weight_hh_l{k}" in found for k in range(len(found)))
        if (hh[1], layers) != (sizes.hidden, sizes.layers) and hh[0] == 3 * hh[1]:
            return f"they are {_size(hh[1], layers)}"
    for name in sorted(expected.keys() | found.keys()):
        if name not in found:
            return f"tensor {name} is missing"
        if name not in expected:
            return f"tensor {name} belongs to no GRU forecaster"
        if found[name] != expected[name]:
            return f"tensor {name} is {_shape(found[name])}, not {_shape(expected[name])}"
    return None


def _size(hidden: int, layers: int) -> str:
    return f"{hidden} units in {layers} layer" + ("" if layers == 1 else "s")


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
