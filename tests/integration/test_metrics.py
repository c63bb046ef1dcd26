"""The numbers on /metrics and in the request log are true: they equal what the clients received.

One known set of requests (sync, stream, a stream the client leaves, a sync request the client
leaves after or while sending its body, errors before and after the model is resolved) against
the session server, then the counters, histograms, gauges and log lines are compared with the
`usage` the clients got.
Requests with an adapter are checked the same way at the end, under their fine-tune's label.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlparse

import httpx
import pytest

from server.config import load_settings
from tests.support.metrics import scrape
from tests.support.repo import DEFAULT_CONFIG, REAL_MODEL, STAND_IN
from tests.support.sse import events, json_events
from tests.support.waiting import wait_for

# The same messages for every request, so that the prompt token count is known for the stream
# the client leaves (it never receives its usage event).
MESSAGES = [{"role": "user", "content": "Tell a long story about a lighthouse keeper, Oswin Marrowgate."}]
SERVED = {"model": REAL_MODEL, "lora": "none"}
PRICING = load_settings(DEFAULT_CONFIG).models[0].pricing


def in_flight(server) -> float:
    return scrape(server).value("wai_requests_in_flight")


@pytest.fixture(scope="module")
def known_requests(server):
    """Send the known set once; return the scrapes around it and what each client received."""
    wait_for(lambda: in_flight(server) == 0, "earlier requests to finish")
    before = scrape(server)
    seen: dict[str, object] = {"log_lines_before": len(server.request_log())}
    with server.client() as client:
        sync = client.post(server.run_url(), json={"messages": MESSAGES, "max_tokens": 24, "seed": 1})
        assert sync.status_code == 200, sync.text
        seen["sync"] = {"id": sync.headers["cf-ai-req-id"], "usage": sync.json()["result"]["usage"]}

        body = {"messages": MESSAGES, "max_tokens": 24, "seed": 2, "stream": True}
        with client.stream("POST", server.run_url(), json=body) as streamed:
            usage = json_events(events(streamed))[-1]["usage"]
        seen["stream"] = {"id": streamed.headers["cf-ai-req-id"], "usage": usage}

        seen["bad_input"] = client.post(server.run_url(), json={"prompt": ""})
        seen["unknown_model"] = client.post(server.run_url("@cf/nobody/no-such-model"), json={"prompt": "Hi"})
    seen["no_key"] = httpx.post(server.run_url(), json={"prompt": "Hi"}, timeout=30)
    seen["left"] = leave_a_stream(server)
    leave_before_the_answer(server)
    leave_before_the_answer(server, body_bytes_sent=10)
    # The server finishes the record of a request it lost once it notices; wait for that.
    wait_for(
        lambda: (scrape(server) - before).value("wai_requests_total") == 8 and in_flight(server) == 0,
        "all eight requests to be counted",
    )
    return before, scrape(server), seen


def leave_a_stream(server, tokens_to_read: int = 3) -> dict:
    """Open a long stream, read a few token events, and hang up."""
    body = {"messages": MESSAGES, "max_tokens": 400, "temperature": 1.5, "seed": 3, "stream": True}
    received = 0
    with server.client() as client, client.stream("POST", server.run_url(), json=body) as response:
        assert response.status_code == 200
        request_id = response.headers["cf-ai-req-id"]
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:]).get("response"):
                received += 1
                if received == tokens_to_read:
                    break
    return {"id": request_id, "received": received, "max_tokens": body["max_tokens"]}


def leave_before_the_answer(server, body_bytes_sent: int | None = None) -> None:
    """Send a sync request (or only the first bytes of its body) and hang up without reading."""
    url = urlparse(server.run_url())
    body = json.dumps({"messages": MESSAGES, "max_tokens": 400}).encode()
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {server.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port)) as connection:
        connection.sendall(head + body[:body_bytes_sent])


def new_log_lines(server, seen) -> list[dict]:
    return server.request_log()[seen["log_lines_before"] :]


def log_line(server, request_id: str) -> dict:
    lines = [line for line in server.request_log() if line["request_id"] == request_id]
    assert len(lines) == 1, f"{len(lines)} log lines for {request_id}"
    return lines[0]


def test_the_left_stream_is_logged_as_aborted_with_the_tokens_it_made(server, known_requests):
    _, _, seen = known_requests
    left = log_line(server, seen["left"]["id"])
    assert left["status"] == 200 and left["code"] == 3008
    # Same messages as the sync request: the prompt count is known without a usage event.
    assert left["prompt_tokens"] == seen["sync"]["usage"]["prompt_tokens"]
    assert seen["left"]["received"] <= left["completion_tokens"] < seen["left"]["max_tokens"]


def test_token_counters_equal_the_usage_clients_received(server, known_requests):
    before, after, seen = known_requests
    delta = after - before
    # What the clients that stayed received, plus what the engine made for the two that left
    # (known from their log lines; the prompt of the left stream is checked above).
    left = [log_line(server, seen["left"]["id"])]
    left += [line for line in new_log_lines(server, seen) if line["status"] == 408]
    assert len(left) == 3
    usages = [seen["sync"]["usage"], seen["stream"]["usage"]]
    prompt = sum(u["prompt_tokens"] for u in usages + left)
    generated = sum(u["completion_tokens"] for u in usages + left)
    assert delta.value("wai_prompt_tokens_total", **SERVED) == prompt
    assert delta.value("wai_generation_tokens_total", **SERVED) == generated
    # Nothing was counted under another model or adapter.
    assert delta.value("wai_prompt_tokens_total") == prompt
    assert delta.value("wai_generation_tokens_total") == generated


def test_cost_counters_price_those_tokens_at_the_configured_rates(known_requests):
    before, after, _ = known_requests
    delta = after - before
    prompt = delta.value("wai_prompt_tokens_total", **SERVED)
    generated = delta.value("wai_generation_tokens_total", **SERVED)
    assert prompt > 0 and generated > 0
    usd = (prompt * PRICING.usd_per_m_input_tokens + generated * PRICING.usd_per_m_output_tokens) / 1e6
    neurons = (prompt * PRICING.neurons_per_m_input_tokens + generated * PRICING.neurons_per_m_output_tokens) / 1e6
    assert delta.value("wai_workers_ai_cost_usd_total", model=REAL_MODEL) == pytest.approx(usd, rel=1e-9)
    assert delta.value("wai_workers_ai_neurons_total", model=REAL_MODEL) == pytest.approx(neurons, rel=1e-9)


def test_each_request_is_counted_once_with_its_outcome(known_requests):
    before, after, seen = known_requests
    delta = after - before
    assert seen["bad_input"].status_code == 400 and seen["unknown_model"].status_code == 400
    assert seen["no_key"].status_code == 401

    def requests(**labels: str) -> float:
        return delta.value("wai_requests_total", protocol="workers_ai", **labels)

    assert requests(**SERVED, status="200", code="none") == 2
    assert requests(**SERVED, status="200", code="3008") == 1  # the stream the client left
    # The sync request the client left, and the one it left halfway through sending: no 500s.
    assert requests(**SERVED, status="408", code="3008") == 2
    assert requests(**SERVED, status="400", code="5006") == 1
    # Failed before a model was resolved: never the raw name the client sent.
    assert requests(model="none", lora="none", status="400", code="5007") == 1
    assert requests(model="none", lora="none", status="401", code="10000") == 1
    assert delta.value("wai_requests_total") == 8
    labels = {
        tuple(sorted(sample_labels.items())) for name, sample_labels, _ in after.samples if name == "wai_requests_total"
    }
    assert not any("no-such-model" in value for pairs in labels for _, value in pairs)


def test_each_histogram_counts_each_request_once(server, known_requests):
    before, after, seen = known_requests
    delta = after - before
    # Every request has a duration. The three whose clients got tokens have a first token, a queue
    # time and (with at least two tokens) an inter-token latency; the sync request left at once
    # may have been aborted before or after its first token, so it counts where its log line says.
    assert delta.value("wai_request_duration_seconds_count") == 8
    assert delta.value("wai_request_duration_seconds_count", **SERVED) == 6
    left_sync = [line for line in new_log_lines(server, seen) if line["status"] == 408]
    has_token = 3 + sum(line["time_to_first_token_s"] is not None for line in left_sync)
    has_gap = 3 + sum(line["completion_tokens"] >= 2 for line in left_sync)
    has_queue = 3 + sum(line["queue_s"] is not None for line in left_sync)
    for histogram, expected in (
        ("wai_time_to_first_token_seconds", has_token),
        ("wai_request_queue_seconds", has_queue),
        ("wai_inter_token_latency_seconds", has_gap),
    ):
        assert delta.value(f"{histogram}_count", **SERVED) == expected, histogram
        assert delta.value(f"{histogram}_count") == expected, histogram
        assert delta.value(f"{histogram}_bucket", **SERVED, le="+Inf") == expected, histogram
        assert delta.value(f"{histogram}_sum", **SERVED) >= 0


def test_nothing_is_left_in_flight(known_requests):
    _, after, _ = known_requests
    assert after.value("wai_requests_in_flight", model=REAL_MODEL) == 0


def test_each_answer_has_one_json_log_line_matching_its_usage(server, known_requests):
    _, _, seen = known_requests
    for kind in ("sync", "stream"):
        line = log_line(server, seen[kind]["id"])
        usage = seen[kind]["usage"]
        assert (line["model"], line["lora"], line["protocol"]) == (REAL_MODEL, "none", "workers_ai")
        assert (line["status"], line["code"]) == (200, None)
        assert (line["prompt_tokens"], line["completion_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        assert 0 <= line["time_to_first_token_s"] <= line["duration_s"]


def test_one_log_line_per_request_with_its_outcome(server, known_requests):
    _, _, seen = known_requests
    lines = new_log_lines(server, seen)
    outcomes = sorted((line["model"], line["status"], line["code"] or 0) for line in lines)
    assert outcomes == sorted(
        [
            (REAL_MODEL, 200, 0),
            (REAL_MODEL, 200, 0),
            (REAL_MODEL, 200, 3008),
            (REAL_MODEL, 408, 3008),
            (REAL_MODEL, 408, 3008),
            (REAL_MODEL, 400, 5006),
            ("none", 400, 5007),
            ("none", 401, 10000),
        ]
    )
    assert "no-such-model" not in json.dumps(lines)


def test_prompts_stay_out_of_the_log_by_default(server, known_requests):
    assert "Marrowgate" not in server.log()


def test_engine_series_share_the_endpoint(server, known_requests):
    _, after, _ = known_requests
    names = after.names()
    for series in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
    ):
        assert series in names, series
    assert after.value("wai_engine_ready", model=REAL_MODEL) == 1


def test_stand_in_requests_count_under_the_served_model(server, known_requests):
    # Requests went to the stand-in name; the label is the configured model that answered.
    _, after, _ = known_requests
    assert all(labels.get("model") != STAND_IN for _, labels, _ in after.samples)


def test_metrics_scrapes_are_not_counted_as_requests(server):
    first = scrape(server)
    second = scrape(server)
    assert (second - first).value("wai_requests_total") == 0


def test_adapter_requests_count_under_their_fine_tune(server, meow):
    """Sync and streamed requests with `lora` count under lora=<the fine-tune's stored name>."""
    wait_for(lambda: in_flight(server) == 0, "earlier requests to finish")
    before = scrape(server)
    body = {"messages": MESSAGES, "max_tokens": 12, "seed": 5, "lora": meow["name"]}
    with server.client() as client:
        sync = client.post(server.run_url(), json=body)
        assert sync.status_code == 200, sync.text
        usages = [sync.json()["result"]["usage"]]
        with client.stream("POST", server.run_url(), json={**body, "stream": True}) as streamed:
            usages.append(json_events(events(streamed))[-1]["usage"])
        ids = [sync.headers["cf-ai-req-id"], streamed.headers["cf-ai-req-id"]]
    wait_for(lambda: (scrape(server) - before).value("wai_requests_total") == 2, "both requests to be counted")
    delta = scrape(server) - before
    adapter = {"model": REAL_MODEL, "lora": meow["name"]}
    assert delta.value("wai_prompt_tokens_total", **adapter) == sum(u["prompt_tokens"] for u in usages)
    assert delta.value("wai_generation_tokens_total", **adapter) == sum(u["completion_tokens"] for u in usages)
    assert delta.value("wai_prompt_tokens_total", **SERVED) == 0
    assert delta.value("wai_requests_total", **adapter, status="200", code="none") == 2
    assert delta.value("wai_request_duration_seconds_count", **adapter) == 2
    assert delta.value("wai_time_to_first_token_seconds_count", **adapter) == 2
    assert in_flight(server) == 0
    for request_id, usage in zip(ids, usages, strict=True):
        line = log_line(server, request_id)
        assert line["lora"] == meow["name"] and line["completion_tokens"] == usage["completion_tokens"]
