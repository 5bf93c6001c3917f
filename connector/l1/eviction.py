"""Eviction policies for L1: which resident chunk to drop when a new one needs room.

A policy only orders keys; it never touches bytes. The cache tells it about inserts, hits and
removals, and asks for a victim among the keys it may evict (not pinned by a reader). Invariant:
the policy tracks exactly the keys the cache holds (plus, for S3FIFO, a bounded ghost list of keys
it recently evicted, which holds no data).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable

from connector.config import CacheConfig, EvictionPolicyName

Key = Hashable
CanEvict = Callable[[Key], bool]


class EvictionPolicy(ABC):
    """Orders resident keys for eviction. Not thread-safe: the cache serialises calls."""

    @abstractmethod
    def on_insert(self, key: Key) -> None: ...

    @abstractmethod
    def on_hit(self, key: Key) -> None: ...

    @abstractmethod
    def on_remove(self, key: Key) -> None:
        """`key` left the cache for a reason other than `pick_victim` (e.g. deleted)."""

    @abstractmethod
    def pick_victim(self, can_evict: CanEvict) -> Key | None:
        """Remove and return the next key to evict, or None when every key is protected."""

    @abstractmethod
    def __len__(self) -> int: ...


class FIFOPolicy(EvictionPolicy):
    """Evict in insertion order; hits change nothing."""

    def __init__(self) -> None:
        self._order: OrderedDict[Key, None] = OrderedDict()

    def on_insert(self, key: Key) -> None:
        self._order[key] = None

    def on_hit(self, key: Key) -> None:
        pass

    def on_remove(self, key: Key) -> None:
        self._order.pop(key, None)

    def pick_victim(self, can_evict: CanEvict) -> Key | None:
        for key in self._order:
            if can_evict(key):
                del self._order[key]
                return key
        return None

    def __len__(self) -> int:
        return len(self._order)


class LRUPolicy(FIFOPolicy):
    """Evict the least recently inserted-or-hit key."""

    def on_hit(self, key: Key) -> None:
        if key in self._order:
            self._order.move_to_end(key)


class S3FIFOPolicy(EvictionPolicy):
    """S3-FIFO: a small probationary FIFO, a main FIFO with second chances, and a ghost list.

    New keys enter the small queue (or main, if the ghost list remembers them). When the small queue
    is over its share, its oldest key is promoted to main if it was hit at least `promote_threshold`
    times, otherwise evicted (its key goes to the ghost list). Main gives keys with hits a second
    pass, decrementing their count. One-hit wonders therefore never displace the working set.
    """

    _MAX_FREQ = 3

    def __init__(self, capacity_entries: int, small_ratio: float = 0.3, promote_threshold: int = 1) -> None:
        self._small_cap = max(1, int(capacity_entries * small_ratio))
        self._ghost_cap = max(1, capacity_entries - self._small_cap)
        self._threshold = promote_threshold
        self._small: OrderedDict[Key, None] = OrderedDict()
        self._main: OrderedDict[Key, None] = OrderedDict()
        self._ghost: OrderedDict[Key, None] = OrderedDict()
        self._freq: dict[Key, int] = {}

    def on_insert(self, key: Key) -> None:
        self._freq[key] = 0
        if key in self._ghost:
            del self._ghost[key]
            self._main[key] = None
        else:
            self._small[key] = None

    def on_hit(self, key: Key) -> None:
        if key in self._freq:
            self._freq[key] = min(self._freq[key] + 1, self._MAX_FREQ)

    def on_remove(self, key: Key) -> None:
        self._small.pop(key, None)
        self._main.pop(key, None)
        self._freq.pop(key, None)

    def _remember(self, key: Key) -> None:
        self._ghost[key] = None
        while len(self._ghost) > self._ghost_cap:
            self._ghost.popitem(last=False)

    def _evict_small(self, can_evict: CanEvict) -> Key | None:
        for _ in range(len(self._small)):
            key, _ = self._small.popitem(last=False)
            if not can_evict(key):
                self._small[key] = None
                continue
            if self._freq[key] >= self._threshold:
                self._freq[key] = 0
                self._main[key] = None
                continue
            del self._freq[key]
            self._remember(key)
            return key
        return None

    def _evict_main(self, can_evict: CanEvict) -> Key | None:
        # Each key is revisited at most MAX_FREQ + 1 times before it loses all its credit.
        for _ in range(len(self._main) * (self._MAX_FREQ + 1)):
            if not self._main:
                break
            key, _ = self._main.popitem(last=False)
            if not can_evict(key):
                self._main[key] = None
                continue
            if self._freq[key] > 0:
                self._freq[key] -= 1
                self._main[key] = None
                continue
            del self._freq[key]
            return key
        return None

    def pick_victim(self, can_evict: CanEvict) -> Key | None:
        if len(self._small) >= self._small_cap or not self._main:
            victim = self._evict_small(can_evict)
            return victim if victim is not None else self._evict_main(can_evict)
        victim = self._evict_main(can_evict)
        return victim if victim is not None else self._evict_small(can_evict)

    def __len__(self) -> int:
        return len(self._small) + len(self._main)


def make_policy(config: CacheConfig, capacity_entries: int) -> EvictionPolicy:
    """The policy named by `L1_CACHE_EVICTION_POLICY`, sized for `capacity_entries` chunks."""
    match config.l1_eviction_policy:
        case EvictionPolicyName.FIFO:
            return FIFOPolicy()
        case EvictionPolicyName.LRU:
            return LRUPolicy()
        case EvictionPolicyName.S3FIFO:
            return S3FIFOPolicy(
                capacity_entries,
                config.s3fifo_small_fifo_capacity_ratio,
                config.s3fifo_small_to_main_promo_threshold,
            )
    raise AssertionError(config.l1_eviction_policy)
