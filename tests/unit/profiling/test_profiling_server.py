import gzip
import time

import pytest
from google.protobuf import json_format
from starlette.testclient import TestClient

from profiling import flamebearer
from profiling.selector import DEFAULT_PROFILE_TYPE
from profiling.server import Settings, create_app

PUSH = "/push.v1.PusherService/Push"
PROTO_GZ = {"Content-Type": "application/proto", "Content-Encoding": "gzip"}


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(Settings(tmp_path, max_body_mb=1))) as c:
        yield c


@pytest.fixture
def loaded(client, pprof, push):
    now_ns = int(time.time() * 1e9)
    prof = pprof(
        [
            (("main", "kv_load", "read_block"), 60, {"op": "load", "tier": "l2"}),
            (("main", "kv_save", "write_block"), 30, {"op": "save", "tier": "l2"}),
            (("main", "forward"), 10, {}),
        ],
        time_nanos=now_ns,
    )
    body = gzip.compress(push([prof], {"service_name": "vllm-engine"}).SerializeToString())
    r = client.post(PUSH, content=body, headers=PROTO_GZ)
    assert r.status_code == 200 and r.json() == {}
    return client


def render(client, selector, **params):
    q = {
        "query": DEFAULT_PROFILE_TYPE + selector,
        "from": "now-1h",
        "until": "now",
        "format": "json",
        **params,
    }
    r = client.get("/pyroscope/render", params=q)
    assert r.status_code == 200, r.text
    return r.json()


def test_render_response_shape_and_tag_filter(loaded):
    data = render(loaded, '{service_name="vllm-engine"}')
    assert set(data) >= {"flamebearer", "metadata", "timeline"}
    fb = data["flamebearer"]
    assert set(fb) >= {"names", "levels", "numTicks", "maxSelf"}
    assert fb["numTicks"] == 100 and fb["maxSelf"] == 60
    assert data["metadata"]["format"] == "single" and data["metadata"]["units"] == "samples"
    assert sum(data["timeline"]["samples"]) == 100 and data["timeline"]["durationDelta"] == 10
    nodes = flamebearer.decode(fb)
    for i, n in enumerate(nodes):
        kids = sum(c.total for c in nodes if c.parent == i)
        assert n.total == n.self + kids

    load = render(loaded, '{service_name="vllm-engine",op="load"}')["flamebearer"]
    assert "read_block" in load["names"] and "write_block" not in load["names"]
    assert load["numTicks"] == 60
    not_load = render(loaded, '{service_name="vllm-engine",op!="load"}')["flamebearer"]
    assert not_load["numTicks"] == 40 and "read_block" not in not_load["names"]
    tagged = render(loaded, '{service_name="vllm-engine",op=~".+"}')["flamebearer"]
    assert tagged["numTicks"] == 90
    assert render(loaded, '{service_name="nobody"}')["flamebearer"]["numTicks"] == 0


def test_render_time_window_excludes_old_data(loaded):
    past = time.time() - 7200
    data = render(
        loaded, '{service_name="vllm-engine"}', **{"from": str(int(past) - 60), "until": str(int(past))}
    )
    assert data["flamebearer"]["numTicks"] == 0
    ms = render(loaded, '{service_name="vllm-engine"}', **{"from": str(int(time.time() * 1000) - 600_000)})
    assert ms["flamebearer"]["numTicks"] == 100


def test_labels_services_and_connect_queries(loaded):
    assert loaded.get("/pyroscope/label-values", params={"label": "op"}).json() == ["load", "save"]
    names = loaded.get("/pyroscope/labels", params={"query": '{service_name="vllm-engine"}'}).json()
    assert {"op", "tier", "service_name"} <= set(names)
    assert loaded.get("/api/services").json() == [
        {"name": "vllm-engine", "profileTypes": [DEFAULT_PROFILE_TYPE]}
    ]
    now_ms = int(time.time() * 1000)
    window = {"start": now_ms - 600_000, "end": now_ms + 1000}
    r = loaded.post("/querier.v1.QuerierService/LabelValues", json={"name": "tier", **window})
    assert r.json() == {"names": ["l2"]}
    r = loaded.post("/querier.v1.QuerierService/LabelNames", json={"matchers": ['{op="load"}'], **window})
    assert "tier" in r.json()["names"]
    r = loaded.post("/querier.v1.QuerierService/ProfileTypes", json=window)
    assert r.json()["profileTypes"][0]["ID"] == DEFAULT_PROFILE_TYPE
    r = loaded.post(
        "/querier.v1.QuerierService/SelectMergeStacktraces",
        json={"profileTypeID": DEFAULT_PROFILE_TYPE, "labelSelector": '{op="save"}', **window},
    )
    fg = r.json()["flamegraph"]
    assert fg["total"] == "30" and "write_block" in fg["names"]
    decoded = flamebearer.decode({"names": fg["names"], "levels": [lv["values"] for lv in fg["levels"]]})
    assert decoded[0].total == 30


def test_push_json_and_legacy_ingest(client, pprof, push):
    req = push([pprof([(("m", "json_fn"), 5, {"op": "lookup"})], time_nanos=int(time.time() * 1e9))])
    r = client.post(
        PUSH, content=json_format.MessageToJson(req), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200
    r = client.post(
        "/ingest",
        params={
            "name": "svc.cpu{op=save}",
            "from": str(int(time.time())),
            "format": "folded",
            "sampleRate": "100",
        },
        content=b"m;folded_fn 4\n",
    )
    assert r.status_code == 200, r.text
    r = client.post(
        "/ingest",
        params={"name": "svc.cpu", "format": "pprof"},
        content=gzip.compress(pprof([(("m", "pprof_fn"), 7, {})]).SerializeToString()),
    )
    assert r.status_code == 200, r.text
    fb = render(client, '{service_name="svc"}')["flamebearer"]
    assert {"json_fn", "folded_fn", "pprof_fn"} <= set(fb["names"])
    assert render(client, '{service_name="svc",op="save"}')["flamebearer"]["numTicks"] == 4 * 10_000_000


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        (PUSH, b"\x08\x96\x01garbage", {"Content-Type": "application/proto"}, 400),
        (PUSH, b"not gzip", PROTO_GZ, 400),
        (PUSH, b"{}", {"Content-Type": "application/proto", "Content-Encoding": "br"}, 415),
        (PUSH, b"[1]", {"Content-Type": "application/json"}, 400),
        ("/ingest", b"a;b 1", {}, 400),
        ("/ingest?name=x&format=trie", b"a;b 1", {}, 415),
    ],
)
def test_malformed_bodies_are_4xx_with_message(client, path, body, headers, status):
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == status
    payload = r.json()
    assert payload.get("message") or payload.get("error")
    if path == PUSH:
        assert payload["code"]


def test_oversized_bodies_are_413(client):
    big = b"\0" * (2 << 20)
    r = client.post(PUSH, content=big, headers={"Content-Type": "application/proto"})
    assert r.status_code == 413
    bomb = gzip.compress(b"\0" * (20 << 20))
    r = client.post(PUSH, content=bomb, headers=PROTO_GZ)
    assert r.status_code == 413
    assert client.get("/ready").status_code == 200


def test_bad_queries_are_400(client):
    assert client.get("/pyroscope/render").status_code == 400
    r = client.get("/pyroscope/render", params={"query": '{op="load"', "from": "now-1h"})
    assert r.status_code == 400 and "bad query" in r.json()["error"]
    r = client.get("/pyroscope/render", params={"query": "{}", "from": "yesterday"})
    assert r.status_code == 400
    assert client.get("/pyroscope/label-values").status_code == 400
    r = client.post(
        "/querier.v1.QuerierService/LabelValues",
        content=b"nope",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"


def test_ui_page_and_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "flamegraph.js" in page.text
    js = client.get("/static/flamegraph.js")
    assert js.status_code == 200 and "KvFlame" in js.text
    assert client.get("/static/app.js").status_code == 200
