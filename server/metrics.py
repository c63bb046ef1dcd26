"""Every Prometheus series wai exports: names, label sets and buckets, in this one module.

The engine's own `vllm:*` series (running and waiting requests, KV cache usage, prefix cache,
preemptions) register themselves in the same default registry, so `GET /metrics` serves both.

With several front-end processes (`wai serve --api-processes N`), every process writes its series
into the folder PROMETHEUS_MULTIPROC_DIR names (set by the supervisor before any of them starts),
and `GET /metrics`, whichever process answers it, serves them all combined (`registry()`): counters
and histograms add up over the processes; each gauge says how it combines (`ACROSS_PROCESSES`). The
`vllm:*` series do as under `vllm serve --api-server-count`: each front end's stat logger writes its
own, counters add up, and the engine's gauges are the value written last.

Label values come only from the config, never from what a client sent:
- `model`: the served model's configured public name (`ModelConfig.name`), whatever alias the
  client used; `none` for a request that failed before a model was resolved (bad key, no route,
  unknown model).
- `lora`: the adapter name the server resolved from its own store; `none` without an adapter.
- `protocol`: `workers_ai`, `openai`, `responses` (OpenAI's Responses API) or `anthropic`, from the route
  that answered (`batch` for a batch item).
- `gateway`: the id of an AI Gateway the server found among its own gateways (declared in the config
  or made through the gateways API), never an id a request named that is not one.
- `status`: the HTTP status sent; `code`: the Workers AI error code of the outcome (server/errors.py),
  `none` on success. A stream the client left after its 200 counts as status 200, code 3008.
"""

from __future__ import annotations

import functools
import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess

NO_MODEL = "none"
NO_LORA = "none"
NO_CODE = "none"

# Latency buckets must resolve a few milliseconds on a GPU (time to first token ~10-50 ms, one decode
# step ~5-20 ms) and tens of seconds on a CPU or under heavy load (first token 2 s at concurrency 32
# on two cores, whole answers of a minute). Roughly 1-2.5-5 steps per decade keep the quantile error
# under about half a step anywhere in that range at ~20 buckets per series.
_DECADES = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0)
# First token and queue: the decades above, up to 100 s (a long queue on a saturated CPU).
LATENCY_BUCKETS = _DECADES
# Time between tokens: one decode step, 1 ms (small model, big GPU) to a few seconds (CPU, big batch).
INTER_TOKEN_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
)
# Whole requests: from a 401 in a millisecond to a 4,000-token answer on a CPU (~10 minutes).
DURATION_BUCKETS = (*_DECADES, 250.0, 600.0)

MODEL = ("model",)
MODEL_LORA = ("model", "lora")

# How a gauge combines over the live front-end processes, in the words the README's table uses.
# (A process's `live*` values leave with it: the supervisor forgets each front end that exits.)
ACROSS_PROCESSES = {
    "livesum": "summed over the front-end processes",
    "livemin": "the lowest of the front-end processes",
    "livemostrecent": "the value a front-end process wrote last",
}

REQUESTS = Counter(
    "wai_requests",
    "Requests answered, by outcome.",
    ("model", "lora", "protocol", "status", "code"),
)
PROMPT_TOKENS = Counter("wai_prompt_tokens", "Prompt tokens processed (after the chat template).", MODEL_LORA)
GENERATION_TOKENS = Counter(
    "wai_generation_tokens",
    "Tokens generated, as in the usage clients get (a client that left: so far).",
    MODEL_LORA,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "wai_time_to_first_token_seconds",
    "From the request's arrival to its first generated token.",
    MODEL_LORA,
    buckets=LATENCY_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "wai_inter_token_latency_seconds",
    "Per request, mean time between generated tokens: (last - first token time) / (tokens - 1).",
    MODEL_LORA,
    buckets=INTER_TOKEN_BUCKETS,
)
REQUEST_DURATION = Histogram(
    "wai_request_duration_seconds",
    "From the request's arrival to the last byte of its answer.",
    MODEL_LORA,
    buckets=DURATION_BUCKETS,
)
REQUEST_QUEUE = Histogram(
    "wai_request_queue_seconds",
    "Time the request waited in the engine's queue before it was scheduled.",
    MODEL_LORA,
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "wai_requests_in_flight",
    "Requests resolved to a model and not yet answered.",
    MODEL,
    multiprocess_mode="livesum",  # each process counts its own requests
)
HTTP_REFUSALS = Counter(
    "wai_http_refusals",
    "Connections and requests the HTTP layer refused before any route, by reason: header_timeout,"
    " body_timeout, header_too_large, max_connections, max_connections_per_client.",
    ["reason"],
)
CONNECTIONS_OPEN = Gauge(
    "wai_http_connections_open",
    "Client connections open (limits.max_connections bounds them).",
    multiprocess_mode="livesum",
)
COST_USD = Counter(
    "wai_workers_ai_cost_usd",
    "What the same tokens would have cost on hosted Workers AI (config prices).",
    MODEL,
)
NEURONS = Counter(
    "wai_workers_ai_neurons",
    "Workers AI neurons the same tokens would have used (config prices).",
    MODEL,
)
ENGINE_READY = Gauge(
    "wai_engine_ready",
    "1 while the model's engine answers; 0 while it starts and after it died.",
    MODEL,
    multiprocess_mode="livemin",  # ready only once every front end reaches the engine
)
BATCH_ITEMS = Counter(
    "wai_batch_items",
    "Async batch items, apart from interactive requests: success, error (failed alone), requeued (to run again).",
    ("model", "outcome"),
)
BATCH_JOBS = Gauge(
    "wai_batch_jobs",
    "Async batch jobs kept, by status: queued, running, done.",
    ("status",),
    multiprocess_mode="livemostrecent",  # counts of the one shared store: the latest count is the true one
)
STORE_UP = Gauge(
    "wai_store_up",
    "1 while the shared store answered its last call, 0 since one failed: postgres (database_url), redis"
    " (redis_url). Present only for the stores configured.",
    ("store",),
    multiprocess_mode="livemin",  # down while any front end cannot reach it
)
STORE_FAILURES = Counter(
    "wai_store_failures",
    "Calls to a shared store that failed (unreachable, timed out), by store and by what was asked of it.",
    ("store", "operation"),
)
KEY_LIMITS_UNSHARED = Counter(
    "wai_key_limits_unshared",
    "Limited keys' requests decided while Redis was unreachable (cluster.key_limits_without_redis):"
    " local (held by this replica alone) or refused.",
    ("outcome",),
)
GATEWAY_CACHE_LOOKUPS = Counter(
    "wai_gateway_cache_lookups",
    "AI Gateway cache lookups, by outcome: hit (answered from the cache) or miss (Redis unreachable included).",
    ("gateway", "outcome"),
)
GATEWAY_CACHE_SERVED_BYTES = Counter(
    "wai_gateway_cache_served_bytes",
    "Bytes of answers served from the AI Gateway cache.",
    ("gateway",),
)
GATEWAY_CACHE_BYTES = Gauge(
    "wai_gateway_cache_bytes",
    "Bytes the in-process AI Gateway cache holds (gateways.cache_max_bytes bounds them); 0 with redis_url.",
    multiprocess_mode="livesum",  # each process keeps its own cache
)
GATEWAY_LIMITS_UNSHARED = Counter(
    "wai_gateway_limits_unshared",
    "Requests through a rate-limited AI Gateway counted in this replica alone while Redis was unreachable.",
    # Labelled, as every counter here: a counter without labels is written at import, by every process
    # (a front-end supervisor too), into the multiprocess folder.
    ("gateway",),
)
GATEWAY_RETRIES = Counter(
    "wai_gateway_retries",
    "Attempts an AI Gateway made again after the engine's retryable error (cf-aig-max-attempts).",
    ("gateway",),
)
STORES = ("postgres", "redis")
BATCH_OUTCOMES = ("success", "error", "requeued")
BATCH_STATUSES = ("queued", "running", "done")


def declare_model(model: str) -> None:
    """Create a configured model's series at zero, so that rate() and alerts see them from the start."""
    for counter in (PROMPT_TOKENS, GENERATION_TOKENS):
        counter.labels(model, NO_LORA)
    for series in (IN_FLIGHT, COST_USD, NEURONS, ENGINE_READY):
        series.labels(model)
    for outcome in BATCH_OUTCOMES:
        BATCH_ITEMS.labels(model, outcome)


@functools.cache
def registry() -> CollectorRegistry:
    """What `GET /metrics` serves: this process's series, or with several front-end processes
    (PROMETHEUS_MULTIPROC_DIR set), every live one's combined."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return combined


def forget_process(pid: int) -> None:
    """A front-end process exited: drop its `live*` gauges (its counters and histograms stay counted)."""
    multiprocess.mark_process_dead(pid)
