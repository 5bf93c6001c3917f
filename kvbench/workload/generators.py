"""Workload generators: scenario `workload` section + tokenizer + seed -> `Plan`.

All content and timing comes from `child_rng(seed, ...)` streams, so a plan is a pure function of
(scenario, tokenizer, seed). Every text piece is sized in exact tokens (`TextSynth`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kvbench.errors import UserError
from kvbench.scenario import (
    MultiTurnWorkload,
    SharedPrefixWorkload,
    TraceWorkload,
    Workload,
)
from kvbench.workload.plan import (
    Plan,
    PlannedRequest,
    Session,
    arrival_times,
    child_rng,
    sample,
    sample_int,
)
from kvbench.workload.tokens import TextSynth

_SEP = "\n\n"


def build_plan(workload: Workload, synth: TextSynth, seed: int) -> Plan:
    if isinstance(workload, MultiTurnWorkload):
        sessions = _multi_turn(workload, synth, seed)
    elif isinstance(workload, SharedPrefixWorkload):
        sessions = _shared_prefix(workload, synth, seed)
    elif isinstance(workload, TraceWorkload):
        sessions = _trace(workload, synth, seed)
    else:  # pragma: no cover - the schema admits only the kinds above
        raise TypeError(type(workload))
    warm = _warmup(workload, synth, seed, sessions)
    return Plan(
        sessions=tuple(sessions),
        warmup=tuple(warm),
        concurrency=workload.arrival.concurrency,
        max_requests=workload.max_requests,
        duration_s=workload.duration_s,
    )


def _request(
    synth: TextSynth,
    chat: bool,
    rid: str,
    session: str,
    turn: int,
    pieces: list[tuple[str, str]],
    counts: list[int],
    max_tokens: int,
    **kw: Any,
) -> PlannedRequest:
    """pieces: (role, text). Chat sends messages (prompt_tokens = sum of the content counts);
    completions sends the texts joined by blank lines (prompt_tokens = the joined prompt's count)."""
    if chat:
        messages = tuple({"role": role, "content": text} for role, text in pieces if text)
        return PlannedRequest(rid, session, turn, max_tokens, sum(counts), messages=messages, **kw)
    prompt = _SEP.join(text for _, text in pieces if text)
    return PlannedRequest(rid, session, turn, max_tokens, synth.count(prompt), prompt=prompt, **kw)


def _multi_turn(w: MultiTurnWorkload, synth: TextSynth, seed: int) -> list[Session]:
    chat = w.request.endpoint == "chat"
    lengths = child_rng(seed, "multi_turn", "lengths")
    starts = arrival_times(w.arrival, w.users, child_rng(seed, "multi_turn", "arrivals"))
    shared_n = w.system_prompt_tokens
    shared = synth.text(shared_n, child_rng(seed, "multi_turn", "system")) if w.shared_system_prompt else None
    sessions = []
    for u in range(w.users):
        content = child_rng(seed, "multi_turn", "user", u)
        sid = f"user{u:03d}"
        system = shared if shared is not None else synth.text(shared_n, content)
        history: list[tuple[str, str]] = [("system", system)]
        counts = [shared_n]
        reqs = []
        for t in range(1, w.turns + 1):
            qn = max(1, sample_int(w.question_tokens, lengths))
            an = max(1, sample_int(w.answer_tokens, lengths))
            think = 0.0 if t == 1 else sample(w.think_time_s, lengths)
            history.append(("user", synth.text(qn, content)))
            counts.append(qn)
            reqs.append(
                _request(
                    synth, chat, f"{sid}-t{t}", sid, t, list(history), list(counts), an, think_time_s=think
                )
            )
            # The next turn carries this turn's answer; synthetic answers keep all configs' prompts equal.
            history.append(("assistant", synth.text(an, content)))
            counts.append(an)
        sessions.append(Session(sid, starts[u], tuple(reqs)))
    return sessions


def _shared_prefix(w: SharedPrefixWorkload, synth: TextSynth, seed: int) -> list[Session]:
    chat = w.request.endpoint == "chat"
    lengths = child_rng(seed, "shared_prefix", "lengths")
    order_rng = child_rng(seed, "shared_prefix", "order")
    docs = []
    for g in range(w.groups):
        n = max(1, sample_int(w.prefix_tokens, lengths))
        docs.append((n, synth.text(n, child_rng(seed, "shared_prefix", "doc", g))))
    per_group: list[list[PlannedRequest]] = []
    for g, (dn, doc) in enumerate(docs):
        qrng = child_rng(seed, "shared_prefix", "questions", g)
        reqs = []
        for i in range(w.requests_per_group):
            qn = max(1, sample_int(w.suffix_tokens, lengths))
            on = max(1, sample_int(w.output_tokens, lengths))
            pieces = (
                [("user", doc + _SEP + synth.text(qn, qrng))]
                if chat
                else [("", doc), ("", synth.text(qn, qrng))]
            )
            counts = [dn + synth.count(_SEP) + qn] if chat else [dn, qn]
            reqs.append(
                _request(
                    synth,
                    chat,
                    f"doc{g:03d}-q{i + 1}",
                    f"doc{g:03d}-q{i + 1}",
                    i + 1,
                    pieces,
                    counts,
                    on,
                    group=f"doc{g:03d}",
                )
            )
        per_group.append(reqs)
    if w.order == "grouped":
        ordered = [r for reqs in per_group for r in reqs]
    elif w.order == "interleaved":
        ordered = [reqs[i] for i in range(w.requests_per_group) for reqs in per_group]
    else:
        # Random, but a group's first request always precedes its others: "turn 1" stays the cold one.
        slots = [g for g, reqs in enumerate(per_group) for _ in reqs]
        order_rng.shuffle(slots)
        nxt = [0] * len(per_group)
        ordered = []
        for g in slots:
            ordered.append(per_group[g][nxt[g]])
            nxt[g] += 1
    starts = arrival_times(w.arrival, len(ordered), child_rng(seed, "shared_prefix", "arrivals"))
    return [Session(r.session, s, (r,)) for r, s in zip(ordered, starts, strict=True)]


def _trace(w: TraceWorkload, synth: TextSynth, seed: int) -> list[Session]:
    chat = w.request.endpoint == "chat"
    path = Path(w.path)
    sessions = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                sessions.append(_trace_record(rec, lineno, w, synth, seed, chat))
            except (json.JSONDecodeError, TypeError, ValueError, KeyError) as exc:
                raise UserError(f"{path}:{lineno}: bad trace record: {exc}") from None
    sessions.sort(key=lambda s: s.start_s)
    return sessions


def _trace_record(
    rec: dict[str, Any], lineno: int, w: TraceWorkload, synth: TextSynth, seed: int, chat: bool
) -> Session:
    if not isinstance(rec, dict):
        raise ValueError("each line must be a JSON object")
    ts = float(rec.get("timestamp", 0.0)) / w.speedup
    out = int(rec.get("output_tokens", rec.get("max_tokens", w.default_output_tokens)))
    sid = str(rec.get("session", f"line{lineno}"))
    turn = int(rec.get("turn", 1))
    rid = f"{sid}-l{lineno}"
    if "messages" in rec:
        msgs = [(str(m["role"]), str(m["content"])) for m in rec["messages"]]
        counts = [synth.count(t) for _, t in msgs]
        if not chat:
            msgs = [("", t) for _, t in msgs]
    elif "prompt" in rec:
        msgs = [("user", str(rec["prompt"]))]
        counts = [synth.count(msgs[0][1])]
    elif "input_tokens" in rec:
        n = int(rec["input_tokens"])
        msgs = [("user", synth.text(n, child_rng(seed, "trace", lineno)))]
        counts = [n]
    else:
        raise ValueError("needs one of messages, prompt, input_tokens")
    return Session(rid, ts, (_request(synth, chat, rid, sid, turn, msgs, counts, out),))


def _warmup(w: Workload, synth: TextSynth, seed: int, sessions: list[Session]) -> list[PlannedRequest]:
    """Independent prompts (sharing nothing with the measured ones) to warm the engine up."""
    if not w.warmup_requests:
        return []
    chat = w.request.endpoint == "chat"
    first = sessions[0].requests[0] if sessions else None
    n = max(1, min(first.prompt_tokens if first else 64, 512))
    out_n = first.max_tokens if first else 16
    rng = child_rng(seed, "warmup")
    return [
        _request(
            synth,
            chat,
            f"warmup{i}",
            f"warmup{i}",
            1,
            [("user", synth.text(n, rng))],
            [n],
            out_n,
            warmup=True,
        )
        for i in range(w.warmup_requests)
    ]
