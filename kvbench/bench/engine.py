"""`kvbench bench engine`: TTFT on the real vLLM CPU engine, with and without KV reuse.

Situations, each timed on fresh random token-id prompts (so no other reuse interferes), median of
the repetitions:

- `recompute`: a fresh prompt on the baseline engine (no connector): nothing is cached anywhere.
- `local_hit`: the same prompt sent twice to the baseline engine, the second timed: the engine's
  own prefix cache, the best reuse can do.
- `l1_hit` / `redis_hit` / `example_hit`: on an engine with a connector (ours with L1; ours with
  L1 off and Redis L2; vLLM's ExampleConnector), the prompt is sent, then pushed out of the
  engine's small KV space by unrelated prompts, then resent and timed. The engine's
  `vllm:external_prefix_cache_hits_total` must grow on the timed request, else the hit is reported
  as not a hit.
- `fresh_l1`: fresh prompts on the connector L1 engine; against `recompute`, the connector's
  overhead when nothing can be reused.

Each prompt is `n` history tokens plus `TAIL_TOKENS` new ones, so a hit can cover all `n` (a
connector must leave at least one prompt token to compute, and reuses whole 512-token chunks).
The engine KV space is just above one maximal request, so a few unrelated prompts evict it.
One engine per kind, started once, stopped before the next.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from kvbench.bench.common import Target, median, ratio
from kvbench.errors import UserError
from kvbench.promscrape import EXTERNAL_HITS, PREFIX_HITS, parse

TAIL_TOKENS = 16
CHUNK_TOKENS = 512
MAX_TOKENS = 4
EXAMPLE_MAX_PROMPT = 2048
"""ExampleConnector crashes this build when a stored prompt spans several prefill steps (2048 tokens
per step by default), so it runs only on prompts that fit in one step."""
ENGINES = ("baseline", "l1", "redis", "example")
_OUR_CONNECTOR = {
    "kv_connector": "TieredOffloadConnector",
    "kv_connector_module_path": "connector.vllm",
    "kv_role": "kv_both",
    "kv_load_failure_policy": "recompute",
}
_ENGINE_ENV = {"VLLM_USE_V2_MODEL_RUNNER": "0"}

TARGET_L1_VS_RECOMPUTE = 0.25
TARGET_L1_VS_LOCAL = 1.3
TARGET_REDIS_VS_RECOMPUTE = 0.5
TARGET_OVERHEAD_PCT = 3.0


def parse_lengths(text: str) -> list[int]:
    try:
        lengths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--prompt-tokens {text!r}: expected comma-separated integers") from None
    if not lengths or any(n < 16 or n > 16384 for n in lengths):
        raise UserError(f"--prompt-tokens {text!r}: expected lengths between 16 and 16384")
    return sorted(set(lengths))


@dataclass
class Sample:
    """One timed request: TTFT and what the engine reported reusing for it (token counters)."""

    ttft_s: float
    external_hit_tokens: float = 0.0
    local_hit_tokens: float = 0.0


@dataclass
class EngineReport:
    lengths: list[int]
    repeats: int
    samples: dict[str, dict[int, list[Sample]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    engines: dict[str, dict[str, object]] = field(default_factory=dict)

    def add(self, situation: str, length: int, sample: Sample) -> None:
        self.samples.setdefault(situation, {}).setdefault(length, []).append(sample)

    def median_s(self, situation: str, length: int) -> float | None:
        found = self.samples.get(situation, {}).get(length)
        return median([s.ttft_s for s in found]) if found else None

    def medians_ms(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for situation, by_len in self.samples.items():
            out[situation] = {n: median([s.ttft_s for s in xs]) * 1e3 for n, xs in by_len.items()}
        return out

    def ratios(self) -> dict[str, dict[int, float | None]]:
        """Same-run TTFT ratios per prompt length; `overhead_pct` is a percentage."""
        out: dict[str, dict[int, float | None]] = {}
        pairs = {
            "l1_hit/recompute": ("l1_hit", "recompute"),
            "l1_hit/local_hit": ("l1_hit", "local_hit"),
            "redis_hit/recompute": ("redis_hit", "recompute"),
            "redis_hit/local_hit": ("redis_hit", "local_hit"),
            "example_hit/recompute": ("example_hit", "recompute"),
            "local_hit/recompute": ("local_hit", "recompute"),
        }
        for name, (num, den) in pairs.items():
            out[name] = {n: ratio(self.median_s(num, n), self.median_s(den, n)) for n in self.lengths}
        overhead: dict[int, float | None] = {}
        for n in self.lengths:
            r = ratio(self.median_s("fresh_l1", n), self.median_s("recompute", n))
            overhead[n] = None if r is None else (r - 1.0) * 100.0
        out["overhead_pct"] = overhead
        return {name: by_len for name, by_len in out.items() if any(v is not None for v in by_len.values())}

    def targets(self) -> list[Target]:
        r = self.ratios()
        checks = [
            ("l1_hit/recompute", "<=", TARGET_L1_VS_RECOMPUTE),
            ("l1_hit/local_hit", "<=", TARGET_L1_VS_LOCAL),
            ("redis_hit/recompute", "<=", TARGET_REDIS_VS_RECOMPUTE),
            ("overhead_pct", "<=", TARGET_OVERHEAD_PCT),
        ]
        found = []
        for name, op, bound in checks:
            for n in self.lengths:
                found.append(Target(f"{name}[{n}]", r.get(name, {}).get(n), op, bound))  # type: ignore[arg-type]
        return found

    def as_dict(self) -> dict[str, object]:
        return {
            "benchmark": "engine",
            "prompt_tokens": self.lengths,
            "tail_tokens": TAIL_TOKENS,
            "repeats": self.repeats,
            "engines": self.engines,
            "ttft_ms_median": {k: {str(n): v for n, v in d.items()} for k, d in self.medians_ms().items()},
            "samples": {
                k: {str(n): [vars(s) for s in xs] for n, xs in d.items()} for k, d in self.samples.items()
            },
            "ratios": {k: {str(n): v for n, v in d.items()} for k, d in self.ratios().items()},
            "targets": [t.as_dict() for t in self.targets()],
            "notes": self.notes,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }


# ---- requests ---------------------------------------------------------------------------------


class _Prompts:
    """Fresh random token-id prompts that avoid the special tokens."""

    def __init__(self, vocab_size: int, seed: int) -> None:
        self._rng = random.Random(seed)
        self._low, self._high = 16, vocab_size - 1

    def make(self, n: int) -> list[int]:
        return [self._rng.randint(self._low, self._high) for _ in range(n)]


def _ttft(client: httpx.Client, base_url: str, model: str, prompt: list[int]) -> float:
    """Seconds from sending a streaming completion to its first non-empty token."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "stream": True,
        "ignore_eos": True,
    }
    start = time.perf_counter()
    first_any: float | None = None
    first_text: float | None = None
    with client.stream("POST", f"{base_url}/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            raise UserError(f"engine answered {resp.status_code}: {resp.read().decode()[:300]}")
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if not choices:
                continue
            now = time.perf_counter()
            first_any = first_any or now
            if choices[0].get("text") and first_text is None:
                first_text = now
    stamp = first_text or first_any
    if stamp is None:
        raise UserError("engine streamed no tokens")
    return stamp - start


class _Session:
    """Timed requests against one running engine, with its reuse counters read around each."""

    def __init__(self, engine: object, prompts: _Prompts) -> None:
        self.engine = engine
        self.prompts = prompts
        self.client = httpx.Client(timeout=120.0, trust_env=False)
        self.model = engine.served_model_name  # type: ignore[attr-defined]
        self.base_url = engine.base_url  # type: ignore[attr-defined]

    def counters(self) -> tuple[float, float]:
        snap = parse(self.engine.metrics_text())  # type: ignore[attr-defined]
        return snap.total(EXTERNAL_HITS) or 0.0, snap.total(PREFIX_HITS) or 0.0

    def send(self, prompt: list[int]) -> float:
        return _ttft(self.client, self.base_url, self.model, prompt)

    def timed(self, prompt: list[int]) -> Sample:
        ext0, loc0 = self.counters()
        ttft = self.send(prompt)
        time.sleep(0.3)  # counters are published once per engine step/log interval
        ext1, loc1 = self.counters()
        return Sample(ttft, ext1 - ext0, loc1 - loc0)

    def close(self) -> None:
        self.client.close()


# ---- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """Engine sizes derived from the model and the longest prompt."""

    max_model_len: int
    kv_tokens: int
    kv_space_gib: float
    filler_len: int
    fillers: int


def _geometry(model_dir: Path, lengths: list[int]) -> _Geometry:
    cfg = json.loads((model_dir / "config.json").read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    per_token = cfg["num_hidden_layers"] * 2 * cfg["num_key_value_heads"] * head_dim * 2
    block = 128
    longest = max(lengths) + TAIL_TOKENS + MAX_TOKENS
    max_model_len = math.ceil(longest / block) * block
    kv_tokens = max_model_len + 2 * block
    filler_len = max(lengths) + TAIL_TOKENS
    fillers = math.ceil(kv_tokens / filler_len) + 1
    return _Geometry(max_model_len, kv_tokens, kv_tokens * per_token / (1 << 30), filler_len, fillers)


def _evict(session: _Session, geometry: _Geometry, limit: int | None = None) -> None:
    """Fill the engine's KV space with unrelated prompts so its prefix cache forgets earlier ones."""
    length = geometry.filler_len if limit is None else min(geometry.filler_len, limit)
    count = math.ceil(geometry.kv_tokens / length) + 1
    for _ in range(count):
        session.send(session.prompts.make(length))


def _wait_for_redis_keys(client: redis.Redis, at_least: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.dbsize() >= at_least:
            return True
        time.sleep(0.05)
    return False


def _hit_runs(
    session: _Session,
    report: EngineReport,
    situation: str,
    lengths: list[int],
    repeats: int,
    geometry: _Geometry,
    *,
    first_send: Callable[[list[int]], None] | None = None,
    filler_limit: int | None = None,
) -> None:
    """Send each fresh prompt once (through `first_send` if given), evict it, resend it timed."""
    for n in lengths:
        for _ in range(repeats):
            prompt = session.prompts.make(n + TAIL_TOKENS)
            (first_send or session.send)(prompt)
            _evict(session, geometry, filler_limit)
            sample = session.timed(prompt)
            report.add(situation, n, sample)
            if sample.external_hit_tokens <= 0:
                report.notes.append(
                    f"{situation} at {n} tokens: no external cache hit was reported for the timed request"
                )


@contextlib.contextmanager
def _engine(
    name: str,
    model_dir: Path,
    geometry: _Geometry,
    log_dir: Path,
    report: EngineReport,
    prompts: _Prompts,
    *,
    kv_transfer_config: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
    cache_dir: Path | None = None,
) -> Iterator[_Session]:
    from kvbench.servers import VllmEngine

    log_path = log_dir / f"engine-{name}.log"
    engine = VllmEngine(
        model_dir,
        kv_cache_space_gib=geometry.kv_space_gib,
        max_model_len=geometry.max_model_len,
        kv_transfer_config=kv_transfer_config,
        env={**_ENGINE_ENV, **(env or {})},
        log_path=log_path,
        cache_dir=cache_dir,
    )
    started = time.monotonic()
    engine.start()
    report.engines[name] = {"log": str(log_path), "startup_s": round(time.monotonic() - started, 1)}
    session = _Session(engine, prompts)
    try:
        yield session
    finally:
        session.close()
        # Only what the engine logged while serving counts: its shutdown logs errors of its own.
        errors = [ln for ln in engine.log_tail(400) if "Traceback" in ln or "ERROR" in ln]
        engine.stop()
        if errors:
            report.engines[name]["log_errors"] = errors[-5:]
            report.notes.append(f"{name} engine logged errors, e.g. {errors[-1][:200]} (see {log_path})")


def run_engine(
    preset: str,
    lengths: list[int],
    repeats: int,
    *,
    cache_dir: Path,
    engines: list[str] | tuple[str, ...] = ENGINES,
    seed: int = 0,
    log_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> EngineReport:
    """Start each engine kind in turn and time every situation it serves (see the module doc)."""
    from kvbench.model import ensure_tiny
    from kvbench.servers import RedisServer

    say = progress or (lambda _msg: None)
    model_dir = ensure_tiny(cache_dir, preset=preset, seed=0)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    geometry = _geometry(model_dir, lengths)
    report = EngineReport(lengths, repeats)
    prompts = _Prompts(vocab, seed)
    logs = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="kvbench-bench-engine-"))
    say(f"logs in {logs}; KV space {geometry.kv_tokens} tokens, max_model_len {geometry.max_model_len}")
    l1_env = {"AIBRIX_KV_CACHE_OL_L1_CACHE_CAPACITY_GB": "1"}
    if "baseline" in engines:
        say("baseline engine (no connector): recompute and engine-local hits")
        with _engine("baseline", model_dir, geometry, logs, report, prompts) as s:
            s.send(s.prompts.make(64))  # first request pays one-off warm-up costs
            for n in lengths:
                for _ in range(repeats):
                    report.add("recompute", n, s.timed(s.prompts.make(n + TAIL_TOKENS)))
                    prompt = s.prompts.make(n + TAIL_TOKENS)
                    s.send(prompt)
                    report.add("local_hit", n, s.timed(prompt))
    if "l1" in engines:
        say("connector engine, L1: fresh prompts (overhead) and L1 hits after eviction")
        with _engine(
            "l1",
            model_dir,
            geometry,
            logs,
            report,
            prompts,
            kv_transfer_config=_OUR_CONNECTOR,
            env=l1_env,
        ) as s:
            s.send(s.prompts.make(64))
            for n in lengths:
                for _ in range(repeats):
                    report.add("fresh_l1", n, s.timed(s.prompts.make(n + TAIL_TOKENS)))
            _hit_runs(s, report, "l1_hit", lengths, repeats, geometry)
    if "redis" in engines:
        say("connector engine, Redis L2 only: Redis hits after eviction")
        with RedisServer(workdir=logs / "redis") as server:
            client = redis.Redis.from_url(server.url)
            env = {
                "AIBRIX_KV_CACHE_OL_L1_CACHE_ENABLED": "0",
                "AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND": "REDIS",
                "AIBRIX_KV_CACHE_OL_L2_CACHE_INGESTION_TYPE": "ALL",
                "AIBRIX_KV_CACHE_OL_REDIS_URL": server.url,
            }

            def send_stored(prompt: list[int]) -> None:
                # L2 writes are asynchronous: wait until the prompt's chunks are in Redis.
                before = client.dbsize()
                s.send(prompt)
                if not _wait_for_redis_keys(client, before + len(prompt) // CHUNK_TOKENS):
                    report.notes.append("redis: a prompt's chunks did not all reach Redis within 15 s")

            with _engine(
                "redis",
                model_dir,
                geometry,
                logs,
                report,
                prompts,
                kv_transfer_config=_OUR_CONNECTOR,
                env=env,
            ) as s:
                s.send(s.prompts.make(64))
                _hit_runs(s, report, "redis_hit", lengths, repeats, geometry, first_send=send_stored)
                report.engines["redis"]["redis_keys"] = client.dbsize()
            client.close()
    if "example" in engines:
        fit = [n for n in lengths if n + TAIL_TOKENS <= EXAMPLE_MAX_PROMPT]
        skipped = [n for n in lengths if n not in fit]
        if skipped:
            report.notes.append(
                f"ExampleConnector not run at {skipped} tokens: it crashes this vLLM build on prompts "
                f"longer than one prefill step ({EXAMPLE_MAX_PROMPT} tokens)"
            )
        if fit:
            say(f"ExampleConnector engine: hits after eviction at {fit} tokens")
            with tempfile.TemporaryDirectory(prefix="kvbench-example-") as store:
                config = {
                    "kv_connector": "ExampleConnector",
                    "kv_role": "kv_both",
                    "kv_connector_extra_config": {"shared_storage_path": store},
                }
                with _engine(
                    "example", model_dir, geometry, logs, report, prompts, kv_transfer_config=config
                ) as s:
                    s.send(s.prompts.make(64))
                    _hit_runs(
                        s,
                        report,
                        "example_hit",
                        fit,
                        repeats,
                        geometry,
                        filler_limit=EXAMPLE_MAX_PROMPT - 1,
                    )
    report.notes.insert(0, f"host: {os.cpu_count()} CPUs; engine logs in {logs}")
    return report
