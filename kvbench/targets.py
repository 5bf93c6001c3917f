"""Targets: where requests go, and how each cache configuration is put in place there.

- embedded: a fresh local vLLM CPU engine per configuration (plus redis-server or a temp dir when the
  configuration's L2 backend needs one and names none).
- command:  the user's own launch command per configuration, ready once its health URL answers.
- url:      an existing endpoint; configurations are applied by an optional Kubernetes step
  (`kubectl set env` + `kubectl rollout status`), otherwise the run covers exactly one configuration.

Invariant: `open_config()` is a context manager that stops everything it started, also on errors and
Ctrl-C; processes are stopped by their process group (see `kvbench.servers`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvbench.errors import UserError
from kvbench.redact import Redactor
from kvbench.scenario import (
    CONNECTOR_ENV_PREFIX,
    DEFAULT_KV_TRANSFER_CONFIG,
    CacheConfig,
    CommandTarget,
    EmbeddedTarget,
    KubernetesStep,
    Scenario,
    UrlTarget,
)

P = CONNECTOR_ENV_PREFIX


@dataclass
class Endpoint:
    """Everything the client and the metrics scraper need for one configuration."""

    base_url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    metrics_urls: list[str] = field(default_factory=list)
    trust_env: bool = False
    notes: list[str] = field(default_factory=list)


def toggle_mode(scenario: Scenario) -> str:
    """How configurations are applied, stated in the output and in summary.json."""
    t = scenario.target
    if isinstance(t, UrlTarget):
        if t.kubernetes is not None:
            return f"kubernetes: kubectl set env deployment/{t.kubernetes.deployment} + rollout status"
        return "single configuration: the url target cannot be restarted, it is measured as it is"
    return "fresh engine per configuration"


def connector_env(cfg: CacheConfig, base_env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The env overlay for `cfg`, and the local services it needs (`redis`, `fs`) that are not given."""
    env = {**base_env, **cfg.env}
    needs = []
    if cfg.connector_enabled:
        backend = env.get(f"{P}L2_CACHE_BACKEND", "").upper()
        if backend == "REDIS" and not env.get(f"{P}REDIS_URL"):
            needs.append("redis")
        if backend == "FS" and not env.get(f"{P}FS_ROOT"):
            needs.append("fs")
    return env, needs


def kv_transfer_config(cfg: CacheConfig) -> dict[str, Any] | None:
    if not cfg.connector_enabled:
        return None
    out = dict(DEFAULT_KV_TRANSFER_CONFIG)
    if cfg.kv_connector_extra_config:
        out["kv_connector_extra_config"] = dict(cfg.kv_connector_extra_config)
    return out


@contextlib.contextmanager
def _local_services(needs: Sequence[str], env: dict[str, str], workdir: Path) -> Iterator[list[str]]:
    """Start redis-server / make an FS root when a configuration needs one; fill the env in place."""
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        if "redis" in needs:
            from kvbench.servers import RedisServer

            server = RedisServer(workdir=workdir / "redis")
            stack.enter_context(server)
            env[f"{P}REDIS_URL"] = server.url
            notes.append(f"local redis-server at {server.url}")
        if "fs" in needs:
            root = Path(tempfile.mkdtemp(prefix="kvbench-fs-", dir=workdir))
            stack.callback(shutil.rmtree, root, True)
            env[f"{P}FS_ROOT"] = str(root)
            notes.append(f"FS tier in {root}")
        yield notes


def _fill(template: str, values: Mapping[str, str]) -> str:
    """Replace `{name}` placeholders; JSON braces and unknown names are left alone."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


# ---- Kubernetes step -----------------------------------------------------------------------------


def kubectl_argv(step: KubernetesStep, set_env: Mapping[str, str], unset: Sequence[str]) -> list[list[str]]:
    """The commands that apply one configuration: set/unset env on the Deployment, wait for rollout."""
    common = [step.kubectl]
    if step.context:
        common += ["--context", step.context]
    common += ["--namespace", step.namespace]
    set_cmd = [*common, "set", "env", f"deployment/{step.deployment}"]
    if step.container:
        set_cmd += ["--containers", step.container]
    set_cmd += [f"{k}={v}" for k, v in sorted(set_env.items())] + [f"{k}-" for k in sorted(unset)]
    wait_cmd = [
        *common,
        "rollout",
        "status",
        f"deployment/{step.deployment}",
        f"--timeout={step.rollout_timeout_s}s",
    ]
    return [set_cmd, wait_cmd]


Runner = Callable[[list[str]], None]


def _run_kubectl(argv: list[str]) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"{argv[0]}: {exc}") from None
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise UserError(f"{' '.join(argv[:6])} ...: exit {proc.returncode}: {msg[-1] if msg else ''}")


# ---- the target ----------------------------------------------------------------------------------


class Target:
    """One scenario's target; `prepare()` once per run, then `open_config(cfg)` per configuration."""

    def __init__(
        self,
        scenario: Scenario,
        run_dir: Path,
        redactor: Redactor,
        *,
        kubectl_runner: Runner | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.scenario = scenario
        self.spec = scenario.target
        self.run_dir = run_dir
        self.redactor = redactor
        self._kubectl = kubectl_runner or _run_kubectl
        self._environ = dict(os.environ if environ is None else environ)
        self.model_dir: Path | None = None
        self._register_secrets()

    def _register_secrets(self) -> None:
        spec = self.spec
        self.redactor.add_mapping(getattr(spec, "env", {}))
        for cfg in self.scenario.configs:
            self.redactor.add_mapping(cfg.env)
        if isinstance(spec, UrlTarget):
            self.redactor.add_mapping(spec.headers)
            if spec.api_key_env:
                self.redactor.add(self._environ.get(spec.api_key_env))

    def prepare(self) -> Path:
        """Build or locate what the run needs before any configuration; returns the tokenizer path."""
        spec = self.spec
        if isinstance(spec, EmbeddedTarget):
            if spec.model.path is not None:
                self.model_dir = spec.model.path
            else:
                from kvbench.model import ensure_tiny
                from kvbench.servers.vllm import default_cache_dir

                cache = spec.cache_dir or default_cache_dir()
                self.model_dir = ensure_tiny(cache / "models", preset=spec.model.preset, seed=spec.model.seed)
            return self.model_dir
        return spec.tokenizer

    def describe(self) -> dict[str, Any]:
        spec = self.spec
        info: dict[str, Any] = {"kind": spec.kind, "toggles": toggle_mode(self.scenario)}
        if isinstance(spec, EmbeddedTarget):
            info.update(model_dir=str(self.model_dir), preset=spec.model.preset,
                        kv_cache_space_gib=spec.kv_cache_space_gib, max_model_len=spec.max_model_len)  # fmt: skip
        elif isinstance(spec, UrlTarget):
            info.update(base_url=spec.base_url, model=spec.model)
        else:
            info.update(command=spec.command, model=spec.model)
        return self.redactor.obj(info)

    def headers(self) -> dict[str, str]:
        if not isinstance(self.spec, UrlTarget):
            return {}
        headers = {k: self._expand(v) for k, v in self.spec.headers.items()}
        if self.spec.api_key_env:
            key = self._environ.get(self.spec.api_key_env)
            if not key:
                raise UserError(
                    f"target.api_key_env: environment variable {self.spec.api_key_env} is not set"
                )
            self.redactor.add(key)
            headers.setdefault("Authorization", f"Bearer {key}")
        for v in headers.values():
            if v.lower().startswith("bearer "):
                self.redactor.add(v)
        return headers

    def _expand(self, value: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self._environ:
                raise UserError(f"target.headers: environment variable {name} is not set")
            self.redactor.add(self._environ[name])
            return self._environ[name]

        return re.sub(r"\$\{(\w+)\}", sub, value)

    @contextlib.contextmanager
    def open_config(self, cfg: CacheConfig, extra_env: Mapping[str, str] | None = None) -> Iterator[Endpoint]:
        spec = self.spec
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        work = self.run_dir / "work" / cfg.name
        work.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, UrlTarget):
            with self._url(spec, cfg) as ep:
                yield ep
            return
        env, needs = connector_env(cfg, spec.env)
        env.update(extra_env or {})
        with _local_services(needs, env, work) as notes:
            self.redactor.add_mapping(env)
            if isinstance(spec, EmbeddedTarget):
                cm = self._embedded(spec, cfg, env, logs)
            else:
                cm = self._command(spec, cfg, env, logs)
            with cm as ep:
                ep.notes = notes + ep.notes
                yield ep
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            work.parent.rmdir()

    @contextlib.contextmanager
    def _embedded(
        self, spec: EmbeddedTarget, cfg: CacheConfig, env: dict[str, str], logs: Path
    ) -> Iterator[Endpoint]:
        from kvbench.servers import VllmEngine
        from kvbench.servers.vllm import default_cache_dir

        assert self.model_dir is not None, "prepare() first"
        extra = [*spec.extra_args, *cfg.extra_args]
        blocks = cfg.kv_blocks or spec.kv_blocks
        if blocks:
            extra += ["--num-gpu-blocks-override", str(blocks)]
        engine = VllmEngine(
            self.model_dir,
            kv_cache_space_gib=cfg.kv_cache_space_gib or spec.kv_cache_space_gib,
            max_model_len=spec.max_model_len,
            max_num_batched_tokens=spec.max_num_batched_tokens,
            enforce_eager=spec.enforce_eager,
            kv_transfer_config=kv_transfer_config(cfg),
            env=env,
            extra_args=extra,
            log_path=logs / f"{cfg.name}.engine.log",
            startup_timeout_s=spec.startup_timeout_s,
            cache_dir=spec.cache_dir or default_cache_dir(),
        )
        with engine:
            yield Endpoint(
                engine.base_url, engine.served_model_name, metrics_urls=[f"{engine.base_url}/metrics"]
            )

    @contextlib.contextmanager
    def _command(
        self, spec: CommandTarget, cfg: CacheConfig, env: dict[str, str], logs: Path
    ) -> Iterator[Endpoint]:
        from kvbench.servers import CommandProcess, free_port

        port = spec.port or free_port()
        values = {"port": str(port), "host": spec.host, "model": spec.model}
        argv = [_fill(a, values) for a in spec.command]
        ktc = kv_transfer_config(cfg)
        if ktc is not None:
            values["kv_transfer_config"] = json.dumps(ktc, sort_keys=True)
            argv += [_fill(a, values) for a in spec.connector_args]
        argv += list(cfg.extra_args)
        base = f"http://{spec.host}:{port}"
        proc = CommandProcess(
            argv,
            env=env,
            health_url=base + spec.health_path,
            log_path=logs / f"{cfg.name}.command.log",
            startup_timeout_s=spec.startup_timeout_s,
            name=f"command[{cfg.name}]",
        )
        with proc:
            metrics = [base + spec.metrics_path] if spec.metrics_path else []
            yield Endpoint(base, spec.model, metrics_urls=metrics)

    @contextlib.contextmanager
    def _url(self, spec: UrlTarget, cfg: CacheConfig) -> Iterator[Endpoint]:
        notes = []
        if spec.kubernetes is not None:
            others = {k for c in self.scenario.configs for k in c.env}
            unset = sorted(others - set(cfg.env))
            for argv in kubectl_argv(spec.kubernetes, cfg.env, unset):
                self._kubectl(argv)
            notes.append(f"applied with kubectl to deployment/{spec.kubernetes.deployment}")
        else:
            notes.append("url target measured as it is (no kubernetes step)")
        if cfg.extra_args or cfg.kv_cache_space_gib or cfg.kv_blocks or cfg.connector is not None:
            notes.append(
                "extra_args / kv_cache_space_gib / kv_blocks / connector do not apply to a url target"
            )
        metrics = spec.metrics_urls if spec.metrics_urls is not None else [f"{spec.base_url}/metrics"]
        yield Endpoint(spec.base_url, spec.model, headers=self.headers(), metrics_urls=list(metrics),
                       trust_env=True, notes=notes)  # fmt: skip
