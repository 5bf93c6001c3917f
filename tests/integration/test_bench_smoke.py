"""`kvbench bench tiers` end to end through the CLI, with its own real redis-server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_bench_tiers_json_measures_every_tier_against_its_reference() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kvbench", "bench", "tiers", "--json", "--shapes", "tiny", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {(r["tier"], r["op"]) for r in doc["results"]} == {
        (tier, op) for tier in ("l1", "redis", "fs") for op in ("save", "load")
    }
    assert {r["reference"] for r in doc["results"] if r["tier"] == "redis"} == {"raw SET", "raw GET"}
    for name in ("l1_vs_memcpy", "redis_vs_raw"):
        assert set(doc["ratios"][name]) == {"save", "load"}
        assert all(value > 0 for value in doc["ratios"][name].values())
    assert all(t["met"] in (True, False) for t in doc["targets"])
    assert doc["redis"]["started_here"] is True
    with pytest.raises(ConnectionRefusedError):  # the command stopped the redis-server it started
        socket.create_connection(("127.0.0.1", doc["redis"]["port"]), timeout=2.0).close()


def test_bench_tiers_rejects_bad_shapes_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kvbench", "bench", "tiers", "--shapes", "huge"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown shape 'huge'" in proc.stderr and "Traceback" not in proc.stderr
