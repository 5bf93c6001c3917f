"""Flamebearer: Pyroscope's flamegraph encoding, built from stacks and read back for analysis.

A flamebearer is ``names`` plus ``levels``: level *d* is a flat list of ``[offset, total, self, name]``
quadruplets for the nodes at depth *d*, left to right, where ``offset`` is the gap (in ticks) from the
end of the previous node on that level (delta encoding, as Grafana Pyroscope emits) and ``name``
indexes ``names``. Level 0 is the single root ``total`` node whose total is ``numTicks``. Invariants:
every node's total equals its self plus its children's totals, children lie inside their parent's
span, and ``maxSelf`` is the largest self. :func:`decode` and :func:`top_functions` accept any
flamebearer with these invariants, ours or a real Pyroscope server's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Stack = tuple[str, ...]
OTHER = "other"


class _Node:
    __slots__ = ("children", "name", "self", "total")

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.self = 0
        self.children: dict[str, _Node] = {}


def _tree(stacks: dict[Stack, int]) -> _Node:
    root = _Node("total")
    for stack, value in stacks.items():
        if value <= 0:
            continue
        node = root
        node.total += value
        for frame in stack:
            child = node.children.get(frame)
            if child is None:
                child = node.children[frame] = _Node(frame)
            child.total += value
            node = child
        node.self += value
    return root


def _truncate(root: _Node, max_nodes: int) -> None:
    """Fold subtrees smaller than the ``max_nodes``-th largest node into one ``other`` child."""
    totals: list[int] = []
    todo = [root]
    while todo:
        n = todo.pop()
        totals.append(n.total)
        todo.extend(n.children.values())
    if len(totals) <= max_nodes:
        return
    totals.sort(reverse=True)
    threshold = totals[max_nodes - 1]
    todo = [root]
    while todo:
        n = todo.pop()
        small = [c for c in n.children.values() if c.total < threshold]
        if small:
            for c in small:
                del n.children[c.name]
            other = n.children.get(OTHER) or _Node(OTHER)
            gained = sum(c.total for c in small)
            other.total += gained
            other.self += gained
            n.children[OTHER] = other
        todo.extend(c for c in n.children.values() if c.name != OTHER)


def build(stacks: dict[Stack, int], max_nodes: int = 0) -> dict[str, Any]:
    """The flamebearer dict (``names``, ``levels``, ``numTicks``, ``maxSelf``) for root-first stacks."""
    root = _tree(stacks)
    if max_nodes > 0:
        _truncate(root, max_nodes)
    names: list[str] = []
    index: dict[str, int] = {}

    def name_index(name: str) -> int:
        i = index.get(name)
        if i is None:
            i = index[name] = len(names)
            names.append(name)
        return i

    levels: list[list[int]] = []
    max_self = 0
    current: list[tuple[int, _Node]] = [(0, root)]
    while current:
        level: list[int] = []
        prev_end = 0
        following: list[tuple[int, _Node]] = []
        for x, node in current:
            level.extend((x - prev_end, node.total, node.self, name_index(node.name)))
            prev_end = x + node.total
            max_self = max(max_self, node.self)
            cx = x
            for child in sorted(node.children.values(), key=lambda c: c.name):
                following.append((cx, child))
                cx += child.total
        levels.append(level)
        current = following
    if root.total == 0:
        levels = [[0, 0, 0, 0]]
    return {"names": names, "levels": levels, "numTicks": root.total, "maxSelf": max_self}


@dataclass(frozen=True)
class Node:
    """One decoded flamegraph node: absolute ``x`` in ticks, its depth, and parent index (-1: root)."""

    depth: int
    x: int
    total: int
    self: int
    name: str
    parent: int


def decode(fb: dict[str, Any]) -> list[Node]:
    """Absolute-position nodes of a flamebearer, parents before children."""
    names = fb["names"]
    nodes: list[Node] = []
    prev_level: list[int] = []
    for depth, level in enumerate(fb["levels"]):
        if len(level) % 4:
            raise ValueError(f"flamebearer level {depth} has {len(level)} values, not quadruplets")
        this_level: list[int] = []
        x = 0
        p = 0
        for i in range(0, len(level), 4):
            offset, total, self_, ni = (int(v) for v in level[i : i + 4])
            x += offset
            parent = -1
            while p < len(prev_level):
                cand = nodes[prev_level[p]]
                if cand.x <= x < cand.x + max(cand.total, 1):
                    parent = prev_level[p]
                    break
                p += 1
            if depth > 0 and parent < 0:
                raise ValueError(f"flamebearer node at level {depth}, x={x} lies outside every parent")
            nodes.append(Node(depth, x, total, self_, names[ni], parent))
            this_level.append(len(nodes) - 1)
            x += total
        prev_level = this_level
    return nodes


@dataclass(frozen=True)
class FunctionStat:
    """A function's self and total ticks over the whole flamegraph (recursion counted once)."""

    name: str
    self: int
    total: int
    self_share: float
    total_share: float


def top_functions(fb: dict[str, Any], limit: int = 50) -> list[FunctionStat]:
    """Functions by self time, then total; the root node is excluded."""
    nodes = decode(fb)
    num_ticks = int(fb.get("numTicks") or (nodes[0].total if nodes else 0))
    self_by: dict[str, int] = {}
    total_by: dict[str, int] = {}
    for n in nodes:
        if n.parent < 0:
            continue
        self_by[n.name] = self_by.get(n.name, 0) + n.self
        ancestor = n.parent
        recursive = False
        while ancestor >= 0:
            if nodes[ancestor].name == n.name and nodes[ancestor].parent >= 0:
                recursive = True
                break
            ancestor = nodes[ancestor].parent
        if not recursive:
            total_by[n.name] = total_by.get(n.name, 0) + n.total
    denom = num_ticks or 1
    stats = [
        FunctionStat(name, sv, total_by.get(name, 0), sv / denom, total_by.get(name, 0) / denom)
        for name, sv in self_by.items()
    ]
    stats.sort(key=lambda s: (-s.self, -s.total, s.name))
    return stats[:limit]
