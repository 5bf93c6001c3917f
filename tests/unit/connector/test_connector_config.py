"""Configuration: the AIBRIX_KV_CACHE_OL_* names and defaults deployments use, and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector.config import (
    ENV_PREFIX,
    CacheConfig,
    ConfigError,
    EvictionPolicyName,
    IngestionType,
    L2BackendName,
    settings_reference,
)

# (variable suffix, attribute, default, another valid raw value, the parsed form of that value),
# written from the offloading landscape notes, not from the implementation.
DOCUMENTED = [
    ("CHUNK_SIZE", "chunk_size", 512, "256", 256),
    ("BLOCK_SIZE", "block_size", -1, "16", 16),
    ("MAX_SEQ_LEN", "max_seq_len", -1, "4096", 4096),
    ("TOKEN_VALIDATION_ENABLED", "token_validation_enabled", False, "1", True),
    ("DEVICE", "device", "cpu", "cuda", "cuda"),
    ("L1_CACHE_ENABLED", "l1_enabled", True, "0", False),
    ("L1_CACHE_CAPACITY_GB", "l1_capacity_gb", 10.0, "2.5", 2.5),
    (
        "L1_CACHE_EVICTION_POLICY",
        "l1_eviction_policy",
        EvictionPolicyName.S3FIFO,
        "lru",
        EvictionPolicyName.LRU,
    ),
    ("S3FIFO_SMALL_TO_MAIN_PROMO_THRESHOLD", "s3fifo_small_to_main_promo_threshold", 1, "2", 2),
    ("S3FIFO_SMALL_FIFO_CAPACITY_RATIO", "s3fifo_small_fifo_capacity_ratio", 0.3, "0.1", 0.1),
    ("L2_CACHE_BACKEND", "l2_backend", L2BackendName.NONE, "REDIS", L2BackendName.REDIS),
    ("L2_CACHE_NAMESPACE", "l2_namespace", "aibrix", "tenant1", "tenant1"),
    ("L2_CACHE_OP_BATCH", "l2_op_batch", 32, "8", 8),
    ("L2_CACHE_PER_TOKEN_TIMEOUT_MS", "l2_per_token_timeout_ms", 20.0, "5", 5.0),
    ("L2_CACHE_PLACEMENT_POLICY", "l2_placement_policy", "SIMPLE", "simple", "SIMPLE"),
    ("L2_CACHE_KEY_BUILDER", "l2_key_builder", "ROLLING_HASH", "ROLLING_HASH", "ROLLING_HASH"),
    ("L2_CACHE_INGESTION_TYPE", "l2_ingestion_type", IngestionType.HOT, "EVICTED", IngestionType.EVICTED),
    ("L2_CACHE_INGESTION_MAX_INFLIGHT_TOKENS", "l2_ingestion_max_inflight_tokens", 0, "4096", 4096),
    ("L2_CACHE_NUM_ASYNC_WORKERS", "l2_num_async_workers", 8, "2", 2),
    ("META_SERVICE_BACKEND", "meta_service_backend", "REDIS", "redis", "REDIS"),
    ("META_SERVICE_URL", "meta_service_url", "", "redis://meta:6379", "redis://meta:6379"),
    ("META_SERVICE_CLUSTER_META_KEY", "meta_service_cluster_meta_key", "kvcache_nodes", "nodes", "nodes"),
    ("META_SERVICE_REFRESH_INTERVAL_S", "meta_service_refresh_interval_s", 30.0, "5", 5.0),
    ("INFINISTORE_HOST_ADDR", "infinistore_host_addr", "127.0.0.1", "10.0.0.2", "10.0.0.2"),
    ("INFINISTORE_SERVICE_PORT", "infinistore_service_port", 12345, "22345", 22345),
    ("INFINISTORE_CONNECTION_TYPE", "infinistore_connection_type", "RDMA", "tcp", "TCP"),
    ("INFINISTORE_LINK_TYPE", "infinistore_link_type", "Ethernet", "ib", "IB"),
    ("INFINISTORE_IB_PORT", "infinistore_ib_port", 1, "2", 2),
    (
        "INFINISTORE_VISIBLE_DEV_LIST",
        "infinistore_visible_dev_list",
        "",
        "mlx5_1,mlx5_2:3",
        "mlx5_1,mlx5_2:3",
    ),
    ("PROFILING_ENABLED", "profiling_enabled", False, "1", True),
    (
        "PROFILING_SERVER_ADDRESS",
        "profiling_server_address",
        "http://127.0.0.1:4040",
        "http://pyroscope:4040/",
        "http://pyroscope:4040",
    ),
    # The two new backends, in the same style.
    ("REDIS_URL", "redis_url", "redis://127.0.0.1:6379/0", "rediss://:pw@h:6380/1", "rediss://:pw@h:6380/1"),
    ("FS_CAPACITY_GB", "fs_capacity_gb", 100.0, "1", 1.0),
    ("FS_ROOT", "fs_root", "", "/data/kv", "/data/kv"),
]


def test_defaults_from_an_empty_environment() -> None:
    config = CacheConfig.from_env({})
    for _suffix, attr, default, _raw, _parsed in DOCUMENTED:
        assert getattr(config, attr) == default, attr


@pytest.mark.parametrize(("suffix", "attr", "default", "raw", "parsed"), DOCUMENTED, ids=lambda v: str(v))
def test_each_variable_is_read_under_its_documented_name(
    suffix: str, attr: str, default: Any, raw: str, parsed: Any
) -> None:
    env = {ENV_PREFIX + suffix: raw}
    if suffix == "CHUNK_SIZE":
        env[ENV_PREFIX + "BLOCK_SIZE"] = "16"
    config = CacheConfig.from_env(env)
    assert getattr(config, attr) == parsed


def test_every_setting_is_in_the_reference_table() -> None:
    names = {row[0] for row in settings_reference()}
    assert {ENV_PREFIX + suffix for suffix, *_ in DOCUMENTED} <= names
    by_name = {row[0]: row for row in settings_reference()}
    assert by_name[ENV_PREFIX + "CHUNK_SIZE"][1] == "512"
    assert by_name[ENV_PREFIX + "L2_CACHE_BACKEND"][1] == "''"
    assert all(row[2] for row in settings_reference()), "every setting has a meaning"


def test_process_environment_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_PREFIX + "L2_CACHE_NAMESPACE", "from-env")
    assert CacheConfig.from_env().l2_namespace == "from-env"


@pytest.mark.parametrize(
    ("suffix", "raw", "accepted"),
    [
        ("CHUNK_SIZE", "abc", "integer >= 1"),
        ("CHUNK_SIZE", "0", "integer >= 1"),
        ("BLOCK_SIZE", "0", "-1"),
        ("L1_CACHE_CAPACITY_GB", "-1", "number > 0"),
        ("L1_CACHE_CAPACITY_GB", "inf", "number > 0"),
        ("L1_CACHE_CAPACITY_GB", "nan", "number > 0"),
        ("L1_CACHE_ENABLED", "maybe", "0/1"),
        ("L1_CACHE_EVICTION_POLICY", "ARC", "S3FIFO, LRU, FIFO"),
        ("S3FIFO_SMALL_FIFO_CAPACITY_RATIO", "1.5", "between 0 and 1"),
        ("L2_CACHE_BACKEND", "ROCKSDB", "REDIS"),
        ("L2_CACHE_INGESTION_TYPE", "SOMETIMES", "HOT"),
        ("L2_CACHE_INGESTION_MAX_INFLIGHT_TOKENS", "-5", "integer >= 0"),
        ("INFINISTORE_CONNECTION_TYPE", "UDP", "RDMA, TCP"),
        ("REDIS_URL", "localhost:6379", "redis://"),
        ("PROFILING_SERVER_ADDRESS", "pyroscope:4040", "http://"),
        ("DEVICE", "tpu", "cpu, cuda"),
    ],
)
def test_invalid_value_is_one_line_naming_variable_value_and_accepted(
    suffix: str, raw: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        CacheConfig.from_env({ENV_PREFIX + suffix: raw})
    message = str(info.value)
    assert "\n" not in message
    assert ENV_PREFIX + suffix in message
    assert repr(raw) in message
    assert accepted in message


def test_a_newline_in_a_value_keeps_the_error_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        CacheConfig.from_env({ENV_PREFIX + "CHUNK_SIZE": "1\n2"})
    assert "\n" not in str(info.value)


def test_extra_config_overrides_the_environment_by_full_or_short_name() -> None:
    env = {ENV_PREFIX + "CHUNK_SIZE": "256", ENV_PREFIX + "L2_CACHE_NAMESPACE": "env"}
    config = CacheConfig.from_env(env, {ENV_PREFIX + "CHUNK_SIZE": 128, "l2_cache_namespace": "extra"})
    assert config.chunk_size == 128
    assert config.l2_namespace == "extra"
    assert CacheConfig.from_env({}, {"TOKEN_VALIDATION_ENABLED": True}).token_validation_enabled is True
    assert CacheConfig.from_env({}, {"l1_cache_enabled": False}).l1_enabled is False


def test_unknown_extra_config_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="CHUNK_SZE"):
        CacheConfig.from_env({}, {"CHUNK_SZE": 256})


def test_invalid_extra_config_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        CacheConfig.from_env({}, {"chunk_size": "many"})
    assert "kv_connector_extra_config" in str(info.value) and "'many'" in str(info.value)


def test_fs_backend_needs_a_root() -> None:
    with pytest.raises(ConfigError, match="FS_ROOT"):
        CacheConfig.from_env({ENV_PREFIX + "L2_CACHE_BACKEND": "FS"})
    config = CacheConfig.from_env({ENV_PREFIX + "L2_CACHE_BACKEND": "fs", ENV_PREFIX + "FS_ROOT": "/tmp/x"})
    assert config.l2_backend == L2BackendName.FS


def test_chunk_must_be_a_multiple_of_the_block() -> None:
    with pytest.raises(ConfigError, match="CHUNK_SIZE"):
        CacheConfig.from_env({ENV_PREFIX + "CHUNK_SIZE": "100", ENV_PREFIX + "BLOCK_SIZE": "16"})
    config = CacheConfig.from_env({ENV_PREFIX + "CHUNK_SIZE": "100"})
    with pytest.raises(ConfigError, match="multiple"):
        config.with_engine_block_size(16)
    assert CacheConfig.from_env({}).with_engine_block_size(16).block_size == 16


def test_explicit_block_size_must_match_the_engine() -> None:
    config = CacheConfig.from_env({ENV_PREFIX + "BLOCK_SIZE": "32"})
    with pytest.raises(ConfigError, match="BLOCK_SIZE"):
        config.with_engine_block_size(16)
    assert config.with_engine_block_size(32).block_size == 32


def test_timeout_scales_with_tokens_with_a_floor() -> None:
    config = CacheConfig.from_env({})
    assert config.l2_timeout_s(512) == pytest.approx(10.24)
    assert config.l2_timeout_s(1) == pytest.approx(0.05)
    assert config.l1_capacity_bytes == 10 << 30


def test_readme_documents_every_setting_with_its_default() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    for name, default, _ in settings_reference():
        assert f"| `{name}` | `{default}` |" in readme, f"{name} missing from the README table"
