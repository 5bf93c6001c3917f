"""REDIS backend (also Valkey): redis-py with pipelining and a connection pool.

Values are the chunk's stored form (header + payload), sent as memoryviews so redis-py does not
copy them. Writes use SET NX so a chunk that is already stored is never replaced by a concurrent
writer, and an optional TTL bounds how long chunks live. redis-py reconnects on the next command
after a dropped connection, so a restarted server is picked up without help.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from connector.l2.base import Buffer, L2Backend, L2Error


class RedisBackend(L2Backend):
    name = "REDIS"

    def __init__(
        self, url: str, *, ttl_s: int = 0, max_connections: int = 16, socket_timeout_s: float = 10.0
    ) -> None:
        self._ttl = ttl_s or None
        self._client = redis.Redis.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=min(socket_timeout_s, 2.0),
            health_check_interval=30,
        )

    def _run(self, build) -> list:
        try:
            pipe = self._client.pipeline(transaction=False)
            build(pipe)
            return pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            kind = "timeout" if isinstance(exc, redis.TimeoutError) else "connection"
            raise L2Error(f"redis: {exc}", kind) from exc
        except redis.RedisError as exc:
            raise L2Error(f"redis: {exc}") from exc

    def exists(self, keys: Sequence[str]) -> list[bool]:
        def build(pipe) -> None:
            for key in keys:
                pipe.exists(key)

        return [bool(n) for n in self._run(build)]

    def get(self, keys: Sequence[str]) -> list[Buffer | None]:
        def build(pipe) -> None:
            for key in keys:
                pipe.get(key)

        return self._run(build)

    def put(self, items: Sequence[tuple[str, Buffer]]) -> None:
        def build(pipe) -> None:
            for key, value in items:
                pipe.set(key, memoryview(value), nx=True, ex=self._ttl)

        self._run(build)

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            self._run(lambda pipe: pipe.delete(*keys))

    def close(self) -> None:
        self._client.close()
