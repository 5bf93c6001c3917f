"""Metrics never reset when read, count per tier, and export the documented Prometheus names."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from kvtest_helpers import CHUNK, Collect, config, fill_for, keys, l1_gb
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connector import profiling
from connector.metrics import CacheMetrics
from connector.tiered import TieredCache

REPO = Path(__file__).resolve().parents[3]


def _samples(metrics: CacheMetrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(metrics.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_do_not_reset_when_read() -> None:
    m = CacheMetrics()
    m.lookup(100, {"l1": 32, "l2": 16})
    first = (m.totals(), _samples(m))
    second = (m.totals(), _samples(m))
    assert first == second
    m.lookup(50, {"l1": 0, "l2": 16})
    totals = m.totals()
    assert totals["lookups"] == 2
    assert totals["lookup_tokens"] == 150
    assert totals["hit_tokens.l1"] == 32
    assert totals["hit_tokens.l2"] == 32
    assert _samples(m)[("kvcache_ol_hit_tokens_total", (("tier", "l2"),))] == 32


def test_exposition_has_the_documented_names() -> None:
    m = CacheMetrics()
    m.lookup(10, {"l1": 5, "l2": 0})
    m.loaded("l1", 100)
    m.saved("l2", 100)
    m.latency("l2", "get", 0.01)
    m.evicted("l1")
    m.l2_error("connection")
    m.skipped_write("inflight_full")
    m.validation_failure()
    m.l1_used_bytes.set(1)
    m.l1_capacity_bytes.set(2)
    names = {name for name, _ in _samples(m)}
    for expected in [
        "kvcache_ol_lookups_total",
        "kvcache_ol_lookup_tokens_total",
        "kvcache_ol_hit_tokens_total",
        "kvcache_ol_loaded_bytes_total",
        "kvcache_ol_saved_bytes_total",
        "kvcache_ol_op_seconds_bucket",
        "kvcache_ol_op_seconds_count",
        "kvcache_ol_evictions_total",
        "kvcache_ol_l2_errors_total",
        "kvcache_ol_skipped_writes_total",
        "kvcache_ol_validation_failures_total",
        "kvcache_ol_l1_used_bytes",
        "kvcache_ol_l1_capacity_bytes",
    ]:
        assert expected in names, expected
    samples = _samples(m)
    assert samples[("kvcache_ol_op_seconds_count", (("op", "get"), ("tier", "l2")))] == 1
    assert samples[("kvcache_ol_l2_errors_total", (("kind", "connection"),))] == 1
    assert samples[("kvcache_ol_skipped_writes_total", (("reason", "inflight_full"),))] == 1


def test_tiered_cache_counts_hit_tokens_per_tier_and_l1_gauges() -> None:
    cache = TieredCache(config(L1_CACHE_CAPACITY_GB=l1_gb(4)), 1024)
    ks = keys(3)
    for k in ks[:2]:
        assert cache.save(k, fill_for(k))
    assert cache.lookup(ks).l1 == 2
    assert cache.load(ks, Collect()).l1 == 2
    totals = cache.metrics.totals()
    assert totals["lookup_tokens"] == 3 * CHUNK
    assert totals["hit_tokens.l1"] == 2 * CHUNK
    assert totals.get("hit_tokens.l2", 0) == 0
    assert totals["loaded_bytes.l1"] == 2 * 1024
    assert totals["saved_bytes.l1"] == 2 * 1024
    samples = _samples(cache.metrics)
    assert samples[("kvcache_ol_l1_capacity_bytes", ())] == cache.l1.capacity_bytes
    assert samples[("kvcache_ol_l1_used_bytes", ())] == 2 * cache.layout.total


def test_span_is_the_shared_noop_when_profiling_is_off() -> None:
    assert not profiling.start_profiling(config())
    first, second = profiling.span("load", "l1"), profiling.span("save")
    assert first is second
    with first:
        pass


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CHILD = """
from connector import profiling
from connector.config import CacheConfig
config = CacheConfig.from_env()
assert profiling.start_profiling(config, rank="0"), "profiling did not start"
assert profiling.start_profiling(config), "second start must be a no-op that reports active"
noop = profiling.span("x")
assert noop is not profiling.span("y"), "spans must be real once profiling is on"
total = 0
for i in range(20000):
    with profiling.span("load", "l1"):
        total += i
with profiling.span("lookup"):
    pass
profiling.stop_profiling()
assert profiling.span("z") is profiling.span("w"), "after stop, spans are the no-op again"
print("ok", total)
"""


def test_spans_with_pyroscope_against_a_closed_port_do_not_raise() -> None:
    env = {
        **os.environ,
        "AIBRIX_KV_CACHE_OL_PROFILING_ENABLED": "1",
        "AIBRIX_KV_CACHE_OL_PROFILING_SERVER_ADDRESS": f"http://127.0.0.1:{_closed_port()}",
        "AIBRIX_KV_CACHE_OL_PROFILING_UPLOAD_INTERVAL_S": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok ")


def test_a_profiler_that_cannot_start_does_not_raise(monkeypatch) -> None:
    import pyroscope

    def refuse(**kwargs) -> None:
        raise TypeError("unexpected keyword argument")

    monkeypatch.setattr(pyroscope, "configure", refuse)
    assert profiling.start_profiling(config(PROFILING_ENABLED=1)) is False
    assert profiling.span("load") is profiling.span("save"), "spans stay the no-op"
