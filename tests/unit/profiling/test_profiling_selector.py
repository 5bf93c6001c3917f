import pytest

from profiling.selector import DEFAULT_PROFILE_TYPE, SelectorError, parse_selector
from profiling.timerange import TimeRangeError, parse_range, parse_time


def test_full_query_with_all_operators():
    sel = parse_selector(
        DEFAULT_PROFILE_TYPE + '{service_name="vllm-engine", op!="save",tier=~"l[12]", pod!~"x-.*"}'
    )
    assert sel.profile_type == DEFAULT_PROFILE_TYPE
    assert [(m.name, m.op, m.value) for m in sel.matchers] == [
        ("service_name", "=", "vllm-engine"),
        ("op", "!=", "save"),
        ("tier", "=~", "l[12]"),
        ("pod", "!~", "x-.*"),
    ]
    assert sel.matches({"service_name": "vllm-engine", "op": "load", "tier": "l1", "pod": "y"})
    assert not sel.matches({"service_name": "vllm-engine", "op": "save", "tier": "l1"})
    assert not sel.matches({"service_name": "vllm-engine", "op": "load", "tier": "l3"})
    assert not sel.matches({"service_name": "vllm-engine", "op": "load", "tier": "l1", "pod": "x-1"})


def test_missing_label_is_empty_string_like_prometheus():
    assert parse_selector('{op!="load"}').matches({"service_name": "a"})
    assert not parse_selector('{op=~".+"}').matches({"service_name": "a"})
    assert parse_selector('{op=~".+"}').matches({"op": "save"})
    # Regexes are anchored: "loa" must not match "load".
    assert not parse_selector('{op=~"loa"}').matches({"op": "load"})


def test_quoting_and_escapes():
    sel = parse_selector(r'{a="x\"y", b=`c\d`, c=""}')
    assert [m.value for m in sel.matchers] == ['x"y', r"c\d", ""]
    assert parse_selector(str(sel)).matchers == sel.matchers


def test_legacy_app_names_and_bare_forms():
    sel = parse_selector('myapp.cpu{env="prod"}')
    assert sel.profile_type == DEFAULT_PROFILE_TYPE
    assert sel.label_value("service_name") == "myapp" and sel.label_value("env") == "prod"
    assert parse_selector("{}").matchers == ()
    assert parse_selector("plainapp").label_value("service_name") == "plainapp"


@pytest.mark.parametrize(
    "bad",
    ['{op="load"', "{op load}", '{op="load" tier="l1"}', "{op=load}", '{op=~"("}', "a:b{}", '{1x="a"}'],
)
def test_malformed_selectors_raise(bad):
    with pytest.raises(SelectorError):
        parse_selector(bad)


def test_time_forms():
    now = 1_800_000_000.0
    assert parse_time("now", now) == now
    assert parse_time("now-1h", now) == now - 3600
    assert parse_time("now-30m", now) == now - 1800
    assert parse_time("now-2d", now) == now - 2 * 86400
    assert parse_time("now-15", now) == now - 15
    assert parse_time("1700000000") == 1_700_000_000
    assert parse_time("1700000000123") == pytest.approx(1_700_000_000.123)
    assert parse_time(1_700_000_000_123_456_789) == pytest.approx(1_700_000_000.123456789)


@pytest.mark.parametrize("bad", ["yesterday", "now+1h", "", "-5", "now-1x"])
def test_bad_times_raise(bad):
    with pytest.raises(TimeRangeError):
        parse_time(bad)


def test_range_defaults_and_order():
    frm, until = parse_range(None, "1700003600")
    assert (frm, until) == (1_700_000_000, 1_700_003_600)
    with pytest.raises(TimeRangeError):
        parse_range("1700003600", "1700000000")
