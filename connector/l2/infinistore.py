"""INFINISTORE backend: the `infinistore` client (TCP or RDMA) behind the L2 interface.

UNTESTED AGAINST A LIVE SERVER HERE: InfiniStore's server needs an RDMA NIC, which no machine of
this project has. The unit tests drive this class through a stand-in client with the same methods
(`connect`, `check_exist`, `tcp_read_cache`, `tcp_write_cache`, `register_mr`,
`rdma_write_cache_async`, `rdma_read_cache_async`, `delete_keys`, `close`), so the key handling,
buffer handling and error mapping are covered; the transport itself is not.

TCP moves each chunk with one call. RDMA registers a staging buffer once per operation and moves the
whole batch in one asynchronous call. InfiniStore's RDMA API is asyncio-based: the coroutine runs
through `infinistore.run` where the client has it (newer clients bind a connection made with the
synchronous `connect()` to their own background loop, and refuse coroutines on any other loop),
else on a short `asyncio.run` loop in the calling L2 worker thread.

A key the server does not hold (InfiniStore raises `InfiniStoreKeyNotFound`, e.g. after its own
eviction between our existence check and the read) is a miss, not an outage. The connection is made
by one thread at a time: L2 workers share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from connector.config import CacheConfig
from connector.l2.base import Buffer, L2Backend, L2Error


def _default_connection(config: CacheConfig) -> Any:
    try:
        import infinistore
    except ImportError as exc:
        raise L2Error(
            "INFINISTORE backend needs the `infinistore` package (pip install 'kvbench[infinistore]')"
        ) from exc
    devices = [d for d in config.infinistore_visible_dev_list.split(",") if d] or ["mlx5_0"]
    client_config = infinistore.ClientConfig(
        host_addr=config.infinistore_host_addr,
        service_port=config.infinistore_service_port,
        connection_type=infinistore.TYPE_RDMA
        if config.infinistore_connection_type == "RDMA"
        else infinistore.TYPE_TCP,
        link_type=infinistore.LINK_IB if config.infinistore_link_type == "IB" else infinistore.LINK_ETHERNET,
        ib_port=config.infinistore_ib_port,
        dev_name=devices[0].split(":")[0],
    )
    return infinistore.InfinityConnection(client_config)


def _default_runner() -> Callable[[Awaitable[Any]], Any]:
    try:
        import infinistore
    except ImportError:
        return asyncio.run  # type: ignore[return-value]
    return getattr(infinistore, "run", asyncio.run)


def _is_key_not_found(exc: BaseException) -> bool:
    return any(cls.__name__ == "InfiniStoreKeyNotFound" for cls in type(exc).__mro__)


class InfiniStoreBackend(L2Backend):
    name = "INFINISTORE"

    def __init__(
        self,
        config: CacheConfig,
        *,
        connection_factory: Callable[[CacheConfig], Any] | None = None,
        run_coroutine: Callable[[Awaitable[Any]], Any] | None = None,
    ) -> None:
        self._rdma = config.infinistore_connection_type == "RDMA"
        # RDMA reads need the value size up front; the tiered cache sets it (all chunks of one
        # namespace have the same stored size). Without it, reads use TCP.
        self.value_size_hint = 0
        self._config = config
        self._factory = connection_factory or _default_connection
        if run_coroutine is None:
            run_coroutine = asyncio.run if connection_factory is not None else _default_runner()  # type: ignore[assignment]
        self._run_coroutine = run_coroutine
        self._conn: Any = None
        self._connect_lock = threading.Lock()

    def _connected(self) -> Any:
        """The live connection, (re)connecting first; a failed connect is an outage, not a crash."""
        with self._connect_lock:
            if self._conn is None:
                try:
                    conn = self._factory(self._config)
                    conn.connect()
                except L2Error:
                    raise
                except Exception as exc:
                    where = f"{self._config.infinistore_host_addr}:{self._config.infinistore_service_port}"
                    raise L2Error(f"infinistore connect {where}: {exc}", "connection") from exc
                self._conn = conn
            return self._conn

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        self._connected()
        try:
            return fn()
        except L2Error:
            raise
        except Exception as exc:
            if _is_key_not_found(exc):
                raise
            self._conn = None
            raise L2Error(f"infinistore {what}: {exc}", "connection") from exc

    def exists(self, keys: Sequence[str]) -> list[bool]:
        return [bool(self._call("check_exist", lambda k=key: self._conn.check_exist(k))) for key in keys]

    def get(self, keys: Sequence[str]) -> list[Buffer | None]:
        present = self.exists(keys)
        wanted = [key for key, ok in zip(keys, present, strict=True) if ok]
        if not wanted:
            return [None] * len(keys)
        values = self._rdma_get(wanted) if self._rdma else self._tcp_get(wanted)
        by_key = dict(zip(wanted, values, strict=True))
        return [by_key.get(key) for key in keys]

    def _tcp_get(self, keys: list[str]) -> list[Buffer | None]:
        out: list[Buffer | None] = []
        for key in keys:
            try:
                array = self._call("tcp_read_cache", lambda k=key: self._conn.tcp_read_cache(k))
            except Exception as exc:
                if not _is_key_not_found(exc):
                    raise
                array = None
            out.append(None if array is None else np.asarray(array, dtype=np.uint8).tobytes())
        return out

    def _rdma_get(self, keys: list[str]) -> list[Buffer | None]:
        size = self.value_size_hint
        if not size:
            return self._tcp_get(keys)
        staging = np.empty(size * len(keys), dtype=np.uint8)
        ptr = staging.ctypes.data
        self._call("register_mr", lambda: self._conn.register_mr(ptr, staging.nbytes))
        blocks = [(key, i * size) for i, key in enumerate(keys)]
        try:
            self._call(
                "rdma_read", lambda: self._run_coroutine(self._conn.rdma_read_cache_async(blocks, size, ptr))
            )
        except Exception as exc:
            if not _is_key_not_found(exc):
                raise
            # Some key of the batch is gone: read the rest one by one rather than lose them all.
            return self._tcp_get(keys)
        return [staging[i * size : (i + 1) * size].tobytes() for i in range(len(keys))]

    def put(self, items: Sequence[tuple[str, Buffer]]) -> None:
        if not items:
            return
        if self._rdma:
            size = len(memoryview(items[0][1]))
            if all(len(memoryview(value)) == size for _, value in items):
                staging = np.concatenate([np.frombuffer(value, dtype=np.uint8) for _, value in items])
                ptr = staging.ctypes.data
                self._call("register_mr", lambda: self._conn.register_mr(ptr, staging.nbytes))
                blocks = [(key, i * size) for i, (key, _) in enumerate(items)]
                self._call(
                    "rdma_write",
                    lambda: self._run_coroutine(self._conn.rdma_write_cache_async(blocks, size, ptr)),
                )
                return
        for key, value in items:
            array = np.frombuffer(value, dtype=np.uint8)
            self._call(
                "tcp_write_cache",
                lambda k=key, a=array: self._conn.tcp_write_cache(k, a.ctypes.data, a.nbytes),
            )

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            self._call("delete_keys", lambda: self._conn.delete_keys(list(keys)))

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
