"""Fixtures for kvbench's own unit tests: a small trained tokenizer and the streaming stub server."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvb_openai_stub import StubServer

_WORDS = [
    "cache",
    "prefix",
    "token",
    "engine",
    "layer",
    "block",
    "memory",
    "host",
    "remote",
    "store",
    "tier",
    "chunk",
    "model",
    "user",
    "answer",
    "question",
    "system",
    "prompt",
    "history",
    "turn",
    "document",
    "reuse",
    "offload",
    "restore",
    "evict",
    "policy",
    "latency",
    "budget",
    "window",
    "vector",
    "matrix",
    "tensor",
    "stream",
    "server",
    "client",
    "gateway",
    "router",
    "replica",
    "shard",
    "queue",
    "batch",
    "schedule",
    "compute",
    "attention",
    "header",
    "value",
    "key",
    "index",
    "table",
    "record",
    "window",
    "forest",
    "river",
    "mountain",
]


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer.json trained on fixed text (same vocabulary on every machine)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    lines = [" ".join(rng.choices(_WORDS, k=30)) for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    server = StubServer().start()
    try:
        yield server
    finally:
        server.stop()
