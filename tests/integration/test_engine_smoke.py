"""The real vLLM CPU engine serving the offline tiny model, started and stopped by VllmEngine."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvbench.model.tokenizer import corpus_text
from kvbench.servers import ServerError
from kvbench.servers.process import group_members

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Long enough to fill two of the CPU engine's 128-token blocks, so a repeat can hit its prefix cache.
PROMPT = " ".join(corpus_text().split()[200:420])


def _counter(metrics: str, sample_name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == sample_name
    )


def _alive(pid: int) -> bool:
    """Running or sleeping, not a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _greedy(client: httpx.Client, model: str) -> dict:
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": 12,
        "temperature": 0,
        "logprobs": 5,
        "ignore_eos": True,
    }
    response = client.post("/v1/completions", json=body)
    response.raise_for_status()
    return response.json()["choices"][0]


def test_tiny_model_serves_real_logits_and_stops_cleanly(engine_factory) -> None:
    engine = engine_factory(kv_cache_space_gib=0.5, max_model_len=4096)
    assert engine.pid is not None
    family = group_members(engine.pid)
    assert len(family) >= 2, "API server and EngineCore run as separate processes"

    with httpx.Client(base_url=engine.base_url, timeout=60, trust_env=False) as client:
        models = client.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == [engine.served_model_name]

        cold = _greedy(client, engine.served_model_name)
        tokens = cold["logprobs"]["tokens"]
        top = cold["logprobs"]["top_logprobs"]
        assert len(tokens) == 12
        assert len(set(tokens)) > 1, f"degenerate output: {tokens}"
        assert len({json.dumps(t, sort_keys=True) for t in top}) == len(top), "top logprobs repeat"
        uniform = -math.log(2048)
        assert max(cold["logprobs"]["token_logprobs"]) > uniform + 2, "logits look uniform (dummy weights?)"

        hits_before = _counter(engine.metrics_text(), "vllm:prefix_cache_hits_total")
        warm = _greedy(client, engine.served_model_name)
        assert warm["logprobs"]["tokens"] == tokens, "a prefix-cache hit must not change greedy output"

        chat = client.post(
            "/v1/chat/completions",
            json={
                "model": engine.served_model_name,
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Where did you put the old map?"},
                ],
                "max_tokens": 6,
                "temperature": 0,
                "ignore_eos": True,
            },
        )
        chat.raise_for_status()
        reply = chat.json()
        assert reply["choices"][0]["message"]["role"] == "assistant"
        assert reply["usage"]["completion_tokens"] == 6

    metrics = engine.metrics_text()
    assert "vllm:prefix_cache_queries_total" in metrics
    assert _counter(metrics, "vllm:prefix_cache_hits_total") >= hits_before + 128

    pgid = engine.pid
    engine.stop()
    assert engine.pid is None
    assert not engine.is_running()
    assert group_members(pgid) == []
    assert [pid for pid in family if _alive(pid)] == []


def test_engine_failure_names_the_cause_and_the_log(engine_factory, tiny_model_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["architectures"] = ["NoSuchModelForCausalLM"]
    (broken / "config.json").write_text(json.dumps(config))

    with pytest.raises(ServerError) as info:
        engine_factory(model_dir=broken, startup_timeout_s=120)
    message = str(info.value)
    assert "\n" not in message
    assert "vllm exited with code" in message
    assert "NoSuchModelForCausalLM" in message
    assert str(tmp_path / "engine-0.log") in message
