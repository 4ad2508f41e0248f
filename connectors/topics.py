"""MQTT topics in and out: topic templates, output topics, filter and prefix checks.

A **topic template** maps an incoming topic to the levels of a stream key,
Telegraf-style, one template level per topic level (split on ``/``):

* ``literal`` — the topic level must be exactly this text;
* ``{name}`` — captures the level into the stream key (``name`` is an
  identifier; each name at most once);
* ``_`` — matches any one level and leaves it out of the key;
* ``#`` — only as the last level: captures all remaining levels (one or more).

>>> template = TopicTemplate("sensors/{site}/{device}/{measurement}")
>>> template.stream_parts("sensors/office/t1/temp")
('office', 't1', 'temp')
>>> template.stream_parts("sensors/office/t1") is None  # wrong number of levels
True
>>> TopicTemplate("sensors/#").stream_parts("sensors/office/t1/temp")
('office', 't1', 'temp')
>>> TopicTemplate("zigbee2mqtt/_/{device}").stream_parts("zigbee2mqtt/hall/plug-2")
('plug-2',)

Captured levels are never empty: ``sensors/office//temp`` matches no template
that captures its third level.

**Output topics** are built from stream keys with every level escaped (see
``escape_level``), so a key can never turn into a wildcard, an extra level or a
topic a broker refuses:

>>> stream_topic("sensorcast", "forecast", "office/t1/temp")
'sensorcast/forecast/office/t1/temp'
>>> stream_topic("sensorcast", "forecast", "lab/probe#2/100%")
'sensorcast/forecast/lab/probe%232/100%25'
"""

from __future__ import annotations

import re
from typing import NoReturn

from pipeline.errors import ConfigError

MAX_TOPIC_BYTES = 65_535  # MQTT: a topic is a UTF-8 string with a 16-bit length

_HOW = (
    "a template has one level per topic level: {name} captures it into the stream key, "
    "_ skips it, a final # takes the rest, other text must match exactly "
    "(e.g. sensors/{site}/{device}/{measurement} or sensors/#)"
)
# Code points MQTT says topics should not contain and mosquitto refuses: NUL, C0 and
# C1 controls, DEL, UTF-16 surrogates (not encodable) and Unicode non-characters.
_NONCHARACTERS = "".join(f"\\U{p:04X}FFFE\\U{p:04X}FFFF" for p in range(17))
_UNSAFE_CLASS = "\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff\\ufdd0-\\ufdef" + _NONCHARACTERS
_UNSAFE = re.compile(f"[{_UNSAFE_CLASS}]")
_ESCAPED = re.compile(f"[%+#/{_UNSAFE_CLASS}]")  # what escape_level rewrites
_EMPTY_LEVEL = "%E"
_HEX = frozenset("0123456789ABCDEFabcdef")


class TopicTemplate:
    """Maps MQTT topics to stream-key levels; see the module docstring for the grammar.

    >>> TopicTemplate("sensors/{site}/{site}")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: topic_template: 'sensors/{site}/{site}' names {site} twice; ...
    """

    def __init__(self, template: str) -> None:
        self.template = template
        if not template:
            _template_error(template, "is empty")
        levels = template.split("/")
        self._rest = levels[-1] == "#"  # a final '#' captures the remaining levels
        fixed = levels[:-1] if self._rest else levels
        self._size = len(fixed)  # levels before the '#', or all of them
        literals: list[tuple[int, str]] = []
        captures: list[int] = []
        names: list[str] = []
        for index, level in enumerate(fixed):
            name = _template_level(template, level, names)
            if name is None:
                literals.append((index, level))
            elif name:
                captures.append(index)
                names.append(name)
        if not names and not self._rest:
            _template_error(template, "captures no level")
        self._literals = tuple(literals)
        self._captures = tuple(captures)
        self.names: tuple[str, ...] = (*names, "#") if self._rest else tuple(names)

    def stream_parts(self, topic: str) -> tuple[str, ...] | None:
        """The captured levels in template order, or None when ``topic`` does not match."""
        levels = topic.split("/")
        if self._rest:
            if len(levels) <= self._size:
                return None
        elif len(levels) != self._size:
            return None
        for index, text in self._literals:
            if levels[index] != text:
                return None
        parts = [levels[index] for index in self._captures]
        if self._rest:
            parts += levels[self._size :]
        if "" in parts:
            return None
        return tuple(parts)

    @property
    def topic_filter(self) -> str:
        """The subscription filter that receives every topic this template can match.

        >>> TopicTemplate("sensors/{site}/_/{measurement}").topic_filter
        'sensors/+/+/+'
        """
        levels = self.template.split("/")
        literal = {index for index, _ in self._literals}
        fixed = [lv if i in literal else "+" for i, lv in enumerate(levels[: self._size])]
        return "/".join([*fixed, "#"] if self._rest else fixed)

    def __repr__(self) -> str:
        return f"TopicTemplate({self.template!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TopicTemplate) and other.template == self.template

    def __hash__(self) -> int:
        return hash(self.template)


def _template_level(template: str, level: str, names: list[str]) -> str | None:
    """A capture's name, ``""`` for ``_``, None for a literal; raises ConfigError."""
    if level == "_":
        return ""
    opens, closes = level.count("{"), level.count("}")
    if opens == closes == 1 and level.startswith("{") and level.endswith("}"):
        name = level[1:-1]
        if not name.isidentifier():
            _template_error(template, f"level {level!r} does not name it with an identifier")
        if name in names:
            _template_error(template, f"names {level} twice")
        return name
    if opens or closes:
        problem = "mixes text and braces" if opens == closes else "has an unbalanced brace"
        _template_error(template, f"level {level!r} {problem}; a capture is a whole level")
    if level == "#":
        _template_error(template, "has '#' before the last level")
    if "#" in level or "+" in level:
        _template_error(
            template, f"level {level!r} holds an MQTT wildcard; use {{name}} or _ for a level"
        )
    unsafe = _UNSAFE.search(level)
    if unsafe:
        _template_error(template, f"contains the character U+{ord(unsafe.group()):04X}")
    return None


def _template_error(template: str, problem: str) -> NoReturn:
    msg = f"topic_template: {template!r} {problem}; {_HOW}"
    raise ConfigError(msg)


def escape_level(level: str) -> str:
    """``level`` as text that is exactly one valid, wildcard-free MQTT topic level.

    The scheme, reversible by ``unescape_level``: each character that may not
    stand in an output level becomes ``%`` and its code point in upper-case hex —
    two digits below U+0100 (``%`` -> ``%25``, ``+`` -> ``%2B``, ``#`` -> ``%23``,
    ``/`` -> ``%2F``, NUL -> ``%00``, and the C0/C1 controls and DEL that brokers
    refuse), ``%U`` and six digits above (UTF-16 surrogates and Unicode
    non-characters). An empty level becomes ``%E``, which no other level escapes
    to. Everything else is kept, so ordinary keys are unchanged.

    >>> escape_level("temp"), escape_level("50%+"), escape_level("")
    ('temp', '50%25%2B', '%E')
    >>> unescape_level("50%25%2B")
    '50%+'
    """
    if not level:
        return _EMPTY_LEVEL
    if _ESCAPED.search(level) is None:
        return level
    return _ESCAPED.sub(_escape_char, level)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"%{code:02X}" if code < 0x100 else f"%U{code:06X}"


def unescape_level(text: str) -> str:
    """The level that ``escape_level`` turned into ``text``; ValueError if malformed."""
    if text == _EMPTY_LEVEL:
        return ""
    if "%" not in text:
        return text
    out: list[str] = []
    start = 0
    while (mark := text.find("%", start)) >= 0:
        out.append(text[start:mark])
        wide = text.startswith("U", mark + 1)
        digits = text[mark + 2 : mark + 8] if wide else text[mark + 1 : mark + 3]
        code = int(digits, 16) if digits and _HEX.issuperset(digits) else -1
        if len(digits) != (6 if wide else 2) or not 0 <= code <= 0x10FFFF:
            msg = f"bad escape at {mark} in topic level {text!r}"
            raise ValueError(msg)
        out.append(chr(code))
        start = mark + (8 if wide else 3)
    out.append(text[start:])
    return "".join(out)


def input_level(text: str) -> str:
    """A topic level as a stream key level: ``escape_level``'s escapes undone (what
    ``replay --to`` publishes reads back as the key replay names), anything else, a
    sensor's own ``50%`` or ``%zz`` say, as it is.

    >>> input_level("k%2B1"), input_level("50%25"), input_level("50%"), input_level("%E")
    ('k+1', '50%', '50%', '%E')
    """
    if "%" not in text:
        return text
    try:
        level = unescape_level(text)
    except ValueError:
        return text
    # only what escape_level writes, and never an empty level from a sensor's own "%E"
    return level if level and escape_level(level) == text else text


def stream_topic(prefix: str, kind: str, stream: str) -> str:
    """``{prefix}/{kind}/{stream}`` with each level of ``stream`` escaped.

    ``prefix`` is taken as given: check it once with ``check_prefix``. Raises
    ValueError when the topic would exceed MQTT's 65,535 bytes.
    """
    topic = f"{prefix}/{kind}/" + "/".join(map(escape_level, stream.split("/")))
    # at most 4 UTF-8 bytes per character: only long topics need encoding to measure
    if len(topic) * 4 > MAX_TOPIC_BYTES and len(topic.encode()) > MAX_TOPIC_BYTES:
        msg = f"topic for stream {stream[:60]!r}... is over {MAX_TOPIC_BYTES:,} bytes"
        raise ValueError(msg)
    return topic


def check_filter(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a valid MQTT subscription filter, or None.

    >>> check_filter("sensors/+/+/temp") is None, check_filter("$share/workers/sensors/#") is None
    (True, True)
    >>> check_filter("sensors/#/temp")
    "'sensors/#/temp': '#' must be the whole last level (e.g. sensors/#)"
    """
    if not topic_filter:
        return "the subscription filter is empty"
    problem = _text_problem(topic_filter)
    if problem:
        return f"{topic_filter[:60]!r}: {problem}"
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return f"{topic_filter!r}: '#' must be the whole last level (e.g. sensors/#)"
        if "+" in level and level != "+":
            return f"{topic_filter!r}: '+' must be a whole level (e.g. sensors/+/temp)"
    if levels[0] == "$share" and (len(levels) < 3 or levels[1] in ("", "+", "#")):
        return f"{topic_filter!r}: a shared subscription is $share/GROUP/FILTER"
    return None


def check_prefix(prefix: str) -> str | None:
    """Why ``prefix`` cannot start output topics, or None.

    >>> check_prefix("sensorcast") is None, check_prefix("site-a/sensorcast") is None
    (True, True)
    >>> check_prefix("sensorcast/")
    "'sensorcast/': has an empty level (a leading, trailing or doubled '/')"
    """
    if not prefix:
        return "the topic prefix is empty"
    problem = _text_problem(prefix)
    if problem is None and prefix.startswith("$"):
        problem = "starts with '$', which brokers reserve for their own topics ($SYS)"
    if problem is None and ("+" in prefix or "#" in prefix):
        problem = "holds an MQTT wildcard (+ or #); a topic to publish to cannot"
    if problem is None and "" in prefix.split("/"):
        problem = "has an empty level (a leading, trailing or doubled '/')"
    return f"{prefix[:60]!r}: {problem}" if problem else None


OUTPUT_KINDS = ("forecast", "anomaly", "dropped")  # {prefix}/{kind}/{stream levels...}
DEADLETTER = "deadletter"  # {prefix}/deadletter


def reads_own_output(topic_filter: str, prefix: str) -> bool:
    """Whether ``topic_filter`` matches a topic the daemon publishes under ``prefix``:
    subscribed to, every output would come back as input (a dead letter of a dead
    letter, without end).

    >>> reads_own_output("#", "sensorcast"), reads_own_output("sensors/#", "sensorcast")
    (True, False)
    >>> reads_own_output("loop/#", "loop/out"), reads_own_output("+/forecast/+", "sensorcast")
    (True, True)
    """
    levels = topic_filter.split("/")
    if levels[0] == "$share":  # $share/GROUP/FILTER: the filter is what matches
        levels = levels[2:]
    head = prefix.split("/")
    for index, level in enumerate(levels):
        if level == "#":
            return True
        if index < len(head):
            if level not in ("+", head[index]):
                return False
        elif index == len(head):
            if level not in ("+", *OUTPUT_KINDS, DEADLETTER):
                return False
            if len(levels) == index + 1:  # {prefix}/deadletter, or a kind with no stream
                return level in ("+", DEADLETTER)
            if level == DEADLETTER:
                return False
        else:  # stream levels: a stream key may have any number, of any text
            return True
    return False


def _text_problem(text: str) -> str | None:
    unsafe = _UNSAFE.search(text)
    if unsafe:
        char = unsafe.group()
        if char == "\x00":
            return "contains NUL"
        if "\ud800" <= char <= "\udfff":
            return "is not valid UTF-8 (it holds a lone surrogate)"
        return f"contains U+{ord(char):04X}, a character MQTT brokers refuse in topics"
    if len(text) * 4 > MAX_TOPIC_BYTES and len(text.encode()) > MAX_TOPIC_BYTES:
        return f"is longer than {MAX_TOPIC_BYTES:,} bytes"
    return None
