"""The key namespace of an engine instance, derived identically in the scheduler and the workers.

Everything that changes the bytes of a KV block goes in: the model (path/name, revision,
quantization), KV dtype, the attention layout as configured (platform, attention backend, spec
kind, heads x head size, and the vLLM version, which decides the default backend), block and chunk
size, parallel sizes, the rank, and the user namespace. The physical tensor layout each worker
actually sees is checked again on load through the chunk header tag (`KVBlockMover.fingerprint`).
"""

from __future__ import annotations

from typing import Any

import vllm

from connector.config import CacheConfig
from connector.keys import KeyNamespace


def _kv_spec(kv_cache_config: Any) -> Any:
    groups = kv_cache_config.kv_cache_groups
    if len(groups) != 1:
        raise ValueError(f"the tiered connector supports one KV cache group, this model has {len(groups)}")
    return groups[0].kv_cache_spec


def engine_namespace(
    vllm_config: Any, kv_cache_config: Any, config: CacheConfig, tp_rank: int = 0, pp_rank: int = 0
) -> KeyNamespace:
    from vllm.platforms import current_platform

    model_config = vllm_config.model_config
    parallel = vllm_config.parallel_config
    spec = _kv_spec(kv_cache_config)
    attention = getattr(vllm_config, "attention_config", None)
    backend = getattr(attention, "backend", None) or "auto"
    model = "|".join(
        str(part)
        for part in (model_config.model, model_config.revision or "", model_config.quantization or "")
    )
    layout = "/".join(
        [
            str(getattr(current_platform, "device_name", current_platform.device_type)),
            str(backend),
            type(spec).__name__,
            f"H{getattr(spec, 'num_kv_heads', 0)}xD{getattr(spec, 'head_size', 0)}",
            f"vllm{vllm.__version__}",
        ]
    )
    return KeyNamespace(
        model=model,
        kv_dtype=f"{spec.dtype}|{vllm_config.cache_config.cache_dtype}",
        kv_layout=layout,
        block_size=spec.block_size,
        chunk_size=config.chunk_size,
        tp_rank=tp_rank,
        tp_size=parallel.tensor_parallel_size,
        pp_rank=pp_rank,
        pp_size=parallel.pipeline_parallel_size,
        user=config.l2_namespace,
    )
