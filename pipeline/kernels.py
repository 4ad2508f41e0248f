"""Which build of the compiled kernels to load: this CPU's, or the portable one.

Numba keys its cache by CPU model and features, so kernels compiled on one machine
(an image's build) are compiled again at the first start on another: 15 s and
more before a daemon is ready, in every new container. ``sensorcast precompile
--portable`` also compiles a build for any x86-64 CPU (numba's ``generic`` CPU,
no optional instruction sets) and writes ``MARKER`` into the cache folder saying
which CPU the native build is for. A process whose CPU is another then loads the
portable build: ready at once, its kernels slower (docs/daemon.md) until a
cache is built on that machine; every command logs a warning saying so.

This runs when ``pipeline`` is imported, before numba reads its settings; a
``NUMBA_CPU_NAME`` set by the user is left alone. It imports no numba.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

MARKER = "sensorcast-kernels.json"
PORTABLE_CPU = "generic"  # numba compiles for it without optional features: any x86-64

chosen: str | None = None  # why the portable build was chosen: the command line logs it


def host_cpu() -> dict[str, str]:
    """This machine's CPU as numba names it for its cache."""
    import llvmlite.binding as llvm

    return {"name": llvm.get_host_cpu_name(), "features": llvm.get_host_cpu_features().flatten()}


def choose_build(environ: MutableMapping[str, str]) -> str | None:
    """Point numba at the portable build when the cache in ``NUMBA_CACHE_DIR`` has one and
    its native build is for another CPU; a sentence saying so, or None."""
    folder = environ.get("NUMBA_CACHE_DIR")
    if not folder or environ.get("NUMBA_CPU_NAME"):
        return None
    marker = read_marker(folder)
    if marker is None or not marker["portable"]:
        return None  # no marker (a cache of this machine), or nothing portable in it
    native, here = marker["native"], host_cpu()
    if native == here:
        return None
    environ["NUMBA_CPU_NAME"] = PORTABLE_CPU
    return (
        f"the kernel cache in {folder} was compiled for CPU {native.get('name')} and this "
        f"one is {here['name']}: loading its portable build (slower kernels); run "
        "`sensorcast precompile` on this machine for its own"
    )


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """``MARKER``'s ``native`` CPU and ``portable`` flag, or None if there is none of ours."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
        return {"native": dict(marker["native"]), "portable": bool(marker["portable"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record(folder: str | Path, native: dict[str, str], portable: bool) -> None:
    """Write ``MARKER``: the CPU the native build is for, and whether a portable one is."""
    text = json.dumps({"native": native, "portable": portable}, indent=1)
    (Path(folder) / MARKER).write_text(text + "\n", encoding="utf-8")


def choose() -> None:
    """``choose_build`` for this process (once: it then finds ``NUMBA_CPU_NAME`` set)."""
    global chosen
    chosen = chosen or choose_build(os.environ)
