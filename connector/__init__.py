"""Engine-side KV-cache offloading: a tiered cache (L1 host memory, L2 shared stores).

The cache core (`config`, `keys`, `chunk`, `l1`, `l2`, `tiered`, `metrics`, `profiling`) knows
nothing about any engine. `connector.vllm` adapts it to vLLM V1's KV-connector API.
Importing this package needs only torch, redis-py and prometheus-client; the names below load on
first use, so `connector.config` alone (the CLI reads it) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CacheConfig": "connector.config",
    "ConfigError": "connector.config",
    "KeyNamespace": "connector.keys",
    "chain_hashes": "connector.keys",
    "chunk_keys": "connector.keys",
    "LoadResult": "connector.tiered",
    "LookupResult": "connector.tiered",
    "TieredCache": "connector.tiered",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'connector' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
