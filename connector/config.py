"""One typed configuration object for the cache core, read the way deployments already set it.

Every setting is an `AIBRIX_KV_CACHE_OL_<NAME>` environment variable with the defaults existing
AIBrix deployments rely on, plus the REDIS and FS backends in the same style. The engine's
`kv_connector_extra_config` may override any of them, by full variable name or by `<NAME>`
(case-insensitive). A bad value is a `ConfigError` whose message is one line naming the variable,
the value and what is accepted.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "AIBRIX_KV_CACHE_OL_"


class ConfigError(ValueError):
    """A setting has a value the connector cannot use; the message is a complete one-line report."""


class EvictionPolicyName(enum.StrEnum):
    S3FIFO = "S3FIFO"
    LRU = "LRU"
    FIFO = "FIFO"


class L2BackendName(enum.StrEnum):
    NONE = ""
    REDIS = "REDIS"
    FS = "FS"
    INFINISTORE = "INFINISTORE"


class IngestionType(enum.StrEnum):
    """When a chunk saved into L1 is also written to L2."""

    ALL = "ALL"  # on every save
    HOT = "HOT"  # when the chunk is hit again (second use)
    EVICTED = "EVICTED"  # when L1 evicts it


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected 0/1 (or true/false)")


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected an integer >= {low}") from None
        if value < low:
            raise ValueError(f"expected an integer >= {low}")
        return value

    return parse


def _block_size(raw: str) -> int:
    value = _int_at_least(-1)(raw)
    if value == 0:
        raise ValueError("expected -1 (the engine's block size) or a positive integer")
    return value


def _float_at_least(low: float, *, exclusive: bool = False) -> Callable[[str], float]:
    what = f"a number {'>' if exclusive else '>='} {low:g}"

    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected {what}") from None
        if not math.isfinite(value) or value < low or (exclusive and value == low):
            raise ValueError(f"expected {what}")
        return value

    return parse


def _ratio(raw: str) -> float:
    value = _float_at_least(0.0, exclusive=True)(raw)
    if value >= 1.0:
        raise ValueError("expected a number between 0 and 1 (exclusive)")
    return value


def _choice(enum_type: type[enum.StrEnum]) -> Callable[[str], Any]:
    allowed = [member.value for member in enum_type]

    def parse(raw: str) -> Any:
        value = raw.strip().upper()
        for member in enum_type:
            if member.value == value:
                return member
        shown = ", ".join(repr(v) if v == "" else v for v in allowed)
        raise ValueError(f"expected one of {shown}")

    return parse


def _one_of(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        for candidate in allowed:
            if raw.strip().lower() == candidate.lower():
                return candidate
        raise ValueError(f"expected one of {', '.join(allowed)}")

    return parse


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected redis://[:password@]host:port/db, rediss://... (TLS) or unix://path")
    return value


def _http_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return value.rstrip("/")


def _text(raw: str) -> str:
    return raw.strip()


def _setting(env: str, default: Any, parse: Callable[[str], Any], doc: str) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class CacheConfig:
    """Settings of the tiered cache. Immutable once built; build it with `from_env`."""

    chunk_size: int = _setting(
        "CHUNK_SIZE", 512, _int_at_least(1), "Tokens per cached chunk; a multiple of the engine block size."
    )
    block_size: int = _setting(
        "BLOCK_SIZE", -1, _block_size, "Engine block size in tokens; -1 takes the engine's."
    )
    max_seq_len: int = _setting(
        "MAX_SEQ_LEN", -1, _int_at_least(-1), "Only the first N tokens of a sequence are cached; -1 = all."
    )
    token_validation_enabled: bool = _setting(
        "TOKEN_VALIDATION_ENABLED",
        False,
        _parse_bool,
        "Also store each chunk's token ids and compare them on load (costs bytes, catches hash collisions).",
    )
    device: str = _setting("DEVICE", "cpu", _one_of("cpu", "cuda"), "Where the engine's KV lives.")
    l1_enabled: bool = _setting("L1_CACHE_ENABLED", True, _parse_bool, "Keep chunks in host memory (L1).")
    l1_capacity_gb: float = _setting(
        "L1_CACHE_CAPACITY_GB",
        10.0,
        _float_at_least(0.0, exclusive=True),
        "L1 byte capacity per worker process (GiB); allocated lazily in slabs.",
    )
    l1_eviction_policy: EvictionPolicyName = _setting(
        "L1_CACHE_EVICTION_POLICY",
        EvictionPolicyName.S3FIFO,
        _choice(EvictionPolicyName),
        "S3FIFO, LRU or FIFO.",
    )
    s3fifo_small_to_main_promo_threshold: int = _setting(
        "S3FIFO_SMALL_TO_MAIN_PROMO_THRESHOLD",
        1,
        _int_at_least(1),
        "S3FIFO: hits in the small queue that promote a chunk to the main queue.",
    )
    s3fifo_small_fifo_capacity_ratio: float = _setting(
        "S3FIFO_SMALL_FIFO_CAPACITY_RATIO", 0.3, _ratio, "S3FIFO: share of L1 capacity for the small queue."
    )
    l2_backend: L2BackendName = _setting(
        "L2_CACHE_BACKEND", L2BackendName.NONE, _choice(L2BackendName), "'' (off), REDIS, FS or INFINISTORE."
    )
    l2_namespace: str = _setting(
        "L2_CACHE_NAMESPACE", "aibrix", _text, "User namespace; part of every key, isolates tenants."
    )
    l2_op_batch: int = _setting("L2_CACHE_OP_BATCH", 32, _int_at_least(1), "Keys per L2 round trip.")
    l2_per_token_timeout_ms: float = _setting(
        "L2_CACHE_PER_TOKEN_TIMEOUT_MS",
        20.0,
        _float_at_least(0.0, exclusive=True),
        "L2 operation timeout per token moved (a 512-token chunk at 20 ms -> 10.24 s); never below 50 ms.",
    )
    l2_placement_policy: str = _setting(
        "L2_CACHE_PLACEMENT_POLICY", "SIMPLE", _one_of("SIMPLE"), "Node placement for clustered L2."
    )
    l2_key_builder: str = _setting(
        "L2_CACHE_KEY_BUILDER",
        "ROLLING_HASH",
        _one_of("ROLLING_HASH"),
        "Chunk keys chain blake2b hashes of the tokens with the parent key.",
    )
    l2_ingestion_type: IngestionType = _setting(
        "L2_CACHE_INGESTION_TYPE",
        IngestionType.HOT,
        _choice(IngestionType),
        "When L2 is written: HOT, ALL or EVICTED.",
    )
    l2_ingestion_max_inflight_tokens: int = _setting(
        "L2_CACHE_INGESTION_MAX_INFLIGHT_TOKENS",
        0,
        _int_at_least(0),
        "L2 writes are asynchronous; at most N tokens in flight (0 = 64 chunks), writes beyond are skipped "
        "and counted.",
    )
    l2_num_async_workers: int = _setting(
        "L2_CACHE_NUM_ASYNC_WORKERS", 8, _int_at_least(1), "Threads serving L2 operations."
    )
    meta_service_backend: str = _setting(
        "META_SERVICE_BACKEND", "REDIS", _one_of("REDIS"), "Where a clustered L2 keeps its node list."
    )
    meta_service_url: str = _setting(
        "META_SERVICE_URL", "", _text, "URL of the meta service ('' = no cluster)."
    )
    meta_service_cluster_meta_key: str = _setting(
        "META_SERVICE_CLUSTER_META_KEY", "kvcache_nodes", _text, "Key holding the cluster's node list."
    )
    meta_service_refresh_interval_s: float = _setting(
        "META_SERVICE_REFRESH_INTERVAL_S",
        30.0,
        _float_at_least(0.0, exclusive=True),
        "How often the node list is re-read.",
    )
    redis_url: str = _setting(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        _redis_url,
        "REDIS backend: redis://[:password@]host:port/db.",
    )
    redis_ttl_s: int = _setting(
        "REDIS_TTL_S", 0, _int_at_least(0), "REDIS backend: expire chunks after N seconds (0 = never)."
    )
    redis_max_connections: int = _setting(
        "REDIS_MAX_CONNECTIONS", 16, _int_at_least(1), "REDIS backend: connection pool size."
    )
    fs_root: str = _setting(
        "FS_ROOT", "", _text, "FS backend: directory holding the chunks (local or shared)."
    )
    fs_capacity_gb: float = _setting(
        "FS_CAPACITY_GB",
        100.0,
        _float_at_least(0.0, exclusive=True),
        "FS backend: byte bound (GiB); the oldest chunks are evicted beyond it.",
    )
    infinistore_host_addr: str = _setting(
        "INFINISTORE_HOST_ADDR", "127.0.0.1", _text, "INFINISTORE backend: server address."
    )
    infinistore_service_port: int = _setting(
        "INFINISTORE_SERVICE_PORT", 12345, _int_at_least(1), "INFINISTORE backend: service port."
    )
    infinistore_connection_type: str = _setting(
        "INFINISTORE_CONNECTION_TYPE", "RDMA", _one_of("RDMA", "TCP"), "INFINISTORE backend: RDMA or TCP."
    )
    infinistore_link_type: str = _setting(
        "INFINISTORE_LINK_TYPE", "Ethernet", _one_of("Ethernet", "IB"), "INFINISTORE backend: Ethernet or IB."
    )
    infinistore_ib_port: int = _setting(
        "INFINISTORE_IB_PORT", 1, _int_at_least(0), "INFINISTORE backend: IB port."
    )
    infinistore_visible_dev_list: str = _setting(
        "INFINISTORE_VISIBLE_DEV_LIST",
        "",
        _text,
        "INFINISTORE backend: RDMA devices, e.g. mlx5_1,mlx5_2 (optional :gid each).",
    )
    profiling_enabled: bool = _setting(
        "PROFILING_ENABLED", False, _parse_bool, "Push CPU profiles with connector spans to Pyroscope."
    )
    profiling_server_address: str = _setting(
        "PROFILING_SERVER_ADDRESS", "http://127.0.0.1:4040", _http_url, "Pyroscope server."
    )
    profiling_app_name: str = _setting(
        "PROFILING_APP_NAME", "vllm-engine", _text, "Pyroscope service name of the engine processes."
    )
    profiling_upload_interval_s: int = _setting(
        "PROFILING_UPLOAD_INTERVAL_S", 10, _int_at_least(1), "Seconds between profile pushes."
    )

    def __post_init__(self) -> None:
        if self.l2_backend == L2BackendName.FS and not self.fs_root:
            raise ConfigError(f"{ENV_PREFIX}FS_ROOT is required when {ENV_PREFIX}L2_CACHE_BACKEND=FS")
        if self.block_size > 0 and self.chunk_size % self.block_size:
            raise ConfigError(
                f"{ENV_PREFIX}CHUNK_SIZE={self.chunk_size}: expected a multiple of "
                f"{ENV_PREFIX}BLOCK_SIZE={self.block_size}"
            )

    @property
    def l1_capacity_bytes(self) -> int:
        return int(self.l1_capacity_gb * (1 << 30))

    @property
    def fs_capacity_bytes(self) -> int:
        return int(self.fs_capacity_gb * (1 << 30))

    @property
    def l2_enabled(self) -> bool:
        return self.l2_backend != L2BackendName.NONE

    def l2_timeout_s(self, num_tokens: int) -> float:
        """Deadline for one L2 operation moving `num_tokens` tokens (at least 50 ms)."""
        return max(0.05, self.l2_per_token_timeout_ms * max(num_tokens, 1) / 1000.0)

    def with_engine_block_size(self, engine_block_size: int) -> CacheConfig:
        """The config with BLOCK_SIZE resolved against the engine's; validates the chunk geometry."""
        block = engine_block_size if self.block_size == -1 else self.block_size
        if block != engine_block_size:
            raise ConfigError(
                f"{ENV_PREFIX}BLOCK_SIZE={self.block_size}: the engine's block size is {engine_block_size}"
            )
        if self.chunk_size % block:
            raise ConfigError(
                f"{ENV_PREFIX}CHUNK_SIZE={self.chunk_size}: expected a multiple of the engine block size {block}"
            )
        return dataclasses.replace(self, block_size=block)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> CacheConfig:
        """Read every setting from `environ` (default: the process environment), then `overrides`.

        `overrides` keys may be full variable names or the part after the prefix, any case; an unknown
        key is an error rather than silently ignored, since a typo would otherwise change nothing.
        """
        environ = os.environ if environ is None else environ
        by_suffix = {f.metadata["env"]: f for f in dataclasses.fields(cls)}
        raw: dict[str, tuple[str, str]] = {}
        for suffix in by_suffix:
            name = ENV_PREFIX + suffix
            if name in environ:
                raw[suffix] = (name, environ[name])
        for key, value in (overrides or {}).items():
            suffix = key.upper().removeprefix(ENV_PREFIX)
            if suffix not in by_suffix:
                raise ConfigError(
                    f"kv_connector_extra_config key {key!r} is not a known {ENV_PREFIX}* setting"
                )
            if isinstance(value, bool):
                value = "1" if value else "0"
            raw[suffix] = (f"kv_connector_extra_config[{key!r}]", str(value))
        values: dict[str, Any] = {}
        for suffix, (source, text) in raw.items():
            f = by_suffix[suffix]
            try:
                values[f.name] = f.metadata["parse"](text)
            except ValueError as exc:
                raise ConfigError(f"{source}={text!r}: {exc}") from None
        return cls(**values)


def settings_reference() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, in declaration order: the README's table."""
    rows = []
    for f in dataclasses.fields(CacheConfig):
        default = f.default.value if isinstance(f.default, enum.Enum) else f.default
        if isinstance(default, bool):
            default = int(default)
        rows.append(
            (
                ENV_PREFIX + f.metadata["env"],
                repr(default) if default == "" else str(default),
                f.metadata["doc"],
            )
        )
    return rows
