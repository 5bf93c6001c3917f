/*
 * kvbench flamegraph viewer: renders a Pyroscope "flamebearer" (names + delta-encoded levels of
 * [offset, total, self, nameIndex] quadruplets) as DOM boxes, with click-to-zoom, hover details,
 * search highlighting and a top-functions table. No dependencies; the same file serves the live
 * collector page and the self-contained HTML reports (where it is inlined).
 */
(function (global) {
  "use strict";

  var ROW = 20;
  var MIN_PX = 0.35;

  function decode(fb) {
    var nodes = [];
    var prev = [];
    for (var d = 0; d < fb.levels.length; d++) {
      var level = fb.levels[d];
      var cur = [];
      var x = 0;
      var p = 0;
      for (var i = 0; i + 3 < level.length; i += 4) {
        x += Number(level[i]);
        var total = Number(level[i + 1]);
        var parent = -1;
        while (p < prev.length) {
          var c = nodes[prev[p]];
          if (c.x <= x && x < c.x + Math.max(c.total, 1)) { parent = prev[p]; break; }
          p++;
        }
        nodes.push({
          id: nodes.length, depth: d, x: x, total: total, self: Number(level[i + 2]),
          name: fb.names[Number(level[i + 3])], parent: parent
        });
        cur.push(nodes.length - 1);
        x += total;
      }
      prev = cur;
    }
    return nodes;
  }

  function topFunctions(nodes) {
    var byName = {};
    for (var i = 0; i < nodes.length; i++) {
      var n = nodes[i];
      if (n.parent < 0) continue;
      var s = byName[n.name] || (byName[n.name] = { name: n.name, self: 0, total: 0 });
      s.self += n.self;
      var a = n.parent, rec = false;
      while (a >= 0) {
        if (nodes[a].name === n.name && nodes[a].parent >= 0) { rec = true; break; }
        a = nodes[a].parent;
      }
      if (!rec) s.total += n.total;
    }
    return Object.keys(byName).map(function (k) { return byName[k]; });
  }

  function formatter(meta) {
    meta = meta || {};
    var units = meta.units || "samples";
    var rate = Number(meta.sampleRate) || 100;
    if (units === "samples") {
      return function (v) {
        var s = v / rate;
        if (s >= 60) return (s / 60).toFixed(2) + " min";
        if (s >= 1) return s.toFixed(2) + " s";
        if (s >= 0.001) return (s * 1000).toFixed(1) + " ms";
        return (s * 1e6).toFixed(0) + " \u00b5s";
      };
    }
    if (units === "bytes") {
      return function (v) {
        var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
        while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
        return v.toFixed(i ? 1 : 0) + " " + u[i];
      };
    }
    return function (v) { return String(Math.round(v)); };
  }

  function pct(v, total) {
    if (!total) return "0%";
    var p = 100 * v / total;
    return (p >= 10 ? p.toFixed(1) : p.toFixed(2)) + "%";
  }

  function hue(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return h;
  }

  function color(name, depth) {
    if (depth === 0) return "hsl(220, 10%, 62%)";
    var h = hue(name);
    return "hsl(" + (10 + (h % 40)) + ", " + (65 + (h >> 8) % 20) + "%, " + (58 + (h >> 16) % 14) + "%)";
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /* An interactive flamegraph in `container` for one render response. */
  function Flamegraph(container, fb, meta, opts) {
    this.container = container;
    this.fb = fb;
    this.nodes = decode(fb);
    this.fmt = formatter(meta);
    this.opts = opts || {};
    this.zoom = 0;
    this.search = "";
    this.maxDepth = 0;
    for (var i = 0; i < this.nodes.length; i++) this.maxDepth = Math.max(this.maxDepth, this.nodes[i].depth);
    container.classList.add("kvf-graph");
    this.tip = el("div", "kvf-tip");
    this.tip.style.display = "none";
    document.body.appendChild(this.tip);
    var self = this;
    this._onResize = function () { self.draw(); };
    global.addEventListener("resize", this._onResize);
    this.draw();
  }

  Flamegraph.prototype.destroy = function () {
    global.removeEventListener("resize", this._onResize);
    if (this.tip.parentNode) this.tip.parentNode.removeChild(this.tip);
    this.container.textContent = "";
  };

  Flamegraph.prototype.setSearch = function (text) {
    this.search = (text || "").toLowerCase();
    this.draw();
  };

  Flamegraph.prototype.resetZoom = function () { this.zoom = 0; this.draw(); };

  Flamegraph.prototype.draw = function () {
    var nodes = this.nodes, c = this.container;
    c.textContent = "";
    if (!nodes.length || !nodes[0].total) {
      c.appendChild(el("div", "kvf-empty", "No samples in this range."));
      c.style.height = "";
      return;
    }
    var width = c.clientWidth || 1000;
    var z = nodes[this.zoom];
    var onPath = {};
    for (var a = this.zoom; a >= 0; a = nodes[a].parent) onPath[a] = true;
    var total = nodes[0].total;
    var scale = width / z.total;
    var frag = document.createDocumentFragment();
    var self = this;
    var drawn = 0;
    for (var i = 0; i < nodes.length; i++) {
      var n = nodes[i];
      var left, w, dim = false;
      if (n.depth <= z.depth) {
        if (!onPath[i]) continue;
        left = 0; w = width; dim = n.depth < z.depth;
      } else {
        if (n.x < z.x || n.x >= z.x + z.total) continue;
        left = (n.x - z.x) * scale;
        w = n.total * scale;
      }
      if (w < MIN_PX) continue;
      var box = el("div", "kvf-node");
      box.style.left = left + "px";
      box.style.width = Math.max(w - 0.5, 0.5) + "px";
      box.style.top = (n.depth * ROW) + "px";
      var matched = this.search && n.name.toLowerCase().indexOf(this.search) >= 0;
      box.style.background = matched ? "hsl(285, 70%, 62%)" : color(n.name, n.depth);
      if (dim) box.classList.add("kvf-dim");
      if (this.search && !matched) box.classList.add("kvf-faded");
      box.dataset.id = String(i);
      if (w > 22) {
        var label = n.depth === 0 ? "total (" + this.fmt(total) + ")" : n.name;
        box.appendChild(el("span", "kvf-label", label));
      }
      frag.appendChild(box);
      drawn++;
    }
    c.style.height = ((this.maxDepth + 1) * ROW) + "px";
    c.appendChild(frag);
    c.dataset.nodes = String(drawn);
    c.onclick = function (ev) {
      var t = ev.target.closest ? ev.target.closest(".kvf-node") : null;
      if (!t) return;
      self.zoom = Number(t.dataset.id);
      self.draw();
      if (self.opts.onZoom) self.opts.onZoom(nodes[self.zoom]);
    };
    c.onmousemove = function (ev) { self._hover(ev); };
    c.onmouseleave = function () { self.tip.style.display = "none"; };
  };

  Flamegraph.prototype._hover = function (ev) {
    var t = ev.target.closest ? ev.target.closest(".kvf-node") : null;
    if (!t) { this.tip.style.display = "none"; return; }
    var n = this.nodes[Number(t.dataset.id)];
    var total = this.nodes[0].total;
    this.tip.textContent = "";
    this.tip.appendChild(el("div", "kvf-tip-name", n.name));
    var rows = [["Total", this.fmt(n.total) + "  (" + pct(n.total, total) + ")"],
                ["Self", this.fmt(n.self) + "  (" + pct(n.self, total) + ")"]];
    for (var i = 0; i < rows.length; i++) {
      var r = el("div", "kvf-tip-row");
      r.appendChild(el("b", null, rows[i][0] + ": "));
      r.appendChild(document.createTextNode(rows[i][1]));
      this.tip.appendChild(r);
    }
    this.tip.style.display = "block";
    var x = ev.clientX + 14, y = ev.clientY + 14;
    var tw = this.tip.offsetWidth, th = this.tip.offsetHeight;
    if (x + tw > global.innerWidth - 8) x = Math.max(8, ev.clientX - tw - 14);
    if (y + th > global.innerHeight - 8) y = Math.max(8, ev.clientY - th - 14);
    this.tip.style.left = x + "px";
    this.tip.style.top = y + "px";
  };

  /* A sortable top-functions table; clicking a row highlights that function in `graph`. */
  function TopTable(container, nodes, fmt, graph, limit) {
    this.container = container;
    this.rows = topFunctions(nodes);
    this.total = nodes.length ? nodes[0].total : 0;
    this.fmt = fmt;
    this.graph = graph;
    this.limit = limit || 100;
    this.sortKey = "self";
    this.draw();
  }

  TopTable.prototype.draw = function () {
    var key = this.sortKey, self = this;
    this.rows.sort(function (a, b) {
      return key === "name" ? a.name.localeCompare(b.name) : (b[key] - a[key]) || (b.total - a.total);
    });
    var table = el("table", "kvf-table");
    var head = el("tr");
    [["name", "Function"], ["self", "Self"], ["self", "Self %"], ["total", "Total"], ["total", "Total %"]]
      .forEach(function (h) {
        var th = el("th", h[0] === key ? "kvf-sorted" : "", h[1]);
        th.onclick = function () { self.sortKey = h[0]; self.draw(); };
        head.appendChild(th);
      });
    var thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var body = el("tbody");
    this.rows.slice(0, this.limit).forEach(function (r) {
      var tr = el("tr");
      var name = el("td", "kvf-fn");
      var sw = el("span", "kvf-swatch");
      sw.style.background = color(r.name, 1);
      name.appendChild(sw);
      name.appendChild(document.createTextNode(r.name));
      tr.appendChild(name);
      tr.appendChild(el("td", "kvf-num", r.self ? self.fmt(r.self) : "\u2013"));
      var bar = el("td", "kvf-num kvf-barcell");
      var fill = el("span", "kvf-bar");
      fill.style.width = (self.total ? 100 * r.self / self.total : 0) + "%";
      bar.appendChild(fill);
      bar.appendChild(el("span", "kvf-bartext", r.self ? pct(r.self, self.total) : "\u2013"));
      tr.appendChild(bar);
      tr.appendChild(el("td", "kvf-num", self.fmt(r.total)));
      tr.appendChild(el("td", "kvf-num", pct(r.total, self.total)));
      tr.onclick = function () { if (self.graph) self.graph.setSearch(r.name); if (self.onPick) self.onPick(r.name); };
      body.appendChild(tr);
    });
    table.appendChild(body);
    this.container.textContent = "";
    this.container.appendChild(table);
  };

  function timelineSvg(container, timeline, fmt) {
    container.textContent = "";
    if (!timeline || !timeline.samples || !timeline.samples.length) return;
    var s = timeline.samples, max = 0;
    for (var i = 0; i < s.length; i++) max = Math.max(max, s[i]);
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + s.length + " 40");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("class", "kvf-timeline");
    for (var j = 0; j < s.length; j++) {
      if (!s[j]) continue;
      var h = max ? 38 * s[j] / max : 0;
      var r = document.createElementNS(ns, "rect");
      r.setAttribute("x", j);
      r.setAttribute("y", 40 - h);
      r.setAttribute("width", 0.9);
      r.setAttribute("height", h);
      var t = document.createElementNS(ns, "title");
      var when = new Date((timeline.startTime + j * timeline.durationDelta) * 1000);
      t.textContent = when.toLocaleTimeString() + ": " + fmt(s[j]);
      r.appendChild(t);
      svg.appendChild(r);
    }
    container.appendChild(svg);
  }

  /*
   * Render a whole render response into `root`: summary, search, timeline, flamegraph and table.
   * Returns {graph, table} so a page can re-mount on new data.
   */
  function mount(root, data, opts) {
    opts = opts || {};
    root.textContent = "";
    var fb = data.flamebearer, meta = data.metadata || {};
    var fmt = formatter(meta);
    var bar = el("div", "kvf-toolbar");
    var summary = el("div", "kvf-summary");
    summary.appendChild(el("b", null, "Total: "));
    summary.appendChild(document.createTextNode(fmt(fb.numTicks) + (opts.subtitle ? "  \u00b7  " + opts.subtitle : "")));
    bar.appendChild(summary);
    var search = el("input", "kvf-search");
    search.type = "search";
    search.placeholder = "Highlight function\u2026";
    bar.appendChild(search);
    var reset = el("button", "kvf-btn", "Reset zoom");
    bar.appendChild(reset);
    root.appendChild(bar);
    var tl = el("div", "kvf-timeline-wrap");
    root.appendChild(tl);
    timelineSvg(tl, data.timeline, fmt);
    var graphEl = el("div");
    root.appendChild(graphEl);
    var graph = new Flamegraph(graphEl, fb, meta, opts);
    root.appendChild(el("h3", "kvf-h", "Top functions"));
    var tableEl = el("div", "kvf-table-wrap");
    root.appendChild(tableEl);
    var table = new TopTable(tableEl, graph.nodes, fmt, graph, opts.limit);
    table.onPick = function (name) { search.value = name; };
    search.oninput = function () { graph.setSearch(search.value); };
    reset.onclick = function () { graph.resetZoom(); };
    return { graph: graph, table: table };
  }

  global.KvFlame = { decode: decode, topFunctions: topFunctions, formatter: formatter, Flamegraph: Flamegraph,
                     TopTable: TopTable, mount: mount };
})(window);
