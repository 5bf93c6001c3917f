"""Worker half of the connector (one per TP rank): owns the KV bytes and this rank's L1.

Each step it executes the scheduler's `StepPlan`:
- synchronous loads (L1 hits) before the forward, in `start_load`;
- asynchronous loads (anything needing L2) on a background thread, reported in `finished_loads`
  once done, so a slow store never stalls the step;
- saves after the forward (`save`): whole blocks are copied out of the paged KV into L1 slots (or a
  staging buffer without L1) before the step returns, so the engine may free or reuse the blocks at
  once; L2 writes then proceed in the background.
A chunk that cannot be loaded (evicted meanwhile, L2 miss or invalid) makes its blocks, and all
later blocks of that job, "load errors": vLLM recomputes them. Nothing raises into the engine.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from connector.config import CacheConfig
from connector.keys import KeyNamespace
from connector.l2 import create_backend
from connector.metrics import CacheMetrics
from connector.tiered import TieredCache
from connector.vllm.blocks import KVBlockMover
from connector.vllm.plan import ChunkTransfer, L1Report, LoadJob, StepPlan

log = logging.getLogger(__name__)


class WorkerSide:
    def __init__(self, config: CacheConfig, namespace: KeyNamespace, metrics: CacheMetrics) -> None:
        self.config = config
        self.namespace = namespace
        self.metrics = metrics
        self.blocks_per_chunk = config.chunk_size // namespace.block_size
        self.mover: KVBlockMover | None = None
        self.cache: TieredCache | None = None
        self._events_lock = threading.Lock()
        self._l1_events: list[tuple[bytes, bool]] = []
        self._async_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kv-async-load")
        self._async: dict[str, tuple[LoadJob, Future[list[int]]]] = {}
        self._load_errors: set[int] = set()
        self._load_latencies: list[tuple[str, float]] = []

    # ---- setup --------------------------------------------------------------------------------

    def register(self, kv_caches: dict[str, torch.Tensor], num_blocks: int) -> None:
        self.mover = KVBlockMover(kv_caches, num_blocks, self.blocks_per_chunk)
        pin = self.mover.device.type == "cuda"
        self.cache = TieredCache(
            self.config,
            self.mover.payload_bytes,
            l2=create_backend(self.config),
            metrics=self.metrics,
            pin_memory=pin,
            header_tag=self.mover.fingerprint,
            l1_listener=self._on_l1_change,
        )
        log.info(
            "tiered KV cache ready: chunk %d tokens = %d bytes, layout %s, L1 %s, L2 %s",
            self.config.chunk_size,
            self.mover.payload_bytes,
            self.mover.fingerprint,
            f"{self.config.l1_capacity_gb:g} GiB" if self.config.l1_enabled else "off",
            self.config.l2_backend.value or "off",
        )

    def _on_l1_change(self, key: str, resident: bool) -> None:
        chain_hash = bytes.fromhex(key.rsplit(":", 1)[1])
        with self._events_lock:
            self._l1_events.append((chain_hash, resident))

    def _key(self, chunk: ChunkTransfer) -> str:
        return self.namespace.storage_key(chunk.chain_hash)

    # ---- loads --------------------------------------------------------------------------------

    def _run_load(self, job: LoadJob) -> list[int]:
        """Load a job's chunks; returns the block ids that could not be filled."""
        assert self.cache is not None and self.mover is not None
        mover = self.mover
        keys = [self._key(c) for c in job.chunks]
        tokens = [c.token_ids for c in job.chunks] if self.config.token_validation_enabled else None
        start = time.perf_counter()

        def sink(index: int, payload: torch.Tensor) -> None:
            chunk = job.chunks[index]
            mover.scatter(chunk.block_ids, payload, chunk.skip_blocks)

        try:
            # The engine allocates and touches its tensors under inference mode, and L1 slabs made
            # during a forward are inference tensors: every thread that writes them must be too.
            with torch.inference_mode():
                result = self.cache.load(keys, sink, tokens)  # type: ignore[arg-type]
            loaded = result.total
        except Exception:
            log.exception("load for request %s failed; its blocks will be recomputed", job.req_id)
            loaded = 0
            result = None
        tier = "l2" if result is not None and result.l2 else "l1"
        self._load_latencies.append((tier, time.perf_counter() - start))
        failed = [b for chunk in job.chunks[loaded:] for b in chunk.written_blocks]
        if failed:
            self.metrics.load_failed(len(failed) * self.namespace.block_size)
        return failed

    def start_load(self, plan: StepPlan) -> None:
        for job in plan.loads:
            if job.asynchronous:
                self._async[job.req_id] = (job, self._async_pool.submit(self._run_load, job))
            else:
                self._load_errors.update(self._run_load(job))

    def finished_loads(self) -> set[str]:
        done = set()
        for req_id, (_job, future) in list(self._async.items()):
            if future.done():
                self._load_errors.update(future.result())
                del self._async[req_id]
                done.add(req_id)
        return done

    def take_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        return errors

    # ---- saves --------------------------------------------------------------------------------

    def save(self, plan: StepPlan) -> None:
        assert self.cache is not None and self.mover is not None
        mover = self.mover
        for chunk in plan.saves:
            try:
                with torch.inference_mode():
                    self.cache.save(
                        self._key(chunk), lambda out, c=chunk: mover.gather(c.block_ids, out), chunk.token_ids
                    )
            except Exception:
                log.exception("saving a chunk failed; it will be recomputed when needed")

    # ---- reports ------------------------------------------------------------------------------

    def take_l1_report(self) -> L1Report | None:
        with self._events_lock:
            if not self._l1_events:
                return None
            events, self._l1_events = self._l1_events, []
        return L1Report({self.namespace.tp_rank: events})

    def take_load_latencies(self) -> list[tuple[str, float]]:
        """(tier, seconds) of each load job since the last call."""
        latencies, self._load_latencies = self._load_latencies, []
        return latencies

    @property
    def l1_used_bytes(self) -> int | None:
        cache = self.cache
        return cache.l1.used_bytes if cache is not None and cache.l1 is not None else None

    def close(self) -> None:
        self._async_pool.shutdown(wait=False, cancel_futures=True)
        if self.cache is not None:
            self.cache.close()
