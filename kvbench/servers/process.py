"""One mechanism for every server kvbench starts: a command in its own process group.

Invariants:
- The command runs in a new session, so it is the leader of its own process group and every process
  it forks (vLLM's EngineCore and workers, for instance) shares that group. Stopping signals the whole
  group by its id, never processes found by name.
- `stop()` returns only once no live process of the group is left (SIGTERM, a grace period, then
  SIGKILL). A failed or interrupted `start()` stops what it started before re-raising.
- Output goes to a log file, never to the console; error messages carry the log's gist and path.
- Processes still running when the interpreter exits are stopped by an atexit hook, as a last resort
  for code paths that never reached `stop()`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from kvbench.errors import UserError

_POLL_S = 0.2
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ERRORISH = re.compile(r"error|exception|traceback|fatal|failed|not found|denied", re.IGNORECASE)


class ServerError(UserError):
    """A server did not become healthy, or died; the message is one line naming the log file."""


class CommandProcess:
    """A long-running command that is ready once a health check passes.

    Readiness is `ready()` returning True if given, else `health_url` answering HTTP 200, else the
    process merely having started. `env` entries are laid over the current environment; an entry whose
    value is None removes that variable from the child's environment.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str | None] | None = None,
        cwd: Path | None = None,
        health_url: str | None = None,
        ready: Callable[[], bool] | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 60.0,
        stop_grace_s: float = 10.0,
        name: str | None = None,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.argv: list[str] = [str(a) for a in argv]
        self.env_overrides: dict[str, str | None] = dict(env or {})
        self.cwd = cwd
        self.health_url = health_url
        self._ready = ready
        self.name = name or Path(self.argv[0]).name
        self.log_path = Path(log_path) if log_path is not None else _temp_log(self.name)
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        """Launch the command and block until it is ready; on any failure nothing is left running."""
        if self.is_running():
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_offset = self._log.tell()
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self._child_env(),
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            self._close_log()
            raise ServerError(f"{self.name}: cannot run {self.argv[0]!r}: {exc.strerror or exc}") from exc
        _RUNNING.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop(grace_s=min(self.stop_grace_s, 5.0))
            raise
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM the process group, SIGKILL it after `grace_s`, and wait until no member is alive."""
        if self._popen is None:
            return
        grace = self.stop_grace_s if grace_s is None else grace_s
        pgid = self._popen.pid
        _signal_group(pgid, signal.SIGTERM)
        if not self._wait_group_gone(pgid, grace):
            _signal_group(pgid, signal.SIGKILL)
            self._wait_group_gone(pgid, 10.0)
        self._finish()

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash or power loss would, and wait for it to vanish."""
        if self._popen is None:
            return
        pgid = self._popen.pid
        _signal_group(pgid, signal.SIGKILL)
        self._wait_group_gone(pgid, 10.0)
        self._finish()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- state -------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of the command (also its process-group id) while started, else None."""
        return self._popen.pid if self._popen is not None else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def log_tail(self, max_lines: int = 20) -> list[str]:
        """The last lines this run wrote to the log, without terminal colour codes."""
        try:
            with open(self.log_path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                start = max(self._log_offset, size - 16384)
                fh.seek(start)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return []
        lines = [_ANSI.sub("", ln).strip() for ln in text.splitlines()]
        return [ln for ln in lines if ln][-max_lines:]

    def log_gist(self) -> str:
        """A short one-line summary of why the process failed, for error messages."""
        tail = self.log_tail(40)
        if not tail:
            return "no output"
        picked = [ln for ln in tail if _ERRORISH.search(ln)][-2:]
        if tail[-1] not in picked:
            picked.append(tail[-1])
        gist = " | ".join(picked)
        return gist if len(gist) <= 400 else gist[:397] + "..."

    # -- internals ---------------------------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key, value in self.env_overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def _is_ready(self) -> bool:
        if self._ready is not None:
            try:
                return bool(self._ready())
            except Exception:
                return False
        if self.health_url is not None:
            try:
                return httpx.get(self.health_url, timeout=2.0, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False
        return True

    def _wait_ready(self) -> None:
        assert self._popen is not None
        started = time.monotonic()
        deadline = started + self.startup_timeout_s
        while True:
            rc = self._popen.poll()
            if rc is not None:
                raise ServerError(
                    f"{self.name} exited with code {rc} during startup: {self.log_gist()} "
                    f"(log: {self.log_path})"
                )
            if self._is_ready():
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.name} not ready after {self.startup_timeout_s:g}s: {self.log_gist()} "
                    f"(log: {self.log_path})"
                )
            time.sleep(_POLL_S)

    def _wait_group_gone(self, pgid: int, timeout_s: float) -> bool:
        assert self._popen is not None
        deadline = time.monotonic() + timeout_s
        while True:
            self._popen.poll()
            if not group_alive(pgid):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _finish(self) -> None:
        assert self._popen is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=5.0)
        self._popen = None
        _RUNNING.discard(self)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is still in process group `pgid`."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return bool(group_members(pgid))


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in group `pgid`, read from /proc (Linux).

    Zombies are left out because their parent, not us, decides when they are reaped (an orphan's
    reaper may be slow in a container); they hold no memory, ports or files.
    """
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _temp_log(name: str) -> Path:
    fd, path = tempfile.mkstemp(prefix=f"kvbench-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-", suffix=".log")
    os.close(fd)
    return Path(path)


_RUNNING: set[CommandProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_RUNNING):
        with contextlib.suppress(Exception):
            process.stop(grace_s=2.0)
