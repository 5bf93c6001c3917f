import base64
import gzip
import json

import pytest
from google.protobuf import json_format

from profiling.ingest import IngestError, decode_legacy, decode_push, decompress_bounded, parse_legacy_name
from profiling.selector import DEFAULT_PROFILE_TYPE

LIMIT = 1 << 20
T0 = 1_800_000_000


def by_op(batches):
    return {b.labels.get("op", ""): b for b in batches}


def test_push_protobuf_splits_samples_by_tag(pprof, push):
    prof = pprof(
        [
            (("main", "load_fn"), 30, {"op": "load"}),
            (("main", "save_fn"), 20, {"op": "save"}),
            (("main", "load_fn"), 5, {"op": "load"}),
            (("main", "idle"), 7, {}),
        ],
        time_nanos=T0 * 10**9,
    )
    body = push([prof], {"service_name": "eng", "env": "t"}).SerializeToString()
    batches = by_op(decode_push(body, "application/proto", LIMIT))
    assert set(batches) == {"load", "save", ""}
    load = batches["load"]
    assert load.profile_type == DEFAULT_PROFILE_TYPE
    assert load.service == "eng"
    assert load.labels["env"] == "t" and load.labels["__name__"] == "process_cpu"
    assert load.stacks == {("main", "load_fn"): 35}
    assert load.time_s == T0
    assert batches[""].stacks == {("main", "idle"): 7}


def test_sample_tag_does_not_override_series_label(pprof, push):
    prof = pprof([(("f",), 1, {"service_name": "spoof"})])
    (batch,) = decode_push(
        push([prof], {"service_name": "real"}).SerializeToString(), "application/proto", LIMIT
    )
    assert batch.service == "real"


def test_push_json_form_with_base64_raw_profile(pprof, push):
    req = push([pprof([(("a", "b"), 3, {"op": "lookup"})])])
    body = json_format.MessageToJson(req).encode()
    assert base64.b64encode(req.series[0].samples[0].raw_profile).decode() in body.decode()
    (batch,) = decode_push(body, "application/json", LIMIT)
    assert batch.labels["op"] == "lookup" and batch.stacks == {("a", "b"): 3}


def test_gzipped_raw_profile_inside_push(pprof, push):
    req = push([])
    sample = req.series[0].samples.add()
    sample.raw_profile = gzip.compress(pprof([(("x",), 9, {})]).SerializeToString())
    (batch,) = decode_push(req.SerializeToString(), "application/proto", LIMIT)
    assert batch.stacks == {("x",): 9}


def test_real_pyroscope_io_body(real_push_body):
    batches = by_op(decode_push(gzip.decompress(real_push_body), "application/proto", LIMIT))
    assert set(batches) == {"load", "save"}
    assert batches["load"].service == "capapp"
    assert batches["load"].labels["otel.scope.name"] == "com.grafana.pyroscope/python"
    assert all(stack[-1] == "load_blocks" for stack in batches["load"].stacks)
    assert all(stack[-1] == "save_blocks" for stack in batches["save"].stacks)


@pytest.mark.parametrize(
    ("body", "ctype", "status"),
    [
        (b"\xff\xff\xff\xff", "application/proto", 400),
        (b"{not json", "application/json", 400),
        (b'{"series": 5}', "application/json", 400),
        (b"x", "text/plain", 415),
    ],
)
def test_malformed_push_bodies(body, ctype, status):
    with pytest.raises(IngestError) as err:
        decode_push(body, ctype, LIMIT)
    assert err.value.status == status and err.value.message


def test_pprof_with_bad_indexes_is_rejected(pprof, push):
    prof = pprof([(("f",), 1, {})])
    prof.function[0].name = 999
    with pytest.raises(IngestError, match="string index"):
        decode_push(push([prof]).SerializeToString(), "application/proto", LIMIT)
    prof2 = pprof([(("f",), 1, {})])
    prof2.sample[0].location_id.append(77)
    with pytest.raises(IngestError, match="missing location"):
        decode_push(push([prof2]).SerializeToString(), "application/proto", LIMIT)


def test_zip_bomb_is_413():
    bomb = gzip.compress(b"\0" * (4 * LIMIT))
    with pytest.raises(IngestError) as err:
        decompress_bounded(bomb, LIMIT)
    assert err.value.status == 413


def test_legacy_name_parsing():
    assert parse_legacy_name("app.cpu{env=prod, region=eu}") == (
        "app",
        "cpu",
        {"env": "prod", "region": "eu"},
    )
    assert parse_legacy_name("my.app") == ("my.app", "cpu", {})
    with pytest.raises(IngestError):
        parse_legacy_name("app{env}")


def test_legacy_folded_converts_samples_to_nanoseconds():
    body = b"main;load_fn 3\nmain;save_fn 1\n\nmain;load_fn 2\n"
    (batch,) = decode_legacy(
        body, {"name": "app.cpu{op=load}", "from": str(T0), "sampleRate": "100"}, "", LIMIT
    )
    assert batch.profile_type == DEFAULT_PROFILE_TYPE
    assert batch.labels == {"service_name": "app", "op": "load", "__name__": "process_cpu"}
    assert batch.stacks == {("main", "load_fn"): 5 * 10_000_000, ("main", "save_fn"): 10_000_000}
    assert batch.time_s == T0


def test_legacy_lines_and_gzip_pprof(pprof):
    (lines,) = decode_legacy(b"a;b\na;b\na;c\n", {"name": "app", "format": "lines"}, "", LIMIT)
    assert lines.stacks == {("a", "b"): 2 * 10_000_000, ("a", "c"): 10_000_000}
    body = gzip.compress(pprof([(("m", "f"), 40, {"op": "save"})]).SerializeToString())
    (batch,) = decode_legacy(body, {"name": "app.cpu", "format": "pprof", "from": str(T0)}, "", LIMIT)
    assert batch.labels["op"] == "save" and batch.stacks == {("m", "f"): 40} and batch.time_s == T0


@pytest.mark.parametrize(
    ("body", "params", "status"),
    [
        (b"a;b 1", {}, 400),
        (b"a;b notanumber", {"name": "app"}, 400),
        (b"a;b", {"name": "app"}, 400),
        (b"a;b 1", {"name": "app", "format": "jfr"}, 415),
        (b"\xff\xfe", {"name": "app", "format": "folded"}, 400),
        (b"garbage", {"name": "app", "format": "pprof"}, 400),
        (b"a 1", {"name": "app", "from": "yesterday"}, 400),
        (b"a 1", {"name": "app", "sampleRate": "0"}, 400),
    ],
)
def test_legacy_malformed(body, params, status):
    with pytest.raises(IngestError) as err:
        decode_legacy(body, params, "", LIMIT)
    assert err.value.status == status


def test_json_helper_roundtrip_is_valid_json(pprof, push):
    text = json_format.MessageToJson(push([pprof([(("a",), 1, {})])]))
    assert json.loads(text)["series"][0]["samples"][0]["ID"] == "id-0"
