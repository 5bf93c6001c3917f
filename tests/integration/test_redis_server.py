"""RedisServer against the real redis-server binary: outage and recovery on the same port."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kvbench.servers import RedisServer
from kvbench.servers.process import group_alive

pytestmark = pytest.mark.integration


def test_kill_then_start_recovers_on_same_port(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(
        redis_server.url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )
    assert client.set("k", b"v")
    port, old_pid = redis_server.port, redis_server.pid
    assert old_pid is not None

    redis_server.kill()
    assert not redis_server.is_running()
    assert not group_alive(old_pid)
    with pytest.raises(redis.ConnectionError):
        client.ping()

    redis_server.start()
    assert redis_server.port == port
    assert redis_server.pid != old_pid
    assert client.ping()
    assert client.get("k") is None, "no persistence: a restarted server starts empty"


def test_password_is_required_and_stop_leaves_nothing(tmp_path) -> None:
    with RedisServer(password="s3cret", workdir=tmp_path) as server:
        assert server.url == f"redis://:s3cret@127.0.0.1:{server.port}/0"
        pid = server.pid
        assert pid is not None
        assert redis.Redis.from_url(server.url).ping()
        anonymous = redis.Redis(host="127.0.0.1", port=server.port, retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    assert not server.is_running()
    assert not group_alive(pid)


def test_maxmemory_is_applied(tmp_path) -> None:
    with RedisServer(workdir=tmp_path, maxmemory="8mb") as server:
        config = redis.Redis.from_url(server.url).config_get("maxmemory*")
    assert config["maxmemory"] == str(8 * 1024 * 1024)
    assert config["maxmemory-policy"] == "allkeys-lru"
