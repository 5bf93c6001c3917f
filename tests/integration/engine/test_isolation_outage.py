"""Isolation between models and a Redis outage under a real vLLM CPU engine.

Both use L1 off, so every hit must come from Redis.
"""

from __future__ import annotations

import threading

import pytest
import redis
from conversation import BASE_ENV, CONNECTOR, SMALL_KV_GIB, metric, replay, run_conversation

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HIT_TOKENS = "vllm:kvcache_ol_hit_tokens_total"
EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"
L2_ERRORS = "vllm:kvcache_ol_l2_errors_total"


def _env(url: str) -> dict[str, str]:
    return {
        **BASE_ENV,
        "AIBRIX_KV_CACHE_OL_L1_CACHE_ENABLED": "0",
        "AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND": "REDIS",
        "AIBRIX_KV_CACHE_OL_REDIS_URL": url,
        "AIBRIX_KV_CACHE_OL_L2_CACHE_INGESTION_TYPE": "ALL",
    }


def test_other_dtype_never_hits_and_redis_outage_falls_back(engine_factory, redis_server) -> None:
    bf16 = engine_factory(
        kv_cache_space_gib=SMALL_KV_GIB, kv_transfer_config=CONNECTOR, env=_env(redis_server.url)
    )
    prompts, _ = run_conversation(bf16.base_url, bf16.served_model_name, turns=2)
    assert metric(bf16.metrics_text(), HIT_TOKENS, tier="l2") > 0
    stored = redis.Redis.from_url(redis_server.url).dbsize()
    assert stored > 0
    bf16.stop()

    # Same model files and prompts, other KV dtype: the bf16 chunks must never be served.
    fp32 = engine_factory(
        kv_cache_space_gib=SMALL_KV_GIB * 2,
        kv_transfer_config=CONNECTOR,
        env=_env(redis_server.url),
        extra_args=["--dtype", "float32"],
    )
    last = prompts[-1:]
    missed = replay(fp32.base_url, fp32.served_model_name, last, fillers=3, seed=3)
    text = fp32.metrics_text()
    assert metric(text, EXTERNAL_HITS) == 0 and metric(text, HIT_TOKENS, tier="l2") == 0

    # Kill redis-server while a request is in flight: it completes (recompute), nothing fails.
    killer = threading.Timer(0.05, redis_server.kill)
    killer.start()
    in_flight = replay(fp32.base_url, fp32.served_model_name, prompts, fillers=1, seed=4)
    killer.join()
    assert all(len(a.tokens) == 12 for a in in_flight)
    assert not redis_server.is_running()

    # With L2 down, a lookup is a miss: the output equals the plain miss above, bit for bit.
    down = replay(fp32.base_url, fp32.served_model_name, last, fillers=3, seed=3)
    assert down == missed
    assert metric(fp32.metrics_text(), L2_ERRORS) > 0

    # Redis comes back (empty): the connector reconnects by itself and hits resume.
    redis_server.start()
    hits_before = metric(fp32.metrics_text(), HIT_TOKENS, tier="l2")
    for attempt in range(10):
        replay(fp32.base_url, fp32.served_model_name, last, fillers=3, seed=10 + attempt)
        if metric(fp32.metrics_text(), HIT_TOKENS, tier="l2") > hits_before:
            break
    assert metric(fp32.metrics_text(), HIT_TOKENS, tier="l2") > hits_before, "hits did not resume"
