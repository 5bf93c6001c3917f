"""Chunk keys: chained, deterministic across processes, and isolated by every namespace field."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connector.keys import KeyNamespace, chain_hashes, chunk_keys

NS = KeyNamespace(model="org/model@rev1", kv_dtype="bfloat16", kv_layout="NHD", block_size=16, chunk_size=32)
TOKENS = list(range(1000, 1000 + 32 * 5 + 7))  # five full chunks and a partial one
REPO = Path(__file__).resolve().parents[3]


def test_full_chunks_only_partial_chunk_has_no_key() -> None:
    assert len(chunk_keys(NS, TOKENS)) == 5
    assert chunk_keys(NS, TOKENS[:31]) == []
    assert len(chunk_keys(NS, TOKENS[:32])) == 1
    assert chunk_keys(NS, TOKENS[: 32 * 5]) == chunk_keys(NS, TOKENS)


def test_keys_are_distinct_and_name_the_rank_and_user() -> None:
    keys = chunk_keys(NS, TOKENS)
    assert len(set(keys)) == len(keys)
    assert all(k.startswith("aibrix:") and ":tp0pp0:" in k for k in keys)


def test_chaining_one_token_in_chunk_zero_changes_every_later_key() -> None:
    base = chunk_keys(NS, TOKENS)
    changed = list(TOKENS)
    changed[3] += 1
    other = chunk_keys(NS, changed)
    assert all(a != b for a, b in zip(base, other, strict=True))


def test_change_in_a_later_chunk_keeps_the_leading_keys() -> None:
    base = chunk_keys(NS, TOKENS)
    changed = list(TOKENS)
    changed[32 * 2 + 5] = 7
    other = chunk_keys(NS, changed)
    assert other[:2] == base[:2]
    assert all(a != b for a, b in zip(base[2:], other[2:], strict=True))


def test_same_prefix_gives_same_leading_keys_whatever_follows() -> None:
    a = chunk_keys(NS, TOKENS[:64] + [1] * 64)
    b = chunk_keys(NS, TOKENS[:64] + [2] * 64)
    assert a[:2] == b[:2] and a[2:] != b[2:]


def test_same_tokens_in_another_position_get_another_key() -> None:
    """A chunk key names its whole prefix, not just its own tokens."""
    chunk = TOKENS[:32]
    assert chunk_keys(NS, chunk + chunk)[1] != chunk_keys(NS, chunk)[0]


def test_start_and_limit_extend_the_chain_like_a_full_computation() -> None:
    full = chain_hashes(NS.seed, TOKENS, NS.chunk_size)
    head = chain_hashes(NS.seed, TOKENS[:64], NS.chunk_size)
    tail = chain_hashes(head[-1], TOKENS, NS.chunk_size, start=64)
    assert head + tail == full
    assert chain_hashes(NS.seed, TOKENS, NS.chunk_size, limit=2) == full[:2]
    assert chain_hashes(head[-1], TOKENS, NS.chunk_size, start=64, limit=1) == full[2:3]
    assert chunk_keys(NS, TOKENS, limit=3) == chunk_keys(NS, TOKENS)[:3]
    with pytest.raises(ValueError):
        chain_hashes(NS.seed, TOKENS, NS.chunk_size, start=10)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "org/model@rev2"},
        {"kv_dtype": "float16"},
        {"kv_layout": "HND"},
        {"block_size": 32},
        {"chunk_size": 64},
        {"tp_size": 2},
        {"tp_size": 2, "tp_rank": 1},
        {"pp_size": 2, "pp_rank": 1},
        {"user": "tenant-b"},
    ],
)
def test_every_namespace_field_changes_the_storage_key(change: dict) -> None:
    other = dataclasses.replace(NS, **change)
    tokens = TOKENS[:64]
    assert set(chunk_keys(NS, tokens)).isdisjoint(chunk_keys(other, tokens))


def test_ranks_share_the_chain_but_not_the_storage_key() -> None:
    ns = dataclasses.replace(NS, tp_size=2)
    r0, r1 = ns.for_rank(0), ns.for_rank(1)
    assert chain_hashes(r0.seed, TOKENS, 32) == chain_hashes(r1.seed, TOKENS, 32)
    assert set(chunk_keys(r0, TOKENS)).isdisjoint(chunk_keys(r1, TOKENS))


@pytest.mark.parametrize(
    "bad",
    [
        {"user": ""},
        {"user": "a/b"},
        {"user": ".."},
        {"user": "x" * 65},
        {"chunk_size": 24},
        {"block_size": 0},
        {"tp_rank": 1},
        {"pp_rank": -1},
    ],
)
def test_invalid_namespace_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(NS, **bad)


_CHILD = """
import json, sys
from connector.keys import KeyNamespace, chunk_keys
ns = KeyNamespace(**json.loads(sys.argv[1]))
print(json.dumps(chunk_keys(ns, json.loads(sys.argv[2]))))
"""


def test_keys_are_identical_in_another_process_with_another_hash_seed() -> None:
    fields = dataclasses.asdict(NS)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(fields), json.dumps(TOKENS)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout) == chunk_keys(NS, TOKENS)
