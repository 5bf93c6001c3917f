"""Eviction policies: the order of victims, and protection of keys the cache may not evict."""

from __future__ import annotations

import pytest

from connector.config import CacheConfig
from connector.l1.eviction import FIFOPolicy, LRUPolicy, S3FIFOPolicy, make_policy


def _any(_key: object) -> bool:
    return True


def _drain(policy, can_evict=_any) -> list:
    out = []
    while (victim := policy.pick_victim(can_evict)) is not None:
        out.append(victim)
    return out


def test_fifo_evicts_in_insertion_order_and_ignores_hits() -> None:
    p = FIFOPolicy()
    for k in "abcd":
        p.on_insert(k)
    p.on_hit("a")
    p.on_hit("a")
    assert _drain(p) == list("abcd")
    assert len(p) == 0


def test_lru_evicts_least_recently_used() -> None:
    p = LRUPolicy()
    for k in "abcd":
        p.on_insert(k)
    p.on_hit("a")
    p.on_hit("c")
    assert _drain(p) == list("bdac")


def test_remove_forgets_the_key() -> None:
    for p in (FIFOPolicy(), LRUPolicy(), S3FIFOPolicy(10)):
        for k in "abc":
            p.on_insert(k)
        p.on_remove("b")
        assert len(p) == 2
        assert "b" not in _drain(p)


@pytest.mark.parametrize("policy", [FIFOPolicy, LRUPolicy])
def test_pinned_keys_are_skipped_and_none_when_all_pinned(policy) -> None:
    p = policy()
    for k in "abc":
        p.on_insert(k)
    assert p.pick_victim(lambda k: k != "a") == "b"
    assert p.pick_victim(lambda k: False) is None
    assert len(p) == 2, "a refused pick must not drop keys"
    assert _drain(p) == ["a", "c"]


class _Sim:
    """A cache of `cap` entries driving a policy as L1 does: a victim is asked for only when full."""

    def __init__(self, policy, cap: int) -> None:
        self.policy, self.cap = policy, cap
        self.resident: set = set()
        self.victims: list = []

    def insert(self, key) -> None:
        while len(self.resident) >= self.cap:
            victim = self.policy.pick_victim(_any)
            self.resident.discard(victim)
            self.victims.append(victim)
        self.policy.on_insert(key)
        self.resident.add(key)

    def hit(self, key) -> None:
        if key in self.resident:
            self.policy.on_hit(key)


def test_s3fifo_one_hit_wonders_are_evicted_before_reused_keys() -> None:
    sim = _Sim(S3FIFOPolicy(capacity_entries=10, small_ratio=0.3, promote_threshold=1), cap=10)
    working = ["w0", "w1", "w2", "w3"]
    for k in working:
        sim.insert(k)
        sim.hit(k)
    for i in range(100):
        sim.insert(f"scan{i}")
    assert set(working) <= sim.resident
    assert sim.victims and all(str(v).startswith("scan") for v in sim.victims)


def test_lru_by_contrast_loses_the_working_set_to_a_scan() -> None:
    """The same trace under LRU: shows the S3FIFO test above is not passing trivially."""
    sim = _Sim(LRUPolicy(), cap=10)
    for k in ["w0", "w1", "w2", "w3"]:
        sim.insert(k)
        sim.hit(k)
    for i in range(100):
        sim.insert(f"scan{i}")
    assert not {"w0", "w1", "w2", "w3"} & sim.resident


def test_s3fifo_ghost_reentry_goes_to_main() -> None:
    sim = _Sim(S3FIFOPolicy(capacity_entries=4, small_ratio=0.5), cap=4)
    sim.insert("g")
    assert sim.policy.pick_victim(_any) == "g"  # evicted from small, remembered as a ghost
    sim.resident.discard("g")
    for k in ["g", "a", "b", "c", "d", "e"]:  # g comes back (into main), then new keys
        sim.insert(k)
    assert sim.victims == ["a", "b"]
    assert "g" in sim.resident

    control = _Sim(S3FIFOPolicy(capacity_entries=4, small_ratio=0.5), cap=4)
    for k in ["h", "a", "b", "c", "d"]:  # h was never a ghost: it is just the oldest in small
        control.insert(k)
    assert control.victims == ["h"]


def test_s3fifo_promotion_threshold() -> None:
    p = S3FIFOPolicy(capacity_entries=10, small_ratio=0.3, promote_threshold=2)
    for k in "abc":
        p.on_insert(k)
    p.on_hit("a")  # one hit: below the threshold of 2
    p.on_hit("b")
    p.on_hit("b")  # two hits: promoted
    assert p.pick_victim(_any) == "a"
    assert p.pick_victim(_any) == "c"
    assert p.pick_victim(_any) == "b"

    p = S3FIFOPolicy(capacity_entries=10, small_ratio=0.3, promote_threshold=1)
    for k in "abc":
        p.on_insert(k)
    p.on_hit("a")  # with a threshold of 1, one hit is enough
    assert p.pick_victim(_any) == "b"


def test_s3fifo_main_gives_hit_keys_a_second_chance() -> None:
    p = S3FIFOPolicy(capacity_entries=10, small_ratio=0.1, promote_threshold=1)
    for k in "ab":
        p.on_insert(k)
        p.on_hit(k)
    p.on_insert("c")
    assert p.pick_victim(_any) == "c"  # a and b are promoted to main on the way, c had no hit
    p.on_hit("a")
    assert p.pick_victim(_any) == "b"  # a spends its hit for another pass
    assert p.pick_victim(_any) == "a"


def test_s3fifo_pinned_keys_are_skipped_and_none_when_all_pinned() -> None:
    p = S3FIFOPolicy(capacity_entries=6)
    for k in "abcd":
        p.on_insert(k)
    p.on_hit("d")
    assert p.pick_victim(lambda k: k not in ("a", "b")) == "c"
    assert p.pick_victim(lambda k: False) is None
    assert len(p) == 3
    assert set(_drain(p)) == {"a", "b", "d"}


def test_make_policy_follows_the_config() -> None:
    for name, cls in (("FIFO", FIFOPolicy), ("LRU", LRUPolicy), ("S3FIFO", S3FIFOPolicy)):
        cfg = CacheConfig.from_env({"AIBRIX_KV_CACHE_OL_L1_CACHE_EVICTION_POLICY": name})
        assert type(make_policy(cfg, 8)) is cls
