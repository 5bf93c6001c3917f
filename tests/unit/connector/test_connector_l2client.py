"""L2Client outage handling: misses instead of errors, one warning per outage, probes, recovery."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from kvtest_helpers import Wrapped, run_bounded

from connector.l2.base import L2Error
from connector.l2.client import L2Client
from connector.l2.fs import FSBackend
from connector.metrics import CacheMetrics

LOGGER = "connector.l2.client"
DOWN = L2Error("connection refused", "connection")


@pytest.fixture
def backend(tmp_path: Path) -> Wrapped:
    inner = FSBackend(tmp_path, capacity_bytes=1 << 20)
    inner.put([("ns:tp0pp0:aa", b"stored")])
    return Wrapped(inner)


def _client(backend: Wrapped, retry_interval_s: float) -> L2Client:
    return L2Client(backend, CacheMetrics(), num_workers=4, retry_interval_s=retry_interval_s)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def _until(predicate, limit_s: float = 10.0) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_outage_gives_misses_one_warning_and_recovers(backend: Wrapped, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    client = _client(backend, retry_interval_s=0.1)
    key = ["ns:tp0pp0:aa"]
    assert client.exists(key, 5.0).result() == [True]

    backend.fail = DOWN
    for _ in range(20):
        assert client.exists(key, 5.0).result() == [False]
        assert client.get(key, 5.0).result() == [None]
        assert client.put([("ns:tp0pp0:bb", b"x")], 5.0).result() is False
    assert len(_warnings(caplog)) == 1
    totals = client._metrics.totals()
    assert totals["l2_errors.connection"] >= 1
    assert totals["skipped_writes.l2_unavailable"] >= 1

    backend.fail = None
    assert _until(lambda: client.exists(key, 5.0).result() == [True]), "recovers by itself"
    assert client.get(key, 5.0).result() == [b"stored"]
    assert len(_warnings(caplog)) == 1, "the recovery is not a second warning"
    assert any("back" in r.getMessage() for r in caplog.records if r.name == LOGGER)

    backend.fail = DOWN
    client.exists(key, 5.0).result()
    assert len(_warnings(caplog)) == 2, "a new outage warns again"
    client.close()


def test_during_an_outage_the_store_sees_one_probe_per_interval(backend: Wrapped) -> None:
    client = _client(backend, retry_interval_s=30.0)
    backend.fail = DOWN
    for _ in range(10):
        client.exists(["k"], 5.0).result()
    assert backend.calls["exists"] == 1, "refused without touching the store while down"
    client._down_until = 0.0  # the interval is over
    results = [client.exists(["k"], 5.0) for _ in range(10)]
    assert all(r.result() == [False] for r in results)
    assert backend.calls["exists"] == 2, "one probe, not a stampede"
    client.close()


def test_a_straggler_from_before_the_outage_does_not_end_it(backend: Wrapped, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    client = _client(backend, retry_interval_s=30.0)
    backend.gate, backend.gated_ops = threading.Event(), {"get"}
    slow = client.get(["ns:tp0pp0:aa"], 10.0)
    assert backend.entered.acquire(timeout=10)
    backend.fail = DOWN
    client.exists(["k"], 5.0).result()  # the outage starts
    backend.fail = None
    backend.gate.set()
    assert slow.result() == [b"stored"]
    assert not client.available, "a reply to a request sent before the outage proves nothing"
    backend.fail = DOWN
    client._down_until = 0.0
    client.exists(["k"], 5.0).result()
    assert len(_warnings(caplog)) == 1, "still the same outage"
    client.close()


def test_repeated_timeouts_start_an_outage_even_if_replies_come_late(backend: Wrapped, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    client = _client(backend, retry_interval_s=30.0)
    for _ in range(3):
        backend.gate, backend.gated_ops = threading.Event(), {"exists"}
        assert run_bounded(lambda: client.exists(["k"], 0.05).result(), 5.0) == [False]
        backend.gate.set()
        assert backend.finished.acquire(timeout=10), "the late reply arrives"
    assert client._metrics.totals()["l2_errors.timeout"] == 3
    assert not client.available, "three timeouts in a row are an outage"
    assert len(_warnings(caplog)) == 1
    client.close()


def test_backend_exceptions_of_any_kind_become_misses(backend: Wrapped) -> None:
    client = _client(backend, retry_interval_s=0.1)
    backend.fail = RuntimeError("bug in a client library")
    assert client.exists(["k"], 5.0).result() == [False]
    assert client.delete(["k"], 5.0).result() is False
    assert client._metrics.totals()["l2_errors.error"] == 2
    assert client.available, "an error that is not a connection failure is not an outage"
    client.close()


def test_batches_respect_op_batch(backend: Wrapped) -> None:
    client = L2Client(backend, CacheMetrics(), num_workers=2, op_batch=3)
    keys = [f"ns:tp0pp0:{i:02x}" for i in range(8)]
    assert client.exists(keys, 5.0).result() == [False] * 8
    assert backend.calls["exists"] == 3
    client.close()
