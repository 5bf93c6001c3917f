"""Engine-side KV-cache offloading: a tiered cache (L1 host memory, L2 shared stores).

The cache core (`config`, `keys`, `chunk`, `l1`, `l2`, `tiered`, `metrics`, `profiling`) knows
nothing about any engine. `connector.vllm` adapts it to vLLM V1's KV-connector API.
Importing this package needs only torch, redis-py and prometheus-client.
"""

from connector.config import CacheConfig, ConfigError
from connector.keys import KeyNamespace, chain_hashes, chunk_keys
from connector.tiered import LoadResult, LookupResult, TieredCache

__all__ = [
    "CacheConfig",
    "ConfigError",
    "KeyNamespace",
    "LoadResult",
    "LookupResult",
    "TieredCache",
    "chain_hashes",
    "chunk_keys",
]
