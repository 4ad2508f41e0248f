"""Shared fixtures: hypothesis profiles, real brokers, and the fuzz tests' input counter.

`pytest` runs the default hypothesis profile; HYPOTHESIS_PROFILE=long runs many more cases,
and HYPOTHESIS_PROFILE=fuzz (``make fuzz``) ten times the fuzz tests' inputs. When fuzz
tests ran, the run ends with "fuzz: N generated inputs (M hypothesis examples)".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import Mosquitto
from fuzz.hostile import Generated
from hypothesis import settings

settings.register_profile("default", deadline=None, max_examples=100)
settings.register_profile("long", deadline=None, max_examples=5_000)
settings.register_profile("fuzz", deadline=None, max_examples=1_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free port, persistence in tmp_path, stopped afterwards."""
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


GENERATED = pytest.StashKey[Generated]()


@pytest.fixture(scope="session")
def generated(pytestconfig: pytest.Config) -> Generated:
    """The fuzz tests' input counter (session-scoped: hypothesis calls a test many times)."""
    return pytestconfig.stash.setdefault(GENERATED, Generated())


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    counter = config.stash.get(GENERATED, None)
    if counter is not None:
        terminalreporter.write_line(
            f"fuzz: {counter.inputs:,} generated inputs ({counter.examples:,} hypothesis examples)"
        )
