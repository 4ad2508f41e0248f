"""Forecasters behind the pipeline's ``Forecaster`` protocol.

``load_forecaster`` is the one way the pipeline gets a model: by name
(``default``, ``persistence``, ``river-holtwinters``, ``river-snarimax``) or by
checkpoint path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import ModelLoadError
from pipeline.protocols import Forecaster

RIVER = ("river-holtwinters", "river-snarimax")  # state in Python objects: no snapshots
BUILTIN = ("default", "persistence", *RIVER)
CHECKPOINT_SUFFIXES = (".json", ".safetensors")
DEFAULT_MODEL = Path(__file__).parent / "weights" / "default.json"


def load_forecaster(spec: str, coverage: float = 0.9, names: Sequence[str] = BUILTIN) -> Forecaster:
    """The forecaster named by ``spec``: a built-in name or a checkpoint path.

    ``default`` is the recurrent model shipped in ``models/weights/``;
    ``coverage`` is the interval coverage it calibrates its scale to; ``names``
    are the built-in names an error offers (the daemon takes fewer than replay).
    """
    from models.persistence import PersistenceForecaster

    if spec == "persistence":
        return PersistenceForecaster()
    if spec in RIVER:
        from models.river_baselines import RiverForecaster  # River is slow to import

        return RiverForecaster(spec.removeprefix("river-"))
    if spec != "default" and _is_other_file(spec):
        msg = f"--model: {spec} is a file, not a checkpoint (NAME.safetensors with NAME.json, "
        msg += "or a directory holding model.safetensors and model.json); give one, or one of "
        raise ModelLoadError(msg + ", ".join(names))
    if spec == "default" or _names_a_checkpoint(spec):
        from models.checkpoint import load_checkpoint

        return load_checkpoint(DEFAULT_MODEL if spec == "default" else spec, coverage)
    choose = f"choose one of {', '.join(names)} or a checkpoint (a directory, "
    choose += "NAME.safetensors or NAME.json)"
    if spec.strip():
        msg = f"--model: unknown model {spec!r}; {choose}"
    else:
        msg = f"--model {spec!r}: names no model; {choose}"
    raise ModelLoadError(msg)


def _is_other_file(spec: str) -> bool:
    """A file that is not one of a checkpoint's two (``model.bin``, ``/dev/null``)."""
    path = Path(spec)
    if not spec.strip() or path.suffix in CHECKPOINT_SUFFIXES:
        return False
    return path.exists() and not path.is_dir()


def _names_a_checkpoint(spec: str) -> bool:
    """A checkpoint's file, a directory, or a path (a missing one is named by the loader)."""
    if not spec.strip():  # Path("") is the current directory, never meant
        return False
    path = Path(spec)
    return path.suffix in CHECKPOINT_SUFFIXES or path.is_dir() or "/" in spec or os.sep in spec
