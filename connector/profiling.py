"""Pyroscope spans around connector operations, free when profiling is off.

`span(op, tier)` tags the CPU samples taken inside it with `op` and `tier` (pyroscope-io's
`tag_wrapper`), so a flamegraph filtered on `op` shows the connector's own time apart from the
engine's. Until `start_profiling` succeeds, `span` returns one shared no-op context manager.
pyroscope-io is optional and imported only when profiling is enabled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from connector.config import CacheConfig

log = logging.getLogger(__name__)

_NOOP = contextlib.nullcontext()
_pyroscope: Any = None
_lock = threading.Lock()


def start_profiling(config: CacheConfig, **tags: str) -> bool:
    """Configure the Pyroscope agent once per process if `PROFILING_ENABLED`; True when active.

    Never raises: a missing or failing agent is logged and profiling stays off.
    """
    global _pyroscope
    if not config.profiling_enabled:
        return False
    with _lock:
        if _pyroscope is not None:
            return True
        try:
            import pyroscope
        except ImportError:
            log.warning(
                "profiling enabled but pyroscope-io is not installed (pip install 'kvbench[profiling]')"
            )
            return False
        try:
            pyroscope.configure(
                application_name=config.profiling_app_name,
                server_address=config.profiling_server_address,
                sample_rate=100,
                oncpu=True,
                gil_only=True,
                upload_interval=config.profiling_upload_interval_s,
                tags={"pid": str(os.getpid()), **tags},
            )
        except Exception as exc:  # a profiler that cannot start must not stop the engine
            log.warning("profiling not started: %s", exc)
            return False
        _pyroscope = pyroscope
        log.info("profiling to %s as %s", config.profiling_server_address, config.profiling_app_name)
        return True


def stop_profiling() -> None:
    """Flush and stop the agent (safe to call when profiling never started)."""
    global _pyroscope
    with _lock:
        if _pyroscope is not None:
            with contextlib.suppress(Exception):
                _pyroscope.shutdown()
            _pyroscope = None


@contextlib.contextmanager
def _tagged(tags: dict[str, str]) -> Iterator[None]:
    with _pyroscope.tag_wrapper(tags):
        yield


def span(op: str, tier: str | None = None) -> contextlib.AbstractContextManager[Any]:
    """Context manager tagging samples with `op` (and `tier`); a no-op unless profiling is on."""
    if _pyroscope is None:
        return _NOOP
    tags = {"op": op} if tier is None else {"op": op, "tier": tier}
    return _tagged(tags)
