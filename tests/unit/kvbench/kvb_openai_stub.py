"""A real HTTP server that streams like an OpenAI-compatible endpoint (vLLM's wire format).

Behaviour is chosen per request by the `model` field:
- any name: a role-only first chunk (`content: ""`), then `max_tokens` one-word content chunks,
  then a usage chunk with `prompt_tokens_details.cached_tokens`, then `[DONE]`;
- `reasoning`: the first two text chunks carry `reasoning_content` instead of `content`;
- `fail500`: HTTP 500 whose body echoes the request's Authorization header (a leaky gateway);
- `slow`: waits `STUB_SLOW_S` before the first chunk.
`/metrics` serves counters that grow with every request, as an engine's do; `/health` answers 200.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from kvbench.servers import free_port

FIRST_TOKEN_DELAY_S = 0.02
TOKEN_GAP_S = 0.005
STUB_SLOW_S = 0.3


class StubState:
    def __init__(self) -> None:
        self.requests = 0
        self.prompt_tokens = 0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []


def make_app(state: StubState) -> Starlette:
    async def completions(request: Request) -> Response:
        body = await request.json()
        state.bodies.append(body)
        state.headers.append(dict(request.headers))
        model = body.get("model")
        if model == "fail500":
            return PlainTextResponse(f"upstream rejected auth {request.headers.get('authorization')}", 500)
        chat = request.url.path.endswith("/chat/completions")
        if chat:
            words = sum(len(m["content"].split()) for m in body["messages"])
        else:
            words = len(body["prompt"].split())
        n = int(body.get("max_tokens", 4))
        state.requests += 1
        state.prompt_tokens += words

        async def events() -> AsyncIterator[bytes]:
            await asyncio.sleep(STUB_SLOW_S if model == "slow" else FIRST_TOKEN_DELAY_S)
            if chat:
                role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
                yield f"data: {json.dumps(role)}\n\n".encode()
                await asyncio.sleep(FIRST_TOKEN_DELAY_S)
            for i in range(n):
                if chat:
                    key = "reasoning_content" if model == "reasoning" and i < 2 else "content"
                    chunk = {"choices": [{"index": 0, "delta": {key: f" w{i}"}}]}
                else:
                    chunk = {"choices": [{"index": 0, "text": f" w{i}"}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(TOKEN_GAP_S)
            usage = {
                "choices": [],
                "usage": {
                    "prompt_tokens": words,
                    "completion_tokens": n,
                    "total_tokens": words + n,
                    "prompt_tokens_details": {"cached_tokens": words // 2},
                },
            }
            yield f"data: {json.dumps(usage)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        headers = {"target-pod": f"pod-{state.requests % 2}", "request-id": f"req-{state.requests}"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def metrics(request: Request) -> Response:
        q = state.prompt_tokens
        text = (
            "# HELP vllm:prefix_cache_queries Prefix cache queries.\n"
            "# TYPE vllm:prefix_cache_queries counter\n"
            f'vllm:prefix_cache_queries_total{{engine="0",model_name="m"}} {q + 1000}\n'
            "# HELP vllm:prefix_cache_hits Prefix cache hits.\n"
            "# TYPE vllm:prefix_cache_hits counter\n"
            f'vllm:prefix_cache_hits_total{{engine="0",model_name="m"}} {q // 4 + 500}\n'
            "# HELP vllm:kvcache_ol_lookup_tokens Connector lookups.\n"
            "# TYPE vllm:kvcache_ol_lookup_tokens counter\n"
            f"vllm:kvcache_ol_lookup_tokens_total {q + 77}\n"
            "# HELP vllm:kvcache_ol_hit_tokens Connector hits.\n"
            "# TYPE vllm:kvcache_ol_hit_tokens counter\n"
            f'vllm:kvcache_ol_hit_tokens_total{{tier="l1"}} {q // 2 + 9}\n'
            f'vllm:kvcache_ol_hit_tokens_total{{tier="l2"}} {q // 10}\n'
        )
        return PlainTextResponse(text)

    async def health(request: Request) -> Response:
        return JSONResponse({})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/metrics", metrics),
            Route("/health", health),
        ]
    )


class StubServer:
    """uvicorn serving the stub on a free loopback port, in a daemon thread; stopped by `stop()`."""

    def __init__(self) -> None:
        self.state = StubState()
        self.port = free_port()
        config = uvicorn.Config(make_app(self.state), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StubServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("stub server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


if __name__ == "__main__":  # `python kvb_openai_stub.py PORT`: the stub as a launched command
    import sys

    uvicorn.run(make_app(StubState()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
