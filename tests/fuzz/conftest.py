"""Fuzz tests: every test counts the inputs it fed; the run ends with the total.

A test takes the session-wide ``generated`` counter and calls ``generated.add(n)``
once per hypothesis example with the number of generated inputs that example fed
to the code under test (a payload decoded by every decoder, a topic matched, a
file replayed). Most examples feed one input; the bulk tests draw a structured
input and a seed, and feed that input plus mutants made from it with the seed.
The closing line "fuzz: N generated inputs (M hypothesis examples)" counts both.
"""

from __future__ import annotations

import pytest


class Generated:
    """Generated inputs fed, and hypothesis examples run, so far in this run."""

    def __init__(self) -> None:
        self.inputs = 0
        self.examples = 0

    def add(self, n: int = 1) -> None:
        """One example ran and fed ``n`` inputs."""
        self.inputs += n
        self.examples += 1


GENERATED = pytest.StashKey[Generated]()


@pytest.fixture(scope="session")
def generated(pytestconfig: pytest.Config) -> Generated:
    """The run's counter (session-scoped: hypothesis calls a test many times)."""
    return pytestconfig.stash.setdefault(GENERATED, Generated())


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    counter = config.stash.get(GENERATED, None)
    if counter is not None:
        terminalreporter.write_line(
            f"fuzz: {counter.inputs:,} generated inputs ({counter.examples:,} hypothesis examples)"
        )
