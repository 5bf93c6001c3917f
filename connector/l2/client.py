"""The asynchronous face of an L2 backend: batching, deadlines, outage handling, metrics.

Every call returns a `Pending` at once; its `result()` is ready within the deadline. It never raises:
a failure or a timeout yields the operation's "miss" value (False / None / 0 written) and is counted.
When the store is unreachable the client logs one warning, answers misses immediately for
`retry_interval_s`, then lets one operation through as a probe (per interval); the first success logs
the recovery (at INFO: one warning per outage). Only an operation that started after the outage was
detected and finished within its deadline counts as that success, so a straggler from before the
outage, or a reply too late to be used, neither ends the outage nor causes a second warning.
Work runs on `num_workers` threads, so a slow store never blocks the caller.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

from connector.l2.base import Buffer, L2Backend, L2Error
from connector.metrics import CacheMetrics
from connector.profiling import span

log = logging.getLogger(__name__)
T = TypeVar("T")
U = TypeVar("U")

_TIMEOUTS_BEFORE_OUTAGE = 3


class Pending(Generic[T]):
    """A result that will be ready by `deadline` (monotonic seconds), or the fallback value."""

    def __init__(
        self, future: Future[T] | None, deadline: float, fallback: T, on_timeout: Callable[[], None]
    ) -> None:
        self._future = future
        self._deadline = deadline
        self._fallback = fallback
        self._on_timeout = on_timeout
        self._value: T | None = None
        self._resolved = future is None

    def done(self) -> bool:
        return self._resolved or self._future.done() or time.monotonic() >= self._deadline  # type: ignore[union-attr]

    def result(self) -> T:
        if self._resolved:
            return self._fallback if self._future is None else self._value  # type: ignore[return-value]
        try:
            self._value = self._future.result(timeout=max(0.0, self._deadline - time.monotonic()))  # type: ignore[union-attr]
        except FutureTimeout:
            self._future.cancel()  # type: ignore[union-attr]
            self._on_timeout()
            self._value = self._fallback
        self._resolved = True
        return self._value  # type: ignore[return-value]

    def wait(self, seconds: float) -> bool:
        """Block up to `seconds` for the result; True if `result()` will not block."""
        if not self.done() and self._future is not None:
            with contextlib.suppress(FutureTimeout):
                self._future.result(timeout=max(0.0, min(seconds, self._deadline - time.monotonic())))
        return self.done()

    def add_done_callback(self, fn: Callable[[T], None]) -> None:
        """Call `fn(value)` when the operation really finishes (not at the deadline)."""
        if self._future is None:
            fn(self._fallback)
            return
        fallback = self._fallback

        def call(future: Future[T]) -> None:
            fn(fallback if future.cancelled() else future.result())

        self._future.add_done_callback(call)

    def map(self, fn: Callable[[T], U]) -> Pending[U]:
        return _Mapped(self, fn)


class _Mapped(Pending[U]):
    def __init__(self, inner: Pending[T], fn: Callable[[T], U]) -> None:
        self._inner = inner
        self._fn = fn
        self._mapped: list[U] = []

    def done(self) -> bool:
        return self._inner.done()

    def wait(self, seconds: float) -> bool:
        return self._inner.wait(seconds)

    def result(self) -> U:
        if not self._mapped:
            self._mapped.append(self._fn(self._inner.result()))
        return self._mapped[0]

    def add_done_callback(self, fn: Callable[[U], None]) -> None:
        self._inner.add_done_callback(lambda value: fn(self._fn(value)))


def resolved(value: T) -> Pending[T]:
    return Pending(None, 0.0, value, lambda: None)


class L2Client:
    def __init__(
        self,
        backend: L2Backend,
        metrics: CacheMetrics,
        *,
        num_workers: int = 8,
        op_batch: int = 32,
        retry_interval_s: float = 1.0,
    ) -> None:
        self.backend = backend
        self._metrics = metrics
        self._pool = ThreadPoolExecutor(
            max_workers=num_workers, thread_name_prefix=f"l2-{backend.name.lower()}"
        )
        self._batch = op_batch
        self._retry_interval = retry_interval_s
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._in_outage = False
        self._outage_since = 0.0
        self.outages = 0
        """How many outages began; a store that was unreachable may have lost what it held."""
        self._timeouts = 0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        kind = exc.kind if isinstance(exc, L2Error) else "error"
        self._metrics.l2_error(kind)
        with self._lock:
            if kind == "connection" or self._timeouts >= _TIMEOUTS_BEFORE_OUTAGE:
                self._down_until = time.monotonic() + self._retry_interval
                if not self._in_outage:
                    self._in_outage = True
                    self._outage_since = time.monotonic()
                    self.outages += 1
                    log.warning(
                        "L2 %s unavailable (%s); serving misses until it is back", self.backend.name, exc
                    )

    def _succeeded(self, started: float) -> None:
        with self._lock:
            if self._in_outage and started < self._outage_since:
                return
            self._timeouts = 0
            if self._in_outage:
                self._in_outage = False
                self._down_until = 0.0
                log.info("L2 %s is back", self.backend.name)

    def _admit(self) -> bool:
        """Whether an operation may reach the store now; during an outage, one probe per interval."""
        with self._lock:
            now = time.monotonic()
            if now < self._down_until:
                return False
            if self._in_outage:
                self._down_until = now + self._retry_interval
            return True

    def _timed_out(self) -> None:
        with self._lock:
            self._timeouts += 1
        self._failed(L2Error("deadline exceeded", "timeout"))

    def submit(self, op: str, fn: Callable[[], T], fallback: T, timeout_s: float) -> Pending[T]:
        """Run `fn` on an L2 worker; `fallback` stands for its result on failure or timeout."""
        if not self._admit():
            if op == "put":
                self._metrics.skipped_write("l2_unavailable")
            return resolved(fallback)
        deadline = time.monotonic() + timeout_s

        def run() -> T:
            started = time.monotonic()
            start = time.perf_counter()
            try:
                with span(f"l2_{op}", "l2"):
                    value = fn()
            except Exception as exc:
                self._failed(exc)
                return fallback
            self._metrics.latency("l2", op, time.perf_counter() - start)
            if time.monotonic() <= deadline:
                self._succeeded(started)
            return value

        return Pending(self._pool.submit(run), deadline, fallback, self._timed_out)

    def _batched(self, keys: Sequence[str], call: Callable[[Sequence[str]], list]) -> list:
        out: list = []
        for i in range(0, len(keys), self._batch):
            out.extend(call(keys[i : i + self._batch]))
        return out

    def exists(self, keys: Sequence[str], timeout_s: float) -> Pending[list[bool]]:
        keys = list(keys)
        return self.submit(
            "exists", lambda: self._batched(keys, self.backend.exists), [False] * len(keys), timeout_s
        )

    def get(self, keys: Sequence[str], timeout_s: float) -> Pending[list[Buffer | None]]:
        keys = list(keys)
        return self.submit(
            "get", lambda: self._batched(keys, self.backend.get), [None] * len(keys), timeout_s
        )

    def put(self, items: Sequence[tuple[str, Buffer]], timeout_s: float) -> Pending[bool]:
        items = list(items)

        def run() -> bool:
            for i in range(0, len(items), self._batch):
                self.backend.put(items[i : i + self._batch])
            return True

        return self.submit("put", run, False, timeout_s)

    def delete(self, keys: Sequence[str], timeout_s: float) -> Pending[bool]:
        keys = list(keys)

        def run() -> bool:
            self.backend.delete(keys)
            return True

        return self.submit("delete", run, False, timeout_s)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.backend.close()
