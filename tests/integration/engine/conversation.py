"""A reproducible multi-turn greedy conversation against a real engine, for parity tests.

Prompts are token ids (no tokenizer round trip), each turn's prompt is the previous prompt plus
the generated answer plus a new question, and between turns unrelated filler prompts evict the
history from the engine's own (deliberately small) prefix cache, so any reuse must come from the
connector.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

CONNECTOR = {
    "kv_connector": "TieredOffloadConnector",
    "kv_connector_module_path": "connector.vllm",
    "kv_role": "kv_both",
    "kv_load_failure_policy": "recompute",
}
# Chunk = engine block: the connector's hits then cover exactly the blocks the engine's own prefix
# cache would, so the computed suffix (and so every floating-point reduction) is the same as
# without the connector and outputs must be bit-identical.
BASE_ENV = {"VLLM_USE_V2_MODEL_RUNNER": "0", "AIBRIX_KV_CACHE_OL_CHUNK_SIZE": "128"}
SMALL_KV_GIB = 0.02  # ~10k tokens of the tiny model: far less than the conversation + fillers


@dataclass(frozen=True)
class Answer:
    prompt_len: int
    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    top: tuple[tuple[tuple[str, float], ...], ...]


def complete(client: httpx.Client, model: str, prompt: list[int], max_tokens: int = 12) -> Answer:
    response = client.post(
        "/v1/completions",
        json={
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "logprobs": 3,
            "return_tokens_as_token_ids": True,
        },
    )
    response.raise_for_status()
    logprobs = response.json()["choices"][0]["logprobs"]
    tokens = tuple(int(t.split(":", 1)[1]) for t in logprobs["tokens"])
    top = tuple(tuple(sorted(d.items())) for d in logprobs["top_logprobs"])
    return Answer(len(prompt), tokens, tuple(logprobs["token_logprobs"]), top)


def run_conversation(
    base_url: str, model: str, *, seed: int = 1, turns: int = 4, filler_tokens: int = 3500, fillers: int = 3
) -> tuple[list[list[int]], list[Answer]]:
    """Returns the prompts sent and the answers received, turn by turn."""
    rng = random.Random(seed)
    history = [rng.randrange(10, 2000) for _ in range(1100)]
    prompts, answers = [], []
    with httpx.Client(base_url=base_url, timeout=300, trust_env=False) as client:
        for _ in range(turns):
            prompts.append(history)
            answer = complete(client, model, history)
            answers.append(answer)
            for _ in range(fillers):
                filler = [rng.randrange(10, 2000) for _ in range(filler_tokens)]
                complete(client, model, filler, max_tokens=1)
            history = history + list(answer.tokens) + [rng.randrange(10, 2000) for _ in range(300)]
    return prompts, answers


def replay(
    base_url: str,
    model: str,
    prompts: list[list[int]],
    *,
    concurrency: int = 1,
    fillers: int = 0,
    seed: int = 7,
) -> list[Answer]:
    """Send `prompts` again; with `fillers`, evict the engine's own prefix cache before each one."""
    rng = random.Random(seed)
    with httpx.Client(base_url=base_url, timeout=300, trust_env=False) as client:
        if concurrency == 1:
            answers = []
            for prompt in prompts:
                for _ in range(fillers):
                    complete(client, model, [rng.randrange(10, 2000) for _ in range(3500)], max_tokens=1)
                answers.append(complete(client, model, prompt))
            return answers
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(lambda p: complete(client, model, p), prompts))


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
