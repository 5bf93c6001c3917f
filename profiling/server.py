"""The collector's HTTP app: Pyroscope's ingest endpoints, a query API subset, and the web UI.

Ingest: ``POST /push.v1.PusherService/Push`` (Connect, protobuf or JSON) and legacy ``POST /ingest``.
Query (same shapes as Grafana Pyroscope, so one client serves both): ``GET /pyroscope/render``,
``GET /pyroscope/label-values``, ``GET /pyroscope/labels`` and the Connect JSON methods
``querier.v1.QuerierService/{LabelNames,LabelValues,ProfileTypes,SelectMergeStacktraces}``.
UI: ``GET /`` with its assets under ``/static``.

Every client mistake is a 4xx with a one-line message (Connect endpoints use Connect's error JSON);
bodies over the limit are refused with 413 before they are fully read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from profiling import flamebearer
from profiling.ingest import IngestError, decode_legacy, decode_push, decompress_bounded
from profiling.selector import DEFAULT_PROFILE_TYPE, Selector, SelectorError, parse_selector
from profiling.store import BUCKET_S, Store, bucket_of
from profiling.timerange import TimeRangeError, parse_range

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("profiling.server")

# Connect error codes for the HTTP statuses this app answers with.
_CONNECT_CODES = {
    400: "invalid_argument",
    404: "not_found",
    413: "resource_exhausted",
    415: "invalid_argument",
}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    retention_hours: float = 168.0
    max_body_mb: float = 16.0
    max_nodes: int = 8192

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * (1 << 20))

    @property
    def max_decoded_bytes(self) -> int:
        # Profiles compress ~5-10x; allow that much growth but no zip bomb.
        return self.max_body_bytes * 16


class ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ClientError(400, f"bad Content-Length {length!r}") from None
        if declared > limit:
            raise ClientError(413, f"body of {declared} bytes exceeds the {limit // (1 << 20)} MiB limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ClientError(413, f"body exceeds the {limit // (1 << 20)} MiB limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _content_decoded(request: Request, body: bytes, settings: Settings) -> bytes:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        try:
            return decompress_bounded(body, settings.max_decoded_bytes)
        except IngestError as exc:
            raise ClientError(exc.status, exc.message) from None
    raise ClientError(415, f"unsupported Content-Encoding {encoding!r}: use gzip or none")


def _selector(text: str | None) -> Selector:
    if not text:
        return Selector(None, ())
    try:
        return parse_selector(text)
    except SelectorError as exc:
        raise ClientError(400, f"bad query: {exc}") from None


def _range(start: Any, end: Any, default_span_s: float = 3600.0) -> tuple[float, float]:
    try:
        return parse_range(_opt_str(start), _opt_str(end), default_span_s)
    except TimeRangeError as exc:
        raise ClientError(400, str(exc)) from None


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _ms_range(body: dict[str, Any]) -> tuple[float, float]:
    def ms(key: str) -> float | None:
        v = body.get(key)
        if v in (None, ""):
            return None
        try:
            return float(v) / 1000.0
        except (TypeError, ValueError):
            raise ClientError(400, f"'{key}' must be unix milliseconds, got {v!r}") from None

    start, end = ms("start"), ms("end")
    end = time.time() if end is None else end
    start = end - 3600.0 if start is None else start
    if start > end:
        raise ClientError(400, "'start' is after 'end'")
    return start, end


class Collector:
    """Request handlers bound to one :class:`Store`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.data_dir, settings.retention_hours * 3600.0)
        self._last_prune = 0.0
        self.store.prune()

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune > 60.0:
            self._last_prune = now
            self.store.prune()

    async def _body(self, request: Request) -> bytes:
        raw = await _read_body(request, self.settings.max_body_bytes)
        return _content_decoded(request, raw, self.settings)

    # -- ingest ---------------------------------------------------------------------------------------

    async def push(self, request: Request) -> Response:
        body = await self._body(request)
        try:
            ctype = request.headers.get("content-type", "")
            batches = decode_push(body, ctype, self.settings.max_decoded_bytes)
        except IngestError as exc:
            raise ClientError(exc.status, exc.message) from None
        self.store.ingest(batches)
        self._maybe_prune()
        return JSONResponse({})

    async def ingest(self, request: Request) -> Response:
        body = await self._body(request)
        try:
            batches = decode_legacy(
                body,
                dict(request.query_params),
                request.headers.get("content-type", ""),
                self.settings.max_decoded_bytes,
            )
        except IngestError as exc:
            raise ClientError(exc.status, exc.message) from None
        self.store.ingest(batches)
        self._maybe_prune()
        return PlainTextResponse("")

    # -- query ----------------------------------------------------------------------------------------

    def _merge(self, selector: Selector, start: float, end: float, max_nodes: int) -> tuple[dict, dict]:
        if selector.profile_type is None:
            selector = Selector(DEFAULT_PROFILE_TYPE, selector.matchers)
        stacks, timeline = self.store.select(selector, start, end)
        return flamebearer.build(stacks, max_nodes), timeline

    async def render(self, request: Request) -> Response:
        q = request.query_params
        query = q.get("query") or q.get("name")
        if not query:
            example = f'{DEFAULT_PROFILE_TYPE}{{service_name="app"}}'
            raise ClientError(400, f"missing 'query', e.g. query={example}")
        selector = _selector(query)
        if selector.profile_type is None:
            selector = Selector(DEFAULT_PROFILE_TYPE, selector.matchers)
        start, end = _range(q.get("from"), q.get("until"))
        max_nodes = _int(q.get("max-nodes") or q.get("maxNodes"), self.settings.max_nodes)
        fb, timeline = self._merge(selector, start, end, max_nodes)
        fmt = (q.get("format") or "json").lower()
        if fmt != "json":
            raise ClientError(400, f"unsupported format {fmt!r}: only json")
        assert selector.profile_type is not None
        _, sample_type, sample_unit, _, _ = selector.profile_type.split(":")
        return JSONResponse(
            {
                "version": 1,
                "flamebearer": fb,
                "metadata": _metadata(sample_type, sample_unit),
                "timeline": _timeline(timeline, start, end),
                "groups": None,
                "heatmap": None,
            }
        )

    async def label_values(self, request: Request) -> Response:
        q = request.query_params
        label = q.get("label")
        if not label:
            raise ClientError(400, "missing 'label' query parameter")
        start, end = _range(q.get("from"), q.get("until"), 7 * 86400.0)
        return JSONResponse(self.store.label_values(label, _selector(q.get("query")), start, end))

    async def labels(self, request: Request) -> Response:
        q = request.query_params
        start, end = _range(q.get("from"), q.get("until"), 7 * 86400.0)
        return JSONResponse(self.store.label_names(_selector(q.get("query")), start, end))

    async def services(self, request: Request) -> Response:
        q = request.query_params
        start, end = _range(q.get("from"), q.get("until"), 7 * 86400.0)
        out: dict[str, set[str]] = {}
        for s in self.store.streams(None, start, end):
            out.setdefault(s.labels.get("service_name", ""), set()).add(s.profile_type)
        return JSONResponse(
            [{"name": name, "profileTypes": sorted(types)} for name, types in sorted(out.items())]
        )

    async def _connect_body(self, request: Request) -> dict[str, Any]:
        body = await self._body(request)
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", ""):
            raise ClientError(415, f"unsupported content type {ctype!r}: the query API speaks Connect JSON")
        if not body.strip():
            return {}
        try:
            value = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ClientError(400, f"request body is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ClientError(400, "request body must be a JSON object")
        return value

    def _matchers(self, body: dict[str, Any]) -> list[Selector]:
        raw = body.get("matchers") or []
        if not isinstance(raw, list):
            raise ClientError(400, "'matchers' must be a list of selector strings")
        return [_selector(str(m)) for m in raw]

    def _streams_any(self, selectors: list[Selector], start: float, end: float) -> list:
        if not selectors:
            return self.store.streams(None, start, end)
        seen: dict[int, Any] = {}
        for sel in selectors:
            for s in self.store.streams(sel, start, end):
                seen[s.id] = s
        return list(seen.values())

    async def connect_label_names(self, request: Request) -> Response:
        body = await self._connect_body(request)
        start, end = _ms_range(body)
        streams = self._streams_any(self._matchers(body), start, end)
        return JSONResponse({"names": sorted({k for s in streams for k in s.labels})})

    async def connect_label_values(self, request: Request) -> Response:
        body = await self._connect_body(request)
        name = body.get("name")
        if not name:
            raise ClientError(400, "missing 'name'")
        start, end = _ms_range(body)
        streams = self._streams_any(self._matchers(body), start, end)
        return JSONResponse({"names": sorted({s.labels[name] for s in streams if name in s.labels})})

    async def connect_profile_types(self, request: Request) -> Response:
        body = await self._connect_body(request)
        start, end = _ms_range(body)
        types = sorted({s.profile_type for s in self.store.streams(None, start, end)})
        return JSONResponse({"profileTypes": [_profile_type_json(t) for t in types]})

    async def connect_select_merge_stacktraces(self, request: Request) -> Response:
        body = await self._connect_body(request)
        start, end = _ms_range(body)
        ptype = body.get("profileTypeID") or DEFAULT_PROFILE_TYPE
        sel = _selector(str(body.get("labelSelector") or "{}"))
        sel = Selector(str(ptype), sel.matchers)
        max_nodes = _int(body.get("maxNodes"), self.settings.max_nodes)
        fb, _ = self._merge(sel, start, end, max_nodes)
        # Connect's JSON mapping writes int64 as strings.
        return JSONResponse(
            {
                "flamegraph": {
                    "names": fb["names"],
                    "levels": [{"values": [str(v) for v in level]} for level in fb["levels"]],
                    "total": str(fb["numTicks"]),
                    "maxSelf": str(fb["maxSelf"]),
                }
            }
        )

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def ready(self, request: Request) -> Response:
        return PlainTextResponse("ready")


def _int(value: Any, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        raise ClientError(400, f"expected an integer, got {value!r}") from None


def _metadata(sample_type: str, sample_unit: str) -> dict[str, Any]:
    """Render metadata as Grafana Pyroscope writes it: CPU is 'samples' at 1e9 ticks per second."""
    units, rate = sample_unit, 100
    if sample_type in ("inuse_objects", "alloc_objects", "goroutine", "samples"):
        units = "objects"
    if sample_type == "cpu":
        units, rate = "samples", 1_000_000_000
    return {"format": "single", "units": units, "name": sample_type, "sampleRate": rate, "spyName": ""}


def _timeline(buckets: dict[int, int], start: float, end: float) -> dict[str, Any]:
    first = bucket_of(start)
    n = max(1, int((end - first) // BUCKET_S) + 1)
    samples = [buckets.get(first + i * BUCKET_S, 0) for i in range(min(n, 100_000))]
    return {"startTime": first, "samples": samples, "durationDelta": BUCKET_S}


def _profile_type_json(ptype: str) -> dict[str, str]:
    name, sample_type, sample_unit, period_type, period_unit = ptype.split(":")
    return {
        "ID": ptype,
        "name": name,
        "sampleType": sample_type,
        "sampleUnit": sample_unit,
        "periodType": period_type,
        "periodUnit": period_unit,
    }


def create_app(settings: Settings) -> Starlette:
    """The ASGI app; the store is opened now and closed on shutdown."""
    c = Collector(settings)

    def handler(fn: Any, connect: bool = False) -> Any:
        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except ClientError as exc:
                if connect:
                    code = _CONNECT_CODES.get(exc.status, "invalid_argument")
                    return JSONResponse({"code": code, "message": exc.message}, status_code=exc.status)
                return JSONResponse({"error": exc.message}, status_code=exc.status)

        return wrapped

    routes = [
        Route("/", handler(c.index)),
        Route("/ready", handler(c.ready)),
        Route("/push.v1.PusherService/Push", handler(c.push, connect=True), methods=["POST"]),
        Route("/ingest", handler(c.ingest), methods=["POST"]),
        Route("/pyroscope/render", handler(c.render)),
        Route("/pyroscope/label-values", handler(c.label_values)),
        Route("/pyroscope/labels", handler(c.labels)),
        Route("/api/services", handler(c.services)),
        *(
            Route(f"/querier.v1.QuerierService/{method}", handler(fn, connect=True), methods=["POST"])
            for method, fn in (
                ("LabelNames", c.connect_label_names),
                ("LabelValues", c.connect_label_values),
                ("ProfileTypes", c.connect_profile_types),
                ("SelectMergeStacktraces", c.connect_select_merge_stacktraces),
            )
        ),
        Mount("/static", StaticFiles(directory=STATIC_DIR)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            c.store.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.collector = c
    return app


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 4040, ready_file: Path | None = None
) -> None:
    """Run the collector until SIGINT/SIGTERM. ``port=0`` picks a free port; with ``ready_file`` the
    bound ``host:port`` is written there once the socket listens (how a parent learns the port)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    bound_port = sock.getsockname()[1]
    app = create_app(settings)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    if ready_file is not None:
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(f"{host}:{bound_port}\n")
        tmp.replace(ready_file)
    log.info("collector listening on http://%s:%d (data: %s)", host, bound_port, settings.data_dir)
    asyncio.run(server.serve(sockets=[sock]))


def main(argv: list[str] | None = None) -> int:
    """``python -m profiling.server``: how :func:`profiling.capture.start_local_collector` runs it."""
    p = argparse.ArgumentParser(prog="python -m profiling.server", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4040)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--retention-hours", type=float, default=168.0)
    p.add_argument("--max-body-mb", type=float, default=16.0)
    p.add_argument("--ready-file", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        serve(
            Settings(args.data, args.retention_hours, args.max_body_mb), args.host, args.port, args.ready_file
        )
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
