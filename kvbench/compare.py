"""Compare a current run's summary with a recorded one under explicit regression bounds.

A bound is `[CONFIG:]FIGURE=LIMIT`:
- `10%`   the figure may get at most 10 % worse, relative to the recorded value;
- `5pp` / `-5pp`  it may get at most 5 percentage points worse (for rates in [0, 1]);
- `0.2`   it may get at most 0.2 worse in its own unit.
"Worse" follows the figure's direction (larger TTFT, smaller hit rate or throughput). The sign of a
limit is ignored: `-5pp` and `5pp` mean the same allowed drop. Without `CONFIG:` a bound applies to
every configuration present in both summaries. `FIGURE` may omit a `_ms` suffix (`ttft_p50`).

Exit codes: 0 all bounds hold, 1 at least one is broken (or a bounded figure vanished), 2 bad input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvbench.errors import UserError
from kvbench.results import HIGHER_IS_BETTER

_BOUND = re.compile(
    r"^(?:(?P<config>[^:=\s]+):)?(?P<figure>[A-Za-z0-9_]+)=(?P<limit>[-+]?\d+(?:\.\d+)?)(?P<unit>%|pp)?$"
)


@dataclass(frozen=True)
class Bound:
    config: str | None
    figure: str
    limit: float
    unit: str  # "%", "pp" or ""

    def describe(self) -> str:
        return f"{self.limit:g}{self.unit}"


@dataclass(frozen=True)
class Check:
    config: str
    figure: str
    base: float | None
    current: float | None
    bound: Bound | None
    ok: bool
    why: str = ""


def parse_bound(text: str) -> Bound:
    m = _BOUND.match(text.strip())
    if not m:
        raise UserError(
            f"bad --max-regression {text!r}: use [CONFIG:]FIGURE=LIMIT with LIMIT like 10%, -5pp or 0.2"
        )
    return Bound(m["config"], m["figure"], abs(float(m["limit"])), m["unit"] or "")


def _resolve(figure: str, metrics_names: set[str]) -> str | None:
    for name in (figure, f"{figure}_ms"):
        if name in metrics_names:
            return name
    return None


def worsening(figure: str, base: float, current: float) -> float:
    """How much worse current is than base, in the figure's unit (positive = worse)."""
    return (base - current) if figure in HIGHER_IS_BETTER else (current - base)


def check_one(figure: str, base: float | None, current: float | None, bound: Bound) -> tuple[bool, str]:
    if base is None:
        return True, "no recorded value"
    if current is None:
        return False, "missing in current run"
    worse = worsening(figure, base, current)
    if bound.unit == "%":
        allowed = abs(base) * bound.limit / 100.0
    elif bound.unit == "pp":
        allowed = bound.limit / 100.0
    else:
        allowed = bound.limit
    if worse > allowed + 1e-12:
        return False, f"worse by {_fmt_worse(worse, base, bound)} (allowed {bound.describe()})"
    return True, ""


def _fmt_worse(worse: float, base: float, bound: Bound) -> str:
    if bound.unit == "%":
        return f"{100.0 * worse / abs(base):.1f}%" if base else f"{worse:g}"
    if bound.unit == "pp":
        return f"{100.0 * worse:.1f}pp"
    return f"{worse:.4g}"


def _by_name(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: dict(c.get("metrics") or {}) for c in summary["configs"]}


def compare(base: Mapping[str, Any], current: Mapping[str, Any], bounds: Sequence[Bound]) -> list[Check]:
    """Every bounded (config, figure) pair, checked. Unknown configs or figures are UserErrors."""
    b, c = _by_name(base), _by_name(current)
    common = [n for n in b if n in c]
    if not common:
        raise UserError(
            f"the summaries share no configuration (recorded: {', '.join(b)}; current: {', '.join(c)})"
        )
    checks: list[Check] = []
    for bound in bounds:
        if bound.config is not None and (bound.config not in b or bound.config not in c):
            raise UserError(
                f"--max-regression {bound.config}:{bound.figure}: no config {bound.config!r} in both"
            )
        names = [bound.config] if bound.config else common
        resolved_any = False
        for name in names:
            fig = _resolve(bound.figure, set(b[name]) | set(c[name]))
            if fig is None:
                continue
            resolved_any = True
            ok, why = check_one(fig, b[name].get(fig), c[name].get(fig), bound)
            checks.append(Check(name, fig, b[name].get(fig), c[name].get(fig), bound, ok, why))
        if not resolved_any:
            known = sorted({k for m in list(b.values()) + list(c.values()) for k in m})
            raise UserError(f"unknown figure {bound.figure!r}; known: {', '.join(known)}")
    return checks


def exit_code(checks: Sequence[Check]) -> int:
    return 0 if all(ch.ok for ch in checks) else 1
