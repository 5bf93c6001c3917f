import pytest

from profiling import flamebearer


def check_invariants(fb):
    nodes = flamebearer.decode(fb)
    assert nodes[0].name == "total" and nodes[0].total == fb["numTicks"]
    assert fb["maxSelf"] == max(n.self for n in nodes)
    children_total = {}
    for n in nodes:
        if n.parent >= 0:
            p = nodes[n.parent]
            assert p.x <= n.x and n.x + n.total <= p.x + p.total
            children_total[n.parent] = children_total.get(n.parent, 0) + n.total
    for i, n in enumerate(nodes):
        assert n.total == n.self + children_total.get(i, 0), n
    for level in fb["levels"]:
        assert len(level) % 4 == 0
    return nodes


STACKS = {
    ("main", "load", "read"): 50,
    ("main", "load"): 10,
    ("main", "save", "write"): 30,
    ("main", "rec", "rec", "rec"): 8,
    ("other_root",): 2,
}


def test_build_is_consistent_and_delta_encoded():
    fb = flamebearer.build(STACKS)
    assert fb["numTicks"] == 100
    assert fb["levels"][0] == [0, 100, 0, 0]
    nodes = check_invariants(fb)
    level1 = [(n.name, n.x, n.total) for n in nodes if n.depth == 1]
    assert level1 == [("main", 0, 98), ("other_root", 98, 2)]
    # Delta encoding: offsets are gaps from the previous sibling's end, so both are 0 here.
    assert fb["levels"][1][0::4] == [0, 0]
    level3 = [(n.name, n.x) for n in nodes if n.depth == 3]
    # main's children sorted by name: load(60) rec(8) save(30); "write" starts at 68 -> gap of 58 after "read"
    assert level3 == [("read", 0), ("rec", 60), ("write", 68)]
    assert fb["levels"][3][0::4] == [0, 10, 0]
    assert fb["maxSelf"] == 50


def test_truncation_folds_small_nodes_into_other():
    stacks = {("main", f"f{i}"): i + 1 for i in range(50)}
    fb = flamebearer.build(stacks, max_nodes=10)
    nodes = check_invariants(fb)
    assert len(nodes) <= 12
    assert "other" in fb["names"]
    assert fb["numTicks"] == sum(stacks.values())


def test_empty_profile():
    fb = flamebearer.build({})
    assert fb["numTicks"] == 0 and fb["levels"] == [[0, 0, 0, 0]]
    assert flamebearer.top_functions(fb) == []


def test_top_functions_counts_recursion_once():
    fb = flamebearer.build(STACKS)
    top = {s.name: s for s in flamebearer.top_functions(fb)}
    assert top["read"].self == 50 and top["read"].self_share == pytest.approx(0.5)
    assert top["load"].total == 60 and top["load"].self == 10
    assert top["rec"].total == 8 and top["rec"].self == 8
    assert top["main"].total == 98 and top["main"].self == 0
    assert "total" not in top
    assert next(iter(top)) == "read"


def test_decode_rejects_broken_levels():
    with pytest.raises(ValueError):
        flamebearer.decode({"names": ["total"], "levels": [[0, 1, 0]]})
    with pytest.raises(ValueError):
        flamebearer.decode({"names": ["total", "a"], "levels": [[0, 1, 0, 0], [5, 1, 1, 1]]})
