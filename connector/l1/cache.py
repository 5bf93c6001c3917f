"""L1: chunks in host memory inside the engine process, bounded in bytes, evicting to make room.

Writers `reserve` a slot, fill it outside the lock, then `commit` (or `abort`); until committed a
chunk is invisible to readers. Readers `acquire` a committed chunk, which pins it: a pinned chunk is
never evicted or reused until `release`. Invariants: memory never exceeds the capacity given at
construction; a full cache evicts rather than fails, and fails a `reserve` only when every resident
chunk is pinned or being written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from connector.l1.eviction import EvictionPolicy
from connector.l1.slab_pool import DEFAULT_SLAB_BYTES, SlabPool

EvictCallback = Callable[[str, torch.Tensor], None]


@dataclass
class _Entry:
    slot: int
    nbytes: int
    pins: int = 0
    committed: bool = False


class L1Cache:
    """A byte-bounded map from chunk key to bytes in fixed-size slots of `slot_bytes`."""

    def __init__(
        self,
        slot_bytes: int,
        capacity_bytes: int,
        policy: EvictionPolicy,
        *,
        pin_memory: bool = False,
        slab_bytes: int = DEFAULT_SLAB_BYTES,
        on_evict: EvictCallback | None = None,
    ) -> None:
        self._pool = SlabPool(slot_bytes, capacity_bytes, slab_bytes=slab_bytes, pin_memory=pin_memory)
        self._policy = policy
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._on_evict = on_evict
        self.capacity_bytes = capacity_bytes
        self.evictions = 0

    @property
    def slot_bytes(self) -> int:
        return self._pool.slot_bytes

    @property
    def capacity_entries(self) -> int:
        return self._pool.capacity_slots

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    @property
    def allocated_bytes(self) -> int:
        return self._pool.allocated_bytes

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for e in self._entries.values() if e.committed)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.committed

    def contains_many(self, keys: list[str]) -> int:
        """How many of `keys`, from the first, are resident (the length of the cached prefix)."""
        with self._lock:
            for i, key in enumerate(keys):
                entry = self._entries.get(key)
                if entry is None or not entry.committed:
                    return i
            return len(keys)

    def _evictable(self, key: object) -> bool:
        entry = self._entries[key]  # type: ignore[index]
        return entry.committed and entry.pins == 0

    def reserve(self, key: str, nbytes: int) -> torch.Tensor | None:
        """A writable view of `nbytes` for `key`, or None if `key` is present or nothing can be evicted."""
        if nbytes > self._pool.slot_bytes:
            raise ValueError(f"chunk of {nbytes} bytes does not fit a {self._pool.slot_bytes}-byte slot")
        victim: tuple[str, int] | None = None
        with self._lock:
            if key in self._entries:
                return None
            slot = self._pool.allocate()
            if slot is None:
                victim_key = self._policy.pick_victim(self._evictable)
                if victim_key is None:
                    return None
                gone = self._entries.pop(victim_key)  # type: ignore[arg-type]
                slot = gone.slot
                victim = (victim_key, gone.nbytes)  # type: ignore[assignment]
                self.evictions += 1
            self._entries[key] = _Entry(slot=slot, nbytes=nbytes)
        view = self._pool.view(slot)
        if victim is not None and self._on_evict is not None:
            self._on_evict(victim[0], view[: victim[1]])
        return view[:nbytes]

    def commit(self, key: str) -> None:
        with self._lock:
            entry = self._entries[key]
            if not entry.committed:
                entry.committed = True
                self._policy.on_insert(key)

    def abort(self, key: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and not entry.committed:
                del self._entries[key]
                self._pool.release(entry.slot)

    def put(self, key: str, data: torch.Tensor) -> bool:
        """Copy a 1-D uint8 tensor in under `key`; False if already present or no room."""
        view = self.reserve(key, data.numel())
        if view is None:
            return False
        try:
            view.copy_(data)
        except BaseException:
            self.abort(key)
            raise
        self.commit(key)
        return True

    def acquire(self, key: str, *, hit: bool = True) -> torch.Tensor | None:
        """Pin `key` and return its bytes; None on a miss. Pair with `release`.

        `hit=False` pins without telling the eviction policy, for the cache's own reads (copying a
        chunk to L2): those are not reuse, and counting them would promote every chunk.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not entry.committed:
                return None
            entry.pins += 1
            if hit:
                self._policy.on_hit(key)
            slot, nbytes = entry.slot, entry.nbytes
        return self._pool.view(slot)[:nbytes]

    def touch(self, key: str) -> None:
        """Count a reuse of a resident `key` (for callers that pinned it with `hit=False`)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.committed:
                self._policy.on_hit(key)

    def is_reserved(self, key: str) -> bool:
        """Whether `key` is resident or being written (a `reserve` for it would return None)."""
        with self._lock:
            return key in self._entries

    def release(self, key: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.pins > 0:
                entry.pins -= 1

    def remove(self, key: str) -> bool:
        """Drop `key` unless it is pinned or being written; True if it was dropped."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.pins or not entry.committed:
                return False
            del self._entries[key]
            self._policy.on_remove(key)
            self._pool.release(entry.slot)
            return True
