"""Top-level `kvbench run / validate / report / compare` commands.

Bad input (scenario, summary, bounds) raises `UserError`, which `kvbench.cli.main` prints as one line
with exit code 2. `compare` exits 1 when a bound is broken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kvbench.errors import UserError

# CI logs are not terminals: give tables room instead of rich's 80-column default there.
_console = Console(highlight=False, soft_wrap=True)
if not _console.is_terminal:
    _console = Console(highlight=False, soft_wrap=True, width=200)


def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file (see docs/kvbench-run.md).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Results directory (default: results/<time>-<name>).")
    ] = None,
    config: Annotated[
        list[str] | None, typer.Option("--config", help="Run only this configuration (repeatable).")
    ] = None,
    profile: Annotated[
        bool | None, typer.Option("--profile/--no-profile", help="Collect engine profiles per configuration.")
    ] = None,
) -> None:
    """Run a scenario: every configuration against a fresh target; tables, records, plots, summary.json.

    Exit 0 when every configuration ran (request errors are counted, not fatal), 1 when a
    configuration's target failed to start, 2 on bad input, 130 on Ctrl-C (partial results kept).
    """
    from kvbench.runner import RunOptions, default_out_dir, run_scenario
    from kvbench.scenario import load_scenario

    sc = load_scenario(scenario)
    out_dir = out if out is not None else default_out_dir(sc)
    summary = run_scenario(
        sc, scenario, RunOptions(out_dir=out_dir, profile=profile, only=config, console=_console)
    )
    failed = [c["name"] for c in summary["configs"] if any(n.startswith("target failed") for n in c["notes"])]
    if failed:
        _console.print(f"[red]target failed to start for: {', '.join(failed)} (see logs/ in {out_dir})[/]")
        raise typer.Exit(1)


def validate(file: Annotated[Path, typer.Argument(help="Scenario YAML file.")]) -> None:
    """Check a scenario file without running it."""
    from kvbench.scenario import load_scenario

    sc = load_scenario(file)
    names = ", ".join(c.name for c in sc.configs)
    _console.print(f"{file}: ok ({sc.target.kind} target, {sc.workload.kind} workload, configs: {names})")


def report(
    results: Annotated[Path, typer.Argument(help="A results directory written by `kvbench run`.")],
) -> None:
    """Re-render tables and plots from a results directory."""
    from kvbench.report import print_report, write_plots
    from kvbench.results import load_rows, load_summary

    summary = load_summary(results)
    if not results.is_dir():
        raise UserError(f"{results}: not a results directory")
    rows = load_rows(results)
    print_report(summary, _console)
    for p in write_plots(summary, rows, results):
        _console.print(f"wrote {p}")


def compare(
    base: Annotated[Path, typer.Argument(help="Recorded summary.json or results directory.")],
    current: Annotated[Path, typer.Argument(help="Current summary.json or results directory.")],
    max_regression: Annotated[
        list[str] | None,
        typer.Option(
            "--max-regression",
            help="[CONFIG:]FIGURE=LIMIT, LIMIT as 10% (relative), 5pp (points) or 0.2 (absolute). Repeatable.",
        ),
    ] = None,
) -> None:
    """Compare two runs; exit 1 when any --max-regression bound is broken, 0 otherwise, 2 on bad input."""
    from kvbench import compare as cmp
    from kvbench.results import load_summary

    bounds = [cmp.parse_bound(b) for b in (max_regression or [])]
    b, c = load_summary(base), load_summary(current)
    checks = cmp.compare(b, c, bounds)
    _console.print(_side_by_side(b, c))
    if checks:
        t = Table(title="regression bounds", title_justify="left")
        for col in ("config", "figure", "recorded", "current", "bound", "result"):
            t.add_column(col, justify="left" if col in ("config", "figure", "result") else "right")
        for ch in checks:
            t.add_row(
                ch.config, ch.figure, _fmt(ch.base), _fmt(ch.current), ch.bound.describe() if ch.bound else "",
                "ok" if ch.ok else f"[red]BROKEN[/] {ch.why}",
            )  # fmt: skip
        _console.print(t)
    code = cmp.exit_code(checks)
    _console.print("all bounds hold" if code == 0 else "[red]regression: at least one bound is broken[/]")
    raise typer.Exit(code)


_SIDE = (
    "ttft_p50_ms", "ttft_later_p50_ms", "ttft_p50_ratio", "ttft_later_p50_ratio", "engine_hit_rate",
    "external_hit_rate", "l1_hit_rate", "l2_hit_rate", "output_tok_per_s", "errors",
)  # fmt: skip


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _side_by_side(base: dict, cur: dict) -> Table:
    t = Table(title="recorded -> current", title_justify="left")
    t.add_column("config")
    for f in _SIDE:
        t.add_column(f, justify="right")
    bm = {c["name"]: c["metrics"] for c in base["configs"]}
    for c in cur["configs"]:
        m, r = c["metrics"], bm.get(c["name"], {})
        t.add_row(c["name"], *[f"{_fmt(r.get(f))} -> {_fmt(m.get(f))}" for f in _SIDE])
    return t


def register(app: typer.Typer) -> None:
    """Attach the top-level commands to the root app."""
    app.command("run")(run)
    app.command("validate")(validate)
    app.command("report")(report)
    app.command("compare")(compare)
