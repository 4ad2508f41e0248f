"""Fuzzing topics: the template matcher on hostile topics, and output topics of hostile keys.

Complements ``tests/connectors/test_topics.py`` (a four-letter alphabet against a
regex oracle): here template literals and topic levels hold wildcards, NUL,
braces, ``%`` escapes, controls, surrogates and very long text, and every stream
key the input side can produce (topic levels captured by the template plus a
field name from the payload) must give output topics that no broker refuses and
no subscriber can misread: no ``+``, ``#`` or NUL, no empty level, valid UTF-8,
the key recoverable level by level.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re

import numpy as np
from helpers import topic_oracle
from hypothesis import example, given
from hypothesis import strategies as st

from connectors.payloads import PayloadError, make_decoder
from connectors.topics import (
    MAX_TOPIC_BYTES,
    TopicTemplate,
    check_filter,
    check_prefix,
    stream_topic,
    unescape_level,
)
from fuzz.hostile import NOW, Generated, examples
from pipeline.errors import ConfigError
from pipeline.types import VerdictBatch, stream_key_problem

SEEDS = st.integers(0, 2**64)
HOSTILE_CHARS = "ab+#$%{}_ /\x00\x01\x7f\x85é🌡\ud800\ufffe\U0010ffff"
HOSTILE_LEVELS = ("", "+", "#", "_", "$SYS", "%", "%E", "%2B", "{x}", "a", "é🌡", "\x00")
# What MQTT brokers refuse in a topic (mosquitto): controls, surrogates, non-characters.
REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")


def hostile_level(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(HOSTILE_LEVELS)
    if roll < 0.32:
        return rng.choice(HOSTILE_CHARS.replace("/", "")) * rng.randrange(300, 70_000)
    return "".join(rng.choices(HOSTILE_CHARS.replace("/", ""), k=rng.randrange(1, 6)))


def hostile_topic(rng: random.Random, template: str) -> str:
    """Mostly the template with its captures and skips filled in; sometimes anything."""
    if rng.random() < 0.2:
        return "/".join(hostile_level(rng) for _ in range(rng.randrange(1, 7)))
    levels: list[str] = []
    for level in template.split("/"):
        if level == "#":
            levels += [hostile_level(rng) for _ in range(rng.randrange(0, 4))]
        elif level == "_" or level.startswith("{"):
            levels.append(hostile_level(rng))
        else:
            levels.append(level)
    return "/".join(levels)


# -- the template matcher ---------------------------------------------------------------

TEMPLATE_LEVELS = st.sampled_from(("{x}", "_", "sensors", "", "a+b", "{", "x}", "$SYS", "#"))
LITERALS = st.text(st.characters(exclude_categories=(), exclude_characters="/"), max_size=4)


@st.composite
def templates(draw: st.DrawFn) -> str:
    levels = draw(st.lists(TEMPLATE_LEVELS | LITERALS, min_size=1, max_size=6))
    names = iter(f"{{n{i}}}" for i in range(10))  # captures get unique names
    return "/".join(next(names) if level == "{x}" else level for level in levels)


def filter_matches(topic_filter: str, topic: str) -> bool:
    """MQTT subscription matching, written out plainly."""
    wanted, levels = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return len(levels) >= index
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(levels) == len(wanted)


TOPICS_PER_TEMPLATE = 20


@examples(2_500)
@given(templates(), SEEDS)
@example("sensors/{a}/#", 0)
def test_template_matcher_on_hostile_topics(generated: Generated, template: str, seed: int) -> None:
    try:
        compiled = TopicTemplate(template)
    except ConfigError as exc:
        assert str(exc).startswith("topic_template: ") and "\n" not in str(exc)
        generated.add(1)  # the template was the input
        return
    assert check_filter(compiled.topic_filter) is None
    rng = random.Random(seed)
    for _ in range(TOPICS_PER_TEMPLATE):
        topic = hostile_topic(rng, template)
        parts = compiled.stream_parts(topic)
        assert parts == topic_oracle(template, topic)
        if parts is not None:
            assert all(type(part) is str and part for part in parts)
            assert filter_matches(compiled.topic_filter, topic)
    generated.add(TOPICS_PER_TEMPLATE)


# -- output topics of hostile stream keys -----------------------------------------------

DECODE = make_decoder("auto")
TEMPLATES = [TopicTemplate(t) for t in ("sensors/{site}/{device}/{measurement}", "sensors/#")]
PREFIXES = st.sampled_from(("sensorcast", "site-a/sensorcast", "é/🌡")) | st.text(max_size=12)


def hostile_payload(rng: random.Random) -> bytes:
    """A payload whose values are named by the sender: zigbee2mqtt fields, SenML, line protocol."""
    names = [hostile_level(rng) + rng.choice(("", "/", "//", "/+", "#")) for _ in range(3)]
    style = rng.randrange(3)
    if style == 0:
        return json.dumps({name: 1.5 for name in names}, ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    if style == 1:
        pack = [{"bn": names[0], "n": names[1], "v": 1.5}, {"n": names[2], "v": 2}]
        return json.dumps(pack).encode()
    measurement = names[0].replace("\\", "\\\\").replace(" ", "\\ ").replace(",", "\\,")
    return f"{measurement or 'm'} v=1.5\n".encode("utf-8", "surrogatepass")


def stream_keys(rng: random.Random, template: TopicTemplate) -> list[str]:
    """The keys the MQTT source makes of a hostile topic and payload (invalid ones dropped)."""
    parts = template.stream_parts(hostile_topic(rng, template.template))
    if parts is None:
        return []
    try:
        decoded = DECODE(hostile_payload(rng), NOW)
    except PayloadError:
        return []
    keys = ["/".join((*parts, d.name) if d.name else parts) for d in decoded]
    return [key for key in keys if stream_key_problem(key) is None]


def check_output_topic(topic: str, prefix: str, kind: str, key: str) -> None:
    assert "+" not in topic and "#" not in topic and "\x00" not in topic
    assert "" not in topic.split("/")  # no empty level
    assert REFUSED.search(topic) is None
    assert len(topic.encode("utf-8")) <= MAX_TOPIC_BYTES  # strict UTF-8: no lone surrogate
    assert check_filter(topic) is None
    levels = topic.split("/")
    assert "/".join(levels[: prefix.count("/") + 2]) == f"{prefix}/{kind}"
    assert "/".join(map(unescape_level, levels[prefix.count("/") + 2 :])) == key


MESSAGES_PER_EXAMPLE = 12


@examples(2_000)
@given(PREFIXES, st.sampled_from(TEMPLATES), SEEDS)
def test_no_published_topic_holds_a_wildcard_nul_or_empty_level(
    generated: Generated, prefix: str, template: TopicTemplate, seed: int
) -> None:
    if check_prefix(prefix) is not None:  # the settings refuse it before anything runs
        generated.add(1)  # the prefix was the input
        return
    rng = random.Random(seed)
    keys = [key for _ in range(MESSAGES_PER_EXAMPLE) for key in stream_keys(rng, template)]
    batch = dataclasses.replace(VerdictBatch.blank(len(keys)), stream=np.asarray(keys, object))
    for stream in batch.stream.tolist():  # the sink's path: each row's stream -> topic
        for kind in ("forecast", "anomaly"):
            topic = stream_topic(prefix, kind, stream)
            check_output_topic(topic, prefix, kind, stream)
    generated.add(MESSAGES_PER_EXAMPLE)
