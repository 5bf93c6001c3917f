"""Process managers for the real servers kvbench talks to: redis-server, vLLM, a user's command.

Each is a context manager that owns one process group and leaves nothing running when it exits.
"""

from kvbench.servers.ports import free_port
from kvbench.servers.process import CommandProcess, ServerError
from kvbench.servers.redis import RedisServer
from kvbench.servers.vllm import VllmEngine, default_cache_dir

__all__ = ["CommandProcess", "RedisServer", "ServerError", "VllmEngine", "default_cache_dir", "free_port"]
