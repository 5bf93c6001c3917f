"""The REDIS backend and the tiered cache against a real redis-server: data path and outages.

The server comes from the `redis_server` fixture (a fresh, empty redis-server on a free loopback
port). Store-side facts are read from the server itself (DBSIZE, INFO commandstats, the raw
values), not from the cache's own bookkeeping.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import torch

from connector.config import CacheConfig
from connector.l2 import create_backend
from connector.l2.base import L2Error
from connector.l2.redis import RedisBackend
from connector.tiered import HEADER_BYTES, TieredCache
from kvbench.servers import RedisServer

pytestmark = pytest.mark.integration

CHUNK = 16
PAYLOAD = 4096


def _settings(url: str, slots: int = 16, **extra: Any) -> dict[str, Any]:
    slot = HEADER_BYTES + PAYLOAD + (CHUNK * 4 if extra.get("TOKEN_VALIDATION_ENABLED") else 0)
    return {
        "CHUNK_SIZE": CHUNK,
        "BLOCK_SIZE": CHUNK,
        "L2_CACHE_BACKEND": "REDIS",
        "REDIS_URL": url,
        "L1_CACHE_CAPACITY_GB": slots * slot / (1 << 30),
        **extra,
    }


def _cache(url: str, **extra: Any) -> TieredCache:
    config = CacheConfig.from_env({}, _settings(url, **extra))
    return TieredCache(config, PAYLOAD, l2=create_backend(config))


def _key(i: int, prefix: str = "aibrix:test:tp0pp0") -> str:
    return f"{prefix}:{i:064x}"


def _pattern(key: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(hashlib.shake_128(key.encode()).digest(PAYLOAD)), dtype=torch.uint8)


def _fill(key: str) -> Callable[[torch.Tensor], None]:
    return lambda view: view.copy_(_pattern(key))


def _load(cache: TieredCache, keys: list[str], tokens=None) -> tuple[tuple[int, int], dict[int, bytes]]:
    got: dict[int, bytes] = {}

    def sink(index: int, payload: torch.Tensor) -> None:
        got[index] = payload.numpy().tobytes()

    result = cache.load(keys, sink, tokens)
    return (result.l1, result.l2), got


def _expected(keys: list[str]) -> dict[int, bytes]:
    return {i: _pattern(k).numpy().tobytes() for i, k in enumerate(keys)}


def _raw(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url)


def _sets(raw: redis.Redis) -> int:
    return int(raw.info("commandstats").get("cmdstat_set", {}).get("calls", 0))


def _until(predicate: Callable[[], bool], limit_s: float = 15.0) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _connector_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("connector") and r.levelno >= logging.WARNING
    ]


# ---- the backend itself ---------------------------------------------------------------------


def test_backend_round_trip_of_large_binary_values(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url)
    big = bytes(range(256)) * (32 << 10)  # 8 MiB, every byte value
    backend.put([("k:big", memoryview(big)), ("k:small", b"\x00\xff")])
    assert backend.exists(["k:big", "k:none", "k:small"]) == [True, False, True]
    assert backend.get(["k:small", "k:none", "k:big"]) == [b"\x00\xff", None, big]
    backend.put([("k:small", b"replaced?")])
    assert backend.get(["k:small"]) == [b"\x00\xff"], "SET NX: a stored chunk is never replaced"
    backend.delete(["k:big", "k:none"])
    assert _raw(redis_server).dbsize() == 1
    backend.close()


def test_backend_ttl(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, ttl_s=300)
    backend.put([("k:ttl", b"v")])
    assert 0 < _raw(redis_server).ttl("k:ttl") <= 300
    backend.close()


def test_backend_with_password(tmp_path) -> None:
    with RedisServer(password="s3cret", workdir=tmp_path) as server:
        backend = RedisBackend(server.url)
        backend.put([("k", b"v")])
        assert backend.get(["k"]) == [b"v"]
        anonymous = RedisBackend(f"redis://127.0.0.1:{server.port}/0")
        with pytest.raises(L2Error):
            anonymous.get(["k"])


# ---- tiers and ingestion --------------------------------------------------------------------


def test_save_lookup_load_per_tier(redis_server: RedisServer) -> None:
    keys = [_key(i) for i in range(4)]
    writer = _cache(redis_server.url, L2_CACHE_INGESTION_TYPE="ALL")
    for k in keys:
        assert writer.save(k, _fill(k))
    writer.flush()
    raw = _raw(redis_server)
    assert raw.dbsize() == 4
    assert len(raw.get(keys[0])) == HEADER_BYTES + PAYLOAD

    reader = _cache(redis_server.url)
    lookup = reader.lookup(keys)
    assert (lookup.l1, lookup.l2) == (0, 4)
    assert _load(reader, keys) == ((0, 4), _expected(keys))
    raw.flushdb()
    assert _load(reader, keys) == ((4, 0), _expected(keys)), "L2 hits were inserted into L1"
    assert reader.metrics.totals()["hit_tokens.l2"] == 4 * CHUNK


def test_ingestion_hot(redis_server: RedisServer) -> None:
    raw = _raw(redis_server)
    cache = _cache(redis_server.url, L2_CACHE_INGESTION_TYPE="HOT")
    keys = [_key(i) for i in range(2)]
    for k in keys:
        cache.save(k, _fill(k))
    cache.flush()
    assert raw.dbsize() == 0, "HOT: not written on the first save"
    assert _load(cache, keys[:1])[0] == (1, 0)
    cache.flush()
    assert raw.exists(keys[0]) == 1 and raw.exists(keys[1]) == 0, "written once hit again"


def test_ingestion_evicted(redis_server: RedisServer) -> None:
    raw = _raw(redis_server)
    cache = _cache(
        redis_server.url, slots=2, L2_CACHE_INGESTION_TYPE="EVICTED", L1_CACHE_EVICTION_POLICY="LRU"
    )
    keys = [_key(i) for i in range(3)]
    cache.save(keys[0], _fill(keys[0]))
    cache.save(keys[1], _fill(keys[1]))
    cache.flush()
    assert raw.dbsize() == 0
    cache.save(keys[2], _fill(keys[2]))
    cache.flush()
    assert [raw.exists(k) for k in keys] == [1, 0, 0]
    assert _load(_cache(redis_server.url), keys[:1]) == ((0, 1), _expected(keys[:1]))


def test_chunks_already_in_l2_are_not_written_again(redis_server: RedisServer) -> None:
    raw = _raw(redis_server)
    keys = [_key(i) for i in range(3)]
    first = _cache(redis_server.url, L2_CACHE_INGESTION_TYPE="ALL")
    for k in keys:
        first.save(k, _fill(k))
    first.flush()
    sets = _sets(raw)
    assert sets == 3
    second = _cache(redis_server.url, L2_CACHE_INGESTION_TYPE="ALL")
    for k in keys:
        assert second.save(k, _fill(k))
    second.flush()
    assert _sets(raw) == sets
    assert second.metrics.totals().get("saved_bytes.l2", 0) == 0
    assert first.metrics.totals()["saved_bytes.l2"] == 3 * PAYLOAD


def test_inflight_bound_skips_and_counts(redis_server: RedisServer) -> None:
    raw = _raw(redis_server)
    cache = _cache(
        redis_server.url, L2_CACHE_INGESTION_TYPE="ALL", L2_CACHE_INGESTION_MAX_INFLIGHT_TOKENS=2 * CHUNK
    )
    keys = [_key(i) for i in range(3)]
    raw.client_pause(10_000, all=False)  # writes wait on the server: they stay in flight
    try:
        for k in keys:
            assert cache.save(k, _fill(k)), "saved into L1 without waiting for L2"
        assert cache.metrics.totals()["skipped_writes.inflight_full"] == 1
    finally:
        raw.client_unpause()
    cache.flush()
    assert [raw.exists(k) for k in keys] == [1, 1, 0]


# ---- integrity ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip", "truncate", "other_key"])
def test_corrupted_value_is_a_miss_deleted_and_counted(redis_server: RedisServer, damage: str) -> None:
    raw = _raw(redis_server)
    keys = [_key(0), _key(1)]
    writer = _cache(redis_server.url, L2_CACHE_INGESTION_TYPE="ALL")
    writer.save(keys[0], _fill(keys[0]))
    writer.flush()
    value = bytearray(raw.get(keys[0]))
    target = keys[0]
    if damage == "flip":
        value[HEADER_BYTES + 100] ^= 0x10
        raw.set(target, bytes(value))
    elif damage == "truncate":
        raw.set(target, bytes(value[:-1]))
    else:
        target = keys[1]
        raw.set(target, bytes(value))
    reader = _cache(redis_server.url)
    assert _load(reader, [target]) == ((0, 0), {})
    assert reader.metrics.totals()["validation_failures"] == 1
    assert _until(lambda: raw.exists(target) == 0), "the bad value is deleted from Redis"
    assert reader.lookup_l1([target]) == 0


def test_token_validation_against_redis(redis_server: RedisServer) -> None:
    raw = _raw(redis_server)
    tokens = list(range(100, 100 + CHUNK))
    writer = _cache(redis_server.url, L2_CACHE_INGESTION_TYPE="ALL", TOKEN_VALIDATION_ENABLED=1)
    writer.save(_key(0), _fill(_key(0)), tokens=tokens)
    writer.flush()
    good = _cache(redis_server.url, TOKEN_VALIDATION_ENABLED=1)
    assert _load(good, [_key(0)], [tokens]) == ((0, 1), _expected([_key(0)]))
    bad = _cache(redis_server.url, TOKEN_VALIDATION_ENABLED=1)
    assert _load(bad, [_key(0)], [[0] * CHUNK]) == ((0, 0), {})
    assert bad.metrics.totals()["validation_failures"] == 1
    assert _until(lambda: raw.dbsize() == 0)


# ---- failures -------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_from_the_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cache = _cache(f"redis://127.0.0.1:{_closed_port()}/0", L2_CACHE_INGESTION_TYPE="ALL")
    keys = [_key(i) for i in range(3)]
    for _ in range(10):
        assert cache.lookup(keys).total == 0
        assert _load(cache, keys) == ((0, 0), {})
    for k in keys:
        assert cache.save(k, _fill(k))
    cache.flush()
    assert _load(cache, keys) == ((3, 0), _expected(keys)), "L1 works without L2"
    assert cache.metrics.totals()["l2_errors.connection"] >= 1
    assert len(_connector_warnings(caplog)) == 1
    cache.close()


def test_paused_server_gives_misses_within_the_deadline(redis_server: RedisServer) -> None:
    raw = _raw(redis_server)
    writer = _cache(redis_server.url, L2_CACHE_INGESTION_TYPE="ALL")
    keys = [_key(i) for i in range(2)]
    for k in keys:
        writer.save(k, _fill(k))
    writer.flush()
    cache = _cache(redis_server.url, L2_CACHE_PER_TOKEN_TIMEOUT_MS=1)  # 50 ms deadline
    box: dict[str, Any] = {}
    raw.client_pause(3_000, all=True)  # the server accepts nothing for 3 s
    try:
        thread = threading.Thread(
            target=lambda: box.update(lookup=cache.lookup(keys), load=_load(cache, keys))
        )
        thread.start()
        thread.join(2.5)
        assert not thread.is_alive(), "lookup and load must not wait for a stalled server"
    finally:
        raw.client_unpause()
    assert box["lookup"].total == 0
    assert box["load"] == ((0, 0), {})
    assert cache.metrics.totals()["l2_errors.timeout"] >= 2


def test_kill_mid_operation_then_restart(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """A thread saves and loads through L2 while redis-server is SIGKILLed and restarted."""
    caplog.set_level(logging.INFO)
    cache = _cache(redis_server.url, L1_CACHE_ENABLED=0, L2_CACHE_PER_TOKEN_TIMEOUT_MS=20)
    state = {"i": 0, "hits": 0, "misses_in_outage": 0, "hits_in_outage": 0, "hits_after": 0}
    phase = {"name": "up"}
    errors: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def loop() -> None:
        while not stop.is_set() and state["i"] < 100_000:
            started = phase["name"]
            k = _key(state["i"], prefix="aibrix:kill:tp0pp0")
            try:
                cache.save(k, _fill(k))
                cache.flush(2.0)
                (_, l2), got = _load(cache, [k])
                cache.lookup([k])
            except BaseException as exc:
                errors.append(exc)
                return
            if l2:
                assert got == {0: _pattern(k).numpy().tobytes()}
            with lock:
                state["i"] += 1
                state["hits"] += l2
                if started == "down" and phase["name"] == "down":
                    state["hits_in_outage" if l2 else "misses_in_outage"] += 1
                if started == "restarted":
                    state["hits_after"] += l2

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        assert _until(lambda: state["hits"] >= 5), "L2 works before the outage"
        redis_server.kill()
        phase["name"] = "down"
        assert _until(lambda: state["misses_in_outage"] >= 20), "operations go on, as misses"
        assert state["hits_in_outage"] == 0
        redis_server.start()
        phase["name"] = "restarted"
        assert _until(lambda: state["hits_after"] >= 3), "hits resume by themselves after the restart"
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert errors == []
    totals = cache.metrics.totals()
    assert totals["l2_errors.connection"] >= 1
    assert len(_connector_warnings(caplog)) == 1, _connector_warnings(caplog)
    cache.close()
