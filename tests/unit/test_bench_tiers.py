"""`kvbench bench tiers`: ratios, targets and JSON shape, on a real (tiny) L1 and FS run.

The engine benchmark's ratio logic is tested here too, on hand-made TTFT samples, because running
that benchmark needs several vLLM engines (minutes) and belongs to no test suite.
"""

from __future__ import annotations

import json

import pytest

from kvbench.bench.common import Target, ratio
from kvbench.bench.tiers import ChunkShape, OpResult, TierReport, parse_shapes, run_tiers
from kvbench.errors import UserError

MICRO = ChunkShape("micro", layers=1, kv_heads=1, head_dim=8, tokens=16)


def _cell(tier: str, op: str, seconds: float, ref_seconds: float, shape: str = "micro") -> OpResult:
    return OpResult(tier, shape, op, 1_000_000, "ref", [seconds, seconds * 3, seconds], [ref_seconds])


def test_ratio_is_throughput_over_reference_and_targets_report_misses() -> None:
    report = TierReport(
        [
            _cell("l1", "save", 0.001, 0.0009),  # 0.9 of memcpy: met
            _cell("l1", "load", 0.002, 0.001),  # 0.5: missed
            _cell("redis", "save", 0.010, 0.007),  # 0.7: met (bound is inclusive)
            _cell("redis", "load", 0.010, 0.006),  # 0.6: missed
        ],
        [MICRO],
        repeats=3,
    )
    assert report.results[0].p50_ms == pytest.approx(1.0)  # median, not mean
    assert report.results[0].gbps == pytest.approx(1.0)
    ratios = report.ratios()
    assert ratios["l1_vs_memcpy"] == {"save": pytest.approx(0.9), "load": pytest.approx(0.5)}
    assert ratios["redis_vs_raw"] == {"save": pytest.approx(0.7), "load": pytest.approx(0.6)}
    verdicts = {t.name: t.met for t in report.targets()}
    assert verdicts == {
        "l1_vs_memcpy.save[micro]": True,
        "l1_vs_memcpy.load[micro]": False,
        "redis_vs_raw.save[micro]": True,
        "redis_vs_raw.load[micro]": False,
    }


def test_target_and_ratio_edge_cases() -> None:
    assert ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    assert Target("x", None, ">=", 0.8).met is None
    assert Target("x", 0.2, "<=", 0.25).met is True
    assert Target("x", 0.3, "<=", 0.25).verdict() == "MISSED"


def test_real_l1_and_fs_run_produces_every_figure_as_json() -> None:
    report = run_tiers([MICRO], 1, tiers=("l1", "fs"))
    doc = json.loads(json.dumps(report.as_dict()))
    cells = {(r["tier"], r["op"]) for r in doc["results"]}
    assert cells == {("l1", "save"), ("l1", "load"), ("fs", "save"), ("fs", "load")}
    for r in doc["results"]:
        assert r["bytes"] == MICRO.nbytes == 16 * 1 * 2 * 1 * 8 * 2
        assert r["gbps"] > 0 and r["ref_gbps"] > 0 and r["ratio"] > 0 and r["repeats"] == 1
    assert set(doc["ratios"]) == {"l1_vs_memcpy", "fs_vs_raw"}
    assert set(doc["ratios"]["l1_vs_memcpy"]) == {"save", "load"}
    assert doc["shapes"]["micro"]["bytes"] == MICRO.nbytes
    assert [t["name"] for t in doc["targets"]] == ["l1_vs_memcpy.save[micro]", "l1_vs_memcpy.load[micro]"]


def test_shapes_are_the_realistic_chunks_and_bad_input_is_a_user_error() -> None:
    eight_b, tiny = parse_shapes("8b, tiny")
    assert eight_b.nbytes == 64 << 20 and tiny.nbytes == 1 << 20
    with pytest.raises(UserError, match="unknown shape 'huge'"):
        parse_shapes("8b,huge")
    with pytest.raises(UserError):
        parse_shapes(" , ")
    with pytest.raises(UserError, match="--repeats"):
        run_tiers([MICRO], 0)


def test_engine_ratios_use_medians_of_the_same_run_and_overhead_is_a_percentage() -> None:
    from kvbench.bench.engine import EngineReport, Sample

    report = EngineReport([1024, 2048], repeats=3)
    for ttft in (1.0, 1.1, 5.0):  # the outlier must not move the median
        report.add("recompute", 1024, Sample(ttft))
    for ttft in (0.2, 0.2, 0.3):
        report.add("l1_hit", 1024, Sample(ttft, external_hit_tokens=1024))
    report.add("local_hit", 1024, Sample(0.1))
    report.add("redis_hit", 1024, Sample(0.6))
    report.add("fresh_l1", 1024, Sample(1.122))
    ratios = report.ratios()
    assert ratios["l1_hit/recompute"][1024] == pytest.approx(0.2 / 1.1)
    assert ratios["l1_hit/local_hit"][1024] == pytest.approx(2.0)
    assert ratios["overhead_pct"][1024] == pytest.approx(2.0)
    assert ratios["l1_hit/recompute"][2048] is None  # not measured at that length
    assert "example_hit/recompute" not in ratios
    verdicts = {t.name: t.met for t in report.targets()}
    assert verdicts["l1_hit/recompute[1024]"] is True
    assert verdicts["l1_hit/local_hit[1024]"] is False
    assert verdicts["redis_hit/recompute[1024]"] is False
    assert verdicts["overhead_pct[1024]"] is True
    assert verdicts["overhead_pct[2048]"] is None
    doc = json.loads(json.dumps(report.as_dict()))
    assert doc["ttft_ms_median"]["recompute"]["1024"] == pytest.approx(1100.0)
    assert doc["samples"]["l1_hit"]["1024"][0]["external_hit_tokens"] == 1024


def test_engine_prompt_lengths_are_validated() -> None:
    from kvbench.bench.engine import parse_lengths

    assert parse_lengths("3072, 1024,1024") == [1024, 3072]
    with pytest.raises(UserError):
        parse_lengths("1k")
    with pytest.raises(UserError):
        parse_lengths("8")
