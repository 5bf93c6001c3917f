"""`kvbench compare`: bound parsing, direction of "worse", and exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvbench.cli import app
from kvbench.compare import Bound, check_one, compare, parse_bound
from kvbench.errors import UserError
from kvbench.results import load_summary

REPO = Path(__file__).resolve().parents[3]


def _summary(l1_ratio: float, l1_hit: float | None, ttft: float = 100.0) -> dict:
    return {
        "schema": "kvbench.summary",
        "schema_version": 1,
        "scenario": {"name": "x"},
        "target": {"kind": "embedded"},
        "configs": [
            {
                "name": "baseline",
                "metrics": {"ttft_p50_ms": ttft, "ttft_later_p50_ratio": 1.0, "l1_hit_rate": None},
            },
            {
                "name": "l1",
                "metrics": {
                    "ttft_p50_ms": ttft * l1_ratio,
                    "ttft_later_p50_ratio": l1_ratio,
                    "l1_hit_rate": l1_hit,
                },
            },
        ],
    }


def _write(tmp_path: Path, name: str, data: dict) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "summary.json").write_text(json.dumps(data))
    return d


def test_parse_bound() -> None:
    assert parse_bound("ttft_p50=10%") == Bound(None, "ttft_p50", 10.0, "%")
    assert parse_bound("l1:l1_hit_rate=-5pp") == Bound("l1", "l1_hit_rate", 5.0, "pp")
    assert parse_bound("errors=0") == Bound(None, "errors", 0.0, "")
    for bad in ("ttft", "ttft=ten%", "=5%", "a:b:c=1"):
        with pytest.raises(UserError):
            parse_bound(bad)


def test_direction_of_worse() -> None:
    pct = Bound(None, "x", 10.0, "%")
    assert check_one("ttft_p50_ms", 100.0, 109.0, pct)[0]
    assert not check_one("ttft_p50_ms", 100.0, 111.0, pct)[0]
    assert check_one("ttft_p50_ms", 100.0, 10.0, pct)[0]  # faster is never a regression
    pp = Bound(None, "x", 5.0, "pp")
    assert check_one("l1_hit_rate", 0.60, 0.56, pp)[0]
    assert not check_one("l1_hit_rate", 0.60, 0.54, pp)[0]
    assert check_one("l1_hit_rate", 0.60, 0.90, pp)[0]
    assert not check_one("l1_hit_rate", 0.60, None, pp)[0]
    assert check_one("l1_hit_rate", None, None, pp)[0]


def test_compare_applies_unprefixed_bounds_to_all_common_configs() -> None:
    checks = compare(_summary(0.5, 0.6), _summary(0.52, 0.58), [parse_bound("ttft_later_p50_ratio=20%")])
    assert [(c.config, c.ok) for c in checks] == [("baseline", True), ("l1", True)]
    broken = compare(_summary(0.5, 0.6), _summary(1.0, 0.0), [parse_bound("ttft_later_p50_ratio=20%")])
    assert [(c.config, c.ok) for c in broken] == [("baseline", True), ("l1", False)]


def test_cli_exit_codes(tmp_path: Path) -> None:
    base = _write(tmp_path, "base", _summary(0.5, 0.6))
    good = _write(tmp_path, "good", _summary(0.55, 0.57, ttft=300.0))
    bad = _write(tmp_path, "bad", _summary(1.0, 0.0))
    runner = CliRunner()
    bounds = ["--max-regression", "ttft_later_p50_ratio=30%", "--max-regression", "l1:l1_hit_rate=-10pp"]
    ok = runner.invoke(app, ["compare", str(base), str(good / "summary.json"), *bounds])
    assert ok.exit_code == 0, ok.output
    assert "all bounds hold" in ok.output
    reg = runner.invoke(app, ["compare", str(base), str(bad), *bounds])
    assert reg.exit_code == 1
    assert "BROKEN" in reg.output
    unknown = runner.invoke(app, ["compare", str(base), str(good), "--max-regression", "nonsense=1%"])
    assert isinstance(unknown.exception, UserError) and "unknown figure" in str(unknown.exception)


def test_load_summary_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a JSON summary"):
        load_summary(bad)
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(UserError, match="not a kvbench summary"):
        load_summary(bad)


@pytest.mark.parametrize("case", ["missing", "wrongschema", "badbound"])
def test_bad_input_exits_2_without_traceback(tmp_path: Path, case: str) -> None:
    base = _write(tmp_path, "base", _summary(0.5, 0.6))
    other = tmp_path / "other.json"
    bound = "ttft_p50=10%"
    if case == "missing":
        other = tmp_path / "nope.json"
    elif case == "wrongschema":
        other.write_text(json.dumps({"schema": "kvbench.summary", "schema_version": 99, "configs": []}))
    else:
        other = base
        bound = "ttft_p50=lots"
    proc = subprocess.run(
        [sys.executable, "-m", "kvbench", "compare", str(base), str(other), "--max-regression", bound],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
