from profiling.ingest import Batch
from profiling.selector import DEFAULT_PROFILE_TYPE, parse_selector
from profiling.store import Store

T0 = 1_800_000_000.0


def batch(op, stacks, t=T0, service="svc"):
    labels = {"service_name": service, "__name__": "process_cpu"}
    if op:
        labels["op"] = op
    return Batch(DEFAULT_PROFILE_TYPE, labels, t, stacks)


def test_aggregates_filters_and_survives_restart(tmp_path):
    store = Store(tmp_path, retention_s=10 * 365 * 86400)
    store.ingest([batch("load", {("m", "load_fn"): 5}), batch("save", {("m", "save_fn"): 3})])
    store.ingest([batch("load", {("m", "load_fn"): 7}, t=T0 + 1)])
    store.ingest([batch(None, {("m", "idle"): 2}, t=T0 + 25)])
    store.close()

    store = Store(tmp_path, retention_s=10 * 365 * 86400)
    all_stacks, timeline = store.select(parse_selector('{service_name="svc"}'), T0 - 60, T0 + 60)
    assert all_stacks == {("m", "load_fn"): 12, ("m", "save_fn"): 3, ("m", "idle"): 2}
    assert timeline == {1_800_000_000: 15, 1_800_000_020: 2}
    load, _ = store.select(parse_selector('{service_name="svc",op="load"}'), T0 - 60, T0 + 60)
    assert load == {("m", "load_fn"): 12}
    tagged, _ = store.select(parse_selector('{op=~".+"}'), T0 - 60, T0 + 60)
    assert set(tagged) == {("m", "load_fn"), ("m", "save_fn")}
    untagged, _ = store.select(parse_selector('{op!~"load|save"}'), T0 - 60, T0 + 60)
    assert untagged == {("m", "idle"): 2}
    assert store.select(parse_selector('{service_name="svc"}'), T0 + 100, T0 + 200)[0] == {}
    assert store.label_values("op", None, T0 - 60, T0 + 60) == ["load", "save"]
    assert "op" in store.label_names(parse_selector('{service_name="svc"}'), T0 - 60, T0 + 60)
    wrong_type = parse_selector('memory:alloc_space:bytes::{service_name="svc"}')
    assert store.select(wrong_type, T0 - 60, T0 + 60)[0] == {}
    store.close()


def test_retention_drops_old_buckets_streams_and_stacks(tmp_path):
    store = Store(tmp_path, retention_s=3600)
    store.ingest([batch("load", {("m", "old_fn"): 5}, t=T0)])
    store.ingest([batch("save", {("m", "new_fn"): 4}, t=T0 + 7200)])
    removed = store.prune(now=T0 + 7200 + 10)
    assert removed == 1
    stacks, _ = store.select(parse_selector("{}"), T0 - 10, T0 + 8000)
    assert stacks == {("m", "new_fn"): 4}
    assert store.label_values("op", None, T0 - 10, T0 + 8000) == ["save"]
    (n_stacks,) = store._db.execute("SELECT COUNT(*) FROM stacks").fetchone()
    assert n_stacks == 1
    store.close()
