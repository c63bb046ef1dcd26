"""One record per request, for every protocol: it feeds the metrics and writes the request's log line.

api/middleware.py makes one for every API request, batch/jobs.py one for every batch item's run;
the text service's one entry (serving/text.py) fills it in:

    record.serve(route.service.model)        # the caller, once the model is known; errors before: model="none"
    service.generate(text, name, record, deadline)  # then, inside the entry:
        record.use_adapter(adapter.name)     # once the fine-tune is resolved; lora= its stored name
        record.show_input(text.as_sent)      # kept only with `log_prompts: true`
        record.watch(deltas)                 # every delta, under the deadline

`record.watch()` counts tokens as they come and notes an error raised mid-stream; api/errors.py notes
every error it renders with `record.fail()`; the middleware calls `record.finish()` exactly once,
after the last byte, a crash or the client leaving (the batch runner once the item's answer is kept).
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from server import errors, metrics
from server.config import ModelConfig, Pricing
from server.engine.types import TextDelta

log = logging.getLogger("wai.requests")

WORKERS_AI = "workers_ai"
OPENAI = "openai"
ANTHROPIC = "anthropic"
RESPONSES = "responses"  # OpenAI's Responses API


@dataclass
class RequestRecord:
    protocol: str
    log_prompts: bool = False
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)
    model: str = metrics.NO_MODEL
    lora: str = metrics.NO_LORA
    pricing: Pricing | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those vLLM's prefix cache served
    completion_tokens: dict[int, int] = field(default_factory=dict)  # per choice
    first_token_at: float | None = None
    last_token_at: float | None = None
    queue_seconds: float | None = None
    error: errors.WaiError | None = None
    input: Any = None
    output: dict[int, str] = field(default_factory=dict)
    in_flight: bool = False
    finished: bool = False
    context: dict[str, Any] = field(default_factory=dict)  # more of the log line: a batch item's job, say

    # --- what routes call -------------------------------------------------------------------
    def serve(self, model: ModelConfig) -> None:
        """The request goes to `model`: from here on it counts under that model's name. A gateway's
        next attempt serves it again, and a universal request's next step may serve another model."""
        if self.in_flight:
            if model.name == self.model:
                return
            metrics.IN_FLIGHT.labels(self.model).dec()
        self.model, self.pricing = model.name, model.pricing
        self.in_flight = True
        metrics.IN_FLIGHT.labels(self.model).inc()

    def use_adapter(self, name: str) -> None:
        """The request runs with the fine-tune the server resolved, counted under its stored name."""
        self.lora = name

    def show_input(self, sent: Any) -> None:
        """Keep what the client asked, for the log line; only with `log_prompts: true`."""
        if self.log_prompts:
            self.input = sent

    def embedded(self, prompt_tokens: int) -> None:
        """An embedding request read `prompt_tokens` and generated nothing."""
        self.prompt_tokens = prompt_tokens
        self._count(prompt_tokens, 0)

    def next_attempt(self) -> None:
        """A gateway tries again after a failed attempt: its error is not the outcome's."""
        self.error = None

    def cost_usd(self) -> float | None:
        """What this request's tokens would have cost hosted; None when its model has no pricing."""
        if self.pricing is None:
            return None
        return cost_usd(self.pricing, self.prompt_tokens, self.total_completion_tokens, self.cached_tokens)

    def fail(self, error: errors.WaiError) -> None:
        """The outcome's error; the first one wins (a later one is a consequence)."""
        if self.error is None:
            self.error = error

    async def watch(self, deltas: AsyncIterator[TextDelta]) -> AsyncIterator[TextDelta]:
        """Pass `deltas` through, counting each and noting the error that ends them, if any."""
        try:
            async for delta in deltas:
                self.observe(delta)
                yield delta
        except errors.WaiError as error:
            self.fail(error)
            raise
        except Exception:
            self.fail(errors.internal_error())
            raise

    # --- bookkeeping ------------------------------------------------------------------------
    @property
    def total_completion_tokens(self) -> int:
        return sum(self.completion_tokens.values())

    def observe(self, delta: TextDelta) -> None:
        if self.finished:
            return
        now = time.monotonic()
        if self.queue_seconds is None and delta.queue_seconds is not None:
            self.queue_seconds = delta.queue_seconds
            metrics.REQUEST_QUEUE.labels(self.model, self.lora).observe(delta.queue_seconds)
        new_prompt = cached = 0
        if not self.prompt_tokens and delta.prompt_tokens:
            # The engine knows the cache hits once the prompt is read, by the first delta.
            self.prompt_tokens = new_prompt = delta.prompt_tokens
            self.cached_tokens = cached = delta.cached_tokens
        new_tokens = delta.completion_tokens - self.completion_tokens.get(delta.index, 0)
        if new_tokens > 0:
            self.completion_tokens[delta.index] = delta.completion_tokens
            if self.first_token_at is None:
                self.first_token_at = now
                metrics.TIME_TO_FIRST_TOKEN.labels(self.model, self.lora).observe(now - self.started)
            self.last_token_at = now
        self._count(new_prompt, max(new_tokens, 0), cached)
        if self.log_prompts and delta.text:
            self.output[delta.index] = self.output.get(delta.index, "") + delta.text

    def _count(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> None:
        count_tokens(self.model, self.lora, self.pricing, prompt_tokens, completion_tokens, cached_tokens)

    def code(self, answered: bool) -> str:
        """The outcome's Workers AI code: the error's, 3008 if the client left first, else none."""
        if self.error is not None:
            return str(self.error.code)
        return metrics.NO_CODE if answered else str(errors.request_aborted().code)

    def finish(self, status: int, answered: bool) -> None:
        """Count the request and write its log line, once. `answered`: the last byte was sent."""
        if self.finished:
            return
        self.finished = True
        duration = time.monotonic() - self.started
        code = self.code(answered)
        metrics.REQUESTS.labels(self.model, self.lora, self.protocol, str(status), code).inc()
        metrics.REQUEST_DURATION.labels(self.model, self.lora).observe(duration)
        inter_token = self.inter_token_latency()
        if inter_token is not None:
            metrics.INTER_TOKEN_LATENCY.labels(self.model, self.lora).observe(inter_token)
        if self.in_flight:
            metrics.IN_FLIGHT.labels(self.model).dec()
        log.info(json.dumps(self.log_line(status, code, duration), ensure_ascii=False))

    def inter_token_latency(self) -> float | None:
        """Mean time between tokens over the request; None with fewer than two tokens per choice."""
        steps = max(self.completion_tokens.values(), default=0)
        if steps < 2 or self.first_token_at is None or self.last_token_at is None:
            return None
        return (self.last_token_at - self.first_token_at) / (steps - 1)

    def timings(self) -> dict[str, float | None]:
        """This request's own timings so far, in milliseconds, with vLLM's names: arrival to first
        token, time in the engine's queue, first to last token, the mean time between tokens (none
        below two tokens a choice), and the output tokens per second from arrival to the last token."""
        first, last = self.first_token_at, self.last_token_at
        inter_token = self.inter_token_latency()
        spent = None if last is None else last - self.started
        return {
            "time_to_first_token_ms": _ms(None if first is None else first - self.started),
            "queue_time_ms": _ms(self.queue_seconds),
            "generation_time_ms": _ms(None if first is None or last is None else last - first),
            "mean_itl_ms": _ms(inter_token),
            "tokens_per_second": (round(self.total_completion_tokens / spent, 3) if spent else None),
        }

    def log_line(self, status: int, code: str, duration: float) -> dict[str, Any]:
        line: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": self.request_id,
            "model": self.model,
            "lora": self.lora,
            "protocol": self.protocol,
            "status": status,
            "code": None if code == metrics.NO_CODE else int(code),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.total_completion_tokens,
            "time_to_first_token_s": _rounded(
                None if self.first_token_at is None else self.first_token_at - self.started
            ),
            "queue_s": _rounded(self.queue_seconds),
            "duration_s": _rounded(duration),
        }
        line.update(self.context)
        if self.log_prompts:
            line["prompt"] = self.input
            line["output"] = [self.output[index] for index in sorted(self.output)]
        return line


def count_tokens(
    model: str, lora: str, price: Pricing | None, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> None:
    """Tokens processed, and what they would have cost hosted: for requests and batch items alike.
    `cached_tokens`, the prompt tokens the prefix cache served, are part of `prompt_tokens`."""
    prompt, generation, cost, neurons = _token_counters(model, lora)
    if prompt_tokens:
        prompt.inc(prompt_tokens)
    if completion_tokens:
        generation.inc(completion_tokens)
    if price is not None and (prompt_tokens or completion_tokens):
        fresh = prompt_tokens - cached_tokens
        cost.inc(cost_usd(price, prompt_tokens, completion_tokens, cached_tokens))
        neurons.inc(
            _per_m(fresh, price.neurons_per_m_input_tokens)
            + _per_m(
                cached_tokens, _or_input(price.neurons_per_m_cached_input_tokens, price.neurons_per_m_input_tokens)
            )
            + _per_m(completion_tokens, price.neurons_per_m_output_tokens)
        )


def cost_usd(price: Pricing, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
    """US dollars at the hosted prices; cached prompt tokens at their own price where one is given."""
    return (
        _per_m(prompt_tokens - cached_tokens, price.usd_per_m_input_tokens)
        + _per_m(cached_tokens, _or_input(price.usd_per_m_cached_input_tokens, price.usd_per_m_input_tokens))
        + _per_m(completion_tokens, price.usd_per_m_output_tokens)
    )


def _per_m(tokens: int, per_million: float) -> float:
    return tokens * per_million / 1e6


def _or_input(cached_price: float | None, input_price: float) -> float:
    """Cached prompt tokens cost the input price unless the config gives their own."""
    return input_price if cached_price is None else cached_price


@functools.lru_cache(maxsize=4096)
def _token_counters(model: str, lora: str) -> tuple[Any, Any, Any, Any]:
    """The counters of one model and fine-tune, looked up once: finding a labelled counter costs more
    than adding to it, and streams add to these at every token."""
    return (
        metrics.PROMPT_TOKENS.labels(model, lora),
        metrics.GENERATION_TOKENS.labels(model, lora),
        metrics.COST_USD.labels(model),
        metrics.NEURONS.labels(model),
    )


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def log_one_json_object_per_line() -> None:
    """The request log is JSON lines: no timestamp or level prefix in front of the object."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
