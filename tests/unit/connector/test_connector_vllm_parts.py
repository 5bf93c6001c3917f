"""The engine adapter's own logic, without an engine: block moves per attention layout, the L1
directory, and the scheduler's hit/plan arithmetic (whole chunks, one token left, local blocks
never written)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from connector.config import CacheConfig
from connector.keys import KeyNamespace
from connector.metrics import CacheMetrics
from connector.vllm.blocks import KVBlockMover, find_block_dim
from connector.vllm.plan import L1Report
from connector.vllm.scheduler_side import L1Directory, SchedulerSide

NUM_BLOCKS, BS, H, D = 12, 4, 2, 8
LAYOUTS = {
    "cpu_attn": (NUM_BLOCKS, H, BS, 2 * D),
    "flash_attn": (2, NUM_BLOCKS, BS, H, D),
    "flashinfer": (NUM_BLOCKS, 2, BS, H, D),
    "mla": (NUM_BLOCKS, BS, 3 * D),
}


def _caches(shape: tuple[int, ...], layers: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        f"model.layers.{i}.attn": torch.randn(shape, generator=gen).to(torch.bfloat16) for i in range(layers)
    }


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gather_then_scatter_moves_exactly_the_chosen_blocks(layout: str) -> None:
    shape = LAYOUTS[layout]
    src = _caches(shape)
    dim = find_block_dim(torch.Size(shape), NUM_BLOCKS)
    mover = KVBlockMover(src, NUM_BLOCKS, blocks_per_chunk=3)
    payload = torch.empty(mover.payload_bytes, dtype=torch.uint8)
    mover.gather([7, 2, 9], payload)

    dst = {name: torch.zeros_like(t) for name, t in src.items()}
    KVBlockMover(dst, NUM_BLOCKS, blocks_per_chunk=3).scatter([1, 5, 3], payload, skip_blocks=1)
    for name in src:
        moved = dst[name]
        assert torch.equal(moved.select(dim, 5), src[name].select(dim, 2))
        assert torch.equal(moved.select(dim, 3), src[name].select(dim, 9))
        assert not moved.select(dim, 1).any(), "a skipped (engine-local) block was written"
        untouched = [b for b in range(NUM_BLOCKS) if b not in (3, 5)]
        assert not moved.index_select(dim, torch.tensor(untouched)).any()


def test_fingerprint_tells_layouts_apart() -> None:
    prints = {KVBlockMover(_caches(s), NUM_BLOCKS, 1).fingerprint for s in LAYOUTS.values()}
    assert len(prints) == len(LAYOUTS)


def test_no_block_dimension_is_an_error() -> None:
    with pytest.raises(ValueError, match="no block dimension"):
        find_block_dim(torch.Size([3, 4, 5]), NUM_BLOCKS)


def test_directory_applies_events_in_order_and_needs_every_rank() -> None:
    directory = L1Directory(tp_size=2)
    a, b = b"a" * 32, b"b" * 32
    directory.apply(L1Report({0: [(a, True), (a, False), (b, True)]}))
    assert not directory.has(a)
    assert not directory.has(b), "only rank 0 holds it"
    merged = L1Report({0: [(a, True)]}).aggregate(L1Report({1: [(a, True), (b, True)]}))
    directory.apply(merged)  # type: ignore[arg-type]
    assert directory.has(a) and directory.has(b)
    assert directory.leading([a, b, b"c" * 32, a]) == 2


def _scheduler(chunk: int = 8, block: int = 4) -> SchedulerSide:
    config = CacheConfig.from_env({}, {"CHUNK_SIZE": chunk, "BLOCK_SIZE": block})
    namespace = KeyNamespace("m", "bf16", "test", block, chunk)
    return SchedulerSide(config, namespace, CacheMetrics())


def _request(rid: str, tokens: list[int]) -> SimpleNamespace:
    return SimpleNamespace(request_id=rid, all_token_ids=tokens, num_tokens=len(tokens))


def test_hits_are_whole_chunks_beyond_the_local_hit_and_leave_one_token() -> None:
    side = _scheduler()
    tokens = list(range(100, 124))  # 24 tokens = 3 chunks of 8
    request = _request("r", tokens)
    side.directory.apply(L1Report({0: [(h, True) for h in side._hashes(side._state(request), 3)]}))

    # All 3 chunks cached, but a full-prompt hit must leave a token: only 2 chunks count.
    assert side.get_num_new_matched_tokens(request, 0) == (16, False)
    # The engine's own cache already has 4 tokens (one block): the hit starts there.
    assert side.get_num_new_matched_tokens(request, 4) == (12, False)
    side.update_state_after_alloc(request, list(range(20, 26)), 12)
    plan = side.build_plan(
        SimpleNamespace(scheduled_new_reqs=[], scheduled_cached_reqs=_no_cached(), num_scheduled_tokens={})
    )
    (job,) = plan.loads
    assert not job.asynchronous
    assert [c.block_ids for c in job.chunks] == [[20, 21], [22, 23]]
    assert [c.skip_blocks for c in job.chunks] == [1, 0], "the engine's own block must not be written"


def _no_cached() -> SimpleNamespace:
    return SimpleNamespace(req_ids=[], resumed_req_ids=set(), new_block_ids=[], num_computed_tokens=[])


def test_every_full_chunk_computed_in_a_step_is_planned_for_saving_once() -> None:
    side = _scheduler()
    request = _request("r", list(range(30)))
    assert side.get_num_new_matched_tokens(request, 0) == (0, False)
    side.update_state_after_alloc(request, [], 0)
    new = SimpleNamespace(req_id="r", block_ids=([0, 1, 2, 3, 4],), num_computed_tokens=0)
    step1 = SimpleNamespace(
        scheduled_new_reqs=[new], scheduled_cached_reqs=_no_cached(), num_scheduled_tokens={"r": 19}
    )
    plan = side.build_plan(step1)
    assert [c.block_ids for c in plan.saves] == [[0, 1], [2, 3]], "19 computed tokens = 2 full chunks"
    cached = SimpleNamespace(
        req_ids=["r"], resumed_req_ids=set(), new_block_ids=[([5, 6, 7],)], num_computed_tokens=[19]
    )
    step2 = SimpleNamespace(
        scheduled_new_reqs=[], scheduled_cached_reqs=cached, num_scheduled_tokens={"r": 11}
    )
    plan = side.build_plan(step2)
    assert [c.block_ids for c in plan.saves] == [[4, 5]], "only the newly completed chunk"
    assert plan.saves[0].chain_hash == side._hashes(side._state(request), 3)[2]
