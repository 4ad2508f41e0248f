"""Forecasters behind the pipeline's ``Forecaster`` protocol.

``load_forecaster`` is the one way the pipeline gets a model: by name
(``default``, ``persistence``) or by checkpoint path.
"""

from __future__ import annotations

from pipeline.errors import ModelLoadError
from pipeline.protocols import Forecaster

BUILTIN = ("default", "persistence")


def load_forecaster(spec: str) -> Forecaster:
    """The forecaster named by ``spec``.

    ``default`` is the model sensorcast ships; until the recurrent model lands
    it is persistence.
    """
    from models.persistence import PersistenceForecaster

    if spec in ("default", "persistence"):
        return PersistenceForecaster()
    msg = f"--model: unknown model {spec!r}; choose one of {', '.join(BUILTIN)}"
    raise ModelLoadError(msg)
