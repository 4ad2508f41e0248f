"""The exceptions sensorcast raises at its boundaries.

Errors from libraries (pandas, torch, numpy, zipfile, paho) are translated into
this tree where they enter, with the original chained as ``__cause__``::

    SensorcastError
    ├── UserError             a mistake the user can fix; the CLI prints one line, exits 2
    │   ├── ConfigError       a setting or flag is invalid (names the key and the fix)
    │   ├── InputFileError    an input file is unusable (names the file, line, column)
    │   └── ModelLoadError    a model name or checkpoint cannot be used
    ├── SnapshotError         a snapshot is unreadable or belongs to another model/schema;
    │                         it is refused whole, never half-loaded
    ├── RejectedInput         one message or reading was rejected (raised only by the
    │                         ``raise`` error policy, which tests use)
    ├── SinkError             a sink could not confirm delivery
    └── SourceError           a source failed in a way the pipeline cannot ride out
"""

from __future__ import annotations


class SensorcastError(Exception):
    """Base of every error sensorcast raises on purpose."""


class UserError(SensorcastError):
    """A mistake the user can fix; the message alone must say what and how."""


class ConfigError(UserError):
    """An invalid setting: the message names the key and the fix."""


class InputFileError(UserError):
    """An input file cannot be used: the message names the file (and line/column)."""


class ModelLoadError(UserError):
    """A model name or checkpoint that cannot be loaded."""


class SnapshotError(SensorcastError):
    """A snapshot that is corrupt, from another schema or from another model."""


class RejectedInput(SensorcastError):
    """A message or reading was rejected; carries the rejection for the caller."""

    def __init__(self, rejection: object) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection


class SinkError(SensorcastError):
    """A sink could not deliver or confirm what it was given."""


class SourceError(SensorcastError):
    """A source failed beyond what retrying can fix."""
