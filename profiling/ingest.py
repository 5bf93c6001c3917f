"""Decode what profiling agents upload into :class:`Batch` es of aggregated stacks.

Two wire forms are accepted, those real agents use:

* Connect ``push.v1.PusherService/Push``: a ``PushRequest`` (protobuf or its JSON mapping, optionally
  gzip'd) whose samples hold pprof profiles. pyroscope-io 1.4 sends this.
* Legacy ``/ingest?name=app.cpu{k=v}&format=pprof|folded|lines``: older agents and scripts.

Invariants of every returned batch: stacks are root-first tuples of non-empty frame names, values are
positive, and ``labels`` are the series labels merged with that group's per-sample string tags (a
sample tag never overrides a series label). Every decoding failure raises :class:`IngestError` with an
HTTP status (400 malformed, 413 too large, 415 unsupported), never another exception type.
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from profiling.proto import profile_pb2, push_pb2
from profiling.selector import DEFAULT_PROFILE_TYPE

Stack = tuple[str, ...]
UNKNOWN_SERVICE = "unknown_service"


class IngestError(Exception):
    """A body the collector refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Batch:
    """Aggregated samples of one stream (profile type + full label set) at one time."""

    profile_type: str
    labels: dict[str, str]
    time_s: float
    stacks: dict[Stack, int] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return self.labels.get("service_name", UNKNOWN_SERVICE)


def decompress_bounded(data: bytes, limit: int) -> bytes:
    """gzip/zlib-decode ``data`` refusing output above ``limit`` bytes (zip bombs -> 413)."""
    d = zlib.decompressobj(wbits=47)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise IngestError(400, f"body is not valid gzip: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise IngestError(413, f"decompressed body exceeds the {limit // (1 << 20)} MiB limit")
    return out


def _maybe_gunzip(data: bytes, limit: int) -> bytes:
    return decompress_bounded(data, limit) if data[:2] == b"\x1f\x8b" else data


def decode_push(body: bytes, content_type: str, limit: int, now: float | None = None) -> list[Batch]:
    """Batches from a Connect Push body (already content-decoded)."""
    req = push_pb2.PushRequest()
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in ("application/json", "application/connect+json"):
        try:
            json_format.Parse(body.decode("utf-8"), req)
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            raise IngestError(400, f"invalid PushRequest JSON: {exc}") from None
    elif ctype in ("application/proto", "application/protobuf", "application/x-protobuf", ""):
        try:
            req.ParseFromString(body)
        except DecodeError as exc:
            raise IngestError(400, f"invalid PushRequest protobuf: {exc}") from None
    else:
        raise IngestError(415, f"unsupported content type {content_type!r}: use application/proto or json")
    out: list[Batch] = []
    for series in req.series:
        labels = {lp.name: lp.value for lp in series.labels}
        name = labels.get("__name__") or "process_cpu"
        for sample in series.samples:
            profile = decode_pprof(sample.raw_profile, limit)
            out.extend(batches_from_pprof(profile, name, labels, now))
    return out


def decode_pprof(data: bytes, limit: int) -> profile_pb2.Profile:
    """Parse a pprof ``Profile``, gzip'd (as pprof files usually are) or raw (as pyroscope-io sends)."""
    raw = _maybe_gunzip(data, limit)
    profile = profile_pb2.Profile()
    try:
        profile.ParseFromString(raw)
    except DecodeError as exc:
        raise IngestError(400, f"invalid pprof profile: {exc}") from None
    if not profile.sample_type:
        raise IngestError(400, "invalid pprof profile: no sample_type")
    return profile


def batches_from_pprof(
    profile: profile_pb2.Profile, name: str, series_labels: dict[str, str], now: float | None = None
) -> list[Batch]:
    """One batch per (sample type, distinct per-sample tag set) of ``profile``."""
    strings = profile.string_table

    def string(i: int) -> str:
        if not 0 <= i < len(strings):
            raise IngestError(400, f"invalid pprof profile: string index {i} out of range")
        return strings[i]

    functions = {f.id: f for f in profile.function}
    locations = {loc.id: loc for loc in profile.location}
    frame_cache: dict[int, list[str]] = {}

    def frames_of(loc_id: int) -> list[str]:
        cached = frame_cache.get(loc_id)
        if cached is not None:
            return cached
        loc = locations.get(loc_id)
        if loc is None:
            raise IngestError(400, f"invalid pprof profile: sample refers to missing location {loc_id}")
        names: list[str] = []
        for line in loc.line:
            fn = functions.get(line.function_id)
            if fn is None:
                raise IngestError(400, f"invalid pprof profile: missing function {line.function_id}")
            names.append(string(fn.name) or string(fn.system_name) or string(fn.filename) or "?")
        if not names:
            names.append(f"0x{loc.address:x}")
        frame_cache[loc_id] = names
        return names

    period_type = profile.period_type
    ptype, punit = string(period_type.type), string(period_type.unit)
    types = [f"{name}:{string(st.type)}:{string(st.unit)}:{ptype}:{punit}" for st in profile.sample_type]
    ts = profile.time_nanos / 1e9 if profile.time_nanos > 0 else (time.time() if now is None else now)
    groups: dict[tuple[int, tuple[tuple[str, str], ...]], dict[Stack, int]] = defaultdict(dict)
    for sample in profile.sample:
        if len(sample.value) != len(types):
            raise IngestError(400, "invalid pprof profile: sample value count differs from sample_type count")
        tags = tuple(sorted((string(lb.key), string(lb.str)) for lb in sample.label if lb.str))
        stack_leaf_first: list[str] = []
        for loc_id in sample.location_id:
            stack_leaf_first.extend(frames_of(loc_id))
        if not stack_leaf_first:
            continue
        stack = tuple(reversed(stack_leaf_first))
        for i, v in enumerate(sample.value):
            if v > 0:
                agg = groups[(i, tags)]
                agg[stack] = agg.get(stack, 0) + v
    out = []
    for (i, tags), stacks in groups.items():
        labels = {**dict(tags), **series_labels}
        labels.setdefault("service_name", UNKNOWN_SERVICE)
        labels["__name__"] = name
        out.append(Batch(types[i], labels, ts, stacks))
    return out


_LEGACY_KINDS = {
    "cpu": ("process_cpu", DEFAULT_PROFILE_TYPE),
    "alloc_objects": ("memory", "memory:alloc_objects:count::"),
    "alloc_space": ("memory", "memory:alloc_space:bytes::"),
    "inuse_objects": ("memory", "memory:inuse_objects:count::"),
    "inuse_space": ("memory", "memory:inuse_space:bytes::"),
}


def parse_legacy_name(name: str) -> tuple[str, str, dict[str, str]]:
    """``app.cpu{k=v,k2=v2}`` -> (service, kind, labels); kind defaults to ``cpu``."""
    name = name.strip()
    head, brace, rest = name.partition("{")
    labels: dict[str, str] = {}
    if brace:
        if not rest.endswith("}"):
            raise IngestError(400, f"bad name {name!r}: missing closing '}}'")
        for part in filter(None, (p.strip() for p in rest[:-1].split(","))):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise IngestError(400, f"bad name {name!r}: tag {part!r} is not key=value")
            labels[key.strip()] = value.strip().strip('"')
    app, dot, kind = head.rpartition(".")
    if not dot or kind not in _LEGACY_KINDS:
        app, kind = head, "cpu"
    if not app:
        raise IngestError(400, "missing application name: use ?name=APP.cpu{tag=value}")
    return app, kind, labels


def decode_legacy(
    body: bytes,
    params: dict[str, str],
    content_type: str,
    limit: int,
    now: float | None = None,
) -> list[Batch]:
    """Batches from a legacy ``/ingest`` call."""
    from profiling.timerange import TimeRangeError, parse_time

    if "name" not in params:
        raise IngestError(400, "missing ?name=APP.cpu{tag=value} query parameter")
    app, kind, labels = parse_legacy_name(params["name"])
    metric, profile_type = _LEGACY_KINDS[kind]
    labels = {**labels, "service_name": app, "__name__": metric}
    fmt = (params.get("format") or "folded").lower()
    try:
        ts = parse_time(params["from"]) if params.get("from") else (time.time() if now is None else now)
    except TimeRangeError as exc:
        raise IngestError(400, f"bad 'from': {exc}") from None
    if fmt == "pprof":
        if content_type.lower().startswith("multipart/"):
            raise IngestError(415, "multipart pprof uploads are not supported: send the pprof as the body")
        profile = decode_pprof(body, limit)
        batches = batches_from_pprof(profile, metric, labels, now)
        if params.get("from"):
            for b in batches:
                b.time_s = ts
        return batches
    if fmt not in ("folded", "lines"):
        raise IngestError(415, f"unsupported format {fmt!r}: use pprof, folded or lines")
    try:
        text = _maybe_gunzip(body, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise IngestError(400, f"{fmt} body is not UTF-8 text") from None
    scale = 1
    if kind == "cpu":
        try:
            rate = float(params.get("sampleRate") or 100)
        except ValueError:
            raise IngestError(400, f"bad sampleRate {params.get('sampleRate')!r}") from None
        if rate <= 0:
            raise IngestError(400, "sampleRate must be positive")
        scale = max(1, round(1e9 / rate))
    stacks: dict[Stack, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if fmt == "lines":
            stack_text, count = line, 1
        else:
            stack_text, sep, count_text = line.rpartition(" ")
            try:
                count = int(count_text)
            except ValueError:
                count = -1
            if not sep or count < 0:
                raise IngestError(400, f"folded line {lineno} is not 'frame;frame;... COUNT': {line[:80]!r}")
        stack = tuple(f for f in stack_text.split(";") if f)
        if stack and count:
            stacks[stack] = stacks.get(stack, 0) + count * scale
    if not stacks:
        return []
    return [Batch(profile_type, labels, ts, stacks)]
