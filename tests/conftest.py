"""Shared fixtures: the offline tiny model, a fresh redis-server, and real vLLM engines.

Every fixture that starts a process stops its whole process group at teardown, also when the test
fails or is interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvbench.servers import RedisServer, VllmEngine

REPO_ROOT = Path(__file__).resolve().parents[1]


def _cache_dir() -> Path:
    """`$KVBENCH_CACHE_DIR` or the repo's gitignored `.cache/`, shared across test sessions."""
    env = os.environ.get("KVBENCH_CACHE_DIR")
    return Path(env) if env else REPO_ROOT / ".cache"


@pytest.fixture(scope="session")
def kvbench_cache_dir() -> Path:
    path = _cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(kvbench_cache_dir: Path) -> Path:
    """The `tiny` preset (seed 0), built once and reused while its marker matches."""
    from kvbench.model import ensure_tiny

    return ensure_tiny(kvbench_cache_dir / "models", preset="tiny", seed=0)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server on a free loopback port; stopped after the test."""
    server = RedisServer(workdir=tmp_path / "redis")
    with server:
        yield server


EngineFactory = Callable[..., VllmEngine]


@pytest.fixture
def engine_factory(tiny_model_dir: Path, kvbench_cache_dir: Path, tmp_path: Path) -> Iterator[EngineFactory]:
    """Start `VllmEngine`s (on the tiny model unless `model_dir=` is given); all stop at teardown.

    Logs go to `tmp_path/engine-N.log` so a failing test's message points at them.
    """
    engines: list[VllmEngine] = []

    def start(**kwargs: Any) -> VllmEngine:
        kwargs.setdefault("model_dir", tiny_model_dir)
        kwargs.setdefault("cache_dir", kvbench_cache_dir)
        kwargs.setdefault("kv_cache_space_gib", 0.5)
        kwargs.setdefault("log_path", tmp_path / f"engine-{len(engines)}.log")
        engine = VllmEngine(**kwargs)
        engines.append(engine)
        return engine.start()

    try:
        yield start
    finally:
        for engine in reversed(engines):
            engine.stop()
