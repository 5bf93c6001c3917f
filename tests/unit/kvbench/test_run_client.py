"""The streaming client against a real HTTP server that streams like an OpenAI endpoint."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from kvb_openai_stub import FIRST_TOKEN_DELAY_S, StubServer

from kvbench.client import StreamingClient, chunk_text
from kvbench.workload.plan import PlannedRequest


def test_chunk_text_rules() -> None:
    assert chunk_text({"choices": [{"delta": {"role": "assistant", "content": ""}}]}) == ""
    assert chunk_text({"choices": [{"delta": {"role": "assistant"}}]}) == ""
    assert chunk_text({"choices": [], "usage": {"prompt_tokens": 3}}) == ""
    assert chunk_text({"choices": [{"delta": {"content": None, "reasoning_content": "hm"}}]}) == "hm"
    assert chunk_text({"choices": [{"delta": {"reasoning": "so"}}]}) == "so"
    assert chunk_text({"choices": [{"text": " x"}]}) == " x"
    assert chunk_text({"choices": [{"delta": {"content": "a"}}, {"delta": {"content": "b"}}]}) == "ab"


def _req(max_tokens: int = 5, chat: bool = True) -> PlannedRequest:
    if chat:
        return PlannedRequest(
            "r1", "s", 1, max_tokens, 3, messages=({"role": "user", "content": "one two three"},)
        )
    return PlannedRequest("r1", "s", 1, max_tokens, 3, prompt="one two three")


def _send(server_url: str, model: str, req: PlannedRequest, endpoint: str = "chat", **kw):
    async def go():
        async with httpx.AsyncClient(trust_env=False) as http:
            client = StreamingClient(http, server_url, model, endpoint=endpoint, **kw)
            return await client.send(req)

    return asyncio.run(go())


def test_role_only_first_chunk_is_not_the_first_token(stub_server: StubServer) -> None:
    res = _send(stub_server.base_url, "m", _req(5))
    assert res.ok, res.error
    assert res.status == 200
    # The stub sends the role-only chunk, waits, then the first content chunk.
    assert res.first_chunk_s is not None and res.ttft_s is not None
    assert res.ttft_s - res.first_chunk_s >= FIRST_TOKEN_DELAY_S * 0.8
    assert res.first_byte_s <= res.first_chunk_s <= res.ttft_s <= res.end_s
    assert len(res.token_times_s) == 5
    assert len(res.itl_s()) == 4 and all(x >= 0 for x in res.itl_s())
    assert (res.prompt_tokens, res.completion_tokens, res.cached_tokens) == (3, 5, 1)
    assert res.headers == {"target-pod": "pod-1", "request-id": "req-1"}
    assert res.tpot_s() == pytest.approx((res.end_s - res.ttft_s) / 4)
    body = stub_server.state.bodies[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["max_tokens"] == 5


def test_reasoning_content_counts_as_first_token(stub_server: StubServer) -> None:
    res = _send(stub_server.base_url, "reasoning", _req(4))
    assert res.ok
    assert len(res.token_times_s) == 4
    assert res.ttft_s == res.token_times_s[0]


def test_completions_endpoint(stub_server: StubServer) -> None:
    res = _send(stub_server.base_url, "m", _req(3, chat=False), endpoint="completions")
    assert res.ok and len(res.token_times_s) == 3
    assert "prompt" in stub_server.state.bodies[0]


def test_errors_are_results_not_exceptions(stub_server: StubServer) -> None:
    res = _send(stub_server.base_url, "fail500", _req(), headers={"Authorization": "Bearer sekrit-123"})
    assert not res.ok and res.status == 500 and res.error.startswith("HTTP 500")
    slow = _send(stub_server.base_url, "slow", _req(), timeout_s=0.05)
    assert not slow.ok and slow.error.startswith("timeout")
    dead = _send("http://127.0.0.1:9", "m", _req())
    assert not dead.ok and dead.status is None and "Connect" in dead.error
