"""A stand-in engine for the sweep tests, run in its own process: `python -m tests.loadtests.standin
--port P --slots N [--streams-at-full-speed S] [--queue Q] [--no-metrics]`.

It streams up to `slots` requests at once, TOKENS events each, and queues the rest (up to `queue`,
beyond which it answers 429), on both the Workers AI run endpoint and OpenAI chat completions. Like
a compute-bound engine, it generates at most S / TOKEN_S tokens per second in all: up to S streams
each get a token every TOKEN_S, more share that rate (their inter-token latency grows). So the
throughput grows with the streams up to S and is flat past it, whatever the client's own pauses
between requests (when one stream pauses, the others speed up). Its `/metrics` serves vLLM's running,
waiting, KV cache and preemption series from the same state. In a process of its own, its timing does
not share the test's interpreter.
"""

import argparse
import asyncio
import json

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TOKENS = 4
TOKEN_S = 0.04  # long enough that a busy machine's scheduling jitter is small beside it


class StandIn:
    """A stand-in engine: `slots` requests generate at once, up to `queue` more wait (beyond: 429)."""

    def __init__(self, slots: int, full_speed: float | None = None, queue: int | None = None, metrics: bool = True):
        self.slots, self.queue, self.metrics = slots, queue, metrics
        self.full_speed = full_speed or slots
        self.running = self.waiting = 0
        self.free: asyncio.Semaphore | None = None
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self.gauges = {
            name: Gauge(name, name, labels, registry=self.registry)
            for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
        }
        self.preemptions = Counter("vllm:num_preemptions", "preemptions", labels, registry=self.registry)
        self.preemptions.labels("m", "0")  # served as 0 from the start, as vLLM's is

    def app(self) -> Starlette:
        routes = [
            Route("/client/v4/accounts/{account}/ai/run/{model:path}", self.generate, methods=["POST"]),
            Route("/v1/chat/completions", self.generate, methods=["POST"]),
            Route("/metrics", self.scrape),
        ]
        return Starlette(routes=routes)

    async def generate(self, request: Request) -> Response:
        openai = request.url.path.startswith("/v1")
        await request.json()
        if self.free is None:
            self.free = asyncio.Semaphore(self.slots)
        if self.queue is not None and self.free.locked() and self.waiting >= self.queue:
            body = {"success": False, "errors": [{"code": 3040, "message": "Capacity temporarily exceeded"}]}
            return JSONResponse(body, status_code=429)
        return StreamingResponse(self.stream(openai), media_type="text/event-stream")

    async def stream(self, openai: bool):
        assert self.free is not None
        self.waiting += 1
        if self.free.locked():
            self.preemptions.labels("m", "0").inc()  # stands for the engine's pressure: counted per queued request
        async with self.free:
            self.waiting -= 1
            self.running += 1
            try:
                for i in range(TOKENS):
                    await asyncio.sleep(TOKEN_S * max(1.0, self.running / self.full_speed))
                    if openai:
                        yield _event({"choices": [{"index": 0, "delta": {"content": f"t{i} "}}]})
                    else:
                        yield _event({"response": f"t{i} "})
                usage = {"prompt_tokens": 5, "completion_tokens": TOKENS, "total_tokens": TOKENS + 5}
                yield _event({"choices": [], "usage": usage} if openai else {"response": "", "usage": usage})
                yield b"data: [DONE]\n\n"
            finally:
                self.running -= 1

    async def scrape(self, request: Request) -> Response:
        if not self.metrics:
            return Response("not here", status_code=404)
        values = {
            "vllm:num_requests_running": self.running,
            "vllm:num_requests_waiting": self.waiting,
            "vllm:kv_cache_usage_perc": self.running / self.slots,
        }
        for name, value in values.items():
            self.gauges[name].labels("m", "0").set(value)
        return Response(generate_latest(self.registry), media_type="text/plain; version=0.0.4")


def _event(data: dict) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--streams-at-full-speed", type=float)
    parser.add_argument("--queue", type=int)
    parser.add_argument("--no-metrics", action="store_true")
    args = parser.parse_args()
    engine = StandIn(args.slots, args.streams_at_full_speed, args.queue, metrics=not args.no_metrics)
    uvicorn.run(engine.app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
