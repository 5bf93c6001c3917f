"""Async streaming client for OpenAI-compatible `/v1/chat/completions` and `/v1/completions`.

What counts as the first token (TTFT): the first streamed chunk that carries non-empty text, either
`delta.content` or reasoning text (`delta.reasoning_content` / `delta.reasoning`) for chat, `text`
for completions. A role-only first chunk (`{"role": "assistant", "content": ""}`) is not a token.
Inter-token latencies (ITL) are the gaps between successive text-carrying chunks.

Invariant: `send()` never raises for a failed request; every outcome (HTTP error, timeout, broken
stream) becomes a `RequestResult` with `error` set, so a run goes on and counts it.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from kvbench.workload.plan import PlannedRequest


@dataclass
class RequestResult:
    """Timings are seconds after `sent` (a perf_counter reading); None when the event never happened."""

    request_id: str
    sent_unix: float
    sent: float
    status: int | None = None
    first_byte_s: float | None = None
    first_chunk_s: float | None = None
    ttft_s: float | None = None
    end_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    output_text_chars: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def itl_s(self) -> list[float]:
        t = self.token_times_s
        return [b - a for a, b in itertools.pairwise(t)]

    def tpot_s(self) -> float | None:
        """Mean time per output token after the first: (end - ttft) / (completion tokens - 1)."""
        n = self.completion_tokens if self.completion_tokens is not None else len(self.token_times_s)
        if self.ttft_s is None or self.end_s is None or n is None or n < 2:
            return None
        return (self.end_s - self.ttft_s) / (n - 1)


def chunk_text(chunk: Mapping[str, Any]) -> str:
    """The text a streamed chunk adds (content or reasoning); '' for role-only and usage-only chunks."""
    parts = []
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, Mapping):
            continue
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            for key in ("content", "reasoning_content", "reasoning"):
                value = delta.get(key)
                if isinstance(value, str) and value:
                    parts.append(value)
        text = choice.get("text")
        if isinstance(text, str) and text:
            parts.append(text)
    return "".join(parts)


def build_body(
    req: PlannedRequest, model: str, *, temperature: float, ignore_eos: bool, extra: Mapping[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        **req.body(),
        "max_tokens": req.max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    body.update(extra)
    return body


class StreamingClient:
    """Sends planned requests to one endpoint; one instance per configuration."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        model: str,
        *,
        endpoint: str = "chat",
        headers: Mapping[str, str] | None = None,
        temperature: float = 0.0,
        ignore_eos: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        record_headers: Iterable[str] = ("target-pod", "request-id", "x-request-id"),
        timeout_s: float = 120.0,
    ) -> None:
        self._http = http
        path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
        self.url = base_url.rstrip("/") + path
        self.model = model
        self._headers = dict(headers or {})
        self._temperature = temperature
        self._ignore_eos = ignore_eos
        self._extra = dict(extra_body or {})
        self._record = [h.lower() for h in record_headers]
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))

    async def send(self, req: PlannedRequest) -> RequestResult:
        body = build_body(
            req, self.model, temperature=self._temperature, ignore_eos=self._ignore_eos, extra=self._extra
        )
        res = RequestResult(req.id, time.time(), time.perf_counter())
        try:
            async with self._http.stream(
                "POST", self.url, json=body, headers=self._headers, timeout=self._timeout
            ) as resp:
                res.status = resp.status_code
                res.headers = {k: resp.headers[k] for k in self._record if k in resp.headers}
                if resp.status_code != 200:
                    detail = (await resp.aread()).decode("utf-8", "replace").strip().replace("\n", " ")
                    res.error = f"HTTP {resp.status_code}: {detail[:300]}"
                else:
                    await self._consume(resp, res)
        except httpx.TimeoutException as exc:
            res.error = f"timeout: {type(exc).__name__}"
        except (httpx.HTTPError, OSError) as exc:
            res.error = f"{type(exc).__name__}: {exc}"[:300]
        res.end_s = time.perf_counter() - res.sent
        if res.error is None and res.ttft_s is None:
            res.error = "no tokens in the response stream"
        return res

    async def _consume(self, resp: httpx.Response, res: RequestResult) -> None:
        buf = b""
        done = False
        async for raw in resp.aiter_bytes():
            now = time.perf_counter() - res.sent
            if res.first_byte_s is None:
                res.first_byte_s = now
            buf += raw
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if self._line(line.strip(), now, res):
                    done = True
        if buf.strip():
            done = self._line(buf.strip(), time.perf_counter() - res.sent, res) or done
        if not done and res.error is None:
            res.error = "stream ended without [DONE]"

    @staticmethod
    def _line(line: bytes, now: float, res: RequestResult) -> bool:
        """Handle one SSE line; True on the `[DONE]` sentinel."""
        if not line.startswith(b"data:"):
            return False
        data = line[5:].strip()
        if data == b"[DONE]":
            return True
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            res.error = "malformed stream chunk"
            return False
        if not isinstance(chunk, dict):
            return False
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"]
            res.error = f"stream error: {err.get('message', err) if isinstance(err, dict) else err}"[:300]
            return False
        if res.first_chunk_s is None:
            res.first_chunk_s = now
        text = chunk_text(chunk)
        if text:
            if res.ttft_s is None:
                res.ttft_s = now
            res.token_times_s.append(now)
            res.output_text_chars += len(text)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            res.prompt_tokens = usage.get("prompt_tokens", res.prompt_tokens)
            res.completion_tokens = usage.get("completion_tokens", res.completion_tokens)
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and details.get("cached_tokens") is not None:
                res.cached_tokens = int(details["cached_tokens"])
        return False
