"""Tables and plots from a summary (and request rows): what `kvbench run` prints and `report` re-renders.

The main table has one row per configuration; the TTFT-by-turn table shows turn 1 (cold) against
later turns, which is where prefix reuse shows. Plots use matplotlib's Agg backend (no display).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

TTFT_CDF_PNG = "ttft_cdf.png"
TTFT_BY_TURN_PNG = "ttft_by_turn.png"


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100.0 * v:.1f}%"


def _ratio(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}x"


def main_table(summary: Mapping[str, Any]) -> Table:
    title = f"{summary['scenario'].get('name', '')}: per configuration (baseline = {summary.get('baseline')})"
    t = Table(title=title, title_justify="left")
    cols = [
        "config", "req", "err", "TTFT p50 ms", "p90", "p99", "TPOT ms", "ITL p50", "E2E p50", "tok/s",
        "engine hit", "L1 hit", "L2 hit", "TTFT/base", "later/base",
    ]  # fmt: skip
    has_cpu = any("connector_cpu_share" in c["metrics"] for c in summary["configs"])
    if has_cpu:
        cols.append("connector CPU")
    for c in cols:
        t.add_column(c, justify="left" if c == "config" else "right")
    for c in summary["configs"]:
        m = c["metrics"]
        row = [
            c["name"], str(m.get("requests", 0)), str(m.get("errors", 0)),
            _num(m.get("ttft_p50_ms")), _num(m.get("ttft_p90_ms")), _num(m.get("ttft_p99_ms")),
            _num(m.get("tpot_p50_ms"), "{:.2f}"), _num(m.get("itl_p50_ms"), "{:.2f}"), _num(m.get("e2e_p50_ms")),
            _num(m.get("output_tok_per_s")), _pct(m.get("engine_hit_rate")), _pct(m.get("l1_hit_rate")),
            _pct(m.get("l2_hit_rate")), _ratio(m.get("ttft_p50_ratio")), _ratio(m.get("ttft_later_p50_ratio")),
        ]  # fmt: skip
        if has_cpu:
            row.append(_pct(m.get("connector_cpu_share")))
        t.add_row(*row)
    return t


def turn_table(summary: Mapping[str, Any]) -> Table:
    turns = sorted({int(k) for c in summary["configs"] for k in c.get("ttft_by_turn", {})})
    t = Table(title="TTFT p50 ms by turn (turn 1 = cold prefix)", title_justify="left")
    t.add_column("config")
    for n in turns:
        t.add_column(f"turn {n}", justify="right")
    for c in summary["configs"]:
        by = c.get("ttft_by_turn", {})
        t.add_row(c["name"], *[_num(by.get(str(n), {}).get("p50_ms")) for n in turns])
    return t


def print_report(summary: Mapping[str, Any], console: Console) -> None:
    console.print(f"target: {summary['target'].get('kind')} ({summary['target'].get('toggles')})")
    console.print(main_table(summary))
    if any(c.get("ttft_by_turn") for c in summary["configs"]):
        console.print(turn_table(summary))
    for c in summary["configs"]:
        for note in c.get("notes", []):
            console.print(f"[dim]{c['name']}: {note}[/]", markup=True, highlight=False)
        if c.get("errors_by_kind"):
            kinds = ", ".join(f"{k} x{v}" for k, v in c["errors_by_kind"].items())
            console.print(f"[yellow]{c['name']}: errors: {kinds}[/]", markup=True, highlight=False)


def _save_plot(fig: Any, ax: Any, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(summary: Mapping[str, Any], rows: pd.DataFrame, out: Path) -> list[Path]:
    """TTFT CDF per configuration and TTFT p50 by turn; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    measured = rows[(~rows["warmup"].astype(bool)) & (rows["ok"].astype(bool))] if not rows.empty else rows
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in summary["configs"]:
        vals = (
            sorted(measured.loc[measured["config"] == c["name"], "ttft_ms"].dropna())
            if not measured.empty
            else []
        )
        if vals:
            ys = [(i + 1) / len(vals) for i in range(len(vals))]
            ax.step(vals, ys, where="post", label=c["name"])
    written.append(
        _save_plot(
            fig, ax, "TTFT (ms)", "fraction of requests", "TTFT CDF per configuration", out / TTFT_CDF_PNG
        )
    )

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in summary["configs"]:
        by = c.get("ttft_by_turn", {})
        turns = sorted(int(k) for k in by if by[k].get("p50_ms") is not None)
        if turns:
            ax.plot(turns, [by[str(t)]["p50_ms"] for t in turns], marker="o", label=c["name"])
    written.append(
        _save_plot(fig, ax, "turn (1 = cold prefix)", "TTFT p50 (ms)", "TTFT by turn", out / TTFT_BY_TURN_PNG)
    )
    return written
