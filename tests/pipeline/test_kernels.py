"""Which build of the kernels a process loads (``pipeline.kernels``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import kernels


def cache_with(folder: Path, native: dict[str, str], portable: bool) -> dict[str, str]:
    kernels.record(folder, native, portable)
    return {"NUMBA_CACHE_DIR": str(folder)}


def test_another_cpus_cache_with_a_portable_build_loads_the_portable_build(tmp_path):
    env = cache_with(tmp_path, {"name": "another-cpu", "features": "+sse2"}, portable=True)
    note = kernels.choose_build(env)
    assert env["NUMBA_CPU_NAME"] == "generic"
    assert note is not None and "compiled for CPU another-cpu" in note
    assert "portable build" in note and "sensorcast precompile" in note


@pytest.mark.parametrize(
    ("native", "portable", "given"),
    [
        ("here", True, {}),  # this CPU's build is there
        ("another", False, {}),  # nothing portable to load: numba compiles, as before
        ("another", True, {"NUMBA_CPU_NAME": "skylake"}),  # the user chose
    ],
)
def test_the_native_build_is_left_alone(tmp_path, native, portable, given):
    cpu = kernels.host_cpu() if native == "here" else {"name": "another-cpu", "features": ""}
    env = {**cache_with(tmp_path, cpu, portable), **given}
    assert kernels.choose_build(env) is None
    assert env.get("NUMBA_CPU_NAME") == given.get("NUMBA_CPU_NAME")


@pytest.mark.parametrize("marker", [None, "not json", json.dumps({"native": "x"}), "[]"])
def test_a_cache_without_a_marker_of_ours_is_left_alone(tmp_path, marker):
    if marker is not None:
        (tmp_path / kernels.MARKER).write_text(marker)
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    assert kernels.choose_build(env) is None and "NUMBA_CPU_NAME" not in env
    assert kernels.choose_build({}) is None  # no cache folder set
