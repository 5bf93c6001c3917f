"""`kvbench run` end to end against a real streaming HTTP server (url and command targets), plus
`report`, redaction of secrets in every output file, and the Kubernetes step's commands."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from kvb_openai_stub import StubServer
from typer.testing import CliRunner

from kvbench.cli import app
from kvbench.redact import Redactor
from kvbench.scenario import KubernetesStep, load_scenario
from kvbench.servers import free_port
from kvbench.targets import Target, kubectl_argv

TOKEN = "sk-live-0123456789abcdef"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def _scenario(tmp_path: Path, target: str, configs: str = "configs:\n  - name: baseline\n") -> Path:
    text = f"""\
name: stubrun
seed: 3
{target}
{configs}
workload:
  kind: multi_turn
  users: 3
  turns: 3
  system_prompt_tokens: 30
  question_tokens: 12
  answer_tokens: 4
  arrival: {{pattern: closed, concurrency: 2}}
  warmup_requests: 1
"""
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def _url_target(base_url: str, tok: Path, model: str = "m") -> str:
    return f"""target:
  kind: url
  base_url: {base_url}
  model: {model}
  tokenizer: {tok}
  api_key_env: STUB_TOKEN
  headers: {{X-Tenant: team-a}}"""


def test_run_url_target_writes_all_outputs(
    stub_server: StubServer, tokenizer_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUB_TOKEN", TOKEN)
    sc = _scenario(tmp_path, _url_target(stub_server.base_url, tokenizer_path))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(sc), "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "single configuration" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "kvbench.summary" and summary["schema_version"] == 1
    (cfg,) = summary["configs"]
    m = cfg["metrics"]
    assert (m["requests"], m["ok"], m["errors"]) == (9, 9, 0)
    assert set(cfg["ttft_by_turn"]) == {"1", "2", "3"}
    # The stub's counters grow with prompt words; the figures are differences across measured requests
    # only (the warm-up request and the counters' start values are excluded).
    warm, *measured = stub_server.state.bodies
    assert warm["messages"][0]["content"] not in {b["messages"][0]["content"] for b in measured}
    measured_words = sum(sum(len(msg["content"].split()) for msg in b["messages"]) for b in measured)
    assert cfg["cache"]["prefix_queries"] == measured_words
    assert cfg["cache"]["lookup_tokens"] == measured_words
    assert m["l1_hit_rate"] == pytest.approx((measured_words // 2 + 0) / measured_words, abs=0.02)
    rows = pd.read_parquet(out / "requests.parquet")
    assert len(rows) == 10 and rows["warmup"].sum() == 1
    assert set(rows["target_pod"].dropna()) == {"pod-0", "pod-1"}
    assert rows.loc[~rows["warmup"], "cached_tokens"].notna().all()
    for name in ("summary.csv", "ttft_cdf.png", "ttft_by_turn.png"):
        assert (out / name).stat().st_size > 0
    # Every request carried the bearer token and the extra header.
    assert all(h["authorization"] == f"Bearer {TOKEN}" for h in stub_server.state.headers)
    assert all(h["x-tenant"] == "team-a" for h in stub_server.state.headers)
    again = CliRunner().invoke(app, ["report", str(out)])
    assert again.exit_code == 0 and "stubrun" in again.output


def test_bearer_token_never_written(
    stub_server: StubServer, tokenizer_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stub's 500 body echoes the Authorization header: error records must still not leak it."""
    monkeypatch.setenv("STUB_TOKEN", TOKEN)
    target = _url_target(stub_server.base_url, tokenizer_path, model="fail500")
    target += f"\n  metrics_urls: ['{stub_server.base_url}/metrics?token={TOKEN}']"
    sc = _scenario(tmp_path, target)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(sc), "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["configs"][0]["metrics"]["errors"] == 9
    assert summary["configs"][0]["errors_by_kind"] == {"HTTP 500": 9}
    rows = pd.read_parquet(out / "requests.parquet")
    assert (rows["error"] == "HTTP 500: upstream rejected auth ***").all()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for p in files:
        data = p.read_bytes()
        assert TOKEN.encode() not in data, p
    assert TOKEN not in res.output


def test_missing_token_variable_is_user_error(
    stub_server: StubServer, tokenizer_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STUB_TOKEN", raising=False)
    sc = _scenario(tmp_path, _url_target(stub_server.base_url, tokenizer_path))
    res = CliRunner().invoke(app, ["run", str(sc), "--out", str(tmp_path / "o")])
    assert "STUB_TOKEN is not set" in str(res.exception)


def test_command_target_starts_and_stops_per_config(tokenizer_path: Path, tmp_path: Path) -> None:
    stub = HERE / "kvb_openai_stub.py"
    target = f"""target:
  kind: command
  command: ["{sys.executable}", "{stub}", "{{port}}"]
  model: m
  tokenizer: {tokenizer_path}
  connector_args: ["--ignored-by-stub"]
  metrics_path: /metrics"""
    configs = (
        "configs:\n  - name: baseline\n  - name: l1\n    env: {AIBRIX_KV_CACHE_OL_L1_CACHE_ENABLED: '1'}\n"
    )
    sc = _scenario(tmp_path, target, configs)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(sc), "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert [c["name"] for c in summary["configs"]] == ["baseline", "l1"]
    for c in summary["configs"]:
        assert c["metrics"]["ok"] == 9
        # A fresh server per configuration: its counters start at the same values each time.
        assert c["cache"]["prefix_queries"] == summary["configs"][0]["cache"]["prefix_queries"]
    assert summary["configs"][1]["metrics"]["ttft_p50_ratio"] is not None
    assert (out / "logs" / "l1.command.log").exists()


def test_failed_target_start_is_a_note_and_the_run_goes_on(tokenizer_path: Path, tmp_path: Path) -> None:
    target = f"""target:
  kind: command
  command: ["{sys.executable}", "-c", "import sys; sys.exit(3)"]
  model: m
  tokenizer: {tokenizer_path}
  startup_timeout_s: 20"""
    sc = _scenario(tmp_path, target, "configs:\n  - name: baseline\n  - name: again\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(sc), "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "target failed to start for: baseline, again" in res.output
    configs = json.loads((out / "summary.json").read_text())["configs"]
    assert [c["name"] for c in configs] == ["baseline", "again"]
    for cfg in configs:
        assert cfg["metrics"]["requests"] == 0
        assert any(n.startswith("target failed") and "exit" in n.lower() for n in cfg["notes"]), cfg["notes"]


def test_kubectl_argv() -> None:
    step = KubernetesStep(deployment="llama", namespace="ml", container="vllm", context="prod")
    set_cmd, wait_cmd = kubectl_argv(step, {"B": "2", "A": "1"}, ["C"])
    assert set_cmd == ["kubectl", "--context", "prod", "--namespace", "ml", "set", "env", "deployment/llama",
                       "--containers", "vllm", "A=1", "B=2", "C-"]  # fmt: skip
    assert wait_cmd == ["kubectl", "--context", "prod", "--namespace", "ml", "rollout", "status",
                        "deployment/llama", "--timeout=600s"]  # fmt: skip


def test_kubernetes_step_applies_each_config(tokenizer_path: Path, tmp_path: Path) -> None:
    text = f"""name: k
target:
  kind: url
  base_url: http://127.0.0.1:9
  model: m
  tokenizer: {tokenizer_path}
  kubernetes: {{deployment: llama, namespace: ml}}
configs:
  - name: baseline
    env: {{AIBRIX_KV_CACHE_OL_L1_CACHE_ENABLED: "0"}}
  - name: l2
    env: {{AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND: REDIS}}
workload: {{kind: multi_turn, users: 1, turns: 1, question_tokens: 3, answer_tokens: 1}}
"""
    p = tmp_path / "k.yaml"
    p.write_text(text)
    sc = load_scenario(p)
    issued: list[list[str]] = []
    target = Target(sc, tmp_path / "run", Redactor(), kubectl_runner=issued.append, environ={})
    for cfg in sc.configs:
        with target.open_config(cfg) as ep:
            assert ep.base_url == "http://127.0.0.1:9"
    sets = [a for a in issued if "set" in a]
    assert sets[0][-2:] == ["AIBRIX_KV_CACHE_OL_L1_CACHE_ENABLED=0", "AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND-"]
    assert sets[1][-2:] == [
        "AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND=REDIS",
        "AIBRIX_KV_CACHE_OL_L1_CACHE_ENABLED-",
    ]
    assert sum("rollout" in a for a in issued) == 2


def test_profiling_failure_is_a_note_not_a_failed_run(
    stub_server: StubServer, tokenizer_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUB_TOKEN", TOKEN)
    sc = _scenario(tmp_path, _url_target(stub_server.base_url, tokenizer_path))
    sc.write_text(sc.read_text() + "profiling: {url: 'http://127.0.0.1:9'}\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(sc), "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    (cfg,) = json.loads((out / "summary.json").read_text())["configs"]
    assert cfg["metrics"]["ok"] == 9
    assert any(n.startswith("profiling failed") for n in cfg["notes"]), cfg["notes"]
    assert "connector_cpu_share" not in cfg["metrics"]


def test_ctrl_c_stops_the_target_and_keeps_partial_results(tokenizer_path: Path, tmp_path: Path) -> None:
    port = free_port()
    stub = HERE / "kvb_openai_stub.py"
    target = f"""target:
  kind: command
  command: ["{sys.executable}", "{stub}", "{{port}}"]
  port: {port}
  model: m
  tokenizer: {tokenizer_path}"""
    sc = _scenario(tmp_path, target)
    sc.write_text(sc.read_text().replace("turns: 3", "turns: 200") + "  think_time_s: 0.05\n")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvbench", "run", str(sc), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert time.monotonic() < deadline and proc.poll() is None, "target never came up"
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert not _listening(port)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert len(pd.read_parquet(out / "requests.parquet")) > 0


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_connector_env_starts_what_l2_needs() -> None:
    from kvbench.scenario import CacheConfig
    from kvbench.targets import connector_env, kv_transfer_config

    redis = CacheConfig(name="r", env={"AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND": "REDIS"})
    given = CacheConfig(name="g", env={"AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND": "redis",
                                       "AIBRIX_KV_CACHE_OL_REDIS_URL": "redis://h:1/0"})  # fmt: skip
    fs = CacheConfig(name="f", env={"AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND": "FS"})
    off = CacheConfig(name="o", connector=False, env={"AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND": "REDIS"})
    assert connector_env(redis, {"A": "1"}) == (
        {"A": "1", "AIBRIX_KV_CACHE_OL_L2_CACHE_BACKEND": "REDIS"},
        ["redis"],
    )
    assert connector_env(given, {})[1] == []
    assert connector_env(fs, {})[1] == ["fs"]
    assert connector_env(off, {})[1] == []
    assert kv_transfer_config(off) is None
    assert kv_transfer_config(CacheConfig(name="baseline")) is None
    assert kv_transfer_config(redis) == {
        "kv_connector": "TieredOffloadConnector",
        "kv_connector_module_path": "connector.vllm",
        "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
    }
