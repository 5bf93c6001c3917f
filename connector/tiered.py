"""The tiered cache: L1 host memory in front of an optional shared L2 store.

Engine-agnostic: it moves opaque chunk payloads of a fixed size, named by storage keys
(`connector.keys`). An engine adapter fills payloads on save and consumes them on load through
callbacks that see a 1-D uint8 tensor, so the bytes are copied once between the engine's KV and a
cache slot.

Invariants:
- `load` returns chunks only as a consecutive run from the first key; each is either an L1 chunk or
  an L2 chunk that passed validation (complete, checksum, key, layout). A bad L2 chunk is deleted,
  counted and treated as a miss.
- Nothing here raises because L2 misbehaves: L2 trouble turns into misses and skipped writes.
- L2 writes never overwrite a stored chunk and never block the caller: they run on L2 worker
  threads, at most `L2_CACHE_INGESTION_MAX_INFLIGHT_TOKENS` tokens in flight (0: 64 chunks); a
  write beyond the bound is skipped and counted.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from connector.chunk import HEADER_BYTES, ChunkFormatError, ChunkLayout, validate, write_header
from connector.config import CacheConfig, IngestionType
from connector.l1 import L1Cache, make_policy
from connector.l2 import L2Backend, L2Client
from connector.metrics import CacheMetrics
from connector.profiling import span

log = logging.getLogger(__name__)

Fill = Callable[[torch.Tensor], None]
Sink = Callable[[int, torch.Tensor], None]
L1Listener = Callable[[str, bool], None]
"""Told `(key, True)` when a chunk becomes resident in L1 and `(key, False)` when it leaves."""

L1 = "l1"
L2 = "l2"
_KNOWN_IN_L2_MAX = 1 << 16
AUTO_INFLIGHT_CHUNKS = 64
"""In-flight L2 write bound, in chunks, when L2_CACHE_INGESTION_MAX_INFLIGHT_TOKENS is 0."""
_STAGING_KEEP = 2
"""Idle staging buffers kept for L1-less saves; more in flight at once are allocated and dropped."""


@dataclass(frozen=True)
class LookupResult:
    """Consecutive cached chunks from the start: the first `l1` in L1, the next `l2` in L2."""

    l1: int
    l2: int

    @property
    def total(self) -> int:
        return self.l1 + self.l2


@dataclass(frozen=True)
class LoadResult:
    """How many leading chunks `load` delivered, and from which tier."""

    l1: int
    l2: int

    @property
    def total(self) -> int:
        return self.l1 + self.l2


def _as_tensor(buf: object) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only buffers: we never write to them
        return torch.frombuffer(buf, dtype=torch.uint8)  # type: ignore[arg-type]


class TieredCache:
    """Chunks of `payload_bytes` each, in L1 (if enabled) and in `l2` (if given)."""

    def __init__(
        self,
        config: CacheConfig,
        payload_bytes: int,
        *,
        l2: L2Backend | None = None,
        metrics: CacheMetrics | None = None,
        pin_memory: bool = False,
        header_tag: str = "",
        l1_listener: L1Listener | None = None,
    ) -> None:
        self.config = config
        self._l1_listener = l1_listener
        self.metrics = metrics or CacheMetrics()
        tokens_len = config.chunk_size * 4 if config.token_validation_enabled else 0
        self.layout = ChunkLayout(payload_bytes, tokens_len)
        self._ingestion = config.l2_ingestion_type
        self.l1: L1Cache | None = None
        if config.l1_enabled:
            slot = self.layout.total
            capacity = config.l1_capacity_bytes
            self.l1 = L1Cache(
                slot,
                capacity,
                make_policy(config, max(1, capacity // slot)),
                pin_memory=pin_memory,
                on_evict=self._on_l1_evict,
            )
            self.metrics.l1_capacity_bytes.set(capacity)
        self.l2: L2Client | None = None
        if l2 is not None:
            if hasattr(l2, "value_size_hint"):
                l2.value_size_hint = self.layout.total  # type: ignore[attr-defined]
            self.l2 = L2Client(
                l2, self.metrics, num_workers=config.l2_num_async_workers, op_batch=config.l2_op_batch
            )
        self._known_in_l2: OrderedDict[str, None] = OrderedDict()
        self._outages_seen = 0
        self._inflight_tokens = 0
        self._inflight_bound = (
            config.l2_ingestion_max_inflight_tokens or AUTO_INFLIGHT_CHUNKS * config.chunk_size
        )
        self._header_tag = header_tag
        self._lock = threading.Lock()
        self._writes_idle = threading.Condition(self._lock)
        self._staging: list[torch.Tensor] = []

    # ---- lookup -------------------------------------------------------------------------------

    def lookup_l1(self, keys: Sequence[str]) -> int:
        return 0 if self.l1 is None else self.l1.contains_many(list(keys))

    def lookup(self, keys: Sequence[str], num_tokens: int | None = None) -> LookupResult:
        """Longest run of cached chunks from the start, each in L1 or L2; moves no data.

        L1 answers first; L2 is asked (one batched round trip) only about the chunks of the run that
        L1 does not hold. Counts the lookup in the metrics.
        """
        with span("lookup"):
            resident = self._l1_mask(keys)
            missing = [key for key, here in zip(keys, resident, strict=True) if not here]
            in_l2: set[str] = set()
            if missing and self.l2 is not None:
                found = self.l2.exists(missing, self._deadline(len(missing))).result()
                in_l2 = {key for key, present in zip(missing, found, strict=True) if present}
            l1 = l2 = 0
            for key, here in zip(keys, resident, strict=True):
                if here:
                    l1 += 1
                elif key in in_l2:
                    self._remember_l2(key)
                    l2 += 1
                else:
                    break
        size = self.config.chunk_size
        self.metrics.lookup(
            len(keys) * size if num_tokens is None else num_tokens, {L1: l1 * size, L2: l2 * size}
        )
        return LookupResult(l1, l2)

    def _l1_mask(self, keys: Sequence[str]) -> list[bool]:
        if self.l1 is None:
            return [False] * len(keys)
        return [key in self.l1 for key in keys]

    # ---- load ---------------------------------------------------------------------------------

    def load(
        self, keys: Sequence[str], sink: Sink, tokens: Sequence[Sequence[int]] | None = None
    ) -> LoadResult:
        """Deliver the longest run of cached chunks from the start to `sink(index, payload)`.

        Each chunk comes from L1 if resident, else from L2 (all such chunks fetched in one batched
        round trip, then validated and inserted into L1). `tokens[i]` (with TOKEN_VALIDATION_ENABLED)
        must equal the tokens stored with chunk i; without token validation `tokens` is ignored.
        Stops at the first chunk no tier can deliver.
        """
        if not self.layout.tokens_len:
            tokens = None
        with span("load"):
            start = time.perf_counter()
            # Pin every L1 chunk of the run first: inserting the L2 chunks into L1 must not evict
            # chunks this same load is about to deliver. Only delivered chunks count as reuse.
            pinned = [self.l1.acquire(key, hit=False) if self.l1 is not None else None for key in keys]
            stale: list[str] = []
            try:
                missing = [key for key, view in zip(keys, pinned, strict=True) if view is None]
                from_l2: dict[str, object] = {}
                if missing and self.l2 is not None:
                    with span("load", L2):
                        values = self.l2.get(missing, self._deadline(len(missing))).result()
                    from_l2 = {k: v for k, v in zip(missing, values, strict=True) if v is not None}
                    for key in missing:
                        if key not in from_l2:
                            self._forget_l2(key)
                l1 = l2 = 0
                for index, (key, view) in enumerate(zip(keys, pinned, strict=True)):
                    expected = tokens[index] if tokens is not None else None
                    if view is not None and self._deliver_l1(index, key, view, sink, expected, stale):
                        l1 += 1
                    elif key in from_l2 and self._deliver_l2(index, key, from_l2[key], sink, expected):
                        l2 += 1
                    else:
                        break
            finally:
                for key, view in zip(keys, pinned, strict=True):
                    if view is not None:
                        self.l1.release(key)  # type: ignore[union-attr]
                for key in stale:
                    if self.l1.remove(key):  # type: ignore[union-attr]
                        self._notify_l1(key, False)
                        self._update_l1_gauge()
            elapsed = time.perf_counter() - start
        for tier, count in ((L1, l1), (L2, l2)):
            if count:
                self.metrics.loaded(tier, count * self.layout.payload_len)
                self.metrics.latency(tier, "load", elapsed)
        return LoadResult(l1, l2)

    def _deliver_l1(
        self,
        index: int,
        key: str,
        view: torch.Tensor,
        sink: Sink,
        expected: Sequence[int] | None,
        stale: list[str],
    ) -> bool:
        """Deliver a chunk the caller has pinned in L1; on a token mismatch, mark it `stale` (the
        caller drops it once unpinned)."""
        assert self.l1 is not None
        if expected is not None and not self._tokens_match(view, expected):
            self.metrics.validation_failure()
            stale.append(key)
            return False
        sink(index, view[self.layout.payload_start : self.layout.tokens_start])
        self.l1.touch(key)
        if self._ingestion == IngestionType.HOT:
            self._write_l1_chunk_to_l2(key)
        return True

    def _deliver_l2(
        self, index: int, key: str, value: object, sink: Sink, expected: Sequence[int] | None
    ) -> bool:
        try:
            validate(value, self._header_key(key), self.layout)  # type: ignore[arg-type]
        except ChunkFormatError as exc:
            self._reject(key, str(exc))
            return False
        data = _as_tensor(value)
        if expected is not None and not self._tokens_match(data, expected):
            self._reject(key, "token ids differ")
            return False
        sink(index, data[self.layout.payload_start : self.layout.tokens_start])
        self._remember_l2(key)
        if self.l1 is not None and self.l1.put(key, data):
            self._notify_l1(key, True)
            self._update_l1_gauge()
        return True

    def _reject(self, key: str, why: str) -> None:
        log.warning("discarding L2 chunk %s: %s", key, why)
        self.metrics.validation_failure()
        self._forget_l2(key)
        if self.l2 is not None:
            self.l2.delete([key], self._deadline(1))

    def _tokens_match(self, data: torch.Tensor, expected: Sequence[int]) -> bool:
        stored = data[self.layout.tokens_start : self.layout.total].numpy().tobytes()
        return stored == array("I", expected).tobytes()

    # ---- save ---------------------------------------------------------------------------------

    def save(self, key: str, fill: Fill, tokens: Sequence[int] | None = None) -> bool:
        """Store the chunk `fill(payload)` writes under `key`; False if it was already cached or
        could not be stored (counted). `tokens` is required with TOKEN_VALIDATION_ENABLED."""
        with span("save"):
            if self.l1 is not None:
                return self._save_l1(key, fill, tokens)
            return self._save_l2_only(key, fill, tokens)

    def _fill(self, view: torch.Tensor, fill: Fill, tokens: Sequence[int] | None) -> None:
        fill(view[self.layout.payload_start : self.layout.tokens_start])
        if self.layout.tokens_len:
            if tokens is None or len(tokens) != self.config.chunk_size:
                raise ValueError("token validation needs the chunk's token ids")
            view[self.layout.tokens_start : self.layout.total].copy_(_as_tensor(array("I", tokens)))

    def _save_l1(self, key: str, fill: Fill, tokens: Sequence[int] | None) -> bool:
        assert self.l1 is not None
        start = time.perf_counter()
        if key in self.l1:
            return False
        view = self.l1.reserve(key, self.layout.total)
        if view is None:
            if not self.l1.is_reserved(key):
                self.metrics.skipped_write("l1_full")
            return False
        try:
            self._fill(view, fill, tokens)
        except BaseException:
            self.l1.abort(key)
            raise
        self.l1.commit(key)
        self._notify_l1(key, True)
        self.metrics.saved(L1, self.layout.payload_len)
        self.metrics.latency(L1, "save", time.perf_counter() - start)
        self._update_l1_gauge()
        if self._ingestion == IngestionType.ALL:
            self._write_l1_chunk_to_l2(key)
        return True

    def _save_l2_only(self, key: str, fill: Fill, tokens: Sequence[int] | None) -> bool:
        if self.l2 is None or self._is_known_in_l2(key):
            return False
        buffer = self._take_staging()
        try:
            self._fill(buffer, fill, tokens)
        except BaseException:
            self._give_staging(buffer)
            raise
        return self._write_to_l2(key, buffer, release=lambda: self._give_staging(buffer))

    def _take_staging(self) -> torch.Tensor:
        """A chunk-sized buffer for an L1-less save: reused, because a fresh large allocation is
        mapped anew by the allocator and page-faulting it costs several times the copy itself."""
        with self._lock:
            if self._staging:
                return self._staging.pop()
        return torch.empty(self.layout.total, dtype=torch.uint8)

    def _give_staging(self, buffer: torch.Tensor) -> None:
        with self._lock:
            if len(self._staging) < _STAGING_KEEP:
                self._staging.append(buffer)

    def _on_l1_evict(self, key: str, data: torch.Tensor) -> None:
        self.metrics.evicted(L1)
        self._notify_l1(key, False)
        if self._ingestion == IngestionType.EVICTED and self.l2 is not None and not self._is_known_in_l2(key):
            self._write_to_l2(key, data.clone(), release=None)

    def _write_l1_chunk_to_l2(self, key: str) -> None:
        """Write an L1-resident chunk to L2, pinning its slot until the write is done."""
        if self.l2 is None or self.l1 is None or self._is_known_in_l2(key):
            return
        view = self.l1.acquire(key, hit=False)
        if view is None:
            return
        l1 = self.l1
        self._write_to_l2(key, view, release=lambda: l1.release(key))

    def _write_to_l2(self, key: str, data: torch.Tensor, release: Callable[[], None] | None) -> bool:
        """Queue header + put of `data` (the chunk's full stored form) unless L2 already has it.

        Never waits for L2: when the in-flight bound is reached the write is skipped and counted.
        `release` runs exactly once, when the write no longer needs `data`'s memory: after it ran,
        or at once when it never will (refused during an outage, cancelled at close).
        """
        assert self.l2 is not None
        tokens = self.config.chunk_size
        with self._lock:
            full = self._inflight_tokens + tokens > self._inflight_bound
            if not full:
                self._inflight_tokens += tokens
        if full:
            self.metrics.skipped_write("inflight_full")
            if release:
                release()  # outside the lock: a release may need it (staging buffers)
            return False
        client = self.l2
        start = time.perf_counter()
        stored_key = self._header_key(key)

        def put_if_missing() -> str:
            if client.backend.exists([key])[0]:
                return "present"
            buf = memoryview(data.numpy())
            write_header(buf, stored_key, self.layout)
            client.backend.put([(key, buf)])
            return "written"

        def finished(outcome: str) -> None:
            if release:
                release()
            with self._lock:
                self._inflight_tokens -= tokens
                if self._inflight_tokens == 0:
                    self._writes_idle.notify_all()
            if outcome == "written":
                self.metrics.saved(L2, self.layout.payload_len)
                self.metrics.latency(L2, "save", time.perf_counter() - start)
            if outcome != "failed":
                self._remember_l2(key)

        client.submit("put", put_if_missing, "failed", self._deadline(1)).add_done_callback(finished)
        return True

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait (bounded) until asynchronous L2 writes have finished."""
        with self._writes_idle:
            self._writes_idle.wait_for(lambda: self._inflight_tokens == 0, timeout=timeout_s)

    # ---- bookkeeping --------------------------------------------------------------------------

    def _header_key(self, key: str) -> str:
        """The identity written into (and required from) a stored chunk's header.

        `header_tag` carries what the storage key cannot (e.g. the physical KV layout seen by this
        process), so a chunk written by a differently shaped writer fails validation instead of
        being loaded.
        """
        return f"{key}|{self._header_tag}" if self._header_tag else key

    def _notify_l1(self, key: str, resident: bool) -> None:
        if self._l1_listener is not None:
            self._l1_listener(key, resident)

    def _update_l1_gauge(self) -> None:
        if self.l1 is not None:
            self.metrics.l1_used_bytes.set(self.l1.used_bytes)

    def _deadline(self, chunks: int) -> float:
        return self.config.l2_timeout_s(chunks * self.config.chunk_size)

    def _remember_l2(self, key: str) -> None:
        with self._lock:
            self._known_in_l2[key] = None
            self._known_in_l2.move_to_end(key)
            while len(self._known_in_l2) > _KNOWN_IN_L2_MAX:
                self._known_in_l2.popitem(last=False)

    def _forget_l2(self, key: str) -> None:
        with self._lock:
            self._known_in_l2.pop(key, None)

    def _is_known_in_l2(self, key: str) -> bool:
        """Whether L2 is believed to hold `key`; the belief is dropped after an L2 outage, since a
        restarted store (no persistence, eviction, TTL) may have lost everything."""
        with self._lock:
            if self.l2 is not None and self.l2.outages != self._outages_seen:
                self._outages_seen = self.l2.outages
                self._known_in_l2.clear()
            return key in self._known_in_l2

    def close(self) -> None:
        self.flush(timeout_s=5.0)
        if self.l2 is not None:
            self.l2.close()


__all__ = ["HEADER_BYTES", "L1", "L2", "LoadResult", "LookupResult", "TieredCache"]
