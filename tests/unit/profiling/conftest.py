"""Builders for the bodies agents send, made with the collector's own protobuf classes."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

from profiling.proto import profile_pb2, push_pb2

DATA = Path(__file__).parent / "data"

# (root-first stack, value, per-sample string tags)
SampleSpec = tuple[tuple[str, ...], int, dict[str, str]]


def build_pprof(
    samples: list[SampleSpec],
    sample_type: tuple[str, str] = ("cpu", "nanoseconds"),
    time_nanos: int = 0,
    period: int = 10_000_000,
) -> profile_pb2.Profile:
    """A pprof Profile whose samples have the given stacks, values and string labels."""
    p = profile_pb2.Profile()
    strings: dict[str, int] = {}

    def s(text: str) -> int:
        if text not in strings:
            strings[text] = len(strings)
            p.string_table.append(text)
        return strings[text]

    s("")
    p.sample_type.add(type=s(sample_type[0]), unit=s(sample_type[1]))
    p.period_type.type = s("cpu")
    p.period_type.unit = s("nanoseconds")
    p.period = period
    p.time_nanos = time_nanos
    funcs: dict[str, int] = {}
    for stack, value, tags in samples:
        loc_ids = []
        for name in reversed(stack):  # pprof is leaf first
            if name not in funcs:
                fid = len(funcs) + 1
                funcs[name] = fid
                p.function.add(id=fid, name=s(name), filename=s("/app/work.py"))
                loc = p.location.add(id=fid)
                loc.line.add(function_id=fid, line=fid)
            loc_ids.append(funcs[name])
        sample = p.sample.add(location_id=loc_ids, value=[value])
        for k, v in tags.items():
            sample.label.add(key=s(k), str=s(v))
    return p


def build_push(
    profiles: list[profile_pb2.Profile], labels: dict[str, str] | None = None
) -> push_pb2.PushRequest:
    labels = {"__name__": "process_cpu", "service_name": "svc", **(labels or {})}
    req = push_pb2.PushRequest()
    series = req.series.add()
    for k, v in labels.items():
        series.labels.add(name=k, value=v)
    for i, prof in enumerate(profiles):
        series.samples.add(raw_profile=prof.SerializeToString(), ID=f"id-{i}")
    return req


@pytest.fixture
def pprof() -> Callable[..., profile_pb2.Profile]:
    return build_pprof


@pytest.fixture
def push() -> Callable[..., push_pb2.PushRequest]:
    return build_push


@pytest.fixture
def real_push_body() -> bytes:
    """A gzip'd PushRequest exactly as pyroscope-io 1.4.0 sent it (captured on loopback):
    service capapp, samples op=load in load_blocks and op=save in save_blocks."""
    return (DATA / "pyroscope_io_1_4_0_push.bin.gz").read_bytes()


@pytest.fixture
def gz() -> Callable[[bytes], bytes]:
    return gzip.compress
