"""Builders shared by the tests (importable: pytest puts tests/ on the path)."""

from __future__ import annotations

import re
from typing import Any

from models.persistence import PersistenceForecaster
from pipeline.config import PipelineConfig
from pipeline.detect import GaussianTailDetector
from pipeline.engine import Engine, raise_on_reject
from pipeline.testing import FakeClock


def make_engine(clock: FakeClock | None = None, strict: bool = False, **config: Any) -> Engine:
    """An engine on the default components and a fake clock; ``strict`` raises on rejections."""
    policy = {"on_reject": raise_on_reject} if strict else {}
    return Engine(
        PersistenceForecaster(),
        GaussianTailDetector(),
        PipelineConfig(**config),
        clock=clock or FakeClock(),
        capacity=4,
        **policy,
    )


def topic_oracle(template: str, topic: str) -> tuple[str, ...] | None:
    """An independent oracle for TopicTemplate.stream_parts: the template's grammar
    compiled to a regular expression."""
    pattern = []
    for level in template.split("/"):
        if level == "#":
            pattern.append("([^/]+(?:/[^/]+)*)")
        elif level == "_":
            pattern.append("[^/]*")
        elif level.startswith("{"):
            pattern.append("([^/]+)")
        else:
            pattern.append(re.escape(level))
    match = re.fullmatch("/".join(pattern), topic, re.DOTALL)
    if match is None:
        return None
    return tuple(part for group in match.groups() for part in group.split("/"))
