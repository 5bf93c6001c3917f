"""`kvbench run` on the real embedded target (vLLM CPU engine, the project's connector, redis-server),
then `kvbench compare` against the result recorded in the repository.

The bounds are on relative figures (TTFT of later turns as a ratio to baseline in the same run) and on
hit rates. Token hit rates are deterministic for a given workload (identical across runs), so a
10-point bound fails at once when the connector serves no hits. The TTFT ratio is noisy on 2 shared
cores (recorded 0.45-0.54, seen up to 0.67 under load), so it may get 75 % worse: with the recorded
ratios that still fails when later turns are no faster than baseline (ratio ~1.0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "scenarios" / "ci-smoke.yaml"
RECORDED = REPO / "tests" / "fixtures" / "ci-baseline-summary.json"
BOUNDS = [
    "l1:ttft_later_p50_ratio=75%",
    "l2-redis:ttft_later_p50_ratio=75%",
    "l1:l1_hit_rate=-10pp",
    "l2-redis:l2_hit_rate=-10pp",
    "errors=0",
]


def _kvbench(args: list[str], cache_dir: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KVBENCH_CACHE_DIR": str(cache_dir), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "kvbench", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.integration
def test_ci_smoke_run_and_compare_with_recorded(
    tmp_path: Path, tiny_model_dir: Path, kvbench_cache_dir: Path
) -> None:
    out = tmp_path / "run"
    run = _kvbench(["run", str(SCENARIO), "--out", str(out)], kvbench_cache_dir, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    by = {c["name"]: c for c in summary["configs"]}
    assert list(by) == ["baseline", "l1", "l2-redis"]
    for name, c in by.items():
        assert c["metrics"]["requests"] == 24, (name, c["notes"])
        assert c["metrics"]["errors"] == 0, (name, c["errors_by_kind"])
    # The workload overflows the engine's KV space: baseline reuses little more than the shared
    # system prompt, and only the connector configurations get external hits, from their own tier.
    assert by["baseline"]["metrics"]["external_hit_rate"] is None
    assert by["l1"]["metrics"]["l1_hit_rate"] > 0.2
    assert by["l2-redis"]["metrics"]["l2_hit_rate"] > 0.2
    assert by["l2-redis"]["metrics"]["l1_hit_rate"] in (None, 0.0)
    assert any("local redis-server" in n for n in by["l2-redis"]["notes"])
    for name in ("l1", "l2-redis"):
        m = by[name]["metrics"]
        print(
            f"{name}: ttft_later_p50_ratio={m['ttft_later_p50_ratio']:.2f} ttft_p50_ratio={m['ttft_p50_ratio']:.2f}"
        )

    bounds = [a for b in BOUNDS for a in ("--max-regression", b)]
    cmp = _kvbench(["compare", str(RECORDED), str(out), *bounds], kvbench_cache_dir, timeout=120)
    print(cmp.stdout)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr

    rep = _kvbench(["report", str(out)], kvbench_cache_dir, timeout=120)
    assert rep.returncode == 0 and "TTFT p50 ms by turn" in rep.stdout
