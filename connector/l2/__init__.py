"""L2: stores shared outside the engine process, behind one interface (`L2Backend`)."""

from __future__ import annotations

from connector.config import CacheConfig, ConfigError, L2BackendName
from connector.l2.base import Buffer, L2Backend, L2Error
from connector.l2.client import L2Client, Pending

__all__ = ["Buffer", "L2Backend", "L2Client", "L2Error", "Pending", "create_backend"]


def create_backend(config: CacheConfig) -> L2Backend | None:
    """The backend named by `L2_CACHE_BACKEND`, or None when L2 is off.

    Construction does not contact the store (Redis connects lazily), except INFINISTORE whose
    client must connect up front; a store that is down at start is an outage like any other.
    """
    match config.l2_backend:
        case L2BackendName.NONE:
            return None
        case L2BackendName.REDIS:
            from connector.l2.redis import RedisBackend

            return RedisBackend(
                config.redis_url, ttl_s=config.redis_ttl_s, max_connections=config.redis_max_connections
            )
        case L2BackendName.FS:
            from connector.l2.fs import FSBackend

            return FSBackend(config.fs_root, capacity_bytes=config.fs_capacity_bytes)
        case L2BackendName.INFINISTORE:
            from connector.l2.infinistore import InfiniStoreBackend

            return InfiniStoreBackend(config)
    raise ConfigError(f"unsupported L2 backend {config.l2_backend!r}")
