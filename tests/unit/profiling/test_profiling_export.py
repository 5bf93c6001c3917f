import csv
import json
import re
import xml.etree.ElementTree as ET

import pytest

from kvbench.commands.profile import _parse_tags
from kvbench.errors import UserError
from profiling import flamebearer
from profiling.export import View, write_html, write_svg, write_top_csv

STACKS = {("main", "kv_load", "read_block"): 6, ("main", "</script><b>x", "evil"): 1, ("main", "fwd"): 3}


def data():
    return {"flamebearer": flamebearer.build(STACKS), "metadata": {"units": "samples", "sampleRate": 100}}


def test_html_is_self_contained_and_embeds_data_safely(tmp_path):
    path = write_html([View("all", data()), View("op=load", data())], tmp_path / "f.html", title="t")
    page = path.read_text()
    assert "KvFlame" in page and ".kvf-node" in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page), "must not load anything"
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)
    assert "fetch(" not in page
    # The hostile function name must not close the data <script> early.
    assert page.count("</script>") == 3
    raw = re.search(r'<script type="application/json" id="kv-data">(.*?)</script>', page, re.S).group(1)
    views = json.loads(raw)
    assert [v["label"] for v in views] == ["all", "op=load"]
    assert "</script><b>x" in views[0]["data"]["flamebearer"]["names"]


def test_svg_and_csv(tmp_path):
    svg = write_svg(data(), tmp_path / "f.svg", title="q <x>")
    root = ET.parse(svg).getroot()
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith("read_block (60.00%") for t in titles)
    stats = flamebearer.top_functions(data()["flamebearer"])
    rows = list(csv.DictReader(write_top_csv(stats, tmp_path / "t.csv").open()))
    assert rows[0]["function"] == "read_block" and rows[0]["self"] == "6"
    assert float(rows[0]["self_share"]) == pytest.approx(0.6)


def test_query_tags_parsing():
    assert _parse_tags(["op=load", "tier=l2,pod=a"]) == {"op": "load", "tier": "l2", "pod": "a"}
    with pytest.raises(UserError):
        _parse_tags(["op"])
