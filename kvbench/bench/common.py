"""Helpers shared by the benchmarks: medians, ratios and target verdicts.

Ratios are plain quotients of figures measured in one run; a ratio whose denominator is missing or
zero is None (reported as "n/a"), never an exception, so a partial run still prints what it has.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Target:
    """`value <op> bound`: e.g. a throughput ratio that must reach 0.8, a TTFT ratio that must stay
    under 0.25. `met` is None when the value could not be measured."""

    name: str
    value: float | None
    op: Literal[">=", "<="]
    bound: float

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.bound if self.op == ">=" else self.value <= self.bound

    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "not measured"}[self.met]

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": self.value, "op": self.op, "bound": self.bound, "met": self.met}


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
