"""`kvbench profile ...`: run the local Pyroscope-compatible collector and export flamegraphs.

`serve` stands in for Grafana Pyroscope on a laptop; `export` and `report` read from either, since
they use only the query API both serve.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kvbench.errors import UserError
from profiling.selector import DEFAULT_PROFILE_TYPE

app = typer.Typer(
    help="Profile the KV-cache connector: local Pyroscope-compatible collector, flamegraph export.",
    no_args_is_help=True,
)
_out = Console(highlight=False)

_EXPORT_SUFFIXES = (".html", ".json", ".svg")

# Options shared by the commands that read profiles (`export`, `report`).
ServiceOption = Annotated[str, typer.Option(help="service_name (the agent's application_name).")]
UrlOption = Annotated[str, typer.Option(help="Collector or Grafana Pyroscope base URL.")]
FromOption = Annotated[str, typer.Option("--from", help="Unix seconds/ms or now-<N><s|m|h|d>.")]
UntilOption = Annotated[str, typer.Option("--until", help="Unix seconds/ms or now.")]


def _parse_tags(values: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in values:
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, eq, value = part.partition("=")
            if not eq or not key.strip() or not value.strip():
                raise UserError(f"--query-tags expects key=value (e.g. op=load), got {part!r}")
            tags[key.strip()] = value.strip()
    return tags


def _time_range(start: str, until: str) -> tuple[float, float]:
    from profiling.timerange import TimeRangeError, parse_range

    try:
        return parse_range(start, until)
    except TimeRangeError as exc:
        raise UserError(str(exc)) from None


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 4040,
    host: Annotated[
        str, typer.Option(help="Address to bind; loopback unless you need otherwise.")
    ] = "127.0.0.1",
    data: Annotated[Path, typer.Option(help="Directory for the profile database.")] = Path(
        "results/profiles"
    ),
    retention_hours: Annotated[float, typer.Option(help="Drop profiles older than this.")] = 168.0,
    max_body_mb: Annotated[float, typer.Option(help="Refuse uploads larger than this (HTTP 413).")] = 16.0,
) -> None:
    """Run the collector: agents push to it, browse flamegraphs at http://HOST:PORT/."""
    from profiling.server import Settings
    from profiling.server import serve as run_server

    if not 0 <= port <= 65535:
        raise UserError(f"--port must be 0-65535, got {port}")
    if retention_hours <= 0 or max_body_mb <= 0:
        raise UserError("--retention-hours and --max-body-mb must be positive")
    _out.print(f"kvbench profile collector on http://{host}:{port}/  (data: {data}, Ctrl-C to stop)")
    try:
        run_server(Settings(data, retention_hours, max_body_mb), host, port)
    except OSError as exc:
        raise UserError(str(exc)) from None


@app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="Output file: .html (self-contained), .json or .svg.")],
    service: ServiceOption = "vllm-engine",
    url: UrlOption = "http://127.0.0.1:4040",
    start: FromOption = "now-1h",
    until: UntilOption = "now",
    query_tags: Annotated[
        list[str] | None, typer.Option("--query-tags", help="Filter, e.g. op=load (repeatable).")
    ] = None,
    profile_type: Annotated[
        str, typer.Option("--type", help="Pyroscope profile type ID.")
    ] = DEFAULT_PROFILE_TYPE,
    max_nodes: Annotated[int, typer.Option(help="Fold smaller nodes into 'other' above this many.")] = 8192,
) -> None:
    """Fetch one flamegraph and write it to a file."""
    from profiling.client import PyroscopeClient, PyroscopeError, build_query
    from profiling.export import View, write_html, write_json, write_svg

    suffix = out.suffix.lower()
    if suffix not in _EXPORT_SUFFIXES:
        raise UserError(f"--out must end in {', '.join(_EXPORT_SUFFIXES)}, got {out.name!r}")
    tags = _parse_tags(query_tags or [])
    frm, to = _time_range(start, until)
    query = build_query(service, tags, profile_type)
    try:
        with PyroscopeClient(url) as client:
            data = client.render(query, frm, to, max_nodes=max_nodes)
    except PyroscopeError as exc:
        raise UserError(str(exc)) from None
    when = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(frm))} - {time.strftime('%H:%M:%S', time.localtime(to))}"
    if suffix == ".json":
        write_json(data, out)
    elif suffix == ".svg":
        write_svg(data, out, title=f"{query}  ({when})")
    else:
        write_html([View(query, data, query)], out, title=f"kvbench profile: {service}", subtitle=when)
    ticks = int(data["flamebearer"].get("numTicks") or 0)
    _out.print(f"wrote {out} ({ticks} ticks, {len(data['flamebearer']['names'])} functions) for {query}")
    if ticks == 0:
        _out.print("note: no samples matched; check --service, --from/--until and --query-tags")


@app.command("report")
def report(
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Directory for flamegraph.html and top_functions.csv.")
    ],
    service: ServiceOption = "vllm-engine",
    url: UrlOption = "http://127.0.0.1:4040",
    start: FromOption = "now-1h",
    until: UntilOption = "now",
    tag_key: Annotated[str, typer.Option(help="Per-sample tag whose values split the CPU time.")] = "op",
) -> None:
    """Write the report `kvbench run` makes: per-op CPU shares, flamegraphs, top functions."""
    from profiling.capture import save_profile_report
    from profiling.client import PyroscopeError

    frm, to = _time_range(start, until)
    try:
        rep = save_profile_report(url, service, frm, to, out_dir, tag_key=tag_key)
    except PyroscopeError as exc:
        raise UserError(str(exc)) from None
    _out.print(f"{service}: {rep.total_samples} samples, {rep.cpu_seconds:.2f} CPU s")
    _out.print(f"  {tag_key}-tagged share: {100 * rep.connector_share:.1f}%")
    for value, share in sorted(rep.op_shares.items(), key=lambda kv: -kv[1]):
        _out.print(f"  {tag_key}={value}: {100 * share:.1f}%")
    _out.print(f"wrote {rep.flamegraph_html} and {rep.top_functions_csv}")
