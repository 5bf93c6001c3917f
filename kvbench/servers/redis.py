"""A real `redis-server` on loopback, for the L2 tier's tests and benchmarks.

Invariants: it binds 127.0.0.1 only, never persists anything (`--save "" --appendonly no`), and keeps
its port across `kill()` / `start()` so clients configured with `url` see an outage and a recovery of
the same server, as they would in production.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kvbench.servers.ports import free_port
from kvbench.servers.process import CommandProcess, ServerError

_MISSING = "redis-server not found; run `make setup`"


class RedisServer(CommandProcess):
    """`redis-server` in its own process group; ready once PING answers."""

    def __init__(
        self,
        port: int | None = None,
        password: str | None = None,
        workdir: Path | None = None,
        *,
        maxmemory: str | None = None,
        maxmemory_policy: str = "allkeys-lru",
        startup_timeout_s: float = 20.0,
    ) -> None:
        self._port = port if port is not None else free_port()
        self.password = password
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="kvbench-redis-"))
        )
        argv = [
            "redis-server",
            "--port", str(self._port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        if password:
            argv += ["--requirepass", password]
        if maxmemory:
            argv += ["--maxmemory", maxmemory, "--maxmemory-policy", maxmemory_policy]
        super().__init__(
            argv,
            ready=self.ping,
            log_path=self.workdir / f"redis-{self._port}.log",
            startup_timeout_s=startup_timeout_s,
            stop_grace_s=5.0,
            name="redis-server",
        )

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """`redis://[:password@]127.0.0.1:port/0`, what redis-py's `Redis.from_url` accepts."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self._port}/0"

    def start(self) -> Self:
        """Start (or restart on the same port) and wait for PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerError(_MISSING)
        self.argv[0] = binary
        self.workdir.mkdir(parents=True, exist_ok=True)
        return super().start()

    def ping(self) -> bool:
        """Whether the server answers PING right now; one attempt, no retries, False on any error."""
        client = redis.Redis(
            host="127.0.0.1",
            port=self._port,
            password=self.password,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()
