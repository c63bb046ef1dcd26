"""The floor of `make bench-frontend`: the least a front end on vLLM's AsyncLLM and uvicorn costs.

A bare ASGI app (no framework, no validation, no chat template: the messages' text is tokenized as is)
on wai's own engine arguments for the model, served by uvicorn as wai is (uvloop, httptools).
Its OpenAI-style chat endpoint streams one `data:` event per vLLM delta, a usage event and `[DONE]`;
`/health` and `/metrics` (vLLM's own counters) are there for the bench. Every front end on these two
pieces pays at least this for vLLM's output processing and detokenization, the ASGI send and the
socket write of each event; the bench shows wai and `vllm serve` against it.

    python -m benchmarks.floor --config wai.yaml --port 8000
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
EVENT_STREAM = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Floor:
    def __init__(self, config_path: str):
        self.config_path = config_path
        self.llm: Any = None
        self.ids = itertools.count()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["path"] == "/v1/chat/completions":
            await self.chat(receive, send)
        elif scope["path"] == "/metrics":
            from prometheus_client import generate_latest

            await respond(send, 200, generate_latest(), b"text/plain; version=0.0.4")
        elif scope["path"] == "/health":
            await respond(send, 200 if self.llm is not None and not self.llm.errored else 503, b"")
        else:
            await respond(send, 404, b"")

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.llm = start_engine(self.config_path)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.llm.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def chat(self, receive: Receive, send: Send) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        body = orjson.loads(await read_body(receive))
        text = "\n".join(m["content"] for m in body["messages"])
        prompt = self.llm.tokenizer.encode(text)
        params = SamplingParams(
            max_tokens=body.get("max_tokens", 16),
            temperature=body.get("temperature", 1.0),
            output_kind=RequestOutputKind.DELTA,
        )
        await send({"type": "http.response.start", "status": 200, "headers": EVENT_STREAM})
        tokens = 0
        async for output in self.llm.generate(TokensPrompt(prompt_token_ids=prompt), params, str(next(self.ids))):
            delta = output.outputs[0]
            tokens += len(delta.token_ids)
            event = b'data: {"choices":[{"index":0,"delta":{"content":' + orjson.dumps(delta.text) + b"}}]}\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": True})
        usage = {"prompt_tokens": len(prompt), "completion_tokens": tokens, "total_tokens": len(prompt) + tokens}
        ending = b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\ndata: [DONE]\n\n"
        await send({"type": "http.response.body", "body": ending, "more_body": False})


def start_engine(config_path: str) -> Any:
    """vLLM's AsyncLLM on the same engine arguments as `wai serve --config config_path` gives it."""
    from vllm.v1.engine.async_llm import AsyncLLM

    from server.config import load_settings
    from server.engine.engine_args import engine_args
    from server.prepare import resolve_checkpoint

    settings = load_settings(config_path)
    model = settings.models[0]
    return AsyncLLM.from_engine_args(engine_args(model, resolve_checkpoint(model, settings.cache_dir)))


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a wai config; its first model is served")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        Floor(args.config),
        host=args.host,
        port=args.port,
        # uvicorn's own choice, as `wai serve`'s: uvloop and httptools, both installed with wai.
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
