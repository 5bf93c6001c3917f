"""Pyroscope/Prometheus label selectors: ``process_cpu:cpu:nanoseconds:cpu:nanoseconds{a="x",b=~"y.*"}``.

A query names a profile type (optional) and a list of matchers. Per-sample tags (pprof string labels
such as ``op=load``) are matched exactly like series labels: the collector stores each distinct
label set, series labels plus sample tags, as one stream, as Grafana Pyroscope does.

Semantics follow Prometheus: a missing label has the value ``""``, so ``op!="load"`` matches streams
without ``op`` and ``op=~".+"`` matches only streams that carry ``op``; regexes are fully anchored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Op = Literal["=", "!=", "=~", "!~"]

DEFAULT_PROFILE_TYPE = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_OP = re.compile(r"=~|!~|!=|=")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "`": "`"}


class SelectorError(ValueError):
    """The query text is not a valid selector; the message says where and why."""


@dataclass(frozen=True)
class Matcher:
    """One ``name op "value"`` term."""

    name: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @staticmethod
    def make(name: str, op: Op, value: str) -> Matcher:
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(f"(?:{value})")
            except re.error as exc:
                raise SelectorError(f"bad regex for {name}{op}{value!r}: {exc}") from None
        return Matcher(name, op, value, regex)

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


@dataclass(frozen=True)
class Selector:
    """A parsed query. ``profile_type`` is a full Pyroscope profile type ID or None (any)."""

    profile_type: str | None
    matchers: tuple[Matcher, ...]

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def label_value(self, name: str) -> str | None:
        """The value of an equality matcher on ``name``, if the selector pins one."""
        for m in self.matchers:
            if m.name == name and m.op == "=":
                return m.value
        return None

    def __str__(self) -> str:
        return f"{self.profile_type or ''}{{{','.join(str(m) for m in self.matchers)}}}"


# Legacy (Pyroscope OG) app names carry the profile kind as a suffix: "myapp.cpu{...}".
_LEGACY_SUFFIXES = {
    "cpu": DEFAULT_PROFILE_TYPE,
    "alloc_objects": "memory:alloc_objects:count::",
    "alloc_space": "memory:alloc_space:bytes::",
    "inuse_objects": "memory:inuse_objects:count::",
    "inuse_space": "memory:inuse_space:bytes::",
}


def parse_selector(text: str) -> Selector:
    """Parse ``[profile_type|app.kind]{matchers}``; a bare name without braces is a service name."""
    text = text.strip()
    brace = text.find("{")
    head, body = (text, None) if brace < 0 else (text[:brace].strip(), text[brace:])
    matchers: list[Matcher] = []
    profile_type: str | None = None
    if head:
        if ":" in head:
            if len(head.split(":")) != 5:
                raise SelectorError(
                    f"profile type {head!r} must have 5 ':'-separated parts, e.g. {DEFAULT_PROFILE_TYPE}"
                )
            profile_type = head
        else:
            app, _, kind = head.rpartition(".")
            if app and kind in _LEGACY_SUFFIXES:
                profile_type = _LEGACY_SUFFIXES[kind]
                matchers.append(Matcher.make("service_name", "=", app))
            else:
                matchers.append(Matcher.make("service_name", "=", head))
    if body is not None:
        matchers.extend(_parse_matchers(body))
    return Selector(profile_type, tuple(matchers))


def _parse_matchers(body: str) -> list[Matcher]:
    if not body.endswith("}"):
        raise SelectorError(f"selector {body!r} is missing its closing '}}'")
    inner = body[1:-1]
    pos = 0
    out: list[Matcher] = []
    while True:
        pos = _skip_space(inner, pos)
        if pos >= len(inner):
            return out
        name_m = _NAME.match(inner, pos)
        if not name_m:
            raise SelectorError(f"expected a label name at {inner[pos:]!r}")
        pos = _skip_space(inner, name_m.end())
        op_m = _OP.match(inner, pos)
        if not op_m:
            raise SelectorError(f"expected =, !=, =~ or !~ after {name_m.group()!r}")
        pos = _skip_space(inner, op_m.end())
        value, pos = _parse_string(inner, pos)
        out.append(Matcher.make(name_m.group(), op_m.group(), value))  # type: ignore[arg-type]
        pos = _skip_space(inner, pos)
        if pos < len(inner):
            if inner[pos] != ",":
                raise SelectorError(f"expected ',' or '}}' at {inner[pos:]!r}")
            pos += 1


def _skip_space(s: str, pos: int) -> int:
    while pos < len(s) and s[pos].isspace():
        pos += 1
    return pos


def _parse_string(s: str, pos: int) -> tuple[str, int]:
    if pos >= len(s) or s[pos] not in "\"'`":
        raise SelectorError(f"expected a quoted value at {s[pos:]!r}")
    quote = s[pos]
    pos += 1
    chars: list[str] = []
    while pos < len(s):
        c = s[pos]
        if c == quote:
            return "".join(chars), pos + 1
        if c == "\\" and quote != "`" and pos + 1 < len(s):
            nxt = s[pos + 1]
            # Unknown escapes keep their backslash so regexes like "a\.b" survive.
            chars.append(_ESCAPES.get(nxt, "\\" + nxt))
            pos += 2
            continue
        chars.append(c)
        pos += 1
    raise SelectorError(f"unterminated string in selector at {s[pos - len(chars) - 1 :]!r}")
