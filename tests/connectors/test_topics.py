"""Topic templates, output-topic escaping, and MQTT filter / prefix checks."""

from __future__ import annotations

import pytest
from helpers import topic_oracle
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.topics import (
    MAX_TOPIC_BYTES,
    TopicTemplate,
    check_filter,
    check_prefix,
    escape_level,
    stream_topic,
    unescape_level,
)
from pipeline.errors import ConfigError


def at_least(n: int) -> settings:
    """``n`` examples under the default profile; the ``long`` profile's count when larger."""
    return settings(max_examples=max(n, settings().max_examples))


# Characters MQTT brokers (mosquitto) refuse in a topic: controls, surrogates, non-characters.
_NONCHARACTERS = {chr(p * 0x10000 + 0xFFFE) for p in range(17)} | {
    chr(p * 0x10000 + 0xFFFF) for p in range(17)
}


def is_refused(char: str) -> bool:
    code = ord(char)
    return (
        code <= 0x1F
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
        or 0xFDD0 <= code <= 0xFDEF
        or char in _NONCHARACTERS
    )


ANY_TEXT = st.text(st.characters(exclude_categories=()))  # surrogates and controls too


# -- templates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "topic", "parts"),
    [
        (
            "sensors/{site}/{device}/{measurement}",
            "sensors/office/t1/temp",
            ("office", "t1", "temp"),
        ),
        ("sensors/#", "sensors/office/t1/temp", ("office", "t1", "temp")),
        ("sensors/#", "sensors/office", ("office",)),
        ("#", "a/b", ("a", "b")),
        ("zigbee2mqtt/_/{device}", "zigbee2mqtt/hall/plug-2", ("plug-2",)),
        ("{measurement}/{site}", "temp/office", ("temp", "office")),
        ("tele/{device}/_", "tele/sonoff-1/SENSOR", ("sonoff-1",)),
        ("{site}/x/#", "lab/x/a/b/c", ("lab", "a", "b", "c")),
        ("/sensors/{device}", "/sensors/t1", ("t1",)),  # a leading empty literal level
        ("$SYS/broker/{metric}", "$SYS/broker/uptime", ("uptime",)),
        ("s/{d}", "s/ünïcødé 🌡", ("ünïcødé 🌡",)),
        ("s/{d}", "s/+", ("+",)),  # a topic level may not be '+', but matching never crashes
    ],
)
def test_template_matches(template: str, topic: str, parts: tuple[str, ...]) -> None:
    assert TopicTemplate(template).stream_parts(topic) == parts


@pytest.mark.parametrize(
    ("template", "topic"),
    [
        ("sensors/{site}/{device}/{measurement}", "sensors/office/t1"),  # too few levels
        ("sensors/{site}/{device}/{measurement}", "sensors/office/t1/temp/x"),  # too many
        ("sensors/{site}/{device}/{measurement}", "other/office/t1/temp"),  # literal differs
        ("sensors/{site}/{device}/{measurement}", "Sensors/office/t1/temp"),  # case matters
        ("sensors/{site}/{device}/{measurement}", "sensors/office//temp"),  # empty capture
        ("sensors/{site}/{device}/{measurement}", "sensors/office/t1/"),  # trailing slash
        ("sensors/#", "sensors"),  # '#' takes one level or more
        ("sensors/#", "sensors/"),  # ... and they are not empty
        ("sensors/#", "sensors/a//b"),
        ("sensors/#", "other/a"),
        ("_/{device}", "/t1/x"),
        ("s/{d}", ""),
    ],
)
def test_template_does_not_match(template: str, topic: str) -> None:
    assert TopicTemplate(template).stream_parts(topic) is None


def test_skipped_levels_may_be_empty() -> None:
    assert TopicTemplate("_/{device}").stream_parts("/t1") == ("t1",)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("", "is empty"),
        ("sensors/temp", "captures no level"),
        ("_/_", "captures no level"),
        ("sensors/+/{device}", "'+' holds an MQTT wildcard"),
        ("sensors/a+b/{device}", "'a+b' holds an MQTT wildcard"),
        ("sensors/#/{device}", "'#' before the last level"),
        ("sensors/x#/{device}", "'x#' holds an MQTT wildcard"),
        ("sensors/{site", "unbalanced brace"),
        ("sensors/site}", "unbalanced brace"),
        ("sensors/{{site}", "unbalanced brace"),
        ("sensors/x{site}", "mixes text and braces"),
        ("sensors/{a}{b}", "mixes text and braces"),
        ("sensors/{}", "does not name it with an identifier"),
        ("sensors/{1st}", "does not name it with an identifier"),
        ("sensors/{a-b}", "does not name it with an identifier"),
        ("sensors/{site}/{site}", "names {site} twice"),
        ("sensors/\x00/{site}", "U+0000"),
    ],
)
def test_invalid_template_says_what_and_how(template: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TopicTemplate(template)
    message = str(caught.value)
    assert message.startswith("topic_template: ")
    assert problem in message
    assert "sensors/{site}/{device}/{measurement}" in message  # how to write one
    assert "_ skips" in message and "final # takes the rest" in message
    assert "\n" not in message


def test_template_attributes() -> None:
    template = TopicTemplate("sensors/{site}/_/{measurement}")
    assert template.template == "sensors/{site}/_/{measurement}"
    assert template.names == ("site", "measurement")
    assert template.topic_filter == "sensors/+/+/+"
    assert repr(template) == "TopicTemplate('sensors/{site}/_/{measurement}')"
    assert template == TopicTemplate("sensors/{site}/_/{measurement}")
    assert len({template, TopicTemplate("sensors/{site}/_/{measurement}")}) == 1
    assert TopicTemplate("a/{b}/#").names == ("b", "#")
    assert TopicTemplate("a/{b}/#").topic_filter == "a/+/#"


LEVEL = st.sampled_from(["a", "b", "", "ab"])
TEMPLATE_LEVEL = st.sampled_from(["a", "b", "", "_", "{x}", "{y}", "{z}"])


@st.composite
def templates(draw: st.DrawFn) -> str:
    levels = draw(st.lists(TEMPLATE_LEVEL, min_size=1, max_size=5))
    names = iter(f"{{n{i}}}" for i in range(10))  # unique capture names
    levels = [next(names) if level.startswith("{") else level for level in levels]
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


@at_least(800)
@given(templates(), st.lists(LEVEL, min_size=1, max_size=7))
def test_template_equals_regex_oracle(template: str, levels: list[str]) -> None:
    try:
        compiled = TopicTemplate(template)
    except ConfigError:
        assert "{" not in template and not template.endswith("#")  # nothing captured
        return
    topic = "/".join(levels)
    assert compiled.stream_parts(topic) == topic_oracle(template, topic)


def filter_matches(topic_filter: str, topic: str) -> bool:
    """MQTT subscription matching, written out plainly."""
    wanted, levels = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return len(levels) >= index
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(levels) == len(wanted)


@at_least(400)
@given(templates(), st.lists(LEVEL, min_size=1, max_size=7))
def test_topic_filter_receives_every_matching_topic(template: str, levels: list[str]) -> None:
    try:
        compiled = TopicTemplate(template)
    except ConfigError:
        return
    topic = "/".join(levels)
    assert check_filter(compiled.topic_filter) is None
    if compiled.stream_parts(topic) is not None:
        assert filter_matches(compiled.topic_filter, topic)


@at_least(1000)
@given(ANY_TEXT)
def test_any_template_text_is_accepted_or_a_config_error(template: str) -> None:
    try:
        compiled = TopicTemplate(template)
    except ConfigError as exc:
        assert str(exc).startswith("topic_template: ")
        return
    assert compiled.stream_parts(template) is None or compiled.names


@at_least(1000)
@given(ANY_TEXT)
def test_any_topic_is_matched_or_not(topic: str) -> None:
    parts = TopicTemplate("s/{a}/#").stream_parts(topic)
    assert parts is None or all(parts)


# -- escaping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "escaped"),
    [
        ("temp", "temp"),
        ("office-3", "office-3"),
        ("ünïcødé 🌡", "ünïcødé 🌡"),
        ("", "%E"),
        ("%", "%25"),
        ("+", "%2B"),
        ("#", "%23"),
        ("a/b", "a%2Fb"),
        ("\x00", "%00"),
        ("tab\there", "tab%09here"),
        ("del\x7f", "del%7F"),
        ("c1\x85", "c1%85"),
        ("50%+#", "50%25%2B%23"),
        ("%E", "%25E"),  # the escaped text of a level spelled like the empty marker
        ("\ud800", "%U00D800"),
        ("\ufffe", "%U00FFFE"),
        ("\U0010ffff", "%U10FFFF"),
        ("$SYS", "$SYS"),  # '$' matters only at the start of a topic, which is the prefix
    ],
)
def test_escape_level_examples(level: str, escaped: str) -> None:
    assert escape_level(level) == escaped
    assert unescape_level(escaped) == level


@at_least(2000)
@given(ANY_TEXT)
def test_escape_round_trip_and_safety(level: str) -> None:
    escaped = escape_level(level)
    assert unescape_level(escaped) == level
    assert escaped
    assert not set(escaped) & {"+", "#", "/", "\x00"}
    assert not any(is_refused(char) for char in escaped)
    escaped.encode("utf-8")  # valid UTF-8: no lone surrogates
    if not set(level) & {"%", "+", "#", "/"} and level and not any(map(is_refused, level)):
        assert escaped == level  # ordinary levels are left alone


@pytest.mark.parametrize("text", ["%", "%2", "%G0", "a%", "%U", "%U12345", "%U110000", "%+1"])
def test_unescape_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="bad escape"):
        unescape_level(text)


def test_stream_topic() -> None:
    assert stream_topic("sensorcast", "forecast", "office/t1/temp") == (
        "sensorcast/forecast/office/t1/temp"
    )
    assert stream_topic("site/a", "anomaly", "lab/probe#2/100%") == (
        "site/a/anomaly/lab/probe%232/100%25"
    )
    assert stream_topic("p", "forecast", "a//b") == "p/forecast/a/%E/b"


def test_stream_topic_longer_than_mqtt_allows() -> None:
    fits = "x" * (MAX_TOPIC_BYTES - len("p/forecast/"))
    assert len(stream_topic("p", "forecast", fits).encode()) == MAX_TOPIC_BYTES
    with pytest.raises(ValueError, match="65,535 bytes"):
        stream_topic("p", "forecast", fits + "x")
    with pytest.raises(ValueError, match="65,535 bytes"):  # multi-byte characters count as bytes
        stream_topic("p", "forecast", "é" * (MAX_TOPIC_BYTES // 2))


@at_least(700)
@given(st.lists(ANY_TEXT, min_size=1, max_size=5))
def test_stream_topic_levels_unescape_to_the_key(levels: list[str]) -> None:
    stream = "/".join(level.replace("/", "") for level in levels)
    topic = stream_topic("sensorcast", "forecast", stream)
    assert check_filter(topic) is None
    assert "+" not in topic and "#" not in topic
    prefix, kind, *escaped = topic.split("/")
    assert (prefix, kind) == ("sensorcast", "forecast")
    assert "/".join(map(unescape_level, escaped)) == stream


# -- subscription filters and prefixes ---------------------------------------------------


@pytest.mark.parametrize(
    "topic_filter",
    ["sensors/#", "#", "+", "sensors/+/+/temp", "+/+", "a//b", "/", "$SYS/#", "$share/g/s/#"],
)
def test_valid_filters(topic_filter: str) -> None:
    assert check_filter(topic_filter) is None


@pytest.mark.parametrize(
    ("topic_filter", "problem"),
    [
        ("", "empty"),
        ("sensors/#/temp", "'#' must be the whole last level"),
        ("sensors#", "'#' must be the whole last level"),
        ("sensors/t#", "'#' must be the whole last level"),
        ("sensors/+x", "'+' must be a whole level"),
        ("a+", "'+' must be a whole level"),
        ("a\x00b", "NUL"),
        ("a\tb", "U+0009"),
        ("a\ud800", "UTF-8"),
        ("a/" * 40_000, "65,535 bytes"),
        ("$share/g", "$share/GROUP/FILTER"),
        ("$share//a", "$share/GROUP/FILTER"),
        ("$share/+/a", "$share/GROUP/FILTER"),
    ],
)
def test_invalid_filters(topic_filter: str, problem: str) -> None:
    message = check_filter(topic_filter)
    assert message is not None and problem in message
    assert len(message) < 200


@pytest.mark.parametrize("prefix", ["sensorcast", "site-a/sensorcast", "ünï", "a b"])
def test_valid_prefixes(prefix: str) -> None:
    assert check_prefix(prefix) is None


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        ("", "empty"),
        ("$SYS/x", "starts with '$'"),
        ("a/+", "wildcard"),
        ("a/#", "wildcard"),
        ("a#b", "wildcard"),
        ("a\x00", "NUL"),
        ("a\nb", "U+000A"),
        ("/a", "empty level"),
        ("a/", "empty level"),
        ("a//b", "empty level"),
        ("x" * 70_000, "65,535 bytes"),
    ],
)
def test_invalid_prefixes(prefix: str, problem: str) -> None:
    message = check_prefix(prefix)
    assert message is not None and problem in message


@at_least(1000)
@given(ANY_TEXT)
def test_checks_take_any_text(text: str) -> None:
    for check in (check_filter, check_prefix):
        result = check(text)
        assert result is None or (isinstance(result, str) and result)
    if check_prefix(text) is None:
        assert check_filter(stream_topic(text, "forecast", "a/b")) is None
