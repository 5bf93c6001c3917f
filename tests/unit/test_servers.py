"""CommandProcess lifecycle on small Python child processes, and the argv/env the managers build."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from kvbench.servers import CommandProcess, RedisServer, ServerError, VllmEngine, free_port
from kvbench.servers.process import group_alive, group_members


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


# A parent that forks a grandchild into the same process group, reports both pids, then waits.
_FAMILY = """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print("pids", child.pid, flush=True)
    time.sleep(60)
"""


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    log = tmp_path / "family.log"
    proc = CommandProcess(
        _py(_FAMILY), ready=lambda: "pids" in log.read_text(), log_path=log, startup_timeout_s=20
    )
    with proc:
        pgid = proc.pid
        assert pgid is not None
        grandchild = int(log.read_text().split()[-1])
        assert set(group_members(pgid)) == {pgid, grandchild}
    assert not proc.is_running()
    assert group_members(pgid) == []


def test_sigterm_ignoring_process_is_killed_after_grace(tmp_path: Path) -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """
    log = tmp_path / "stubborn.log"
    proc = CommandProcess(_py(code), ready=lambda: "ready" in log.read_text(), log_path=log, stop_grace_s=0.3)
    proc.start()
    pgid = proc.pid
    assert pgid is not None
    proc.stop()
    assert not group_alive(pgid)


def test_exit_during_startup_raises_one_line_with_gist_and_log(tmp_path: Path) -> None:
    code = """
        import sys
        print("loading weights")
        print("RuntimeError: the model directory is broken", flush=True)
        sys.exit(3)
    """
    log = tmp_path / "boom.log"
    proc = CommandProcess(_py(code), ready=lambda: False, log_path=log, name="boom")
    with pytest.raises(ServerError) as info:
        proc.start()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("boom exited with code 3 during startup")
    assert "RuntimeError: the model directory is broken" in message
    assert str(log) in message
    assert proc.pid is None


def test_startup_timeout_stops_the_process(tmp_path: Path) -> None:
    seen: set[int | None] = set()
    proc = CommandProcess(_py(_FAMILY), log_path=tmp_path / "slow.log", startup_timeout_s=0.5)
    proc._ready = lambda: bool(seen.add(proc.pid))
    with pytest.raises(ServerError, match=r"not ready after 0\.5s"):
        proc.start()
    (pid,) = seen
    assert pid is not None and not group_alive(pid)


def test_keyboard_interrupt_during_startup_leaves_nothing(tmp_path: Path) -> None:
    pids: list[int] = []
    holder: dict[str, CommandProcess] = {}

    def interrupt() -> bool:
        pid = holder["proc"].pid
        assert pid is not None
        pids.append(pid)
        raise KeyboardInterrupt

    proc = CommandProcess(_py(_FAMILY), ready=interrupt, log_path=tmp_path / "int.log")
    holder["proc"] = proc
    with pytest.raises(KeyboardInterrupt):
        proc.start()
    assert pids and not group_alive(pids[0])


def test_missing_executable_is_a_server_error(tmp_path: Path) -> None:
    proc = CommandProcess(["/nonexistent/kvbench-server"], log_path=tmp_path / "x.log")
    with pytest.raises(ServerError, match="cannot run '/nonexistent/kvbench-server'"):
        proc.start()


def test_env_overrides_set_and_remove_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVBENCH_TEST_DROP", "1")
    code = """
        import json, os, time
        print(json.dumps({k: os.environ.get(k) for k in ("KVBENCH_TEST_DROP", "KVBENCH_TEST_SET")}), flush=True)
        time.sleep(60)
    """
    log = tmp_path / "env.log"
    env = {"KVBENCH_TEST_DROP": None, "KVBENCH_TEST_SET": "yes"}
    with CommandProcess(_py(code), env=env, ready=lambda: "}" in log.read_text(), log_path=log):
        seen = json.loads(log.read_text().strip().splitlines()[-1])
    assert seen == {"KVBENCH_TEST_DROP": None, "KVBENCH_TEST_SET": "yes"}


def test_health_url_waits_for_http_200(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "health").write_text("ok")
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    argv += ["--directory", str(tmp_path / "www")]
    proc = CommandProcess(argv, health_url=f"http://127.0.0.1:{port}/health", log_path=tmp_path / "h.log")
    with proc:
        assert httpx.get(proc.health_url or "", trust_env=False).text == "ok"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_redis_without_binary_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerError, match=r"^redis-server not found; run `make setup`$"):
        RedisServer(workdir=tmp_path).start()


def test_redis_url_and_argv() -> None:
    server = RedisServer(port=6399, password="pw", maxmemory="64mb")
    assert server.url == "redis://:pw@127.0.0.1:6399/0"
    assert RedisServer(port=6398).url == "redis://127.0.0.1:6398/0"
    argv = server.argv
    for flag, value in [("--save", ""), ("--appendonly", "no"), ("--bind", "127.0.0.1"), ("--port", "6399")]:
        assert argv[argv.index(flag) + 1] == value
    assert argv[argv.index("--maxmemory") + 1] == "64mb"


def test_vllm_command_and_environment(tmp_path: Path) -> None:
    engine = VllmEngine(
        tmp_path / "tiny-seed0",
        port=8123,
        kv_cache_space_gib=0.5,
        max_model_len=2048,
        max_num_batched_tokens=1024,
        extra_args=["--seed", "7"],
        cache_dir=tmp_path / "cache",
    )
    argv = engine.command()
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert pairs["--model"] == str(tmp_path / "tiny-seed0")
    assert pairs["--served-model-name"] == "tiny-seed0" == engine.served_model_name
    assert (pairs["--host"], pairs["--port"], pairs["--dtype"]) == ("127.0.0.1", "8123", "bfloat16")
    assert pairs["--kv-cache-memory-bytes"] == str(512 * 1024 * 1024)
    assert "--enforce-eager" in argv and argv[-2:] == ["--seed", "7"]
    assert argv[argv.index("--max-num-batched-tokens") + 1] == "1024"
    assert "--load-format" not in argv and "--kv-transfer-config" not in argv
    assert engine.base_url == "http://127.0.0.1:8123"
    assert engine.health_url == "http://127.0.0.1:8123/health"
    env = engine.env_overrides
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "cache" / "vllm")
    assert env["VLLM_CPU_KVCACHE_SPACE"] is None
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in env


def test_vllm_kv_transfer_config_reserves_a_cpu(tmp_path: Path) -> None:
    config = {"kv_connector": "TieredConnector", "kv_role": "kv_both"}
    engine = VllmEngine(tmp_path, kv_transfer_config=config, env={"EXTRA": "1"})
    argv = engine.command()
    assert json.loads(argv[argv.index("--kv-transfer-config") + 1]) == config
    assert engine.env_overrides["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
    assert engine.env_overrides["EXTRA"] == "1"


def test_vllm_refuses_a_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="is not a model directory"):
        VllmEngine(tmp_path).start()
