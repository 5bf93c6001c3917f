"""Scheduler half of the connector (EngineCore process): finds hits and plans every transfer.

It owns no KV bytes. It knows what each worker's L1 holds from the `L1Report`s workers send back
every step (`L1Directory`), asks L2 directly (exists only), and writes a `StepPlan` per step: which
chunks to load into which blocks, and which freshly computed full chunks to save.

Invariants:
- A reported hit is whole chunks, starts at the engine's own (block-aligned) prefix hit, and always
  leaves at least one prompt token to compute.
- `get_num_new_matched_tokens` has no effect beyond caching an L2 probe: vLLM may call it again.
- Loads never write the engine's own prefix-cache blocks (`skip_blocks`).
- Every full chunk of computed tokens (prompt and generated) is planned for saving once, in the
  step that computes its last token, unless the directory says all ranks already hold it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from connector.config import CacheConfig
from connector.keys import KeyNamespace, chain_hashes
from connector.l2 import L2Client, Pending, create_backend
from connector.metrics import CacheMetrics
from connector.profiling import span
from connector.vllm.plan import ChunkTransfer, L1Report, LoadJob, StepPlan

log = logging.getLogger(__name__)

_PROBE_WAIT_S = 0.005


class L1Directory:
    """Which chunks (by chain hash) are resident in the L1 of every TP rank, as last reported."""

    def __init__(self, tp_size: int) -> None:
        self._ranks: list[set[bytes]] = [set() for _ in range(tp_size)]

    def apply(self, report: L1Report) -> None:
        for rank, events in report.events.items():
            resident = self._ranks[rank]
            for chain_hash, present in events:
                if present:
                    resident.add(chain_hash)
                else:
                    resident.discard(chain_hash)

    def has(self, chain_hash: bytes) -> bool:
        return all(chain_hash in rank for rank in self._ranks)

    def leading(self, hashes: list[bytes]) -> int:
        for i, h in enumerate(hashes):
            if not self.has(h):
                return i
        return len(hashes)


@dataclass
class _Hit:
    """A lookup answer for one admission attempt: chunks [first, first + l1 + l2) are cached."""

    num_local: int
    first: int
    l1: int
    l2: int
    recorded: bool = False

    @property
    def end(self) -> int:
        return self.first + self.l1 + self.l2


@dataclass
class _RequestState:
    request: Any
    hashes: list[bytes] = field(default_factory=list)
    block_ids: list[int] = field(default_factory=list)
    planned_upto: int = 0
    loaded: range = range(0)
    hit: _Hit | None = None
    probe: tuple[tuple[int, int], Pending[int]] | None = None


class SchedulerSide:
    def __init__(self, config: CacheConfig, namespace: KeyNamespace, metrics: CacheMetrics) -> None:
        self.config = config
        self.namespace = namespace
        self.metrics = metrics
        self.chunk = config.chunk_size
        self.block = namespace.block_size
        self.blocks_per_chunk = self.chunk // self.block
        self._ranks = [namespace.for_rank(r) for r in range(namespace.tp_size)]
        self.directory = L1Directory(namespace.tp_size)
        backend = create_backend(config)
        self.l2 = (
            L2Client(backend, metrics, num_workers=2, op_batch=config.l2_op_batch)
            if backend is not None
            else None
        )
        self._requests: dict[str, _RequestState] = {}
        self._loads: list[LoadJob] = []

    # ---- chain hashes -------------------------------------------------------------------------

    def _hashes(self, state: _RequestState, num_chunks: int) -> list[bytes]:
        if len(state.hashes) < num_chunks:
            tokens = state.request.all_token_ids
            parent = state.hashes[-1] if state.hashes else self.namespace.seed
            start = len(state.hashes) * self.chunk
            state.hashes.extend(
                chain_hashes(parent, tokens[: num_chunks * self.chunk], self.chunk, start=start)
            )
        return state.hashes[:num_chunks]

    def _limit_tokens(self, num_tokens: int) -> int:
        cap = self.config.max_seq_len
        return min(num_tokens, cap) if cap > 0 else num_tokens

    def _state(self, request: Any) -> _RequestState:
        state = self._requests.get(request.request_id)
        if state is None:
            state = self._requests[request.request_id] = _RequestState(request)
        return state

    # ---- lookup -------------------------------------------------------------------------------

    def _probe_l2(self, state: _RequestState, first: int, hashes: list[bytes]) -> Pending[int] | None:
        """Cached L2 existence probe for chunks [first, first+len(hashes)) across all ranks."""
        if self.l2 is None or not hashes:
            return None
        span_key = (first, len(hashes))
        if state.probe is not None and state.probe[0] == span_key:
            return state.probe[1]
        keys = [ns.storage_key(h) for h in hashes for ns in self._ranks]
        ranks = len(self._ranks)

        def leading(found: list[bool]) -> int:
            for i in range(len(hashes)):
                if not all(found[i * ranks : (i + 1) * ranks]):
                    return i
            return len(hashes)

        pending = self.l2.exists(keys, self.config.l2_timeout_s(len(hashes) * self.chunk)).map(leading)
        state.probe = (span_key, pending)
        return pending

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[int | None, bool]:
        with span("lookup"):
            state = self._state(request)
            limit = self._limit_tokens(request.num_tokens - 1)
            last = limit // self.chunk
            first = num_computed_tokens // self.chunk
            state.hit = _Hit(num_computed_tokens, first, 0, 0)
            if last <= first:
                return 0, False
            hashes = self._hashes(state, last)[first:]
            in_l1 = self.directory.leading(hashes)
            in_l2 = 0
            pending = self._probe_l2(state, first + in_l1, hashes[in_l1:])
            if pending is not None:
                if not pending.wait(_PROBE_WAIT_S):
                    return None, False
                in_l2 = pending.result()
            state.probe = None
            hit = state.hit = _Hit(num_computed_tokens, first, in_l1, in_l2)
            tokens = hit.end * self.chunk - num_computed_tokens
            if tokens <= 0:
                return 0, False
            return tokens, in_l2 > 0

    def hit_tokens_by_tier(self, request_id: str) -> tuple[int, int]:
        """External hit tokens of the request's last lookup, split into (L1, L2)."""
        state = self._requests.get(request_id)
        if state is None or state.hit is None:
            return 0, 0
        hit = state.hit
        l1_end = (hit.first + hit.l1) * self.chunk
        l1 = max(0, l1_end - hit.num_local)
        total = max(0, hit.end * self.chunk - hit.num_local)
        return l1, total - l1

    def update_state_after_alloc(self, request: Any, block_ids: list[int], num_external_tokens: int) -> None:
        state = self._state(request)
        hit = state.hit
        if hit is not None and not hit.recorded:
            hit.recorded = True
            l1_tokens, l2_tokens = self.hit_tokens_by_tier(request.request_id)
            queried = request.num_tokens - hit.num_local
            self.metrics.lookup(queried, {"l1": l1_tokens, "l2": l2_tokens})
        if num_external_tokens <= 0 or hit is None or hit.end <= hit.first:
            return
        local_blocks = hit.num_local // self.block
        chunks = []
        for c in range(hit.first, hit.end):
            blocks = block_ids[c * self.blocks_per_chunk : (c + 1) * self.blocks_per_chunk]
            skip = max(0, local_blocks - c * self.blocks_per_chunk)
            tokens = self._chunk_tokens(state, c)
            chunks.append(ChunkTransfer(state.hashes[c], list(blocks), skip, tokens))
        self._loads.append(LoadJob(request.request_id, chunks, asynchronous=hit.l2 > 0))
        state.loaded = range(hit.first, hit.end)

    def _chunk_tokens(self, state: _RequestState, c: int) -> list[int] | None:
        if not self.config.token_validation_enabled:
            return None
        return list(state.request.all_token_ids[c * self.chunk : (c + 1) * self.chunk])

    # ---- per-step plan ------------------------------------------------------------------------

    def build_plan(self, scheduler_output: Any) -> StepPlan:
        plan = StepPlan(loads=self._loads)
        self._loads = []
        scheduled = scheduler_output.num_scheduled_tokens
        for new in scheduler_output.scheduled_new_reqs:
            state = self._requests.get(new.req_id)
            if state is None:
                continue
            state.block_ids = list(new.block_ids[0])
            self._plan_saves(state, new.num_computed_tokens + scheduled.get(new.req_id, 0), plan)
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            state = self._requests.get(req_id)
            if state is None:
                continue
            new_blocks = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:
                state.block_ids = list(new_blocks[0]) if new_blocks is not None else []
            elif new_blocks is not None:
                state.block_ids.extend(new_blocks[0])
            self._plan_saves(state, cached.num_computed_tokens[i] + scheduled.get(req_id, 0), plan)
        return plan

    def _plan_saves(self, state: _RequestState, computed_end: int, plan: StepPlan) -> None:
        full = self._limit_tokens(computed_end) // self.chunk
        if full <= state.planned_upto:
            return
        hashes = self._hashes(state, full)
        for c in range(state.planned_upto, full):
            if c in state.loaded or self.directory.has(hashes[c]):
                continue
            blocks = state.block_ids[c * self.blocks_per_chunk : (c + 1) * self.blocks_per_chunk]
            if len(blocks) < self.blocks_per_chunk:
                log.debug("request %s: chunk %d has no blocks yet", state.request.request_id, c)
                return
            plan.saves.append(ChunkTransfer(hashes[c], list(blocks), 0, self._chunk_tokens(state, c)))
        state.planned_upto = full

    # ---- lifecycle ----------------------------------------------------------------------------

    def apply_worker_report(self, report: Any) -> None:
        if isinstance(report, L1Report):
            self.directory.apply(report)

    def request_finished(self, request_id: str) -> None:
        self._requests.pop(request_id, None)

    def close(self) -> None:
        if self.l2 is not None:
            self.l2.close()
