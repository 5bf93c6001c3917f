"""Scenario validation: every bad input is one line `FILE:LINE: field.path: message`, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvbench.cli import app
from kvbench.errors import UserError
from kvbench.scenario import load_scenario

REPO = Path(__file__).resolve().parents[3]

GOOD = """\
name: t
target:
  kind: embedded
  kv_cache_space_gib: 0.5
configs:
  - name: baseline
  - name: l1
    env:
      AIBRIX_KV_CACHE_OL_L1_CACHE_ENABLED: "1"
workload:
  kind: multi_turn
  users: 2
  turns: 3
  question_tokens: 20
  answer_tokens: {dist: uniform, min: 5, max: 10}
"""


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_scenario_loads_and_connector_follows_env(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, GOOD))
    assert [c.connector_enabled for c in sc.configs] == [False, True]
    assert sc.baseline_name == "baseline"


CASES = [
    ("kv_cache_space_gib: 0.5", "kv_cache_space_gb: 0.5", 4, "target.kv_cache_space_gb: unknown key"),
    ("users: 2", "users: two", 12, "workload.users: Input should be a valid integer"),
    ("max: 10}", "max: 10, mean: 3}", 15, "workload.answer_tokens.mean: unknown key"),
    ("kind: embedded", "kind: gpu", 3, "target.kind: Input tag 'gpu'"),
    ("  - name: l1\n", "  - name: l1\n    colour: red\n", 8, "configs[1].colour: unknown key"),
    ("  turns: 3\n", "  turns: -3\n", 13, "workload.turns: Input should be greater than 0"),
]


@pytest.mark.parametrize(("old", "new", "line", "expect"), CASES)
def test_bad_field_names_file_line_and_path(
    tmp_path: Path, old: str, new: str, line: int, expect: str
) -> None:
    assert old in GOOD
    p = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(UserError) as err:
        load_scenario(p)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}:{line}: {expect}"), msg


def test_missing_target(tmp_path: Path) -> None:
    text = GOOD.replace("target:\n  kind: embedded\n  kv_cache_space_gib: 0.5\n", "")
    with pytest.raises(UserError, match=r"s\.yaml:1: target: required field is missing"):
        load_scenario(_write(tmp_path, text))


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.yaml: cannot read scenario file"):
        load_scenario(tmp_path / "nope.yaml")
    trace = GOOD.split("workload:")[0] + "workload:\n  kind: trace\n  path: missing.jsonl\n"
    with pytest.raises(UserError, match=r"s\.yaml:12: workload\.path: cannot read .*missing\.jsonl"):
        load_scenario(_write(tmp_path, trace))


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"s\.yaml:3: \(yaml\)"):
        load_scenario(_write(tmp_path, "name: x\ntarget:\n  kind: [embedded\n"))


def test_semantic_checks(tmp_path: Path) -> None:
    dup = GOOD.replace("  - name: l1", "  - name: baseline")
    with pytest.raises(UserError, match="duplicate name"):
        load_scenario(_write(tmp_path, dup))
    tok = _write(tmp_path, "{}", "tokenizer.json")
    url = (
        f"name: g\ntarget:\n  kind: url\n  base_url: http://127.0.0.1:1\n  model: m\n  tokenizer: {tok}\n"
        "configs:\n  - name: a\n  - name: b\n" + "workload:" + GOOD.split("workload:")[1]
    )
    with pytest.raises(UserError, match=r"without target\.kubernetes it runs exactly one config"):
        load_scenario(_write(tmp_path, url))


def test_validate_command_via_cli_runner(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(_write(tmp_path, GOOD))])
    assert ok.exit_code == 0, ok.output
    assert "ok (embedded target, multi_turn workload, configs: baseline, l1)" in ok.output
    bad = runner.invoke(
        app, ["validate", str(_write(tmp_path, GOOD.replace("users: 2", "userz: 2"), "b.yaml"))]
    )
    assert isinstance(bad.exception, UserError)
    assert "b.yaml:12: workload.userz: unknown key" in str(bad.exception)


@pytest.mark.parametrize("cmd", ["validate", "run"])
def test_subprocess_exit_2_one_line_no_traceback(tmp_path: Path, cmd: str) -> None:
    p = _write(tmp_path, GOOD.replace("kind: multi_turn", "kind: multi_turns"))
    proc = subprocess.run(
        [sys.executable, "-m", "kvbench", cmd, str(p)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        # Wide enough that the console does not wrap the long temp path (the message is one line).
        env={**os.environ, "COLUMNS": "500"},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"{p}:11: workload.kind: Input tag 'multi_turns'" in lines[0]


def test_shipped_scenarios_validate() -> None:
    shipped = sorted((REPO / "scenarios").glob("*.yaml"))
    assert {p.name for p in shipped} >= {
        "quickstart.yaml",
        "multi-turn-chat.yaml",
        "long-doc-qa.yaml",
        "gateway.yaml",
    }
    for p in shipped:
        load_scenario(p)
