"""The collector against the real pyroscope-io agent, both as real subprocesses on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from profiling.capture import save_profile_report, start_local_collector
from profiling.client import PyroscopeClient, build_query

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "samples" / "profiling" / "tagged_workload.py"
SERVICE = "kvbench-it"
LOAD_FNS = {"kv_connector_load", "read_l2_block", "decode_kv_block"}
SAVE_FNS = {"kv_connector_save", "write_l2_block", "encode_kv_block"}


def run_workload(url: str, service: str, seconds: float = 4.0) -> None:
    """The sample workload under the real agent; flushes via pyroscope.shutdown() before exiting."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(WORKLOAD),
            "--server",
            url,
            "--service",
            service,
            "--seconds",
            str(seconds),
            "--scale",
            "10",
            "--gap-s",
            "0.05",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    assert proc.returncode == 0, out.decode(errors="replace")


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """A collector subprocess holding one real agent run; yields (handle, start, end)."""
    handle = start_local_collector(tmp_path_factory.mktemp("collector"))
    try:
        start = time.time() - 1
        run_workload(handle.url, SERVICE)
        end = time.time() + 1
        yield handle, start, end
    finally:
        handle.stop()
    assert not handle.running


def test_agent_push_is_queryable_and_tag_filter_holds(profiled):
    handle, start, end = profiled
    with PyroscopeClient(handle.url) as client:

        def render(tags: dict[str, str]) -> dict:
            return client.render(build_query(SERVICE, tags), start, end)["flamebearer"]

        everything, load, save = render({}), render({"op": "load"}), render({"op": "save"})
        assert LOAD_FNS | SAVE_FNS | {"model_forward"} <= set(everything["names"])
        assert set(load["names"]) >= LOAD_FNS and set(save["names"]) >= SAVE_FNS
        # The workload's off-CPU gaps around tagged blocks keep boundary samples from carrying the
        # neighbouring op's tag, so the filter must separate the ops' functions completely.
        assert not (SAVE_FNS & set(load["names"])) and "model_forward" not in load["names"]
        assert not (LOAD_FNS & set(save["names"])) and "model_forward" not in save["names"]
        assert load["numTicks"] + save["numTicks"] < everything["numTicks"]
        assert client.label_values("op", f'{{service_name="{SERVICE}"}}', start, end) == ["load", "save"]
        assert client.label_values("tier", "{}", start, end) == ["l2"]
        # The agent's static tags arrive as series labels.
        workload = client.label_values("workload", f'{{service_name="{SERVICE}"}}', start, end)
        assert workload == ["sample"]


def test_profile_report_shares_and_files(profiled, tmp_path):
    handle, start, end = profiled
    rep = save_profile_report(handle.url, SERVICE, start, end, tmp_path / "report")
    assert rep.total_samples > 50
    assert set(rep.op_shares) == {"load", "save"}
    assert rep.op_shares["load"] > 0 and rep.op_shares["save"] > 0
    # Every op-tagged sample is load or save, and model_forward runs untagged.
    assert sum(rep.op_shares.values()) == pytest.approx(rep.connector_share, abs=1e-9)
    assert 0 < rep.connector_share < 1
    top = {f.name for f in rep.top_functions[:10]}
    assert {"decode_kv_block", "encode_kv_block"} <= top
    page = rep.flamegraph_html.read_text()
    assert "decode_kv_block" in page and "<script src" not in page
    header = rep.top_functions_csv.read_text().splitlines()[0]
    assert header == "function,self,self_share,total,total_share"
    assert rep.views[0].startswith("all CPU") and any(v.startswith("op=load") for v in rep.views)


def kvbench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvbench", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_export_cli_formats_and_errors(profiled, tmp_path):
    handle, start, end = profiled
    window = ["--from", str(int(start)), "--until", str(int(end) + 1)]
    common = ["profile", "export", "--url", handle.url, "--service", SERVICE, *window]
    r = kvbench(*common, "--query-tags", "op=load", "--out", str(tmp_path / "load.json"))
    assert r.returncode == 0, r.stderr
    fb = json.loads((tmp_path / "load.json").read_text())["flamebearer"]
    assert "read_l2_block" in fb["names"] and "write_l2_block" not in fb["names"]
    r = kvbench(*common, "--out", str(tmp_path / "all.svg"))
    assert r.returncode == 0, r.stderr
    assert "kv_connector_save" in (tmp_path / "all.svg").read_text()
    r = kvbench(*common, "--out", str(tmp_path / "all.html"))
    assert r.returncode == 0 and "KvFlame" in (tmp_path / "all.html").read_text()

    bad = kvbench(*common, "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and ".png" in bad.stderr
    bad = kvbench(*common, "--query-tags", "op", "--out", str(tmp_path / "x.json"))
    assert bad.returncode == 2 and "key=value" in bad.stderr
    bad = kvbench("profile", "export", "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "x.json"))
    assert bad.returncode == 2 and "cannot reach" in bad.stderr and "Traceback" not in bad.stderr


def test_data_survives_collector_restart(tmp_path):
    data_dir = tmp_path / "data"
    with start_local_collector(data_dir) as first:
        body = b"main;persisted_fn 5\n"
        r = httpx.post(
            f"{first.url}/ingest", params={"name": "restart.cpu", "from": str(int(time.time()))}, content=body
        )
        assert r.status_code == 200
    assert not first.running
    with start_local_collector(data_dir) as second, PyroscopeClient(second.url) as client:
        fb = client.render(build_query("restart"), time.time() - 300, time.time() + 10)["flamebearer"]
        assert "persisted_fn" in fb["names"] and fb["numTicks"] == 5 * 10_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_cli_binds_loopback_and_stops_on_sigterm(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvbench", "profile", "serve", "--port", str(port), "--data", str(tmp_path)],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        ok = False
        while time.monotonic() < deadline and not ok:
            with contextlib.suppress(httpx.HTTPError):
                ok = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200
            time.sleep(0.1)
        assert ok, "kvbench profile serve did not become ready"
        conns = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert f"127.0.0.1:{port}" in conns
        os.killpg(proc.pid, signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises SIGTERM as its exit status.
        assert proc.wait(15) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # A port already in use is a one-line user error, not a traceback.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        r = kvbench("profile", "serve", "--port", str(taken), "--data", str(tmp_path), timeout=30)
    assert r.returncode == 2 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
