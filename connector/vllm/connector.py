"""`TieredOffloadConnector`: the vLLM V1 KV-connector face of the tiered cache.

vLLM creates one instance per process: role SCHEDULER in EngineCore (delegates to
`SchedulerSide`) and role WORKER in each worker (delegates to `WorkerSide`); the API server only
uses the class methods for metrics. The two halves share nothing but the per-step `StepPlan`
(scheduler -> workers) and the connector output (workers -> scheduler). This module stays thin:
it translates vLLM's calls and never decides anything itself.

Load with:
  --kv-transfer-config '{"kv_connector":"TieredOffloadConnector","kv_connector_module_path":"connector.vllm",
                         "kv_role":"kv_both","kv_load_failure_policy":"recompute"}'
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
    KVConnectorWorkerMetadata,
)
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from connector.config import CacheConfig, L2BackendName
from connector.metrics import CacheMetrics
from connector.profiling import start_profiling, stop_profiling
from connector.vllm.identity import engine_namespace
from connector.vllm.plan import StepPlan
from connector.vllm.stats import L1_USED, LATENCIES, TieredPromMetrics, TieredStats, TotalsDelta

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class TieredOffloadConnector(KVConnectorBase_V1):
    _cache_hit_source = CacheHitSource.HOST

    def __init__(self, vllm_config: Any, role: KVConnectorRole, kv_cache_config: Any = None) -> None:
        super().__init__(vllm_config, role, kv_cache_config)
        extra = dict(self._kv_transfer_config.kv_connector_extra_config or {})
        spec_block = kv_cache_config.kv_cache_groups[0].kv_cache_spec.block_size
        self._config = CacheConfig.from_env(overrides=extra).with_engine_block_size(spec_block)
        self._metrics = CacheMetrics()
        self._delta = TotalsDelta(self._metrics)
        self._scheduler = None
        self._worker = None
        if role == KVConnectorRole.SCHEDULER:
            from connector.vllm.scheduler_side import SchedulerSide

            namespace = engine_namespace(vllm_config, kv_cache_config, self._config)
            self._scheduler = SchedulerSide(self._config, namespace, self._metrics)
            start_profiling(self._config, role="scheduler")
        else:
            from vllm.distributed.parallel_state import get_pp_group, get_tensor_model_parallel_rank

            from connector.vllm.worker_side import WorkerSide

            tp_rank, pp_rank = get_tensor_model_parallel_rank(), get_pp_group().rank_in_group
            namespace = engine_namespace(vllm_config, kv_cache_config, self._config, tp_rank, pp_rank)
            self._worker = WorkerSide(self._config, namespace, self._metrics)
            self._num_blocks = kv_cache_config.num_blocks
            start_profiling(self._config, role="worker", rank=str(tp_rank))

    @property
    def requires_kv_delivery(self) -> bool:
        return False  # best effort: a dropped save is a future miss, never a lost output

    # ---- scheduler side -----------------------------------------------------------------------

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[int | None, bool]:
        assert self._scheduler is not None
        return self._scheduler.get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        assert self._scheduler is not None
        block_ids = blocks.get_block_ids()[0] if num_external_tokens > 0 else []
        self._scheduler.update_state_after_alloc(request, block_ids, num_external_tokens)

    def get_external_cache_hit_sources(
        self, request: Any, num_external_tokens: int
    ) -> dict[CacheHitSource, int]:
        assert self._scheduler is not None
        l1, l2 = self._scheduler.hit_tokens_by_tier(request.request_id)
        remote = (
            CacheHitSource.DISK
            if self._config.l2_backend == L2BackendName.FS
            else CacheHitSource.EXTERNAL_UNSPECIFIED
        )
        sources = {CacheHitSource.HOST: l1, remote: l2}
        return {source: n for source, n in sources.items() if n > 0}

    def build_connector_meta(self, scheduler_output: Any) -> KVConnectorMetadata:
        assert self._scheduler is not None
        return self._scheduler.build_plan(scheduler_output)

    def update_connector_output(self, connector_output: Any) -> None:
        super().update_connector_output(connector_output)
        if self._scheduler is not None and connector_output.kv_connector_worker_meta is not None:
            self._scheduler.apply_worker_report(connector_output.kv_connector_worker_meta)

    def request_finished(self, request: Any, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        # Saves copy out of the paged KV within the step that computes them: no block outlives
        # its request on our account.
        if self._scheduler is not None:
            self._scheduler.request_finished(request.request_id)
        return False, None

    # ---- worker side --------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        assert self._worker is not None
        self._worker.register(kv_caches, self._num_blocks)

    def _plan(self) -> StepPlan:
        meta = self._get_connector_metadata()
        assert isinstance(meta, StepPlan)
        return meta

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        if self._worker is not None and self._worker.cache is not None:
            self._worker.start_load(self._plan())

    def wait_for_layer_load(self, layer_name: str) -> None:
        return None  # loads complete in start_load_kv, before the forward

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kwargs: Any) -> None:
        return None  # saves copy whole blocks of all layers once the forward is done (wait_for_save)

    def wait_for_save(self) -> None:
        if self._worker is not None and self._worker.cache is not None:
            self._worker.save(self._plan())

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        if self._worker is None:
            return None, None
        done = self._worker.finished_loads()
        return None, (done or None)

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._worker.take_load_errors() if self._worker is not None else set()

    def build_connector_worker_meta(self) -> KVConnectorWorkerMetadata | None:
        return self._worker.take_l1_report() if self._worker is not None else None

    # ---- both sides ---------------------------------------------------------------------------

    def get_kv_connector_stats(self) -> TieredStats | None:
        data: dict[str, Any] = dict(self._delta.take())
        if self._worker is not None:
            if latencies := self._worker.take_load_latencies():
                data[LATENCIES] = latencies
            if (used := self._worker.l1_used_bytes) is not None:
                data[L1_USED] = used
        return TieredStats(data) if data else None

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None) -> TieredStats | None:
        return TieredStats(data or {})

    @classmethod
    def build_prom_metrics(
        cls, vllm_config: Any, metric_types: Any, labelnames: list[str], per_engine_labelvalues: Any
    ) -> TieredPromMetrics:
        return TieredPromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)

    def shutdown(self) -> None:
        for side in (self._scheduler, self._worker):
            if side is not None:
                side.close()
        stop_profiling()
