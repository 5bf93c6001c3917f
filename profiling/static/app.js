/*
 * The collector's page: picks service, profile type, range and a tag filter, then fetches
 * /pyroscope/render (the same API a real Pyroscope server offers) and mounts the flamegraph.
 * URL parameters (service, type, from, until, tagKey, tagValue) preselect controls so a view can be
 * linked to.
 */
(function () {
  "use strict";
  var DEFAULT_TYPE = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
  var HIDDEN_LABELS = { "__name__": 1, "service_name": 1 };
  var params = new URLSearchParams(location.search);
  var $ = function (id) { return document.getElementById(id); };
  var services = [];

  function status(text, err) {
    var s = $("status");
    s.textContent = text || "";
    s.className = "kv-status" + (err ? " kv-err" : "");
  }

  function getJSON(url) {
    return fetch(url).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body.error || body.message || ("HTTP " + r.status));
        return body;
      });
    });
  }

  function fill(select, values, chosen, blank) {
    select.textContent = "";
    if (blank) select.appendChild(new Option(blank, ""));
    values.forEach(function (v) { select.appendChild(new Option(v, v)); });
    if (chosen !== null && chosen !== undefined && values.indexOf(chosen) >= 0) select.value = chosen;
  }

  function quote(v) { return '"' + v.replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"'; }

  function range() {
    return { from: params.get("from") || $("range").value, until: params.get("until") || "now" };
  }

  function selector(extra) {
    var m = ["service_name=" + quote($("service").value)];
    var k = $("tagKey").value, v = $("tagValue").value;
    if (k && v) m.push(k + "=" + quote(v));
    if (extra) m.push(extra);
    return ($("ptype").value || DEFAULT_TYPE) + "{" + m.join(",") + "}";
  }

  function qs(obj) {
    return Object.keys(obj).map(function (k) { return k + "=" + encodeURIComponent(obj[k]); }).join("&");
  }

  function loadServices() {
    return getJSON("/api/services?from=now-7d").then(function (list) {
      services = list;
      fill($("service"), list.map(function (s) { return s.name; }), params.get("service"));
      return onService();
    });
  }

  function onService() {
    var svc = services.filter(function (s) { return s.name === $("service").value; })[0];
    var types = svc ? svc.profileTypes : [DEFAULT_TYPE];
    fill($("ptype"), types, params.get("type") || DEFAULT_TYPE);
    var r = range();
    var q = "{service_name=" + quote($("service").value) + "}";
    return getJSON("/pyroscope/labels?" + qs({ query: q, from: r.from, until: r.until })).then(function (names) {
      var keys = names.filter(function (n) { return !HIDDEN_LABELS[n]; });
      var want = params.get("tagKey") || (keys.indexOf("op") >= 0 ? "op" : "");
      fill($("tagKey"), keys, want, "(none)");
      return onTagKey();
    });
  }

  function onTagKey() {
    var k = $("tagKey").value;
    if (!k) { fill($("tagValue"), [], null, "(any)"); return Promise.resolve(); }
    var r = range();
    var q = "{service_name=" + quote($("service").value) + "}";
    return getJSON("/pyroscope/label-values?" + qs({ label: k, query: q, from: r.from, until: r.until }))
      .then(function (values) { fill($("tagValue"), values, params.get("tagValue"), "(any)"); });
  }

  function shares(r) {
    var box = $("shares");
    box.textContent = "";
    var k = $("tagKey").value;
    if (!k) return;
    var base = { from: r.from, until: r.until, format: "json", "max-nodes": 1 };
    var all = getJSON("/pyroscope/render?" + qs(Object.assign({ query: ($("ptype").value || DEFAULT_TYPE) +
      "{service_name=" + quote($("service").value) + "}" }, base)));
    var values = Array.prototype.slice.call($("tagValue").options).map(function (o) { return o.value; })
      .filter(Boolean);
    Promise.all([all].concat(values.map(function (v) {
      var q = ($("ptype").value || DEFAULT_TYPE) + "{service_name=" + quote($("service").value) + "," + k + "=" + quote(v) + "}";
      return getJSON("/pyroscope/render?" + qs(Object.assign({ query: q }, base)));
    }))).then(function (res) {
      var total = res[0].flamebearer.numTicks || 0;
      values.forEach(function (v, i) {
        var d = document.createElement("div");
        d.className = "kv-share";
        var share = total ? 100 * res[i + 1].flamebearer.numTicks / total : 0;
        d.appendChild(document.createTextNode(k + "=" + v + ": "));
        var b = document.createElement("b");
        b.textContent = share.toFixed(1) + "%";
        d.appendChild(b);
        d.appendChild(document.createTextNode(" of CPU"));
        box.appendChild(d);
      });
    }).catch(function (e) { console.warn("shares: " + e.message); });
  }

  function show() {
    if (!$("service").value) {
      $("view").innerHTML = "";
      var empty = document.createElement("div");
      empty.className = "kvf-empty";
      empty.textContent = "No profiles yet. Point an agent at this server (pyroscope.configure(server_address=\"" +
        location.origin + "\")) and refresh.";
      $("view").appendChild(empty);
      status("");
      return;
    }
    var r = range();
    var q = selector();
    status("Loading\u2026");
    getJSON("/pyroscope/render?" + qs({ query: q, from: r.from, until: r.until, format: "json" }))
      .then(function (data) {
        KvFlame.mount($("view"), data, { subtitle: q });
        status("");
        shares(r);
      })
      .catch(function (e) { status(e.message, true); });
  }

  $("service").onchange = function () { params.delete("tagValue"); onService().then(show); };
  $("tagKey").onchange = function () { params.delete("tagValue"); onTagKey().then(show); };
  $("tagValue").onchange = show;
  $("ptype").onchange = show;
  $("range").onchange = function () { params.delete("from"); params.delete("until"); show(); };
  $("controls").onsubmit = function (ev) { ev.preventDefault(); show(); };
  if (params.get("from")) {
    var opt = new Option("From " + params.get("from"), params.get("from"));
    $("range").appendChild(opt);
    $("range").value = params.get("from");
  }
  loadServices().then(show).catch(function (e) { status(e.message, true); });
})();
