"""The scenario file: what to run (target), under which cache configurations, with which workload.

The schema is strict (unknown keys are errors) so a typo never silently falls back to a default.
`load_scenario` reports the first problem as one line `FILE:LINE: field.path: message`, mapping
pydantic's error locations back to YAML line numbers through the composed node tree.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kvbench.errors import UserError

CONNECTOR_ENV_PREFIX = "AIBRIX_KV_CACHE_OL_"
DEFAULT_KV_TRANSFER_CONFIG: dict[str, Any] = {
    "kv_connector": "TieredOffloadConnector",
    "kv_connector_module_path": "connector.vllm",
    "kv_role": "kv_both",
    # A chunk the connector cannot deliver is recomputed instead of failing the request.
    "kv_load_failure_policy": "recompute",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- value distributions -------------------------------------------------------------------------


class Uniform(_Strict):
    """Integers or floats drawn uniformly from [min, max]."""

    dist: Literal["uniform"]
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.max < self.min:
            raise ValueError("max must be >= min")
        return self


class Normal(_Strict):
    """Normal(mean, std), clipped to [min, max]."""

    dist: Literal["normal"]
    mean: float
    std: float = Field(ge=0)
    min: float = 0
    max: float | None = None


class Choice(_Strict):
    """One of the listed values, uniformly."""

    dist: Literal["choice"]
    values: list[float] = Field(min_length=1)


class Exponential(_Strict):
    """Exponential with the given mean (e.g. think times)."""

    dist: Literal["exponential"]
    mean: float = Field(gt=0)


Distribution = Annotated[Uniform | Normal | Choice | Exponential, Field(discriminator="dist")]
IntValue = Annotated[int, Field(ge=0)] | Distribution
FloatValue = Annotated[float, Field(ge=0)] | Distribution


# ---- targets -------------------------------------------------------------------------------------


class ModelSpec(_Strict):
    """The model the embedded target serves: the offline tiny model (built once, cached) or a local dir."""

    preset: Literal["tiny", "bench"] = "tiny"
    path: Path | None = None
    seed: int = 0


class EmbeddedTarget(_Strict):
    """kvbench starts a local vLLM CPU engine per configuration (and redis-server when needed)."""

    kind: Literal["embedded"]
    model: ModelSpec = ModelSpec()
    cache_dir: Path | None = None
    kv_cache_space_gib: float = Field(default=1.0, gt=0)
    kv_blocks: int | None = Field(default=None, gt=0)
    max_model_len: int = Field(default=4096, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    enforce_eager: bool = True
    env: dict[str, str] = {}
    extra_args: list[str] = []
    startup_timeout_s: float = Field(default=300, gt=0)


class CommandTarget(_Strict):
    """The user's own launch command, started per configuration; kvbench waits for its health URL.

    Placeholders in `command` items: `{port}`, `{host}`, `{model}`. When a configuration turns the
    connector on, `connector_args` (with `{kv_transfer_config}` filled in as JSON) are appended.
    """

    kind: Literal["command"]
    command: list[str] = Field(min_length=1)
    env: dict[str, str] = {}
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, gt=0, lt=65536)
    model: str
    tokenizer: Path
    health_path: str = "/health"
    metrics_path: str | None = "/metrics"
    connector_args: list[str] = ["--kv-transfer-config", "{kv_transfer_config}"]
    startup_timeout_s: float = Field(default=600, gt=0)


class KubernetesStep(_Strict):
    """Apply a configuration's env overlay to a Deployment and wait for the rollout (untested live)."""

    deployment: str
    namespace: str = "default"
    container: str | None = None
    context: str | None = None
    kubectl: str = "kubectl"
    rollout_timeout_s: int = Field(default=600, gt=0)


class UrlTarget(_Strict):
    """An existing OpenAI-compatible endpoint or gateway; kvbench cannot restart it."""

    kind: Literal["url"]
    base_url: str
    model: str
    tokenizer: Path
    api_key_env: str | None = None
    headers: dict[str, str] = {}
    metrics_urls: list[str] | None = None
    kubernetes: KubernetesStep | None = None

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


Target = Annotated[EmbeddedTarget | CommandTarget | UrlTarget, Field(discriminator="kind")]


# ---- cache configurations ------------------------------------------------------------------------


class CacheConfig(_Strict):
    """One named cache configuration: an overlay on the target (env, connector on/off, engine knobs)."""

    name: str = Field(min_length=1)
    description: str = ""
    connector: bool | None = None
    env: dict[str, str] = {}
    kv_connector_extra_config: dict[str, Any] = {}
    kv_cache_space_gib: float | None = Field(default=None, gt=0)
    kv_blocks: int | None = Field(default=None, gt=0)
    extra_args: list[str] = []

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", v):
            raise ValueError("use letters, digits and . _ + - (it names files)")
        return v

    @property
    def connector_enabled(self) -> bool:
        """Explicit `connector`, else on exactly when the overlay sets connector variables."""
        if self.connector is not None:
            return self.connector
        return any(k.startswith(CONNECTOR_ENV_PREFIX) for k in self.env)


# ---- workloads -----------------------------------------------------------------------------------


class Arrival(_Strict):
    """When sessions start: Poisson or constant rate, or all at once ("closed") under a concurrency cap."""

    pattern: Literal["poisson", "constant", "closed"] = "closed"
    rate_per_s: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _rate(self) -> Arrival:
        if self.pattern in ("poisson", "constant") and self.rate_per_s is None:
            raise ValueError(f"pattern {self.pattern} needs rate_per_s")
        return self


class RequestOptions(_Strict):
    """How requests are sent."""

    endpoint: Literal["chat", "completions"] = "chat"
    temperature: float = 0.0
    ignore_eos: bool = True
    timeout_s: float = Field(default=120, gt=0)
    extra_body: dict[str, Any] = {}
    record_headers: list[str] = ["target-pod", "request-id", "x-request-id"]


class _WorkloadBase(_Strict):
    arrival: Arrival = Arrival()
    request: RequestOptions = RequestOptions()
    warmup_requests: int = Field(default=0, ge=0)
    max_requests: int | None = Field(default=None, gt=0)
    duration_s: float | None = Field(default=None, gt=0)


class MultiTurnWorkload(_WorkloadBase):
    """N users, T turns each; every turn's prompt is the user's whole history plus a new question."""

    kind: Literal["multi_turn"]
    users: int = Field(gt=0)
    turns: int = Field(gt=0)
    system_prompt_tokens: int = Field(default=0, ge=0)
    shared_system_prompt: bool = True
    question_tokens: IntValue
    answer_tokens: IntValue
    think_time_s: FloatValue = 0.0


class SharedPrefixWorkload(_WorkloadBase):
    """Groups of requests sharing a long prefix (document QA): each asks a new question on one document."""

    kind: Literal["shared_prefix"]
    groups: int = Field(gt=0)
    requests_per_group: int = Field(gt=0)
    prefix_tokens: IntValue
    suffix_tokens: IntValue
    output_tokens: IntValue
    order: Literal["random", "interleaved", "grouped"] = "random"


class TraceWorkload(_WorkloadBase):
    """Replay a JSONL trace: one request per line with `timestamp` (s) and a prompt (see docs)."""

    kind: Literal["trace"]
    path: Path
    speedup: float = Field(default=1.0, gt=0)
    default_output_tokens: int = Field(default=64, gt=0)


Workload = Annotated[MultiTurnWorkload | SharedPrefixWorkload | TraceWorkload, Field(discriminator="kind")]


class ProfilingSpec(_Strict):
    """Per-configuration engine profiles; without `url` kvbench starts a local collector."""

    url: str | None = None
    service: str = "vllm-engine"


class Scenario(_Strict):
    """A whole benchmark: the unit `kvbench run` executes and `summary.json` echoes (redacted)."""

    version: Literal[1] = 1
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    target: Target
    configs: list[CacheConfig] = Field(min_length=1)
    baseline: str | None = None
    workload: Workload
    profiling: bool | ProfilingSpec = False

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        names = [c.name for c in self.configs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"configs: duplicate name(s) {', '.join(dupes)}")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not one of the configs ({', '.join(names)})")
        if isinstance(self.target, UrlTarget) and self.target.kubernetes is None and len(self.configs) > 1:
            raise ValueError(
                "a url target cannot be restarted: without target.kubernetes it runs exactly one config"
            )
        return self

    @property
    def baseline_name(self) -> str | None:
        """The configuration relative figures divide by: `baseline`, a config named so, else the first."""
        if self.baseline:
            return self.baseline
        names = [c.name for c in self.configs]
        return "baseline" if "baseline" in names else names[0]

    @property
    def profiling_spec(self) -> ProfilingSpec | None:
        if self.profiling is True:
            return ProfilingSpec()
        return self.profiling or None


# ---- loading with line numbers -------------------------------------------------------------------


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[int, str]:
    """Walk `loc` through the YAML node tree; return (1-based line, user-facing dotted path).

    Location parts that are not keys in the document (union tags such as `embedded` or `int`) are
    skipped, so the path names what the user wrote. A missing key reports its parent's line.
    """
    node = root
    line = (root.start_mark.line + 1) if root is not None else 1
    path: list[str] = []
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key_node, value_node in node.value:
                if getattr(key_node, "value", None) == part:
                    path.append(part)
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                known_tag = part in {"embedded", "command", "url", "multi_turn", "shared_prefix", "trace"}
                if not known_tag and not _is_pydantic_tag(part):
                    path.append(part)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            path.append(f"[{part}]")
        elif isinstance(part, int):
            path.append(f"[{part}]")
    dotted = ".".join(path).replace(".[", "[")
    return line, dotted or "(top level)"


def _is_pydantic_tag(part: str) -> bool:
    return part in {"int", "float", "str", "bool", "dict", "list", "uniform", "normal", "choice"} or (
        "[" in part or part.startswith("function-") or part == "exponential"
    )


def _first_error(path: Path, root: yaml.Node | None, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    # A misspelt key also shows up as a missing one: report the unknown key. Unions report one error per
    # branch; the branch whose location goes deepest is the informative one.
    first = max(errors, key=lambda e: (e["type"] == "extra_forbidden", len(e["loc"]))) if errors else None
    if first is None:
        return f"{path}:1: invalid scenario"
    loc = tuple(first["loc"])
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, str(first.get("ctx", {}).get("discriminator", "")).strip("'"))
    line, dotted = _line_of(root, loc)
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required field is missing"
    msg = msg.removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}:{line}: {dotted}: {msg}{more}"


def load_scenario(path: str | Path) -> Scenario:
    """Read, parse and validate a scenario; every failure is one `UserError` line with file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UserError(f"{path}: cannot read scenario file: {reason}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # At the end of the stream (an unclosed bracket or quote), where the construct began says more.
        if exc.context_mark is not None and mark is not None and mark.index >= len(text.rstrip()):
            mark = exc.context_mark
        line = mark.line + 1 if mark else 1
        raise UserError(f"{path}:{line}: (yaml): {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}:1: (yaml): {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}:1: (top level): a scenario must be a mapping of keys to values")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise UserError(_first_error(path, root, exc)) from None
    return _check_files(path, root, scenario)


def _check_files(path: Path, root: yaml.Node | None, scenario: Scenario) -> Scenario:
    """Resolve referenced files relative to the scenario file and make sure they can be read."""
    base = path.resolve().parent
    updates: dict[str, Any] = {}

    def resolve(p: Path, loc: tuple[Any, ...], want_dir: bool | None) -> Path:
        full = p.expanduser()
        full = full if full.is_absolute() else base / full
        ok = full.is_dir() if want_dir else (full.exists() if want_dir is None else full.is_file())
        if ok and full.is_file():
            try:
                with full.open("rb"):
                    pass
            except OSError:
                ok = False
        if not ok:
            line, dotted = _line_of(root, loc)
            raise UserError(f"{path}:{line}: {dotted}: cannot read {full}")
        return full

    target = scenario.target
    if isinstance(target, CommandTarget | UrlTarget):
        tok = resolve(target.tokenizer, ("target", "tokenizer"), None)
        updates["target"] = target.model_copy(update={"tokenizer": tok})
    elif isinstance(target, EmbeddedTarget) and target.model.path is not None:
        mpath = resolve(target.model.path, ("target", "model", "path"), True)
        updates["target"] = target.model_copy(
            update={"model": target.model.model_copy(update={"path": mpath})}
        )
    workload = scenario.workload
    if isinstance(workload, TraceWorkload):
        tpath = resolve(workload.path, ("workload", "path"), False)
        updates["workload"] = workload.model_copy(update={"path": tpath})
    return scenario.model_copy(update=updates) if updates else scenario
