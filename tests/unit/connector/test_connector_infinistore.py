"""INFINISTORE backend through a stand-in for the `infinistore` client (its server needs RDMA).

The stand-in has the client's method names and calling conventions: `tcp_write_cache` and the RDMA
calls read and write raw memory at the pointers they are given (so wrong pointers, sizes or
offsets corrupt data and fail these tests), RDMA needs a registered memory region, a missing key is
`InfiniStoreKeyNotFound`, and a connection dies with the server.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import threading
from typing import Any

import numpy as np
import pytest
from kvtest_helpers import PAYLOAD, Collect, config, fill_for, keys, l1_gb, pattern

from connector.l2 import create_backend
from connector.l2.base import L2Error
from connector.l2.infinistore import InfiniStoreBackend
from connector.tiered import TieredCache


class InfiniStoreKeyNotFound(Exception):
    pass


class StandInServer:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.up = True
        self.connects = 0
        self.ops: dict[str, int] = {}

    def count(self, op: str) -> None:
        self.ops[op] = self.ops.get(op, 0) + 1

    def connection(self, cfg) -> StandInConnection:
        return StandInConnection(self, cfg.infinistore_connection_type)


class StandInConnection:
    def __init__(self, server: StandInServer, connection_type: str, loop: Any = None) -> None:
        self.server = server
        self.rdma = connection_type == "RDMA"
        self.connected = False
        self.regions: list[tuple[int, int]] = []
        self.loop = loop

    def _alive(self) -> None:
        if not (self.connected and self.server.up):
            raise Exception("connection reset by peer")

    def connect(self) -> None:
        if not self.server.up:
            raise Exception("Failed to initialize remote connection")
        self.server.connects += 1
        self.connected = True

    def close(self) -> None:
        self.connected = False

    def check_exist(self, key: str) -> bool:
        self._alive()
        return key in self.server.data

    def tcp_read_cache(self, key: str) -> np.ndarray:
        self._alive()
        self.server.count("tcp_read")
        if key not in self.server.data:
            raise InfiniStoreKeyNotFound(f"key not found: {key}")
        return np.frombuffer(self.server.data[key], dtype=np.uint8).copy()

    def tcp_write_cache(self, key: str, ptr: int, size: int) -> None:
        self._alive()
        if not key or not size or not ptr:
            raise Exception("key is empty / size is 0 / ptr is 0")
        self.server.count("tcp_write")
        self.server.data[key] = ctypes.string_at(ptr, size)

    def register_mr(self, ptr: int, size: int) -> int:
        self._alive()
        if not self.rdma:
            raise Exception("this function is only valid for connected rdma")
        self.regions.append((ptr, size))
        return 0

    def _registered(self, ptr: int, size: int) -> None:
        if not any(start <= ptr and ptr + size <= start + n for start, n in self.regions):
            raise Exception("memory region not registered")

    def _on_my_loop(self) -> None:
        if self.loop is not None and asyncio.get_running_loop() is not self.loop:
            raise Exception("this connection is bound to another event loop")

    async def rdma_write_cache_async(self, blocks: list[tuple[str, int]], block_size: int, ptr: int) -> int:
        self._alive()
        self._on_my_loop()
        self.server.count("rdma_write")
        for key, offset in blocks:
            self._registered(ptr + offset, block_size)
            self.server.data[key] = ctypes.string_at(ptr + offset, block_size)
        return 200

    async def rdma_read_cache_async(self, blocks: list[tuple[str, int]], block_size: int, ptr: int) -> int:
        self._alive()
        self._on_my_loop()
        self.server.count("rdma_read")
        if any(key not in self.server.data for key, _ in blocks):
            raise InfiniStoreKeyNotFound("some keys not found")
        for key, offset in blocks:
            self._registered(ptr + offset, block_size)
            value = self.server.data[key]
            ctypes.memmove(ptr + offset, value, min(len(value), block_size))
        return 200

    def delete_keys(self, keys: list[str]) -> int:
        self._alive()
        return sum(self.server.data.pop(k, None) is not None for k in keys)


def _backend(server: StandInServer, kind: str, **kwargs) -> InfiniStoreBackend:
    cfg = config(L2_CACHE_BACKEND="INFINISTORE", INFINISTORE_CONNECTION_TYPE=kind)
    return InfiniStoreBackend(cfg, connection_factory=server.connection, **kwargs)


def _items(n: int, size: int = 600) -> list[tuple[str, bytes]]:
    return [(k, pattern(k, size).numpy().tobytes()) for k in keys(n)]


@pytest.mark.parametrize("kind", ["TCP", "RDMA"])
def test_round_trip(kind: str) -> None:
    server = StandInServer()
    backend = _backend(server, kind)
    backend.value_size_hint = 600
    items = _items(3)
    backend.put(items)
    ks = [k for k, _ in items]
    assert backend.exists([*ks, "absent"]) == [True, True, True, False]
    assert backend.get(["absent", *ks]) == [None] + [v for _, v in items]
    backend.delete(ks[:1])
    assert backend.exists(ks[:1]) == [False]
    expected = {"TCP": {"tcp_write", "tcp_read"}, "RDMA": {"rdma_write", "rdma_read"}}[kind]
    assert set(server.ops) == expected


def test_rdma_with_mixed_sizes_or_no_size_hint_uses_tcp() -> None:
    server = StandInServer()
    backend = _backend(server, "RDMA")
    items = [("a:tp0pp0:1", b"x" * 10), ("a:tp0pp0:2", b"y" * 20)]
    backend.put(items)
    assert backend.get([k for k, _ in items]) == [v for _, v in items]
    assert set(server.ops) == {"tcp_write", "tcp_read"}


def test_connect_failure_is_a_connection_error_then_reconnects() -> None:
    server = StandInServer()
    server.up = False
    backend = _backend(server, "TCP")
    with pytest.raises(L2Error) as info:
        backend.exists(["k"])
    assert info.value.kind == "connection"
    server.up = True
    assert backend.exists(["k"]) == [False]
    assert server.connects == 1


def test_a_dropped_connection_is_replaced() -> None:
    server = StandInServer()
    backend = _backend(server, "TCP")
    backend.put(_items(1))
    server.up = False
    with pytest.raises(L2Error):
        backend.get(keys(1))
    server.up = True
    assert backend.get(keys(1)) == [_items(1)[0][1]]
    assert server.connects == 2


def test_key_gone_between_check_and_read_is_a_miss_not_an_outage() -> None:
    server = StandInServer()
    backend = _backend(server, "TCP")
    backend.put(_items(2))
    real_check = StandInConnection.check_exist

    def check_then_vanish(self, key: str) -> bool:
        present = real_check(self, key)
        if key == keys(2)[0]:
            server.data.pop(key, None)  # evicted by the server right after answering
        return present

    StandInConnection.check_exist = check_then_vanish  # type: ignore[method-assign]
    try:
        assert backend.get(keys(2)) == [None, _items(2)[1][1]]
    finally:
        StandInConnection.check_exist = real_check  # type: ignore[method-assign]
    assert server.connects == 1, "no reconnect: the connection was fine"


def test_rdma_on_a_client_bound_to_its_own_loop() -> None:
    """Newer clients run a connection on their background loop: coroutines must go there."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = StandInServer()
    try:
        cfg = config(L2_CACHE_BACKEND="INFINISTORE", INFINISTORE_CONNECTION_TYPE="RDMA")
        backend = InfiniStoreBackend(
            cfg,
            connection_factory=lambda c: StandInConnection(server, "RDMA", loop=loop),
            run_coroutine=lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result(30),
        )
        backend.value_size_hint = 600
        items = _items(2)
        backend.put(items)
        assert backend.get([k for k, _ in items]) == [v for _, v in items]
        assert server.ops == {"rdma_write": 1, "rdma_read": 1}
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("kind", ["TCP", "RDMA"])
def test_tiered_cache_round_trip_over_infinistore(kind: str) -> None:
    server = StandInServer()
    settings = {"L2_CACHE_INGESTION_TYPE": "ALL", "L1_CACHE_CAPACITY_GB": l1_gb(4)}
    writer = TieredCache(config(**settings), PAYLOAD, l2=_backend(server, kind))
    ks = keys(3)
    for k in ks:
        writer.save(k, fill_for(k))
    writer.flush()
    reader = TieredCache(config(**settings), PAYLOAD, l2=_backend(server, kind))
    sink = Collect()
    assert reader.load(ks, sink).l2 == 3
    assert sink.got == {i: pattern(k).numpy().tobytes() for i, k in enumerate(ks)}
    if kind == "RDMA":
        assert "rdma_read" in server.ops, "the cache told the backend the chunk size"


def test_tiered_cache_with_the_server_down_gives_misses() -> None:
    server = StandInServer()
    server.up = False
    cache = TieredCache(config(L1_CACHE_CAPACITY_GB=l1_gb(4)), PAYLOAD, l2=_backend(server, "TCP"))
    assert cache.lookup(keys(2)).total == 0
    assert cache.load(keys(2), Collect()).total == 0
    assert cache.metrics.totals()["l2_errors.connection"] >= 1


@pytest.mark.skipif(importlib.util.find_spec("infinistore") is not None, reason="infinistore is installed")
def test_without_the_package_the_backend_only_misses() -> None:
    cfg = config(L2_CACHE_BACKEND="INFINISTORE", L1_CACHE_CAPACITY_GB=l1_gb(4))
    backend = create_backend(cfg)
    assert isinstance(backend, InfiniStoreBackend)
    cache = TieredCache(cfg, PAYLOAD, l2=backend)
    k = keys(1)[0]
    assert cache.save(k, fill_for(k))
    assert cache.lookup(keys(1)).l1 == 1
    assert cache.lookup(keys(2)[1:]).total == 0
    assert cache.metrics.totals()["l2_errors.error"] >= 1
