"""Percentiles, figure computation and /metrics diffing (counters count only across the run)."""

from __future__ import annotations

import pytest

from kvbench import promscrape
from kvbench.client import RequestResult
from kvbench.promscrape import CacheFigures, cache_figures, parse
from kvbench.results import ConfigResult, add_relative, config_figures, percentile, record_row, rows_frame
from kvbench.workload.plan import PlannedRequest


def test_percentile_linear_interpolation() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 0) == 1 and percentile([4, 1, 3, 2], 100) == 4
    assert percentile(range(1, 101), 90) == pytest.approx(90.1)
    assert percentile([1.0, float("nan"), 3.0], 50) == 2.0


BEFORE = """\
# HELP vllm:prefix_cache_queries x
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 500
vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e9
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 100
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 0
# TYPE vllm:kvcache_ol_lookup_tokens counter
vllm:kvcache_ol_lookup_tokens_total{model_name="m"} 4000
# TYPE vllm:kvcache_ol_hit_tokens counter
vllm:kvcache_ol_hit_tokens_total{model_name="m",tier="l1"} 1000
vllm:kvcache_ol_hit_tokens_total{model_name="m",tier="l2"} 10
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1"} 3
vllm:time_to_first_token_seconds_count 3
vllm:time_to_first_token_seconds_sum 0.2
"""


def _after(**bump: float) -> str:
    text = BEFORE
    repl = {
        'queries_total{engine="0",model_name="m"} 1000': f'queries_total{{engine="0",model_name="m"}} {1000 + bump.get("q0", 0)}',
        'queries_total{engine="1",model_name="m"} 500': f'queries_total{{engine="1",model_name="m"}} {500 + bump.get("q1", 0)}',
        'hits_total{engine="0",model_name="m"} 100': f'hits_total{{engine="0",model_name="m"}} {100 + bump.get("h0", 0)}',
        "lookup_tokens_total{model_name=\"m\"} 4000": f'lookup_tokens_total{{model_name="m"}} {4000 + bump.get("lk", 0)}',
        'tier="l1"} 1000': f'tier="l1"}} {1000 + bump.get("l1", 0)}',
        'tier="l2"} 10': f'tier="l2"}} {10 + bump.get("l2", 0)}',
    }  # fmt: skip
    for a, b in repl.items():
        text = text.replace(a, b)
    return text


def test_rates_are_differences_summed_over_labels() -> None:
    fig = cache_figures(parse(BEFORE), parse(_after(q0=300, q1=100, h0=100, lk=1000, l1=600, l2=200)))
    assert fig.prefix_queries == 400 and fig.prefix_hits == 100
    assert fig.engine_hit_rate == pytest.approx(0.25)
    assert fig.l1_hit_rate == pytest.approx(0.6)
    assert fig.l2_hit_rate == pytest.approx(0.2)
    # Absent connector metrics -> None, and a denominator that did not move -> None (never 0/0 = 0).
    assert fig.external_hit_rate is None
    same = cache_figures(parse(BEFORE), parse(BEFORE))
    assert same.engine_hit_rate is None and same.l1_hit_tokens == 0


def test_counter_reset_counts_from_zero() -> None:
    before = parse(_after(lk=1000, l1=500))
    after = parse(BEFORE.replace("4000", "40").replace('tier="l1"} 1000', 'tier="l1"} 20'))
    assert promscrape.delta(before, after, promscrape.OL_LOOKUP) == 40
    assert promscrape.delta(before, after, promscrape.OL_HITS, tier="l1") == 20


def test_scrape_failure_is_reported_not_raised() -> None:
    snap = promscrape.scrape(["http://127.0.0.1:9/metrics"], timeout_s=1)
    assert snap.error and "127.0.0.1:9" in snap.error
    assert cache_figures(snap, snap).error == snap.error


def _row(cfg: str, turn: int, ttft: float | None, warmup: bool = False, err: str | None = None) -> dict:
    req = PlannedRequest(f"{cfg}-{turn}-{ttft}", "s", turn, 4, 10, prompt="x", warmup=warmup)
    res = RequestResult(req.id, 0.0, 100.0, status=200 if err is None else 500, error=err)
    if ttft is not None:
        res.ttft_s = ttft / 1000
        res.token_times_s = [ttft / 1000 + i * 0.01 for i in range(4)]
        res.end_s = ttft / 1000 + 0.05
        res.completion_tokens = 4
        res.prompt_tokens = 10
    return record_row(cfg, req, res, 100.0)


def test_figures_exclude_warmup_and_count_errors() -> None:
    rows = rows_frame(
        [
            _row("a", 1, 100.0),
            _row("a", 2, 20.0),
            _row("a", 3, 40.0),
            _row("a", 1, 999.0, warmup=True),
            _row("a", 2, None, err="HTTP 500: x"),
        ]
    )
    cfg = ConfigResult("a", True, duration_s=2.0, cache=CacheFigures(lookup_tokens=100, l1_hit_tokens=50))
    fig = config_figures(rows, cfg)
    assert (fig["requests"], fig["ok"], fig["errors"]) == (4, 3, 1)
    assert fig["ttft_p50_ms"] == pytest.approx(40.0)
    assert fig["ttft_first_turn_p50_ms"] == pytest.approx(100.0)
    assert fig["ttft_later_p50_ms"] == pytest.approx(30.0)
    assert fig["itl_p50_ms"] == pytest.approx(10.0)
    assert fig["tpot_p50_ms"] == pytest.approx(50.0 / 3)
    assert fig["output_tok_per_s"] == pytest.approx(6.0)
    assert fig["l1_hit_rate"] == pytest.approx(0.5)


def test_relative_figures_divide_by_baseline() -> None:
    configs = [
        {
            "name": "baseline",
            "metrics": {"ttft_p50_ms": 100.0, "ttft_later_p50_ms": 200.0, "output_tok_per_s": 10.0},
        },
        {"name": "l1", "metrics": {"ttft_p50_ms": 50.0, "ttft_later_p50_ms": 50.0, "output_tok_per_s": 20.0}},
    ]
    add_relative(configs, "baseline")
    assert configs[1]["metrics"]["ttft_p50_ratio"] == pytest.approx(0.5)
    assert configs[1]["metrics"]["ttft_later_p50_ratio"] == pytest.approx(0.25)
    assert configs[1]["metrics"]["output_tok_per_s_ratio"] == pytest.approx(2.0)
    assert configs[0]["metrics"]["ttft_p50_ratio"] == pytest.approx(1.0)
    assert configs[1]["metrics"]["ttft_p90_ratio"] is None
