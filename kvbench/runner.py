"""Orchestration of `kvbench run`: scenario -> plan -> (per configuration: target, client, metrics) -> results.

Order per configuration: start the target, send warm-up requests, scrape `/metrics`, send the
measured requests, scrape again, stop the target. Hit rates are the differences between the two
scrapes, so warm-up traffic never counts. A configuration whose target fails to start is recorded
with a note and zero requests; the run goes on with the next one. Ctrl-C stops the current target
and writes the results of the configurations finished so far before re-raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kvbench import promscrape
from kvbench.client import RequestResult, StreamingClient
from kvbench.errors import UserError
from kvbench.redact import Redactor
from kvbench.report import print_report, write_plots
from kvbench.results import ConfigResult, build_summary, record_row, rows_frame, write_results
from kvbench.scenario import CacheConfig, ProfilingSpec, RequestOptions, Scenario
from kvbench.targets import Endpoint, Target
from kvbench.workload.generators import build_plan
from kvbench.workload.plan import Plan, PlannedRequest
from kvbench.workload.tokens import TextSynth, load_tokenizer

ProgressFn = Callable[[RequestResult], None]


def default_out_dir(scenario: Scenario, root: Path = Path("results")) -> Path:
    return root / f"{time.strftime('%Y%m%d-%H%M%S')}-{scenario.name}"


async def drive(
    plan: Plan,
    client: StreamingClient,
    out: list[tuple[PlannedRequest, RequestResult]],
    *,
    on_result: ProgressFn | None = None,
) -> float:
    """Send the plan's measured requests, appending (request, result) pairs to `out`; returns the wall time.

    Sessions start at their `start_s`; a session's requests go one after another with think time in
    between; at most `plan.concurrency` requests are in flight. No request starts after
    `plan.duration_s` or beyond `plan.max_requests`; in-flight ones finish (bounded by the timeout).
    """
    sem = asyncio.Semaphore(plan.concurrency) if plan.concurrency else None
    issued = 0
    t0 = time.perf_counter()

    def may_issue() -> bool:
        if plan.max_requests is not None and issued >= plan.max_requests:
            return False
        return plan.duration_s is None or time.perf_counter() - t0 < plan.duration_s

    async def one(req: PlannedRequest) -> None:
        if sem is None:
            res = await client.send(req)
        else:
            async with sem:
                res = await client.send(req)
        out.append((req, res))
        if on_result is not None:
            on_result(res)

    async def session(s: Any) -> None:
        nonlocal issued
        delay = t0 + s.start_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for i, req in enumerate(s.requests):
            if i > 0 and req.think_time_s > 0:
                await asyncio.sleep(req.think_time_s)
            if not may_issue():
                return
            issued += 1
            await one(req)

    await asyncio.gather(*(session(s) for s in plan.sessions))
    return time.perf_counter() - t0


async def send_all(
    reqs: Sequence[PlannedRequest],
    client: StreamingClient,
    concurrency: int | None,
    out: list[tuple[PlannedRequest, RequestResult]],
) -> None:
    sem = asyncio.Semaphore(concurrency or 1)

    async def one(r: PlannedRequest) -> None:
        async with sem:
            out.append((r, await client.send(r)))

    await asyncio.gather(*(one(r) for r in reqs))


@dataclass
class RunOptions:
    out_dir: Path
    profile: bool | None = None
    only: Sequence[str] | None = None
    console: Console | None = None


class _Profiler:
    """Optional per-configuration engine profiles; every failure becomes a note, never a failed run."""

    def __init__(self, spec: ProfilingSpec, out: Path) -> None:
        self.spec = spec
        self.out = out
        self._collector: Any = None
        self.url = spec.url

    def __enter__(self) -> _Profiler:
        if self.url is None:
            from profiling.capture import CollectorError, start_local_collector

            try:
                self._collector = start_local_collector(self.out / "collector")
            except (CollectorError, OSError) as exc:
                raise UserError(f"profiling: cannot start the local collector: {exc}") from None
            self.url = self._collector.url
        return self

    def __exit__(self, *exc: object) -> None:
        if self._collector is not None:
            self._collector.stop()

    def env(self) -> dict[str, str]:
        return {
            "AIBRIX_KV_CACHE_OL_PROFILING_ENABLED": "1",
            "AIBRIX_KV_CACHE_OL_PROFILING_SERVER_ADDRESS": str(self.url),
        }

    def report(self, cfg: str, start: float, end: float) -> tuple[float | None, str]:
        from profiling.capture import save_profile_report

        rep = save_profile_report(str(self.url), self.spec.service, start, end, self.out / cfg)
        return rep.connector_share, f"profile in {self.out / cfg}"


def _redactor(scenario: Scenario) -> Redactor:
    r = Redactor()
    r.add_mapping(scenario.model_dump(mode="json").get("target", {}))
    return r


def run_scenario(scenario: Scenario, scenario_file: Path, opts: RunOptions) -> dict[str, Any]:
    console = opts.console or Console()
    out = opts.out_dir
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: output directory exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    redactor = _redactor(scenario)
    target = Target(scenario, out, redactor)
    configs = [c for c in scenario.configs if not opts.only or c.name in opts.only]
    if opts.only:
        missing = sorted(set(opts.only) - {c.name for c in scenario.configs})
        if missing:
            raise UserError(f"--config: no configuration named {', '.join(missing)}")
    headers = target.headers()  # fails early (before any engine start) on a missing token variable

    console.print(f"[bold]{scenario.name}[/]: preparing target ({scenario.target.kind})", markup=True)
    tokenizer_path = target.prepare()
    synth = TextSynth(load_tokenizer(tokenizer_path))
    plan = build_plan(scenario.workload, synth, scenario.seed)
    console.print(
        f"workload {scenario.workload.kind}: {plan.measured_requests} measured requests "
        f"(+{len(plan.warmup)} warm-up) per configuration; {target.describe()['toggles']}"
    )
    spec = scenario.profiling_spec
    if opts.profile is True and spec is None:
        spec = ProfilingSpec()
    elif opts.profile is False:
        spec = None

    rows: list[dict[str, Any]] = []
    results: list[ConfigResult] = []
    interrupted = False
    try:
        prof_cm: contextlib.AbstractContextManager[_Profiler | None] = contextlib.nullcontext(None)
        if spec is not None:
            prof_cm = _Profiler(spec, out / "profiles")
        with prof_cm as prof:
            for cfg in configs:
                results.append(
                    _run_config(
                        target, cfg, plan, scenario.workload.request, headers, rows, console, redactor, prof
                    )
                )
    except Interrupted as exc:
        results.append(exc.result)
        interrupted = True
    except KeyboardInterrupt:
        interrupted = True
    frame = rows_frame(rows)
    summary = build_summary(
        scenario_echo=redactor.obj(scenario.model_dump(mode="json")),
        scenario_file=str(scenario_file),
        target=target.describe(),
        baseline=scenario.baseline_name,
        configs=results,
        rows=frame,
        workload={
            "kind": scenario.workload.kind,
            "measured_requests_planned": plan.measured_requests,
            "warmup_requests": len(plan.warmup),
            "seed": scenario.seed,
        },
    )
    if interrupted:
        summary["interrupted"] = True
    summary = redactor.obj(summary)
    write_results(out, frame, summary)
    write_plots(summary, frame, out)
    _redact_logs(out, redactor)
    if interrupted:
        raise KeyboardInterrupt
    print_report(summary, console)
    console.print(f"results: {out}")
    return summary


def _redact_logs(out: Path, redactor: Redactor) -> None:
    """Engine and server logs may echo the environment: mask secrets in every text file written."""
    for p in out.rglob("*.log"):
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        clean = redactor.text(text)
        if clean != text:
            p.write_text(clean, encoding="utf-8")


def _run_config(
    target: Target,
    cfg: CacheConfig,
    plan: Plan,
    ropts: RequestOptions,
    headers: Mapping[str, str],
    rows: list[dict[str, Any]],
    console: Console,
    redactor: Redactor,
    prof: _Profiler | None,
) -> ConfigResult:
    result = ConfigResult(cfg.name, cfg.connector_enabled, cfg.description, started_unix=time.time())
    console.print(f"[bold cyan]{cfg.name}[/]: starting target", markup=True)
    extra_env = prof.env() if prof is not None else None
    pairs: list[tuple[PlannedRequest, RequestResult]] = []
    try:
        with target.open_config(cfg, extra_env) as ep:
            result.notes.extend(ep.notes)
            t_start = time.time()
            duration, cache = asyncio.run(
                _measure(ep, plan, ropts, {**headers, **ep.headers}, console, cfg, pairs)
            )
            t_end = time.time()
    except UserError as exc:
        msg = redactor.text(str(exc))
        result.notes.append(f"target failed: {msg}")
        console.print(f"[red]{cfg.name}: target failed: {msg}[/]", markup=True, highlight=False)
        return result
    except KeyboardInterrupt:
        result.notes.append("interrupted: figures cover the requests finished before Ctrl-C")
        _add_rows(rows, cfg, pairs, redactor)
        raise Interrupted(result) from None
    result.duration_s = duration
    result.cache = cache
    if cache.error:
        result.notes.append(f"metrics: {cache.error}")
    _add_rows(rows, cfg, pairs, redactor)
    # After the engine stopped: its profiler flushes the last samples at shutdown.
    if prof is not None:
        try:
            share, note = prof.report(cfg.name, t_start, t_end)
            result.connector_cpu_share = share
            result.notes.append(note)
        except Exception as exc:  # profiling is optional: it must not lose a run
            result.notes.append(f"profiling failed: {type(exc).__name__}: {exc}")
    return result


class Interrupted(Exception):
    """Ctrl-C during a configuration, carrying what that configuration finished."""

    def __init__(self, result: ConfigResult) -> None:
        super().__init__(result.name)
        self.result = result


def _add_rows(
    rows: list[dict[str, Any]],
    cfg: CacheConfig,
    pairs: list[tuple[PlannedRequest, RequestResult]],
    redactor: Redactor,
) -> None:
    t0 = min((r.sent for _, r in pairs), default=0.0)
    for req, res in pairs:
        if res.error:
            res.error = redactor.text(res.error)
        rows.append(record_row(cfg.name, req, res, t0))


async def _measure(
    ep: Endpoint,
    plan: Plan,
    ropts: RequestOptions,
    headers: Mapping[str, str],
    console: Console,
    cfg: CacheConfig,
    sink: list[tuple[PlannedRequest, RequestResult]],
) -> tuple[float, promscrape.CacheFigures]:
    """Warm-up, scrape, measured requests, scrape; (request, result) pairs are appended to `sink`
    as they finish, so an interrupted configuration keeps what it completed."""
    limits = httpx.Limits(max_connections=max(16, (plan.concurrency or 64) * 2))
    async with httpx.AsyncClient(trust_env=ep.trust_env, limits=limits) as http:
        client = StreamingClient(
            http,
            ep.base_url,
            ep.model,
            endpoint=ropts.endpoint,
            headers=headers,
            temperature=ropts.temperature,
            ignore_eos=ropts.ignore_eos,
            extra_body=ropts.extra_body,
            record_headers=ropts.record_headers,
            timeout_s=ropts.timeout_s,
        )
        if plan.warmup:
            await send_all(plan.warmup, client, plan.concurrency, sink)
        before = await asyncio.to_thread(promscrape.scrape, ep.metrics_urls, headers=headers)
        errors = 0
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("errors {task.fields[errors]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task(cfg.name, total=plan.measured_requests, errors=0)

            def on_result(res: RequestResult) -> None:
                nonlocal errors
                errors += 0 if res.ok else 1
                progress.update(task, advance=1, errors=errors)

            duration = await drive(plan, client, sink, on_result=on_result)
        after = await asyncio.to_thread(promscrape.scrape, ep.metrics_urls, headers=headers)
    return duration, promscrape.cache_figures(before, after)
