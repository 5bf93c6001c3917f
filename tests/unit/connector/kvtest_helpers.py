"""Helpers shared by the cache-core unit tests: small configs, deterministic payloads, L2 wrappers.

Payload bytes are a pure function of the key, so any test can check that what a tier returns is
exactly what was saved under that key (and not a neighbour's bytes or a reused slot's).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from connector.chunk import HEADER_BYTES
from connector.config import CacheConfig
from connector.l2.base import Buffer, L2Backend

CHUNK = 16
PAYLOAD = 1024


def config(**overrides: Any) -> CacheConfig:
    """A config from an empty environment: small chunks, `overrides` by setting name."""
    base: dict[str, Any] = {"CHUNK_SIZE": CHUNK, "BLOCK_SIZE": CHUNK}
    base.update(overrides)
    return CacheConfig.from_env({}, base)


def l1_gb(slots: int, payload: int = PAYLOAD, tokens: bool = False) -> float:
    """L1_CACHE_CAPACITY_GB holding exactly `slots` chunks of `payload` bytes."""
    slot = HEADER_BYTES + payload + (CHUNK * 4 if tokens else 0)
    return slots * slot / (1 << 30)


def pattern(key: str, nbytes: int = PAYLOAD) -> torch.Tensor:
    return torch.frombuffer(bytearray(hashlib.shake_128(key.encode()).digest(nbytes)), dtype=torch.uint8)


def fill_for(key: str) -> Callable[[torch.Tensor], None]:
    def fill(view: torch.Tensor) -> None:
        view.copy_(pattern(key, view.numel()))

    return fill


class Collect:
    """A load sink keeping a copy of every delivered payload by index."""

    def __init__(self) -> None:
        self.got: dict[int, bytes] = {}

    def __call__(self, index: int, payload: torch.Tensor) -> None:
        assert index not in self.got, f"chunk {index} delivered twice"
        self.got[index] = payload.numpy().tobytes()


def keys(n: int, prefix: str = "ns") -> list[str]:
    return [f"{prefix}:tp0pp0:{i:064x}" for i in range(n)]


class Wrapped(L2Backend):
    """Delegates to `inner`, with hooks a test can use to make one operation slow or failing."""

    def __init__(self, inner: L2Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: dict[str, int] = {"exists": 0, "get": 0, "put": 0, "delete": 0}
        self.put_items: list[str] = []
        self.fail: BaseException | None = None
        self.gate: threading.Event | None = None
        self.gated_ops: set[str] = set()
        self.entered = threading.Semaphore(0)
        self.finished = threading.Semaphore(0)  # released when an exists/get returns
        self._lock = threading.Lock()

    def _enter(self, op: str) -> None:
        with self._lock:
            self.calls[op] += 1
        if self.fail is not None:
            raise self.fail
        if self.gate is not None and op in self.gated_ops:
            self.entered.release()
            self.gate.wait(timeout=20.0)

    def exists(self, keys: Sequence[str]) -> list[bool]:
        self._enter("exists")
        found = self.inner.exists(keys)
        self.finished.release()
        return found

    def get(self, keys: Sequence[str]) -> list[Buffer | None]:
        self._enter("get")
        values = self.inner.get(keys)
        self.finished.release()
        return values

    def put(self, items: Sequence[tuple[str, Buffer]]) -> None:
        self._enter("put")
        with self._lock:
            self.put_items.extend(key for key, _ in items)
        self.inner.put(items)

    def delete(self, keys: Sequence[str]) -> None:
        self._enter("delete")
        self.inner.delete(keys)

    def close(self) -> None:
        self.inner.close()


def run_bounded(fn: Callable[[], Any], limit_s: float) -> Any:
    """`fn()` on a thread; fails the test if it has not returned after `limit_s` (a hang guard)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"call still blocked after {limit_s} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")
