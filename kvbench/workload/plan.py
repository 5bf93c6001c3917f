"""The planned requests of one run, identical for every cache configuration.

A plan is built once per run from the scenario and a seed, before any configuration starts, so each
configuration receives byte-identical prompts in the same order: differences between rows are then
caused by the cache, not by the workload. Sessions run their requests one after another (a user's
turns); distinct sessions run concurrently, starting at `start_s` after the run begins.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from kvbench.scenario import Arrival, Choice, Exponential, Normal, Uniform


@dataclass(frozen=True)
class PlannedRequest:
    """One request. `turn` is the 1-based position in its session or prefix group (1 = cold)."""

    id: str
    session: str
    turn: int
    max_tokens: int
    prompt_tokens: int
    messages: tuple[dict[str, str], ...] | None = None
    prompt: str | None = None
    group: str | None = None
    think_time_s: float = 0.0
    warmup: bool = False

    def body(self) -> dict[str, Any]:
        """The endpoint-specific part of the JSON body (messages or prompt)."""
        if self.messages is not None:
            return {"messages": [dict(m) for m in self.messages]}
        return {"prompt": self.prompt or ""}


@dataclass(frozen=True)
class Session:
    id: str
    start_s: float
    requests: tuple[PlannedRequest, ...]


@dataclass(frozen=True)
class Plan:
    """Sessions in dispatch order plus independent warm-up requests (never part of the results)."""

    sessions: tuple[Session, ...]
    warmup: tuple[PlannedRequest, ...] = ()
    concurrency: int | None = None
    max_requests: int | None = None
    duration_s: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def measured_requests(self) -> int:
        n = sum(len(s.requests) for s in self.sessions)
        return min(n, self.max_requests) if self.max_requests else n

    def all_requests(self) -> list[PlannedRequest]:
        return [r for s in self.sessions for r in s.requests]


def sample(value: int | float | Uniform | Normal | Choice | Exponential, rng: random.Random) -> float:
    """One draw of a constant or distribution value (never negative)."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Uniform):
        return rng.uniform(value.min, value.max)
    if isinstance(value, Normal):
        x = rng.gauss(value.mean, value.std)
        x = max(value.min, x)
        return min(value.max, x) if value.max is not None else x
    if isinstance(value, Choice):
        return float(rng.choice(value.values))
    if isinstance(value, Exponential):
        return rng.expovariate(1.0 / value.mean)
    raise TypeError(f"not a value or distribution: {value!r}")


def sample_int(value: int | float | Uniform | Normal | Choice | Exponential, rng: random.Random) -> int:
    return max(0, round(sample(value, rng)))


def arrival_times(arrival: Arrival, n: int, rng: random.Random) -> list[float]:
    """Start offsets (s) of n sessions: Poisson gaps, constant gaps, or all at 0 for `closed`."""
    if arrival.pattern == "closed" or n == 0:
        return [0.0] * n
    rate = arrival.rate_per_s or 1.0
    if arrival.pattern == "constant":
        return [i / rate for i in range(n)]
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


def child_rng(seed: int, *parts: object) -> random.Random:
    """An independent, reproducible stream per purpose (content, lengths, arrivals, warm-up)."""
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0
