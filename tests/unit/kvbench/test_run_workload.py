"""Workload generation: exact token sizes in the target's tokenizer, reproducibility, ordering."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from kvbench.errors import UserError
from kvbench.scenario import Arrival, MultiTurnWorkload, SharedPrefixWorkload, TraceWorkload
from kvbench.workload.generators import build_plan
from kvbench.workload.plan import arrival_times
from kvbench.workload.tokens import TextSynth, load_tokenizer


@pytest.fixture(scope="module")
def synth(tokenizer_path: Path) -> TextSynth:
    return TextSynth(load_tokenizer(tokenizer_path))


def _mt(**kw) -> MultiTurnWorkload:
    base = dict(
        kind="multi_turn", users=3, turns=4, system_prompt_tokens=40, question_tokens=17, answer_tokens=9
    )
    base.update(kw)
    return MultiTurnWorkload.model_validate(base)


@pytest.mark.parametrize("n", [1, 2, 7, 50, 333])
def test_text_has_exact_token_count(synth: TextSynth, n: int) -> None:
    rng = random.Random(n)
    for _ in range(5):
        assert len(synth.tokenizer.encode(synth.text(n, rng))) == n


def test_multi_turn_pieces_are_exact_and_prompts_grow_by_history(synth: TextSynth) -> None:
    plan = build_plan(_mt(), synth, seed=1)
    assert len(plan.sessions) == 3
    for s in plan.sessions:
        assert [r.turn for r in s.requests] == [1, 2, 3, 4]
        for r in s.requests:
            msgs = r.messages
            assert msgs is not None
            counts = [len(synth.tokenizer.encode(m["content"])) for m in msgs]
            assert counts[0] == 40
            assert all(c == 17 for c in counts[1::2])
            assert all(c == 9 for c in counts[2::2])
            assert r.prompt_tokens == sum(counts)
            assert r.max_tokens == 9
        # Each turn's messages extend the previous turn's (history + answer + new question).
        for prev, nxt in zip(s.requests, s.requests[1:], strict=False):
            assert nxt.messages[: len(prev.messages)] == prev.messages
            assert nxt.messages[len(prev.messages)]["role"] == "assistant"
    # One shared system prompt, different questions per user.
    firsts = [s.requests[0].messages for s in plan.sessions]
    assert len({m[0]["content"] for m in firsts}) == 1
    assert len({m[1]["content"] for m in firsts}) == 3


def test_same_seed_same_plan_other_seed_other_plan(synth: TextSynth) -> None:
    w = _mt(
        question_tokens={"dist": "uniform", "min": 5, "max": 30},
        arrival={"pattern": "poisson", "rate_per_s": 3},
    )
    a, b, c = build_plan(w, synth, 7), build_plan(w, synth, 7), build_plan(w, synth, 8)
    assert a == b
    assert a.sessions != c.sessions
    assert [s.start_s for s in a.sessions] == [s.start_s for s in b.sessions]


def test_completions_prompt_is_exact_and_prefix_of_next_turn(synth: TextSynth) -> None:
    plan = build_plan(_mt(request={"endpoint": "completions"}), synth, seed=3)
    reqs = plan.sessions[0].requests
    for r in reqs:
        assert r.messages is None
        assert len(synth.tokenizer.encode(r.prompt)) == r.prompt_tokens
    for prev, nxt in itertools.pairwise(reqs):
        assert nxt.prompt.startswith(prev.prompt)


def test_private_system_prompts(synth: TextSynth) -> None:
    plan = build_plan(_mt(shared_system_prompt=False), synth, seed=0)
    assert len({s.requests[0].messages[0]["content"] for s in plan.sessions}) == 3


def test_shared_prefix_groups_share_exact_documents(synth: TextSynth) -> None:
    w = SharedPrefixWorkload.model_validate(
        dict(
            kind="shared_prefix",
            groups=3,
            requests_per_group=4,
            prefix_tokens=120,
            suffix_tokens=10,
            output_tokens=5,
            request={"endpoint": "completions"},
        )
    )
    plan = build_plan(w, synth, seed=2)
    reqs = plan.all_requests()
    assert len(reqs) == 12
    by_group: dict[str, list] = {}
    for r in reqs:
        by_group.setdefault(r.group, []).append(r)
    for group in by_group.values():
        docs = {r.prompt.split("\n\n")[0] for r in group}
        assert len(docs) == 1
        assert len(synth.tokenizer.encode(docs.pop())) == 120
        # The first request sent for a group is its cold one ("turn 1").
        assert [r.turn for r in group] == [1, 2, 3, 4]


def test_shared_prefix_interleaved_order(synth: TextSynth) -> None:
    w = SharedPrefixWorkload.model_validate(
        dict(
            kind="shared_prefix",
            groups=2,
            requests_per_group=2,
            prefix_tokens=20,
            suffix_tokens=3,
            output_tokens=2,
            order="interleaved",
        )
    )
    groups = [r.group for r in build_plan(w, synth, 0).all_requests()]
    assert groups == ["doc000", "doc001", "doc000", "doc001"]


def test_arrivals() -> None:
    rng = random.Random(0)
    assert arrival_times(Arrival(pattern="constant", rate_per_s=4), 3, rng) == [0.0, 0.25, 0.5]
    assert arrival_times(Arrival(pattern="closed"), 2, rng) == [0.0, 0.0]
    poisson = arrival_times(Arrival(pattern="poisson", rate_per_s=10), 2000, random.Random(1))
    gaps = [b - a for a, b in itertools.pairwise(poisson)]
    assert all(g >= 0 for g in gaps)
    assert 0.08 < sum(gaps) / len(gaps) < 0.12


def test_warmup_requests_share_nothing_with_measured(synth: TextSynth) -> None:
    plan = build_plan(_mt(warmup_requests=2), synth, seed=0)
    assert len(plan.warmup) == 2 and all(r.warmup for r in plan.warmup)
    measured_texts = {m["content"] for r in plan.all_requests() for m in r.messages}
    assert not measured_texts & {m["content"] for r in plan.warmup for m in r.messages}


def test_limits_reported_in_plan(synth: TextSynth) -> None:
    plan = build_plan(_mt(max_requests=5, duration_s=30), synth, seed=0)
    assert plan.measured_requests == 5
    assert plan.duration_s == 30


def test_trace_replay(tmp_path: Path, synth: TextSynth) -> None:
    trace = tmp_path / "t.jsonl"
    lines = [
        {"timestamp": 2.0, "input_tokens": 33, "output_tokens": 4, "session": "a", "turn": 2},
        {"timestamp": 0.0, "prompt": "cache prefix token", "max_tokens": 3},
        {"timestamp": 1.0, "messages": [{"role": "user", "content": "hello there"}]},
    ]
    trace.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    w = TraceWorkload(kind="trace", path=trace, speedup=2.0, default_output_tokens=8)
    plan = build_plan(w, synth, 0)
    assert [s.start_s for s in plan.sessions] == [0.0, 0.5, 1.0]
    last = plan.sessions[-1].requests[0]
    assert (last.turn, last.max_tokens, last.prompt_tokens) == (2, 4, 33)
    assert len(synth.tokenizer.encode(last.messages[0]["content"])) == 33
    assert plan.sessions[1].requests[0].max_tokens == 8


def test_bad_trace_line_is_one_line_error(tmp_path: Path, synth: TextSynth) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0, "prompt": "x"}\n{"timestamp": 1}\n')
    with pytest.raises(UserError, match=r"t\.jsonl:2: bad trace record"):
        build_plan(TraceWorkload(kind="trace", path=trace), synth, 0)
