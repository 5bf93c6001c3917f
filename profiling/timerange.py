"""Time arguments as Pyroscope accepts them: ``now``, ``now-1h``, unix seconds, ms or ns.

Numbers are told apart by magnitude (seconds until the year 5138, then ms, then ns), which is how
Pyroscope's own parser treats ``from``/``until``. Everything returns float unix seconds.
"""

from __future__ import annotations

import re
import time

_RELATIVE = re.compile(r"^now(?:\s*-\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?)?$")
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}


class TimeRangeError(ValueError):
    """A time argument that is neither a number nor a ``now[-N<unit>]`` form."""


def parse_time(value: str | float | int, now: float | None = None) -> float:
    """Unix seconds for ``value``; ``now`` (default: the clock) anchors relative forms."""
    if isinstance(value, int | float):
        return _from_number(float(value))
    text = value.strip().lower()
    if not text:
        raise TimeRangeError("empty time value")
    m = _RELATIVE.match(text)
    if m:
        anchor = time.time() if now is None else now
        if m.group(1) is None:
            return anchor
        return anchor - float(m.group(1)) * _UNITS[m.group(2) or "s"]
    try:
        number = float(text)
    except ValueError:
        raise TimeRangeError(
            f"bad time {value!r}: use unix seconds/ms, 'now' or 'now-<N><s|m|h|d|w>' (e.g. now-1h)"
        ) from None
    return _from_number(number)


def _from_number(x: float) -> float:
    if x < 0:
        raise TimeRangeError(f"negative time {x}")
    if x >= 1e17:
        return x / 1e9
    if x >= 1e14:
        return x / 1e6
    if x >= 1e11:
        return x / 1e3
    return x


def parse_range(
    start: str | float | None, end: str | float | None, default_span_s: float = 3600.0
) -> tuple[float, float]:
    """(from, until) in unix seconds; defaults to the last ``default_span_s`` up to now."""
    now = time.time()
    until = now if end is None or end == "" else parse_time(end, now)
    frm = until - default_span_s if start is None or start == "" else parse_time(start, now)
    if frm > until:
        raise TimeRangeError(f"'from' ({frm:.0f}) is after 'until' ({until:.0f})")
    return frm, until
