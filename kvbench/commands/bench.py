"""`kvbench bench tiers` and `kvbench bench engine`: measured figures next to same-run references.

Both print a rich table (or, with `--json`, one JSON document on stdout) and a verdict per target;
a missed target is reported, never turned into a failing exit code, because these are measurements
of a host, not checks of correctness.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kvbench.bench.common import Target, fmt
from kvbench.errors import UserError

app = typer.Typer(help="Benchmarks: cache tiers on this host, and the real engine.", no_args_is_help=True)
_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)


def _print_targets(targets: list[Target]) -> None:
    for target in targets:
        colour = {True: "green", False: "red", None: "yellow"}[target.met]
        _out.print(
            f"target {escape(target.name)} {target.op} {target.bound:g}: {fmt(target.value)} "
            f"[{colour}]{target.verdict()}[/]"
        )


@app.command("tiers")
def tiers(
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on stdout.")] = False,
    repeats: Annotated[int, typer.Option(help="Timed repetitions per cell (median is reported).")] = 7,
    shapes: Annotated[str, typer.Option(help="Chunk shapes, comma-separated: 8b, tiny.")] = "8b,tiny",
    redis_url: Annotated[
        str | None, typer.Option(help="Use this Redis instead of starting a local redis-server.")
    ] = None,
) -> None:
    """Save/load GB/s and p50 latency of L1, Redis L2 and FS L2 vs memcpy and raw redis-py."""
    from kvbench.bench.tiers import parse_shapes, run_tiers

    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise UserError(f"--redis-url {redis_url!r}: expected redis://host:port/db")
    chosen = parse_shapes(shapes)
    report = run_tiers(
        chosen, repeats, redis_url=redis_url, progress=lambda msg: _err.print(f"[dim]{msg}[/]")
    )
    if json_out:
        print(json.dumps(report.as_dict(), indent=2))
        return
    table = Table(title=f"Tier throughput ({repeats} repeats, median)")
    for column in ("tier", "shape", "op", "GB/s", "p50 ms", "reference", "ref GB/s", "ratio"):
        table.add_column(
            column, justify="left" if column in ("tier", "shape", "op", "reference") else "right"
        )
    for r in report.results:
        table.add_row(
            r.tier, r.shape, r.op, fmt(r.gbps), fmt(r.p50_ms), r.reference, fmt(r.ref_gbps), fmt(r.ratio)
        )
    _out.print(table)
    _print_targets(report.targets())


@app.command("engine")
def engine(
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on stdout.")] = False,
    preset: Annotated[str, typer.Option(help="Model preset to build and serve.")] = "bench",
    prompt_tokens: Annotated[str, typer.Option(help="Prompt lengths, comma-separated.")] = "1024,2048,3072",
    repeats: Annotated[int, typer.Option(help="Fresh prompts per situation and length.")] = 3,
    cache_dir: Annotated[Path, typer.Option(help="Where the model is built.")] = Path(".cache/models"),
    only: Annotated[
        str, typer.Option(help="Engines to run, comma-separated: baseline,l1,redis,example.")
    ] = "baseline,l1,redis,example",
) -> None:
    """TTFT of recompute, engine-local hit, connector L1/Redis hits and ExampleConnector on vLLM CPU."""
    from kvbench.bench.engine import ENGINES, parse_lengths, run_engine

    lengths = parse_lengths(prompt_tokens)
    if repeats < 1:
        raise UserError("--repeats: expected an integer >= 1")
    engines = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in engines if name not in ENGINES]
    if unknown or not engines:
        raise UserError(f"--only: expected some of {', '.join(ENGINES)}")
    report = run_engine(
        preset,
        lengths,
        repeats,
        cache_dir=cache_dir,
        engines=engines,
        progress=lambda m: _err.print(f"[dim]{m}[/]"),
    )
    if json_out:
        print(json.dumps(report.as_dict(), indent=2))
        return
    table = Table(title=f"TTFT, ms (median of {repeats} fresh prompts; preset {preset})")
    table.add_column("situation")
    for n in lengths:
        table.add_column(f"{n} tok", justify="right")
    for situation, by_len in report.medians_ms().items():
        table.add_row(situation, *(fmt(by_len.get(n), 1) for n in lengths))
    _out.print(table)
    ratios = Table(title="Ratios (same run)")
    ratios.add_column("ratio")
    for n in lengths:
        ratios.add_column(f"{n} tok", justify="right")
    for name, by_len in report.ratios().items():
        ratios.add_row(name, *(fmt(by_len.get(n)) for n in lengths))
    _out.print(ratios)
    for note in report.notes:
        _out.print(f"note: {note}")
    _print_targets(report.targets())
