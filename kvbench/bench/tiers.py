"""`kvbench bench tiers`: save/load throughput of the real `TieredCache`, tier by tier.

Each tier is measured on the same bytes as a reference that does the same job without the cache:

- L1 (host memory, no L2) against a plain `torch` `copy_` between two preallocated uint8 tensors,
  the copy L1 itself performs. Save = `save()` with a fill that copies from a source tensor; load =
  `load()` whose sink copies into a preallocated destination: one copy each, like the reference.
- Redis L2 (L1 disabled, so every load really comes from Redis) against raw redis-py `SET`/`GET`
  of the payload on the same server with the same client options. L2 writes are asynchronous, so a
  save is timed until `flush()` says it is stored.
- FS L2 (a temporary directory) against a raw file write/read of the payload.

Invariants: every timed operation is checked to have done its job (the chunk is stored, the load
delivered it), otherwise the run fails instead of reporting a fast no-op; memory stays bounded by a
few chunks (L1 holds at most `_L1_SLOTS`, every stored L2 chunk is deleted before the next).
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis
import torch

from connector.config import CacheConfig
from connector.l2.base import L2Backend
from connector.l2.fs import FSBackend
from connector.l2.redis import RedisBackend
from connector.tiered import TieredCache
from kvbench.bench.common import Target, median, ratio
from kvbench.errors import UserError

_L1_SLOTS = 4
_WARMUP = 1
TARGET_L1_VS_MEMCPY = 0.8
TARGET_REDIS_VS_RAW = 0.7


@dataclass(frozen=True)
class ChunkShape:
    """The KV of `tokens` tokens of one model: K and V for every layer and KV head."""

    name: str
    layers: int
    kv_heads: int
    head_dim: int
    tokens: int = 512
    dtype_bytes: int = 2

    @property
    def nbytes(self) -> int:
        return self.tokens * self.layers * 2 * self.kv_heads * self.head_dim * self.dtype_bytes


SHAPES: dict[str, ChunkShape] = {
    "8b": ChunkShape("8b", layers=32, kv_heads=8, head_dim=128),  # Llama-3-8B, bf16: 64 MiB
    "tiny": ChunkShape("tiny", layers=4, kv_heads=2, head_dim=64),  # the tiny test model: 1 MiB
}


def parse_shapes(text: str) -> list[ChunkShape]:
    """`"8b,tiny"` -> shapes, in the given order; unknown or empty names are a UserError."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UserError(f"--shapes: expected a comma-separated list of {', '.join(SHAPES)}")
    unknown = [name for name in names if name not in SHAPES]
    if unknown:
        raise UserError(f"--shapes: unknown shape {unknown[0]!r}; choose from {', '.join(SHAPES)}")
    return [SHAPES[name] for name in dict.fromkeys(names)]


@dataclass
class OpResult:
    """One (tier, shape, op) cell: the cache's timings and the reference's, in seconds."""

    tier: str
    shape: str
    op: str
    nbytes: int
    reference: str
    seconds: list[float]
    ref_seconds: list[float]

    @property
    def gbps(self) -> float:
        return self.nbytes / median(self.seconds) / 1e9

    @property
    def ref_gbps(self) -> float:
        return self.nbytes / median(self.ref_seconds) / 1e9

    @property
    def p50_ms(self) -> float:
        return median(self.seconds) * 1e3

    @property
    def ref_p50_ms(self) -> float:
        return median(self.ref_seconds) * 1e3

    @property
    def ratio(self) -> float | None:
        return ratio(self.gbps, self.ref_gbps)

    def as_dict(self) -> dict[str, object]:
        return {
            "tier": self.tier,
            "shape": self.shape,
            "op": self.op,
            "bytes": self.nbytes,
            "gbps": self.gbps,
            "p50_ms": self.p50_ms,
            "reference": self.reference,
            "ref_gbps": self.ref_gbps,
            "ref_p50_ms": self.ref_p50_ms,
            "ratio": self.ratio,
            "repeats": len(self.seconds),
        }


RATIO_NAMES = {"l1": "l1_vs_memcpy", "redis": "redis_vs_raw", "fs": "fs_vs_raw"}
TARGETS = {"l1_vs_memcpy": TARGET_L1_VS_MEMCPY, "redis_vs_raw": TARGET_REDIS_VS_RAW}


@dataclass
class TierReport:
    """All cells of one run, with the ratios and target verdicts derived from them."""

    results: list[OpResult]
    shapes: list[ChunkShape]
    repeats: int
    host: dict[str, object] = field(default_factory=dict)
    redis: dict[str, object] = field(default_factory=dict)

    def ratios_by_shape(self) -> dict[str, dict[str, dict[str, float | None]]]:
        out: dict[str, dict[str, dict[str, float | None]]] = {}
        for r in self.results:
            out.setdefault(r.shape, {}).setdefault(RATIO_NAMES[r.tier], {})[r.op] = r.ratio
        return out

    def ratios(self) -> dict[str, dict[str, float | None]]:
        """The ratios of the first shape asked for (by default the 8B-class chunk)."""
        return self.ratios_by_shape().get(self.shapes[0].name, {}) if self.shapes else {}

    def targets(self) -> list[Target]:
        found = []
        by_shape = self.ratios_by_shape()
        for shape in (s.name for s in self.shapes):
            for name, bound in TARGETS.items():
                for op in ("save", "load"):
                    if name in by_shape.get(shape, {}):
                        value = by_shape[shape][name].get(op)
                        found.append(Target(f"{name}.{op}[{shape}]", value, ">=", bound))
        return found

    def as_dict(self) -> dict[str, object]:
        return {
            "benchmark": "tiers",
            "shapes": {s.name: asdict(s) | {"bytes": s.nbytes} for s in self.shapes},
            "repeats": self.repeats,
            "host": self.host,
            "redis": self.redis,
            "results": [r.as_dict() for r in self.results],
            "ratios": self.ratios(),
            "ratios_by_shape": self.ratios_by_shape(),
            "targets": [t.as_dict() for t in self.targets()],
        }


# ---- timing -----------------------------------------------------------------------------------


def _paired(
    op: Callable[[int], None],
    ref: Callable[[int], None],
    repeats: int,
    *,
    after: Callable[[int], None] | None = None,
    warmup: int = _WARMUP,
) -> tuple[list[float], list[float]]:
    """Seconds of `op(i)` and of `ref(i)` for each of `repeats` rounds after `warmup` untimed ones.

    The two are interleaved (alternating which goes first) so that both see the same load on a
    shared host and neither always inherits a warm CPU cache from the other; `after(i)` runs
    untimed after each round.
    """
    op_times: list[float] = []
    ref_times: list[float] = []
    for i in range(warmup + repeats):
        order = ((op, op_times), (ref, ref_times))
        for fn, times in order if i % 2 == 0 else reversed(order):
            start = time.perf_counter()
            fn(i)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times.append(elapsed)
        if after is not None:
            after(i)
    return op_times, ref_times


class _Bytes:
    """A random source chunk and a preallocated, already touched destination of the same size."""

    def __init__(self, nbytes: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=generator)
        self.dst = torch.zeros(nbytes, dtype=torch.uint8)

    def fill(self, view: torch.Tensor) -> None:
        view.copy_(self.src)

    def sink(self, _index: int, payload: torch.Tensor) -> None:
        self.dst.copy_(payload)

    def check_delivered(self) -> None:
        if not torch.equal(self.dst, self.src):
            raise RuntimeError("the cache delivered different bytes than were saved")


def _cache_config(**overrides: object) -> CacheConfig:
    """A config from defaults and `overrides` only: the caller's AIBRIX_* variables play no part."""
    return CacheConfig.from_env(environ={}, overrides=overrides)


def _measure_l1(shape: ChunkShape, repeats: int, data: _Bytes) -> list[OpResult]:
    slot = shape.nbytes + 4096
    config = _cache_config(l1_cache_capacity_gb=(_L1_SLOTS * slot) / (1 << 30))
    cache = TieredCache(config, shape.nbytes)
    scratch = torch.empty_like(data.src)
    try:
        # One untimed save per slot first, so timed saves reuse touched memory as in a running engine.
        warm = max(_WARMUP, _L1_SLOTS)
        keys = [f"bench:l1:{shape.name}:{i}" for i in range(warm + repeats)]

        def save(i: int) -> None:
            if not cache.save(keys[i], data.fill):
                raise RuntimeError(f"L1 refused to store {keys[i]}")

        def memcpy(_i: int) -> None:
            scratch.copy_(data.src)

        save_s, save_ref = _paired(save, memcpy, repeats, warmup=warm)
        last = keys[-1]

        def load(_i: int) -> None:
            if cache.load([last], data.sink).l1 != 1:
                raise RuntimeError("L1 did not deliver a chunk it holds")

        data.dst.zero_()
        load_s, load_ref = _paired(load, memcpy, repeats)
        data.check_delivered()
    finally:
        cache.close()
    return [
        OpResult("l1", shape.name, "save", shape.nbytes, "memcpy", save_s, save_ref),
        OpResult("l1", shape.name, "load", shape.nbytes, "memcpy", load_s, load_ref),
    ]


def _measure_l2(
    tier: str,
    shape: ChunkShape,
    repeats: int,
    data: _Bytes,
    backend: L2Backend,
    overrides: dict[str, object],
    raw: _RawStore,
) -> list[OpResult]:
    """Save (until durable) and load through a TieredCache with L1 off and `backend` as L2."""
    config = _cache_config(l1_cache_enabled=False, **overrides)
    cache = TieredCache(config, shape.nbytes, l2=backend)
    prefix = f"kvbench-bench:{tier}:{shape.name}:{os.getpid()}:{time.time_ns()}"
    payload = memoryview(data.src.numpy())
    raw_key = f"{prefix}:raw"
    try:
        keys = [f"{prefix}:save:{i}" for i in range(_WARMUP + repeats)]

        def save(i: int) -> None:
            if not cache.save(keys[i], data.fill):
                raise RuntimeError(f"{tier}: save of {keys[i]} was refused")
            cache.flush()

        def put(_i: int) -> None:
            raw.put(raw_key, payload)

        def stored(i: int) -> None:
            if not backend.exists([keys[i]])[0]:
                raise RuntimeError(f"{tier}: {keys[i]} is not stored after flush()")
            backend.delete([keys[i]])
            raw.delete(raw_key)

        save_s, save_ref = _paired(save, put, repeats, after=stored)
        key = f"{prefix}:load"
        if not cache.save(key, data.fill):
            raise RuntimeError(f"{tier}: save of {key} was refused")
        cache.flush()
        raw.put(raw_key, payload)

        def load(_i: int) -> None:
            if cache.load([key], data.sink).l2 != 1:
                raise RuntimeError(f"{tier}: a stored chunk was not delivered (see the log for why)")

        def get(_i: int) -> None:
            if raw.get(raw_key) is None:
                raise RuntimeError(f"{tier}: raw read of {raw_key} found nothing")

        data.dst.zero_()
        load_s, load_ref = _paired(load, get, repeats)
        data.check_delivered()
        backend.delete([key])
    finally:
        raw.delete(raw_key)
        cache.close()
    return [
        OpResult(tier, shape.name, "save", shape.nbytes, f"raw {raw.put_name}", save_s, save_ref),
        OpResult(tier, shape.name, "load", shape.nbytes, f"raw {raw.get_name}", load_s, load_ref),
    ]


@dataclass
class _RawStore:
    """The reference: the same store driven directly, without the cache."""

    put: Callable[[str, memoryview], object]
    get: Callable[[str], object]
    delete: Callable[[str], object]
    put_name: str
    get_name: str


def _measure_redis(shape: ChunkShape, repeats: int, data: _Bytes, url: str) -> list[OpResult]:
    backend = RedisBackend(url)
    # The reference client is built exactly like RedisBackend's (same pool and socket options).
    client = redis.Redis.from_url(
        url, max_connections=16, socket_timeout=10.0, socket_connect_timeout=2.0, health_check_interval=30
    )
    raw = _RawStore(client.set, client.get, client.delete, "SET", "GET")
    try:
        return _measure_l2(
            "redis", shape, repeats, data, backend, {"l2_cache_backend": "REDIS", "redis_url": url}, raw
        )
    finally:
        client.close()


def _measure_fs(shape: ChunkShape, repeats: int, data: _Bytes) -> list[OpResult]:
    with tempfile.TemporaryDirectory(prefix="kvbench-bench-fs-") as root:
        backend = FSBackend(Path(root, "l2"), capacity_bytes=64 * (shape.nbytes + 4096))
        raw_dir = Path(root, "raw")
        raw_dir.mkdir()

        def put(key: str, value: memoryview) -> None:
            with open(raw_dir / key.replace(":", "_"), "wb") as f:
                f.write(value)

        def get(key: str) -> bytes | None:
            try:
                with open(raw_dir / key.replace(":", "_"), "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None

        def delete(key: str) -> None:
            (raw_dir / key.replace(":", "_")).unlink(missing_ok=True)

        raw = _RawStore(put, get, delete, "file write", "file read")
        overrides = {"l2_cache_backend": "FS", "fs_root": str(Path(root, "l2"))}
        return _measure_l2("fs", shape, repeats, data, backend, overrides, raw)


@contextlib.contextmanager
def _redis_url(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from kvbench.servers import RedisServer

    with RedisServer() as server:
        yield server.url


def run_tiers(
    shapes: list[ChunkShape],
    repeats: int,
    *,
    tiers: tuple[str, ...] = ("l1", "redis", "fs"),
    redis_url: str | None = None,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> TierReport:
    """Measure every tier in `tiers` for every shape; starts (and stops) a local redis-server for
    the Redis tier unless `redis_url` is given."""
    if repeats < 1:
        raise UserError("--repeats: expected an integer >= 1")
    say = progress or (lambda _msg: None)
    results: list[OpResult] = []
    previous_threads = torch.get_num_threads()
    url: str | None = None
    with contextlib.ExitStack() as stack:
        # One copy thread: on a small, busy host a multi-threaded copy waits for descheduled
        # threads and its timings swing by 10x, for the cache and the reference alike.
        torch.set_num_threads(threads)
        stack.callback(torch.set_num_threads, previous_threads)
        url = stack.enter_context(_redis_url(redis_url)) if "redis" in tiers else None
        for shape in shapes:
            data = _Bytes(shape.nbytes)
            for tier in tiers:
                say(f"{tier} x {shape.name} ({shape.nbytes / (1 << 20):g} MiB), {repeats} repeats")
                if tier == "l1":
                    results += _measure_l1(shape, repeats, data)
                elif tier == "redis":
                    assert url is not None
                    results += _measure_redis(shape, repeats, data, url)
                elif tier == "fs":
                    results += _measure_fs(shape, repeats, data)
                else:
                    raise ValueError(f"unknown tier {tier!r}")
            del data
    host = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    redis_info: dict[str, object] = {}
    if url is not None:
        redis_info = {"port": urlsplit(url).port, "started_here": redis_url is None}
    return TierReport(results, list(shapes), repeats, host, redis_info)
