"""What ``kvbench run`` calls: start a local collector, then turn a time window into a report.

:func:`start_local_collector` runs the collector as a subprocess (own process group, loopback only)
and returns once it answers HTTP. :func:`save_profile_report` queries any Pyroscope-compatible URL
(this collector or a real Grafana Pyroscope) through the render API and writes ``flamegraph.html``
(self-contained) and ``top_functions.csv`` into ``out_dir``.

Shares are fractions of the service's whole CPU time in the window: ``connector_share`` counts
samples that carry ``tag_key`` at all (the connector tags every operation it runs), and
``op_shares[v]`` counts samples tagged ``tag_key=v``.
"""

from __future__ import annotations

import contextlib
import html
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from profiling import flamebearer
from profiling.client import PyroscopeClient, build_query
from profiling.export import View, write_html, write_top_csv
from profiling.flamebearer import FunctionStat
from profiling.selector import DEFAULT_PROFILE_TYPE, Matcher


class CollectorError(RuntimeError):
    """The collector subprocess did not come up; the message carries its log tail."""


@dataclass
class CollectorHandle:
    """A running collector subprocess. ``stop()`` is idempotent; use as a context manager."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def __enter__(self) -> CollectorHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the collector's process group, then SIGKILL after ``timeout_s``."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5.0)


def _log_tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def start_local_collector(
    data_dir: Path,
    port: int | None = None,
    retention_hours: float = 168.0,
    timeout_s: float = 30.0,
) -> CollectorHandle:
    """Run ``python -m profiling.server`` on 127.0.0.1 (``port=None``: a free port) until ready."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    ready = data_dir / "collector.ready"
    ready.unlink(missing_ok=True)
    log_path = data_dir / "collector.log"
    cmd = [
        sys.executable,
        "-m",
        "profiling.server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port or 0),
        "--data",
        str(data_dir),
        "--retention-hours",
        str(retention_hours),
        "--ready-file",
        str(ready),
    ]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    handle = CollectorHandle("", data_dir, proc, log_path)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CollectorError(f"collector exited with {proc.returncode}:\n{_log_tail(log_path)}")
            if ready.exists():
                host_port = ready.read_text().strip()
                handle.url = f"http://{host_port}"
                try:
                    if httpx.get(f"{handle.url}/ready", timeout=2.0).status_code == 200:
                        return handle
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise CollectorError(f"collector not ready after {timeout_s:.0f}s:\n{_log_tail(log_path)}")
    except BaseException:
        handle.stop()
        raise


@dataclass
class ProfileReport:
    """Where CPU went in one service over [start, end]; shares are fractions of ``total_ticks``."""

    url: str
    service: str
    start: float
    end: float
    tag_key: str
    units: str
    total_ticks: int
    total_samples: int
    cpu_seconds: float
    connector_share: float
    op_shares: dict[str, float]
    top_functions: list[FunctionStat]
    flamegraph_html: Path
    top_functions_csv: Path
    views: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flamegraph_html"] = str(self.flamegraph_html)
        d["top_functions_csv"] = str(self.top_functions_csv)
        return d


def _ticks(data: dict[str, Any]) -> int:
    return int(data["flamebearer"].get("numTicks") or 0)


def save_profile_report(
    url: str,
    service: str,
    start: float,
    end: float,
    out_dir: Path,
    tag_key: str = "op",
    profile_type: str = DEFAULT_PROFILE_TYPE,
    sample_rate_hz: float = 100.0,
    timeout_s: float = 30.0,
) -> ProfileReport:
    """Fetch the window's flamegraphs from ``url`` and write the report files into ``out_dir``.

    ``total_samples`` is CPU time divided by the agent's sampling period (``1/sample_rate_hz``,
    pyroscope-io's default 100 Hz) for CPU profiles, and the raw tick count otherwise.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with PyroscopeClient(url, timeout_s) as client:
        whole = client.render(build_query(service, profile_type=profile_type), start, end)
        total = _ticks(whole)
        tagged = client.render(
            build_query(service, profile_type=profile_type, extra=str(Matcher.make(tag_key, "=~", ".+"))),
            start,
            end,
            max_nodes=1,
        )
        values = client.label_values(tag_key, build_query(service, profile_type=""), start, end)
        per_value = {
            v: client.render(build_query(service, {tag_key: v}, profile_type), start, end) for v in values
        }
    meta = whole.get("metadata") or {}
    units = str(meta.get("units") or "samples")
    rate = float(meta.get("sampleRate") or 0)
    if units == "samples" and rate > 0:
        cpu_seconds = total / rate
        total_samples = round(cpu_seconds * sample_rate_hz)
    else:
        cpu_seconds = 0.0
        total_samples = total
    denom = total or 1
    op_shares = {v: _ticks(d) / denom for v, d in per_value.items()}
    top = flamebearer.top_functions(whole["flamebearer"], limit=200)
    csv_path = write_top_csv(top, out_dir / "top_functions.csv")
    when = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(start))} - {time.strftime('%H:%M:%S', time.localtime(end))}"
    views = [View(f"all CPU ({service})", whole, build_query(service, profile_type=profile_type))]
    views += [
        View(
            f"{tag_key}={v} ({100 * op_shares[v]:.1f}%)", d, build_query(service, {tag_key: v}, profile_type)
        )
        for v, d in sorted(per_value.items(), key=lambda kv: -_ticks(kv[1]))
    ]
    connector_share = _ticks(tagged) / denom
    chips = [
        f"<div class='kv-share'>{html.escape(tag_key)} tagged: <b>{100 * connector_share:.1f}%</b> of CPU</div>"
    ]
    chips += [
        f"<div class='kv-share'>{html.escape(tag_key)}={html.escape(v)}: <b>{100 * s:.1f}%</b></div>"
        for v, s in sorted(op_shares.items(), key=lambda kv: -kv[1])
    ]
    html_path = write_html(
        views,
        out_dir / "flamegraph.html",
        title=f"kvbench profile: {service}",
        subtitle=f"{when} \u00b7 source {url}",
        summary_html=f"<div class='kv-shares'>{''.join(chips)}</div>",
    )
    return ProfileReport(
        url=url,
        service=service,
        start=start,
        end=end,
        tag_key=tag_key,
        units=units,
        total_ticks=total,
        total_samples=total_samples,
        cpu_seconds=cpu_seconds,
        connector_share=connector_share,
        op_shares=op_shares,
        top_functions=top,
        flamegraph_html=html_path,
        top_functions_csv=csv_path,
        views=[v.label for v in views],
    )
