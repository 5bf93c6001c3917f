"""A small client for the query API that this collector and Grafana Pyroscope both serve.

Only endpoints present on both are used: ``GET /pyroscope/render`` for flamegraphs and label values
through ``GET /pyroscope/label-values`` with a fallback to Connect ``QuerierService/LabelValues``.
Any transport or HTTP failure becomes :class:`PyroscopeError` with a one-line message.
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any

import httpx

from profiling.selector import DEFAULT_PROFILE_TYPE, Matcher


class PyroscopeError(Exception):
    """The server could not be reached or refused the query; the message says which."""


def build_query(
    service: str,
    tags: dict[str, str] | None = None,
    profile_type: str = DEFAULT_PROFILE_TYPE,
    extra: str = "",
) -> str:
    """``profile_type{service_name="svc",k="v",...}`` with values quoted safely."""
    parts = [str(Matcher.make("service_name", "=", service))]
    parts += [str(Matcher.make(k, "=", v)) for k, v in (tags or {}).items()]
    if extra:
        parts.append(extra)
    return f"{profile_type}{{{','.join(parts)}}}"


class PyroscopeClient:
    """Queries one server at ``url`` (e.g. ``http://127.0.0.1:4040``)."""

    def __init__(self, url: str, timeout_s: float = 30.0, headers: dict[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers or {})

    def __enter__(self) -> PyroscopeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PyroscopeError(f"cannot reach {self.url}{path}: {exc}") from None

    @staticmethod
    def _json(resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            detail = resp.text.strip().replace("\n", " ")[:300]
            raise PyroscopeError(f"{resp.request.url.path} answered HTTP {resp.status_code}: {detail}")
        try:
            return resp.json()
        except ValueError:
            raise PyroscopeError(f"{resp.request.url.path} did not answer JSON") from None

    def render(self, query: str, start: float, end: float, max_nodes: int | None = None) -> dict[str, Any]:
        """The render response (``flamebearer``, ``metadata``, ``timeline``) for ``query``."""
        params: dict[str, Any] = {
            "query": query,
            "from": math.floor(start),
            "until": math.ceil(end),
            "format": "json",
        }
        if max_nodes:
            params["max-nodes"] = max_nodes
        data = self._json(self._request("GET", "/pyroscope/render", params=params))
        fb = data.get("flamebearer") if isinstance(data, dict) else None
        if not isinstance(fb, dict) or "levels" not in fb or "names" not in fb:
            raise PyroscopeError("render response has no flamebearer")
        fb.setdefault("numTicks", fb["levels"][0][1] if fb["levels"] and fb["levels"][0] else 0)
        return data

    def label_values(self, label: str, query: str, start: float, end: float) -> list[str]:
        """Values of ``label`` among series matching ``query`` (a ``{...}`` selector)."""
        resp = self._request(
            "GET",
            "/pyroscope/label-values",
            params={"label": label, "query": query, "from": math.floor(start), "until": math.ceil(end)},
        )
        if resp.status_code == 200:
            values = self._json(resp)
            if isinstance(values, list):
                return [str(v) for v in values]
        body = {"name": label, "matchers": [query], "start": int(start * 1000), "end": int(end * 1000)}
        data = self._json(self._request("POST", "/querier.v1.QuerierService/LabelValues", json=body))
        return [str(v) for v in data.get("names", [])]
