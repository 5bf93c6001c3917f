"""The connector on a real vLLM CPU engine: outputs bit-identical to vLLM without it, from every tier.

Engines (each a real `vllm` API server on the tiny model with real random weights):
  reference: no connector, KV space large enough that vLLM's own prefix cache keeps the history;
  e1: connector with L1 + Redis (ingestion ALL), small KV space: reuse must come from the connector;
  e2: a second engine process on the same Redis, started while e1 runs (empty L1): sharing and
      "after restart" in one, with one stored chunk deliberately corrupted first;
  fs: connector with L1 off and FS L2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from conversation import (
    BASE_ENV,
    CONNECTOR,
    SMALL_KV_GIB,
    metric,
    replay,
    run_conversation,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"
HIT_TOKENS = "vllm:kvcache_ol_hit_tokens_total"
INVALID = "vllm:kvcache_ol_validation_failures_total"
FAILED = "vllm:kvcache_ol_load_failed_tokens_total"


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, kvbench_cache_dir: Path, tmp_path_factory) -> tuple[list, list, list]:
    """Prompts, first-pass answers, and answers when every prompt is cached (second pass).

    The second pass is the reference for replays: there each prompt's own full blocks hit, so the
    same suffix is recomputed as when a connector serves the whole stored prompt.
    """
    from kvbench.servers import VllmEngine

    log = tmp_path_factory.mktemp("reference") / "engine.log"
    with VllmEngine(
        tiny_model_dir, kv_cache_space_gib=0.5, env=BASE_ENV, log_path=log, cache_dir=kvbench_cache_dir
    ) as engine:
        prompts, answers = run_conversation(engine.base_url, engine.served_model_name)
        assert metric(engine.metrics_text(), "vllm:prefix_cache_hits_total") > 0
        cached = replay(engine.base_url, engine.served_model_name, prompts)
    return prompts, answers, cached


def _redis_env(url: str, **extra: str) -> dict[str, str]:
    return {
        **BASE_ENV,
        "AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND": "REDIS",
        "AIBRIX_KV_CACHE_OL_REDIS_URL": url,
        "AIBRIX_KV_CACHE_OL_L2_CACHE_INGESTION_TYPE": "ALL",
        **extra,
    }


def test_l1_and_redis_l2_parity_sharing_and_corruption(reference, engine_factory, redis_server) -> None:
    ref_prompts, ref_answers, ref_cached = reference
    e1 = engine_factory(
        kv_cache_space_gib=SMALL_KV_GIB, kv_transfer_config=CONNECTOR, env=_redis_env(redis_server.url)
    )
    prompts, answers = run_conversation(e1.base_url, e1.served_model_name)
    assert prompts == ref_prompts
    assert answers == ref_answers, "outputs served from L1 differ from vLLM without the connector"
    m1 = e1.metrics_text()
    assert metric(m1, EXTERNAL_HITS) > 0, "the connector served no reuse"
    assert metric(m1, HIT_TOKENS, tier="l1") > 0

    e2 = engine_factory(
        kv_cache_space_gib=SMALL_KV_GIB,
        kv_transfer_config=CONNECTOR,
        env=_redis_env(redis_server.url, AIBRIX_KV_CACHE_OL_L1_CACHE_ENABLED="0"),
    )
    replayed = replay(e2.base_url, e2.served_model_name, ref_prompts, fillers=3)
    assert replayed == ref_cached, "outputs served from Redis by a second engine (no L1) differ"
    m2 = e2.metrics_text()
    assert metric(m2, HIT_TOKENS, tier="l2") > 0, "the second engine did not hit what the first stored"
    assert metric(m2, INVALID) == 0

    # Negative control: corrupt every stored chunk (one byte each). Each one read is detected,
    # dropped and counted, and the request is recomputed: the output equals a plain miss.
    client = redis.Redis.from_url(redis_server.url)
    corrupted = {}
    for key in client.keys("*"):
        value = bytearray(client.get(key))
        value[-1] ^= 0xFF
        client.set(key, bytes(value))
        corrupted[key] = bytes(value)
    last = ref_prompts[-1:]
    recomputed = replay(e2.base_url, e2.served_model_name, last, fillers=3, seed=8)
    m3 = e2.metrics_text()
    assert metric(m3, INVALID) >= 1, "corrupted chunks were not detected"
    assert metric(m3, FAILED) > metric(m2, FAILED), "blocks of corrupted chunks were not recomputed"
    replaced = sum(client.get(k) != v for k, v in corrupted.items())
    assert replaced >= metric(m3, INVALID), "detected chunks were not dropped"
    client.flushall()
    missed = replay(e2.base_url, e2.served_model_name, last, fillers=3, seed=9)
    assert recomputed == missed, "a corrupted chunk changed the output compared with a plain miss"


def test_fs_l2_parity(reference, engine_factory, tmp_path: Path) -> None:
    _, ref_answers, _ = reference
    env = {
        **BASE_ENV,
        "AIBRIX_KV_CACHE_OL_L1_CACHE_ENABLED": "0",
        "AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND": "FS",
        "AIBRIX_KV_CACHE_OL_FS_ROOT": str(tmp_path / "fs-l2"),
    }
    engine = engine_factory(kv_cache_space_gib=SMALL_KV_GIB, kv_transfer_config=CONNECTOR, env=env)
    _, answers = run_conversation(engine.base_url, engine.served_model_name)
    assert answers == ref_answers, "outputs served from FS differ from vLLM without the connector"
    text = engine.metrics_text()
    assert metric(text, HIT_TOKENS, tier="l2") > 0
    assert metric(text, HIT_TOKENS, tier="l1") == 0
    assert any((tmp_path / "fs-l2").rglob("*.kvc"))


def test_small_l1_promotes_l2_chunks(reference, engine_factory, redis_server) -> None:
    """L1 far smaller than the history: chunks come back from Redis and are put into L1 by the
    asynchronous load thread (this once failed on vLLM's inference-mode tensors)."""
    _, ref_answers, _ = reference
    env = _redis_env(redis_server.url, AIBRIX_KV_CACHE_OL_L1_CACHE_CAPACITY_GB="0.003")
    engine = engine_factory(kv_cache_space_gib=SMALL_KV_GIB, kv_transfer_config=CONNECTOR, env=env)
    _, answers = run_conversation(engine.base_url, engine.served_model_name)
    assert answers == ref_answers
    text = engine.metrics_text()
    assert metric(text, HIT_TOKENS, tier="l2") > 0
    assert metric(text, FAILED) == 0, "planned loads failed"
