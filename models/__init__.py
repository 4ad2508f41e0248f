"""Forecasters behind the pipeline's ``Forecaster`` protocol.

``load_forecaster`` is the one way the pipeline gets a model: by name
(``default``, ``persistence``, ``river-holtwinters``, ``river-snarimax``) or by
checkpoint path.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ModelLoadError
from pipeline.protocols import Forecaster

BUILTIN = ("default", "persistence", "river-holtwinters", "river-snarimax")
DEFAULT_MODEL = Path(__file__).parent / "weights" / "default.json"


def load_forecaster(spec: str, coverage: float = 0.9) -> Forecaster:
    """The forecaster named by ``spec``: a built-in name or a checkpoint path.

    ``default`` is the recurrent model shipped in ``models/weights/``;
    ``coverage`` is the interval coverage it calibrates its scale to.
    """
    from models.persistence import PersistenceForecaster

    if spec == "persistence":
        return PersistenceForecaster()
    if spec in ("river-holtwinters", "river-snarimax"):
        from models.river_baselines import RiverForecaster  # River is slow to import

        return RiverForecaster(spec.removeprefix("river-"))
    if spec == "default" or Path(spec).suffix in (".json", ".safetensors") or Path(spec).is_dir():
        from models.checkpoint import load_checkpoint

        return load_checkpoint(DEFAULT_MODEL if spec == "default" else spec, coverage)
    msg = f"--model: unknown model {spec!r}; choose one of {', '.join(BUILTIN)} or a checkpoint "
    msg += "(a directory, NAME.safetensors or NAME.json)"
    raise ModelLoadError(msg)
