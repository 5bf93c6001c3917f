"""L1: bounded bytes, lazy slabs, eviction instead of failure, pins, write visibility, threads."""

from __future__ import annotations

import random
import threading

import pytest
import torch
from kvtest_helpers import pattern

from connector.l1 import FIFOPolicy, L1Cache, LRUPolicy, S3FIFOPolicy
from connector.l1.slab_pool import SlabPool

SLOT = 4096


def _cache(slots: int, *, slab_slots: int = 4, policy=None, on_evict=None, capacity: int | None = None):
    return L1Cache(
        SLOT,
        capacity if capacity is not None else slots * SLOT,
        policy or LRUPolicy(),
        slab_bytes=slab_slots * SLOT,
        on_evict=on_evict,
    )


def _put(cache: L1Cache, key: str) -> bool:
    return cache.put(key, pattern(key, SLOT))


def _content_ok(cache: L1Cache, key: str) -> bool:
    view = cache.acquire(key)
    assert view is not None, key
    try:
        return torch.equal(view, pattern(key, SLOT))
    finally:
        cache.release(key)


@pytest.mark.parametrize("policy", [FIFOPolicy, LRUPolicy, lambda: S3FIFOPolicy(10)])
def test_never_exceeds_capacity_and_evicts_instead_of_failing(policy) -> None:
    capacity = 10 * SLOT + SLOT // 2  # not a whole number of slots
    cache = _cache(0, capacity=capacity, policy=policy())
    for i in range(200):
        assert _put(cache, f"k{i}"), "a full cache must evict, not refuse"
        assert cache.allocated_bytes <= capacity
        assert cache.used_bytes <= capacity
    assert len(cache) == 10
    assert cache.evictions == 190
    assert all(_content_ok(cache, f"k{i}") for i in range(200) if f"k{i}" in cache)


def test_slabs_are_allocated_lazily() -> None:
    cache = _cache(16, slab_slots=4)
    assert cache.allocated_bytes == 0
    _put(cache, "a")
    assert cache.allocated_bytes == 4 * SLOT
    for k in "bcd":
        _put(cache, k)
    assert cache.allocated_bytes == 4 * SLOT
    _put(cache, "e")
    assert cache.allocated_bytes == 8 * SLOT


def test_slab_pool_last_slab_is_cut_to_the_capacity() -> None:
    pool = SlabPool(SLOT, 6 * SLOT, slab_bytes=4 * SLOT)
    slots = [pool.allocate() for _ in range(6)]
    assert None not in slots and len(set(slots)) == 6
    assert pool.allocate() is None
    assert pool.allocated_bytes == 6 * SLOT
    for slot in slots:
        pool.view(slot).fill_(slot)
    assert all(int(pool.view(s)[0]) == s and int(pool.view(s)[-1]) == s for s in slots)


def test_capacity_below_one_slot_stores_nothing_and_does_not_raise() -> None:
    cache = _cache(0, capacity=SLOT - 1)
    assert not _put(cache, "a")
    assert cache.allocated_bytes == 0


def test_oversized_chunk_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        _cache(2).reserve("big", SLOT + 1)


def test_pinned_chunks_survive_pressure_with_bytes_intact() -> None:
    cache = _cache(4)
    for k in "abcd":
        _put(cache, k)
    pinned = {k: cache.acquire(k) for k in "ab"}
    for i in range(50):
        assert _put(cache, f"x{i}")
    for k, view in pinned.items():
        assert k in cache
        assert torch.equal(view, pattern(k, SLOT)), "a pinned slot was reused"
        cache.release(k)
    for i in range(8):
        _put(cache, f"y{i}")
    assert "a" not in cache and "b" not in cache, "released chunks are evictable again"


def test_reserve_fails_only_when_everything_is_pinned() -> None:
    cache = _cache(2)
    _put(cache, "a")
    _put(cache, "b")
    cache.acquire("a")
    cache.acquire("b")
    assert not _put(cache, "c")
    assert "c" not in cache
    cache.release("b")
    assert _put(cache, "c")
    assert "b" not in cache and "a" in cache


def test_remove_refuses_pinned_and_frees_the_slot() -> None:
    cache = _cache(1)
    _put(cache, "a")
    cache.acquire("a")
    assert not cache.remove("a")
    cache.release("a")
    assert cache.remove("a")
    assert "a" not in cache
    assert _put(cache, "b") and cache.evictions == 0


def test_reserve_commit_abort_visibility() -> None:
    cache = _cache(2)
    view = cache.reserve("a", SLOT)
    assert view is not None
    assert "a" not in cache and cache.acquire("a") is None and cache.contains_many(["a"]) == 0
    assert cache.reserve("a", SLOT) is None, "a key being written cannot be reserved twice"
    view.copy_(pattern("a", SLOT))
    cache.commit("a")
    assert "a" in cache and _content_ok(cache, "a")

    assert cache.reserve("b", SLOT) is not None
    cache.abort("b")
    assert "b" not in cache and len(cache) == 1
    assert _put(cache, "b") and _put(cache, "c")  # the aborted slot is free again
    assert cache.evictions == 1


def test_chunks_being_written_are_not_evicted() -> None:
    cache = _cache(1)
    assert cache.reserve("a", SLOT) is not None
    assert cache.reserve("b", SLOT) is None
    cache.commit("a")
    assert cache.reserve("b", SLOT) is not None


def test_put_of_present_key_is_refused_without_overwrite() -> None:
    cache = _cache(2)
    _put(cache, "a")
    assert not cache.put("a", pattern("other", SLOT))
    assert _content_ok(cache, "a")


def test_contains_many_counts_the_leading_run() -> None:
    cache = _cache(4)
    for k in "abd":
        _put(cache, k)
    assert cache.contains_many(list("abcd")) == 2
    assert cache.contains_many(list("xab")) == 0


def test_eviction_callback_sees_the_victims_bytes() -> None:
    seen: dict[str, bytes] = {}
    cache = _cache(2, on_evict=lambda k, data: seen.setdefault(k, data.numpy().tobytes()))
    for k in "abc":
        _put(cache, k)
    assert seen == {"a": pattern("a", SLOT).numpy().tobytes()}


def test_internal_pins_do_not_count_as_hits() -> None:
    policy = S3FIFOPolicy(capacity_entries=3, small_ratio=0.3)
    cache = _cache(3, policy=policy)
    for k in "abc":
        _put(cache, k)
    cache.acquire("a", hit=False)
    cache.release("a")
    _put(cache, "d")
    assert "a" not in cache, "a pin without a hit must not promote the chunk"


def test_threads_put_and_read_random_keys_without_corruption() -> None:
    cache = _cache(8, slab_slots=2)
    errors: list[str] = []
    stop = threading.Event()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(400):
            if stop.is_set():
                return
            key = f"k{rng.randrange(24)}"
            if rng.random() < 0.5:
                _put(cache, key)
                continue
            view = cache.acquire(key)
            if view is None:
                continue
            try:
                if not torch.equal(view, pattern(key, SLOT)):
                    errors.append(key)
                    stop.set()
            finally:
                cache.release(key)
            if cache.allocated_bytes > 8 * SLOT:
                errors.append("over capacity")

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(cache) <= 8
    assert cache.evictions > 0, "the smoke test must actually exercise eviction"
