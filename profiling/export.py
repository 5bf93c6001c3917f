"""Write render responses to files a person opens without a server: HTML, SVG, JSON and CSV.

The HTML is self-contained: the viewer's CSS and JS are inlined and the data is embedded, so it
opens from disk with no network. It can hold several *views* (e.g. all CPU, then one per ``op``
value) switchable from a drop-down.
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiling import flamebearer
from profiling.flamebearer import FunctionStat

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class View:
    """One flamegraph in a report: a label for the picker and the render response it shows."""

    label: str
    data: dict[str, Any]
    subtitle: str = ""


def _script_json(value: Any) -> str:
    """JSON safe to embed in a <script> element (no '</script>' or '<!--' can appear)."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
{css}
</style>
</head>
<body>
<header class="kv-top"><h1>{title}</h1><span class="kv-sub">{subtitle}</span></header>
<main>
  <div class="kv-controls" id="controls"{picker_hidden}><label>View <select id="view-picker"></select></label></div>
  {summary}
  <div class="kv-card" id="view"></div>
</main>
<script>
{js}
</script>
<script type="application/json" id="kv-data">{data}</script>
<script>
(function () {{
  var views = JSON.parse(document.getElementById("kv-data").textContent);
  var picker = document.getElementById("view-picker");
  views.forEach(function (v, i) {{ picker.appendChild(new Option(v.label, String(i))); }});
  function show() {{
    var v = views[Number(picker.value || 0)];
    KvFlame.mount(document.getElementById("view"), v.data, {{ subtitle: v.subtitle }});
  }}
  picker.onchange = show;
  show();
}})();
</script>
</body>
</html>
"""


def write_html(
    views: list[View], path: Path, title: str = "kvbench profile", subtitle: str = "", summary_html: str = ""
) -> Path:
    """A self-contained flamegraph page with one or more views."""
    if not views:
        raise ValueError("write_html needs at least one view")
    page = _HTML.format(
        title=html.escape(title),
        subtitle=html.escape(subtitle),
        css=(STATIC_DIR / "style.css").read_text(),
        js=(STATIC_DIR / "flamegraph.js").read_text().replace("</script", "<\\/script"),
        data=_script_json([{"label": v.label, "data": v.data, "subtitle": v.subtitle} for v in views]),
        picker_hidden="" if len(views) > 1 else " hidden",
        summary=summary_html,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def write_json(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def write_top_csv(stats: list[FunctionStat], path: Path) -> Path:
    """Columns: function, self, self_share, total, total_share (ticks in the profile's unit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["function", "self", "self_share", "total", "total_share"])
        for s in stats:
            w.writerow([s.name, s.self, f"{s.self_share:.6f}", s.total, f"{s.total_share:.6f}"])
    return path


def _color(name: str) -> str:
    h = 0
    for ch in name:
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    return f"hsl({10 + h % 40}, {65 + (h >> 8) % 20}%, {58 + (h >> 16) % 14}%)"


def write_svg(data: dict[str, Any], path: Path, title: str = "", width: int = 1200) -> Path:
    """A static icicle SVG (root on top), each box with a <title> tooltip of its share."""
    fb = data["flamebearer"]
    nodes = flamebearer.decode(fb)
    total = nodes[0].total if nodes else 0
    row, top = 18, 28
    depth = max((n.depth for n in nodes), default=0) + 1
    height = top + depth * row + 6
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        f'<text x="6" y="18" font-size="14" font-family="sans-serif">{html.escape(title)}</text>',
    ]
    scale = width / total if total else 0.0
    for n in nodes:
        w = n.total * scale
        if w < 0.3:
            continue
        x, y = n.x * scale, top + n.depth * row
        share = 100.0 * n.total / total if total else 0.0
        fill = "#9aa1ab" if n.depth == 0 else _color(n.name)
        label = html.escape(n.name)
        out.append(
            f"<g><title>{label} ({share:.2f}%, self {100.0 * n.self / total if total else 0:.2f}%)</title>"
            f'<rect x="{x:.2f}" y="{y}" width="{max(w - 0.5, 0.3):.2f}" height="{row - 1}" fill="{fill}" rx="2"/>'
        )
        chars = int((w - 6) / 6.6)
        if chars >= 3:
            text = n.name if len(n.name) <= chars else n.name[: chars - 1] + "\u2026"
            out.append(f'<text x="{x + 3:.2f}" y="{y + 12}">{html.escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))
    return path
