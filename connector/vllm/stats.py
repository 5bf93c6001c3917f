"""Cache figures on the engine's own `/metrics`, through vLLM's KV-connector stats path.

Each process (scheduler: lookups and hits; workers: bytes, latencies, errors) sends the growth of
its `CacheMetrics` totals since the previous step as `TieredStats`; vLLM sums them across ranks
and hands the dict to `TieredPromMetrics.observe` in the API server, which adds them to counters.
So the API server's counters equal the sum of every process's totals, and are never reset.

Names (Prometheus adds `_total` to counters): `vllm:kvcache_ol_lookups`, `vllm:kvcache_ol_lookup_tokens`,
`vllm:kvcache_ol_hit_tokens{tier}`, `vllm:kvcache_ol_loaded_bytes{tier}`,
`vllm:kvcache_ol_saved_bytes{tier}`, `vllm:kvcache_ol_evictions{tier}`,
`vllm:kvcache_ol_l2_errors{kind}`, `vllm:kvcache_ol_skipped_writes{reason}`,
`vllm:kvcache_ol_validation_failures`, `vllm:kvcache_ol_load_failed_tokens`, histogram
`vllm:kvcache_ol_load_seconds{tier}`, gauge `vllm:kvcache_ol_l1_used_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorPromMetrics, KVConnectorStats

from connector.metrics import CacheMetrics

PROM_PREFIX = "vllm:kvcache_ol_"
LATENCIES = "load_seconds"
L1_USED = "l1_used_bytes"

# family -> label name ("" = unlabelled); totals keys are "family" or "family.label".
_COUNTERS: dict[str, str] = {
    "lookups": "",
    "lookup_tokens": "",
    "hit_tokens": "tier",
    "loaded_bytes": "tier",
    "saved_bytes": "tier",
    "evictions": "tier",
    "l2_errors": "kind",
    "skipped_writes": "reason",
    "validation_failures": "",
    "load_failed_tokens": "",
}
_LOAD_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


class TotalsDelta:
    """Turns growing totals into per-step increments (the stats vLLM expects per step)."""

    def __init__(self, metrics: CacheMetrics) -> None:
        self._metrics = metrics
        self._last: dict[str, float] = {}

    def take(self) -> dict[str, float]:
        now = self._metrics.totals()
        delta = {k: v - self._last.get(k, 0.0) for k, v in now.items() if v != self._last.get(k, 0.0)}
        self._last = now
        return {k: v for k, v in delta.items() if k.split(".", 1)[0] in _COUNTERS}


@dataclass
class TieredStats(KVConnectorStats):
    """`data`: counter increments keyed like `CacheMetrics.totals()`, plus `load_seconds`
    (list of [tier, seconds]) and `l1_used_bytes` (latest value)."""

    data: dict[str, Any] = field(default_factory=dict)

    def reset(self) -> None:
        self.data = {}

    def aggregate(self, other: KVConnectorStats) -> KVConnectorStats:
        merged = dict(self.data)
        for key, value in other.data.items():
            if key == LATENCIES:
                merged[key] = list(merged.get(key, [])) + list(value)
            else:  # counters add up; so does L1 use across ranks
                merged[key] = merged.get(key, 0) + value
        return TieredStats(merged)

    def reduce(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {k: v for k, v in self.data.items() if k != LATENCIES}
        latencies = [s for _, s in self.data.get(LATENCIES, [])]
        if latencies:
            out["load_seconds_avg"] = sum(latencies) / len(latencies)
        return out

    def is_empty(self) -> bool:
        return not self.data


class TieredPromMetrics(KVConnectorPromMetrics):
    def __init__(
        self,
        vllm_config: Any,
        metric_types: dict[type, type],
        labelnames: list[str],
        per_engine_labelvalues: dict[int, list[object]],
    ) -> None:
        super().__init__(vllm_config, metric_types, labelnames, per_engine_labelvalues)
        self._counters = {}
        for family, label in _COUNTERS.items():
            self._counters[family] = self._counter_cls(
                name=PROM_PREFIX + family,
                documentation=f"Tiered KV cache: {family.replace('_', ' ')}",
                labelnames=[*labelnames, label] if label else labelnames,
            )
        self._load_seconds = self._histogram_cls(
            name=PROM_PREFIX + LATENCIES,
            documentation="Tiered KV cache: chunk load latency per call",
            labelnames=[*labelnames, "tier"],
            buckets=_LOAD_BUCKETS,
        )
        self._l1_used = self._gauge_cls(
            name=PROM_PREFIX + L1_USED,
            documentation="Tiered KV cache: L1 bytes in use (all workers)",
            labelnames=labelnames,
            multiprocess_mode="mostrecent",
        )

    def observe(self, transfer_stats_data: dict[str, Any], engine_idx: int = 0) -> None:
        engine = self.per_engine_labelvalues[engine_idx]
        for key, value in transfer_stats_data.items():
            if key == LATENCIES:
                for tier, seconds in value:
                    self._load_seconds.labels(*engine, tier).observe(seconds)
                continue
            if key == L1_USED:
                self._l1_used.labels(*engine).set(value)
                continue
            family, _, label = key.partition(".")
            counter = self._counters.get(family)
            if counter is None or value <= 0:
                continue
            (counter.labels(*engine, label) if label else counter.labels(*engine)).inc(value)
