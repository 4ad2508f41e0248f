"""Output folders checked before the work that fills them.

A path that cannot be written is a user's mistake: it is reported in one line
naming the flag or setting, before a training run, a NAB pass or a benchmark,
not as a traceback after it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import ConfigError


def writable_folder(
    folder: str | Path, what: str, fix: str = "give a folder you can write to"
) -> Path:
    """``folder``, made if missing, once a probe file in it was created and removed;
    ConfigError naming ``what`` (a flag or setting) and ``fix`` when that fails."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        msg = f"{what}: {folder} is a file, not a folder; {fix}"
        raise ConfigError(msg)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sensorcast-probe-"):
            pass
    except OSError as exc:
        msg = f"{what}: cannot write in {folder} ({exc.strerror or exc}); {fix}"
        raise ConfigError(msg) from exc
    return folder


def probe_folder(folder: str | Path, what: str) -> None:
    """``writable_folder``'s check, without a trace: the folders it had to make are
    removed again (a check, such as check-config, must not leave a root-owned folder
    behind that the daemon's own user then cannot write in)."""
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not os.path.exists(p)]  # deepest first
    try:
        writable_folder(folder, what)
    finally:
        for made in missing:
            with contextlib.suppress(OSError):
                made.rmdir()


def writable_file(path: str | Path, what: str) -> Path:
    """``path``, whose folder is ``writable_folder``; ConfigError if ``path`` is a folder."""
    writable_folder(Path(path).parent, what)
    return not_a_folder(Path(path), what)


def probe_file(path: str | Path, what: str) -> Path:
    """``writable_file``'s check, leaving no folder behind: for an output written
    only at the end of a run that may still fail (``evaluate --report``)."""
    probe_folder(Path(path).parent, what)
    return not_a_folder(Path(path), what)


def not_a_folder(path: Path, what: str) -> Path:
    if path.is_dir():
        msg = f"{what}: {path} is a folder; give a file name"
        raise ConfigError(msg)
    return path


def not_an_input(path: str | Path, inputs: Sequence[Path], what: str) -> None:
    """ConfigError naming ``what`` when ``path`` is one of the ``inputs``: writing it
    would destroy a log before (or while) it is read."""
    path = Path(path)
    if not path.exists():
        return
    for log in inputs:
        if log.exists() and path.samefile(log):
            msg = f"{what}: {path} is one of the logs being read; writing it would destroy "
            msg += "it: give a file outside the inputs"
            raise ConfigError(msg)


def beside(path: Path, kind: str = "tmp") -> Path:
    """The hidden file next to ``path`` that this process writes first and renames over
    it (``.NAME.PID.tmp``): one writer of a path per process, and a name a crash's
    leftovers can be found by."""
    return path.with_name(f".{path.name}.{os.getpid()}.{kind}")


def replace_whole(path: Path, data: bytes) -> None:
    """``data`` at ``path``, never half-written: put in a new file beside it, on disk,
    then renamed over it. The temporary file is removed on any failure (an interrupt
    too), and the OSError is the caller's to word."""
    tmp = beside(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
