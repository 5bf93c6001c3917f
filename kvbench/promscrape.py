"""Prometheus `/metrics` snapshots, their differences, and the hit rates derived from them.

Counters accumulate from engine start, so a run's figures are always `after - before` across the run;
labels such as `engine` or `model_name` are summed over. Definitions (all token-weighted):

- engine_hit_rate   = d(vllm:prefix_cache_hits) / d(vllm:prefix_cache_queries)          (engine-local)
- external_hit_rate = d(vllm:external_prefix_cache_hits) / d(vllm:external_prefix_cache_queries)
- l1_hit_rate       = d(vllm:kvcache_ol_hit_tokens{tier="l1"}) / d(vllm:kvcache_ol_lookup_tokens)
- l2_hit_rate       = d(vllm:kvcache_ol_hit_tokens{tier="l2"}) / d(vllm:kvcache_ol_lookup_tokens)

A rate is None when its denominator did not move (or the metric is absent), never 0/0 = 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
EXTERNAL_QUERIES = "vllm:external_prefix_cache_queries_total"
EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"
OL_LOOKUP = "vllm:kvcache_ol_lookup_tokens_total"
OL_HITS = "vllm:kvcache_ol_hit_tokens_total"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Snapshot:
    """Sample values by (sample name, sorted labels). Only counters and gauges are kept."""

    values: Mapping[tuple[str, Labels], float] = field(default_factory=dict)
    error: str | None = None

    def total(self, name: str, **match: str) -> float | None:
        """Sum of `name` over all label sets that contain `match`; None if no sample matched."""
        found = False
        acc = 0.0
        for (n, labels), v in self.values.items():
            if n != name:
                continue
            d = dict(labels)
            if all(d.get(k) == want for k, want in match.items()):
                acc += v
                found = True
        return acc if found else None


def parse(text: str) -> Snapshot:
    values: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        if family.type not in ("counter", "gauge", "unknown", "untyped"):
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            key = (s.name, tuple(sorted(s.labels.items())))
            values[key] = values.get(key, 0.0) + float(s.value)
    return Snapshot(values)


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """Several pods' snapshots as one (values added per key); the first error is kept."""
    values: dict[tuple[str, Labels], float] = {}
    error = None
    for snap in snapshots:
        error = error or snap.error
        for k, v in snap.values.items():
            values[k] = values.get(k, 0.0) + v
    return Snapshot(values, error)


def scrape(
    urls: Iterable[str], *, headers: Mapping[str, str] | None = None, timeout_s: float = 10.0
) -> Snapshot:
    """GET each URL and merge; a failure becomes `Snapshot.error` (a run must not die on metrics)."""
    snaps = []
    for url in urls:
        try:
            resp = httpx.get(url, headers=dict(headers or {}), timeout=timeout_s, trust_env=False)
            resp.raise_for_status()
            snaps.append(parse(resp.text))
        except (httpx.HTTPError, ValueError) as exc:
            snaps.append(Snapshot({}, f"{url}: {type(exc).__name__}"))
    return merge(snaps)


def delta(before: Snapshot, after: Snapshot, name: str, **match: str) -> float | None:
    """after - before of a summed counter; None when absent after. A counter reset counts from 0."""
    a = after.total(name, **match)
    if a is None:
        return None
    b = before.total(name, **match) or 0.0
    return a - b if a >= b else a


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


@dataclass(frozen=True)
class CacheFigures:
    """Differences across one configuration's measured requests and the rates derived from them."""

    prefix_queries: float | None = None
    prefix_hits: float | None = None
    external_queries: float | None = None
    external_hits: float | None = None
    lookup_tokens: float | None = None
    l1_hit_tokens: float | None = None
    l2_hit_tokens: float | None = None
    error: str | None = None

    @property
    def engine_hit_rate(self) -> float | None:
        return _ratio(self.prefix_hits, self.prefix_queries)

    @property
    def external_hit_rate(self) -> float | None:
        return _ratio(self.external_hits, self.external_queries)

    @property
    def l1_hit_rate(self) -> float | None:
        return _ratio(self.l1_hit_tokens, self.lookup_tokens)

    @property
    def l2_hit_rate(self) -> float | None:
        return _ratio(self.l2_hit_tokens, self.lookup_tokens)

    def as_dict(self) -> dict[str, float | str | None]:
        return {
            "prefix_queries": self.prefix_queries,
            "prefix_hits": self.prefix_hits,
            "external_queries": self.external_queries,
            "external_hits": self.external_hits,
            "lookup_tokens": self.lookup_tokens,
            "l1_hit_tokens": self.l1_hit_tokens,
            "l2_hit_tokens": self.l2_hit_tokens,
            "engine_hit_rate": self.engine_hit_rate,
            "external_hit_rate": self.external_hit_rate,
            "l1_hit_rate": self.l1_hit_rate,
            "l2_hit_rate": self.l2_hit_rate,
            "error": self.error,
        }


def cache_figures(before: Snapshot, after: Snapshot) -> CacheFigures:
    return CacheFigures(
        prefix_queries=delta(before, after, PREFIX_QUERIES),
        prefix_hits=delta(before, after, PREFIX_HITS),
        external_queries=delta(before, after, EXTERNAL_QUERIES),
        external_hits=delta(before, after, EXTERNAL_HITS),
        lookup_tokens=delta(before, after, OL_LOOKUP),
        l1_hit_tokens=delta(before, after, OL_HITS, tier="l1"),
        l2_hit_tokens=delta(before, after, OL_HITS, tier="l2"),
        error=before.error or after.error,
    )
