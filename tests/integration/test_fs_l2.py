"""Two processes share chunks through the FS backend, as engines on one shared filesystem would.

The writer is a separate Python process with another PYTHONHASHSEED: the reader here finds its
chunks only if keys, the stored format and the directory layout agree across processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from connector.config import CacheConfig
from connector.keys import KeyNamespace, chunk_keys
from connector.l2 import create_backend
from connector.tiered import TieredCache

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = 2048
SETTINGS = {
    "CHUNK_SIZE": 16,
    "BLOCK_SIZE": 16,
    "L2_CACHE_BACKEND": "FS",
    "L2_CACHE_INGESTION_TYPE": "ALL",
    "L1_CACHE_CAPACITY_GB": 0.001,
}
NAMESPACE = {"model": "tiny@0", "kv_dtype": "float32", "kv_layout": "NHD", "block_size": 16, "chunk_size": 16}
TOKENS = list(range(500, 500 + 16 * 4 + 5))

_WRITER = """
import hashlib, json, sys
import torch
from connector import CacheConfig, KeyNamespace, TieredCache, chunk_keys
from connector.l2 import create_backend

settings, namespace, tokens, payload = json.loads(sys.argv[1])
config = CacheConfig.from_env({}, settings)
cache = TieredCache(config, payload, l2=create_backend(config))
for key in chunk_keys(KeyNamespace(**namespace), tokens):
    data = bytearray(hashlib.shake_128(key.encode()).digest(payload))
    assert cache.save(key, lambda view, d=data: view.copy_(torch.frombuffer(d, dtype=torch.uint8)))
cache.flush()
cache.close()
print("saved")
"""


def _run_writer(root: Path, namespace: dict) -> None:
    settings = {**SETTINGS, "FS_ROOT": str(root)}
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run(
        [sys.executable, "-c", _WRITER, json.dumps([settings, namespace, TOKENS, PAYLOAD])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def _reader(root: Path) -> TieredCache:
    config = CacheConfig.from_env({}, {**SETTINGS, "FS_ROOT": str(root)})
    return TieredCache(config, PAYLOAD, l2=create_backend(config))


def test_chunks_written_by_another_process_are_found_and_intact(tmp_path: Path) -> None:
    _run_writer(tmp_path, NAMESPACE)
    keys = chunk_keys(KeyNamespace(**NAMESPACE), TOKENS)
    assert len(keys) == 4
    reader = _reader(tmp_path)
    assert reader.lookup(keys).l2 == 4
    got: dict[int, bytes] = {}
    result = reader.load(keys, lambda i, payload: got.__setitem__(i, payload.numpy().tobytes()))
    assert result.l2 == 4
    assert got == {i: hashlib.shake_128(k.encode()).digest(PAYLOAD) for i, k in enumerate(keys)}
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files left by the writer"


def test_another_model_does_not_see_them(tmp_path: Path) -> None:
    _run_writer(tmp_path, NAMESPACE)
    other = KeyNamespace(**{**NAMESPACE, "model": "tiny@1"})
    reader = _reader(tmp_path)
    assert reader.lookup(chunk_keys(other, TOKENS)).total == 0
    sink = torch.zeros(1)
    assert reader.load(chunk_keys(other, TOKENS), lambda i, p: sink.add_(1)).total == 0
    assert float(sink) == 0
