"""L1: the host-memory tier inside the engine process."""

from connector.l1.cache import L1Cache
from connector.l1.eviction import EvictionPolicy, FIFOPolicy, LRUPolicy, S3FIFOPolicy, make_policy

__all__ = ["EvictionPolicy", "FIFOPolicy", "L1Cache", "LRUPolicy", "S3FIFOPolicy", "make_policy"]
