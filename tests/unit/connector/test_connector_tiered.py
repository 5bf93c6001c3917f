"""TieredCache over a real FS store (a temporary directory): tiers, ingestion, integrity, failures."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from kvtest_helpers import (
    CHUNK,
    PAYLOAD,
    Collect,
    Wrapped,
    config,
    fill_for,
    keys,
    l1_gb,
    pattern,
    run_bounded,
)

from connector.l2.base import L2Error
from connector.l2.fs import FSBackend
from connector.tiered import LookupResult, TieredCache


def _fs(root: Path) -> FSBackend:
    return FSBackend(root, capacity_bytes=1 << 30)


def _cache(root: Path | None, *, slots: int = 8, backend=None, **settings) -> TieredCache:
    settings.setdefault(
        "L1_CACHE_CAPACITY_GB", l1_gb(slots, tokens=bool(settings.get("TOKEN_VALIDATION_ENABLED")))
    )
    if backend is None and root is not None:
        backend = _fs(root)
    return TieredCache(config(**settings), PAYLOAD, l2=backend)


def _expected(ks: list[str]) -> dict[int, bytes]:
    return {i: pattern(k).numpy().tobytes() for i, k in enumerate(ks)}


def _load(cache: TieredCache, ks: list[str], tokens=None) -> tuple[tuple[int, int], dict[int, bytes]]:
    sink = Collect()
    result = cache.load(ks, sink, tokens)
    return (result.l1, result.l2), sink.got


def _stored(root: Path) -> list[Path]:
    return sorted(root.rglob("*.kvc"))


def _wait_until(predicate, limit_s: float = 10.0) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# ---- tiers ----------------------------------------------------------------------------------


def test_l1_only_round_trip(tmp_path: Path) -> None:
    cache = _cache(None)
    ks = keys(3)
    for k in ks:
        assert cache.save(k, fill_for(k))
    assert not cache.save(ks[0], fill_for("other")), "already cached"
    assert cache.lookup([*ks, "absent"]).l1 == 3
    assert _load(cache, ks) == ((3, 0), _expected(ks))


def test_load_stops_at_the_first_gap(tmp_path: Path) -> None:
    cache = _cache(None)
    ks = keys(4)
    for k in (ks[0], ks[1], ks[3]):
        cache.save(k, fill_for(k))
    assert cache.lookup(ks).total == 2
    assert _load(cache, ks) == ((2, 0), _expected(ks[:2]))


def test_l2_round_trip_and_hit_inserts_into_l1(tmp_path: Path) -> None:
    writer = _cache(tmp_path, L2_CACHE_INGESTION_TYPE="ALL")
    ks = keys(3)
    for k in ks:
        writer.save(k, fill_for(k))
    writer.flush()
    assert len(_stored(tmp_path)) == 3

    reader = _cache(tmp_path, L2_CACHE_INGESTION_TYPE="ALL")
    assert reader.lookup_l1(ks) == 0
    assert reader.lookup(ks).l2 == 3
    assert _load(reader, ks) == ((0, 3), _expected(ks))
    assert reader.lookup_l1(ks) == 3, "an L2 hit is inserted into L1"
    for path in _stored(tmp_path):
        path.unlink()
    assert _load(reader, ks) == ((3, 0), _expected(ks)), "served from L1 now"
    totals = reader.metrics.totals()
    assert totals["hit_tokens.l2"] == 3 * CHUNK
    assert totals["loaded_bytes.l2"] == 3 * PAYLOAD
    assert totals["loaded_bytes.l1"] == 3 * PAYLOAD


def test_mixed_tiers_in_one_run(tmp_path: Path) -> None:
    writer = _cache(tmp_path, L2_CACHE_INGESTION_TYPE="ALL")
    ks = keys(4)
    for k in ks:
        writer.save(k, fill_for(k))
    writer.flush()
    reader = _cache(tmp_path)
    reader.save(ks[0], fill_for(ks[0]))
    reader.save(ks[2], fill_for(ks[2]))
    assert reader.lookup(ks) == LookupResult(l1=2, l2=2)
    (l1, l2), got = _load(reader, ks)
    assert (l1, l2) == (2, 2) and got == _expected(ks)


def test_l1_disabled_saves_and_loads_through_l2(tmp_path: Path) -> None:
    cache = _cache(tmp_path, L1_CACHE_ENABLED=0)
    assert cache.l1 is None
    ks = keys(2)
    for k in ks:
        assert cache.save(k, fill_for(k))
    cache.flush()
    assert len(_stored(tmp_path)) == 2
    assert cache.lookup(ks).l2 == 2
    assert _load(cache, ks) == ((0, 2), _expected(ks))


def test_fill_error_leaves_nothing_behind(tmp_path: Path) -> None:
    cache = _cache(None)

    def bad_fill(view: torch.Tensor) -> None:
        raise RuntimeError("engine copy failed")

    with pytest.raises(RuntimeError):
        cache.save("k", bad_fill)
    assert cache.lookup_l1(["k"]) == 0
    assert cache.save("k", fill_for("k"))


# ---- ingestion ------------------------------------------------------------------------------


def test_ingestion_all_writes_on_save(tmp_path: Path) -> None:
    cache = _cache(tmp_path, L2_CACHE_INGESTION_TYPE="ALL")
    cache.save("a:tp0pp0:01", fill_for("a:tp0pp0:01"))
    cache.flush()
    assert cache.l2.backend.exists(["a:tp0pp0:01"]) == [True]
    assert cache.metrics.totals()["saved_bytes.l2"] == PAYLOAD


def test_ingestion_hot_writes_on_second_use(tmp_path: Path) -> None:
    cache = _cache(tmp_path, L2_CACHE_INGESTION_TYPE="HOT")
    ks = keys(2)
    for k in ks:
        cache.save(k, fill_for(k))
    cache.flush()
    assert cache.l2.backend.exists(ks) == [False, False]
    assert _load(cache, ks[:1])[0] == (1, 0)
    cache.flush()
    assert cache.l2.backend.exists(ks) == [True, False]
    reader = _cache(tmp_path)
    assert _load(reader, ks[:1]) == ((0, 1), _expected(ks[:1]))


def test_ingestion_evicted_writes_when_l1_evicts(tmp_path: Path) -> None:
    cache = _cache(tmp_path, slots=2, L2_CACHE_INGESTION_TYPE="EVICTED", L1_CACHE_EVICTION_POLICY="FIFO")
    ks = keys(3)
    cache.save(ks[0], fill_for(ks[0]))
    cache.save(ks[1], fill_for(ks[1]))
    cache.flush()
    assert _stored(tmp_path) == []
    cache.save(ks[2], fill_for(ks[2]))  # evicts ks[0]
    cache.flush()
    assert cache.l2.backend.exists(ks) == [True, False, False]
    assert cache.metrics.totals()["evictions.l1"] == 1
    reader = _cache(tmp_path)
    assert _load(reader, ks[:1]) == ((0, 1), _expected(ks[:1])), "the evicted bytes, not the new ones"


def test_chunks_already_in_l2_are_not_written_again(tmp_path: Path) -> None:
    first = _cache(tmp_path, L2_CACHE_INGESTION_TYPE="ALL")
    ks = keys(2)
    for k in ks:
        first.save(k, fill_for(k))
    first.flush()
    backend = Wrapped(_fs(tmp_path))
    second = _cache(None, backend=backend, L2_CACHE_INGESTION_TYPE="ALL")
    for k in ks:
        assert second.save(k, fill_for(k)), "saved into this process's L1"
    second.flush()
    assert backend.put_items == []
    assert second.metrics.totals().get("saved_bytes.l2", 0) == 0
    calls = dict(backend.calls)
    # Known to be in L2 now: a later save (after an L1 eviction) does not even ask.
    second.l1.remove(ks[0])
    second.save(ks[0], fill_for(ks[0]))
    second.flush()
    assert backend.calls == calls


def test_evicted_mode_does_not_rewrite_a_chunk_loaded_from_l2(tmp_path: Path) -> None:
    writer = _cache(tmp_path, L2_CACHE_INGESTION_TYPE="ALL")
    ks = keys(3)
    for k in ks:
        writer.save(k, fill_for(k))
    writer.flush()
    backend = Wrapped(_fs(tmp_path))
    reader = _cache(None, backend=backend, slots=1, L2_CACHE_INGESTION_TYPE="EVICTED")
    assert _load(reader, ks)[0] == (0, 3)  # each L2 hit goes into L1 and evicts the previous one
    reader.flush()
    assert backend.put_items == []
    assert reader.metrics.totals()["evictions.l1"] == 2


def test_s3fifo_working_set_survives_saves_when_writing_all_to_l2(tmp_path: Path) -> None:
    """Copying a chunk to L2 pins it without a hit: only real reuse protects a chunk."""
    cache = _cache(tmp_path, slots=10, L2_CACHE_INGESTION_TYPE="ALL", L1_CACHE_EVICTION_POLICY="S3FIFO")
    working = keys(3, prefix="w")
    for k in working:
        cache.save(k, fill_for(k))
    cache.flush()
    for i, k in enumerate(keys(60, prefix="scan")):
        cache.save(k, fill_for(k))
        cache.flush()
        if i % 4 == 0:
            assert _load(cache, working)[0][0] == 3, f"working set lost from L1 after {i} saves"


# ---- in-flight bound ------------------------------------------------------------------------


def test_inflight_bound_skips_and_counts_without_blocking(tmp_path: Path) -> None:
    backend = Wrapped(_fs(tmp_path))
    backend.gate, backend.gated_ops = threading.Event(), {"put"}
    cache = _cache(
        None, backend=backend, L2_CACHE_INGESTION_TYPE="ALL", L2_CACHE_INGESTION_MAX_INFLIGHT_TOKENS=2 * CHUNK
    )
    ks = keys(3)
    try:
        for k in ks[:2]:
            assert run_bounded(lambda k=k: cache.save(k, fill_for(k)), 10.0)
        assert backend.entered.acquire(timeout=10) and backend.entered.acquire(timeout=10)
        assert run_bounded(lambda: cache.save(ks[2], fill_for(ks[2])), 10.0), "still saved into L1"
        assert cache.metrics.totals()["skipped_writes.inflight_full"] == 1
    finally:
        backend.gate.set()
    cache.flush()
    assert _fs(tmp_path).exists(ks) == [True, True, False]
    # The budget came back: the next write goes through.
    k = keys(1, prefix="later")[0]
    cache.save(k, fill_for(k))
    cache.flush()
    assert _fs(tmp_path).exists([k]) == [True]


def test_inflight_bound_without_l1_skips_without_blocking(tmp_path: Path) -> None:
    """With L1 off a save stages the chunk itself; a skipped write must hand that buffer back."""
    backend = Wrapped(_fs(tmp_path))
    backend.gate, backend.gated_ops = threading.Event(), {"put"}
    cache = _cache(None, backend=backend, L1_CACHE_ENABLED=0, L2_CACHE_INGESTION_MAX_INFLIGHT_TOKENS=CHUNK)
    ks = keys(3)
    try:
        assert run_bounded(lambda: cache.save(ks[0], fill_for(ks[0])), 10.0)
        assert backend.entered.acquire(timeout=10)
        assert run_bounded(lambda: cache.save(ks[1], fill_for(ks[1])), 10.0) is False
        assert cache.metrics.totals()["skipped_writes.inflight_full"] == 1
    finally:
        backend.gate.set()
    cache.flush()
    assert run_bounded(lambda: cache.save(ks[2], fill_for(ks[2])), 10.0)
    cache.flush()
    assert _fs(tmp_path).exists(ks) == [True, False, True]
    assert _load(cache, [ks[2]]) == ((0, 1), _expected([ks[2]]))


def test_slots_pinned_by_l2_writes_are_released(tmp_path: Path) -> None:
    """While a write is queued its L1 slot is pinned; after it, and after a refused write, it is not."""
    backend = Wrapped(_fs(tmp_path))
    cache = _cache(None, backend=backend, slots=2, L2_CACHE_INGESTION_TYPE="ALL")
    backend.fail = L2Error("store is down", "connection")
    ks = keys(8)
    for k in ks:  # the first write fails, the rest are refused during the outage
        assert cache.save(k, fill_for(k)), f"{k}: L1 must evict, nothing may stay pinned"
    cache.flush()
    assert cache.metrics.totals()["skipped_writes.l2_unavailable"] >= 1
    backend.fail = None
    assert cache.lookup_l1(ks[-2:]) == 2


# ---- integrity ------------------------------------------------------------------------------


def _write_one(root: Path, key: str, **settings) -> Path:
    cache = _cache(root, L2_CACHE_INGESTION_TYPE="ALL", **settings)
    cache.save(key, fill_for(key), tokens=settings.get("_tokens"))
    cache.flush()
    (path,) = [p for p in _stored(root) if p.name.startswith(key.rsplit(":", 1)[1])]
    return path


@pytest.mark.parametrize("damage", ["flip_payload", "truncate", "empty", "other_key"])
def test_bad_stored_chunk_is_a_miss_deleted_and_counted(tmp_path: Path, damage: str) -> None:
    ks = keys(2)
    path = _write_one(tmp_path, ks[0])
    data = bytearray(path.read_bytes())
    if damage == "flip_payload":
        data[-10] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))
    lookup_key = ks[0]
    if damage == "other_key":  # a valid chunk, but stored under another key's name
        other = _stored(tmp_path)[0]
        target = _fs(tmp_path)._path(ks[1])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(other.read_bytes())
        path, lookup_key = target, ks[1]
    reader = _cache(tmp_path)
    assert _load(reader, [lookup_key]) == ((0, 0), {})
    assert reader.metrics.totals()["validation_failures"] == 1
    assert _wait_until(lambda: not path.exists()), "the bad chunk is deleted"
    assert reader.lookup_l1([lookup_key]) == 0, "and never inserted into L1"


def test_bad_chunk_in_the_middle_ends_the_run(tmp_path: Path) -> None:
    writer = _cache(tmp_path, L2_CACHE_INGESTION_TYPE="ALL")
    ks = keys(3)
    for k in ks:
        writer.save(k, fill_for(k))
    writer.flush()
    path = _fs(tmp_path)._path(ks[1])
    data = bytearray(path.read_bytes())
    data[300] ^= 1
    path.write_bytes(bytes(data))
    assert _load(_cache(tmp_path), ks) == ((0, 1), _expected(ks[:1]))


def test_token_validation_mismatch_is_a_miss(tmp_path: Path) -> None:
    settings = {"TOKEN_VALIDATION_ENABLED": 1, "L2_CACHE_INGESTION_TYPE": "ALL"}
    k = keys(1)[0]
    tokens = list(range(CHUNK))
    wrong = [t + 1 for t in tokens]
    cache = _cache(tmp_path, **settings)
    with pytest.raises(ValueError):
        cache.save(k, fill_for(k))  # validation needs the tokens
    assert cache.save(k, fill_for(k), tokens=tokens)
    cache.flush()
    assert _load(cache, [k], [tokens]) == ((1, 0), _expected([k]))
    assert _load(cache, [k], [wrong]) == ((0, 0), {})
    assert cache.lookup_l1([k]) == 0, "an L1 chunk with other tokens is dropped"

    assert _load(_cache(tmp_path, **settings), [k], [tokens]) == ((0, 1), _expected([k]))
    reader = _cache(tmp_path, **settings)
    assert _load(reader, [k], [wrong]) == ((0, 0), {})
    assert reader.metrics.totals()["validation_failures"] == 1
    assert _wait_until(lambda: _stored(tmp_path) == [])


def test_tokens_are_ignored_without_token_validation(tmp_path: Path) -> None:
    cache = _cache(None)
    k = keys(1)[0]
    cache.save(k, fill_for(k), tokens=list(range(CHUNK)))
    assert _load(cache, [k], [list(range(CHUNK))]) == ((1, 0), _expected([k]))


def test_chunk_from_another_layout_is_rejected(tmp_path: Path) -> None:
    _write_one(tmp_path, keys(1)[0])
    bigger = TieredCache(
        config(L1_CACHE_CAPACITY_GB=l1_gb(4, payload=2 * PAYLOAD)), 2 * PAYLOAD, l2=_fs(tmp_path)
    )
    assert bigger.load(keys(1), Collect()).total == 0
    assert bigger.metrics.totals()["validation_failures"] == 1


# ---- slow and failing L2 --------------------------------------------------------------------


def test_slow_l2_gives_misses_within_the_timeout(tmp_path: Path) -> None:
    writer = _cache(tmp_path, L2_CACHE_INGESTION_TYPE="ALL")
    ks = keys(2)
    for k in ks:
        writer.save(k, fill_for(k))
    writer.flush()
    backend = Wrapped(_fs(tmp_path))
    backend.gate, backend.gated_ops = threading.Event(), {"exists", "get"}
    cache = _cache(None, backend=backend, L2_CACHE_PER_TOKEN_TIMEOUT_MS=1)  # 50 ms deadline
    try:
        assert run_bounded(lambda: cache.lookup(ks), 5.0).total == 0
        assert run_bounded(lambda: _load(cache, ks), 5.0) == ((0, 0), {})
        assert cache.metrics.totals()["l2_errors.timeout"] >= 2
    finally:
        backend.gate.set()
    cache.l2._down_until = 0.0  # skip the retry interval instead of sleeping through it
    assert _wait_until(lambda: cache.lookup(ks).l2 == 2), "answers again once the store is fast"


def test_failing_l2_never_raises_and_counts(tmp_path: Path) -> None:
    backend = Wrapped(_fs(tmp_path))
    backend.fail = OSError("disk on fire")
    cache = _cache(None, backend=backend, L2_CACHE_INGESTION_TYPE="ALL")
    ks = keys(2)
    assert cache.lookup(ks).total == 0
    assert _load(cache, ks) == ((0, 0), {})
    for k in ks:
        assert cache.save(k, fill_for(k))
    cache.flush()
    assert cache.metrics.totals()["l2_errors.error"] >= 2
    assert _load(cache, ks)[0] == (2, 0), "L1 still serves"
