"""Prometheus metrics of the cache core, plus plain running totals for export through an engine.

Counters only ever grow (reading never resets them): a hit rate over a window is the difference of
two readings. Each `CacheMetrics` owns its registry so several caches (tests, benchmarks) can live
in one process; `totals()` returns the same counts as a flat dict, which the vLLM adapter forwards
to the engine's own `/metrics` as deltas.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "kvcache_ol"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class CacheMetrics:
    """All cache counters, gauges and histograms, with label sets fixed here."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._lookups = Counter(f"{PREFIX}_lookups", "Prefix lookups", registry=r)
        self._lookup_tokens = Counter(f"{PREFIX}_lookup_tokens", "Tokens looked up", registry=r)
        self._hit_tokens = Counter(f"{PREFIX}_hit_tokens", "Tokens found, by tier", ["tier"], registry=r)
        self._loaded = Counter(f"{PREFIX}_loaded_bytes", "Bytes loaded, by tier", ["tier"], registry=r)
        self._saved = Counter(f"{PREFIX}_saved_bytes", "Bytes saved, by tier", ["tier"], registry=r)
        self._latency = Histogram(
            f"{PREFIX}_op_seconds", "Operation latency", ["tier", "op"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self._evictions = Counter(f"{PREFIX}_evictions", "Chunks evicted, by tier", ["tier"], registry=r)
        self._l2_errors = Counter(f"{PREFIX}_l2_errors", "L2 failures, by kind", ["kind"], registry=r)
        self._skipped = Counter(
            f"{PREFIX}_skipped_writes", "Writes not done, by reason", ["reason"], registry=r
        )
        self._invalid = Counter(
            f"{PREFIX}_validation_failures", "Stored chunks that failed validation", registry=r
        )
        self._load_failed = Counter(
            f"{PREFIX}_load_failed_tokens", "Tokens recomputed because a planned load failed", registry=r
        )
        self.l1_used_bytes = Gauge(f"{PREFIX}_l1_used_bytes", "L1 bytes holding chunks", registry=r)
        self.l1_capacity_bytes = Gauge(f"{PREFIX}_l1_capacity_bytes", "L1 byte capacity", registry=r)
        self._totals: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def _add(self, name: str, amount: float) -> None:
        with self._lock:
            self._totals[name] += amount

    def lookup(self, tokens: int, hit_tokens_by_tier: dict[str, int]) -> None:
        self._lookups.inc()
        self._lookup_tokens.inc(tokens)
        self._add("lookups", 1)
        self._add("lookup_tokens", tokens)
        for tier, hit in hit_tokens_by_tier.items():
            self._hit_tokens.labels(tier).inc(hit)
            self._add(f"hit_tokens.{tier}", hit)

    def loaded(self, tier: str, nbytes: int) -> None:
        self._loaded.labels(tier).inc(nbytes)
        self._add(f"loaded_bytes.{tier}", nbytes)

    def saved(self, tier: str, nbytes: int) -> None:
        self._saved.labels(tier).inc(nbytes)
        self._add(f"saved_bytes.{tier}", nbytes)

    def latency(self, tier: str, op: str, seconds: float) -> None:
        self._latency.labels(tier, op).observe(seconds)
        self._add(f"op_seconds_sum.{tier}.{op}", seconds)
        self._add(f"op_count.{tier}.{op}", 1)

    def evicted(self, tier: str, count: int = 1) -> None:
        self._evictions.labels(tier).inc(count)
        self._add(f"evictions.{tier}", count)

    def l2_error(self, kind: str) -> None:
        self._l2_errors.labels(kind).inc()
        self._add(f"l2_errors.{kind}", 1)

    def skipped_write(self, reason: str, count: int = 1) -> None:
        self._skipped.labels(reason).inc(count)
        self._add(f"skipped_writes.{reason}", count)

    def load_failed(self, tokens: int) -> None:
        """Tokens an engine had to recompute because a planned load could not be delivered."""
        self._load_failed.inc(tokens)
        self._add("load_failed_tokens", tokens)

    def validation_failure(self) -> None:
        self._invalid.inc()
        self._add("validation_failures", 1)

    def totals(self) -> dict[str, float]:
        """Running totals since creation, keyed `name` or `name.label[.label]`."""
        with self._lock:
            return dict(self._totals)
