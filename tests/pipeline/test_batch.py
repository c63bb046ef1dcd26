"""The async batch API on the fake engine: the wire format, the background priority, per-item errors,
the bounds, and jobs that outlive the app (the real-engine tests are tests/integration/test_batch*.py)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.batch.store import BatchStore, NewItem
from tests.pipeline.requests import ACCOUNT_PATH, run, run_path
from tests.support.envelopes import result, usage, workers_ai_error
from tests.support.fakes import CONTEXT_WINDOW, EMBEDDING_MODEL, TEXT_MODEL, fake_settings
from tests.support.metrics import scrape
from tests.support.repo import STAND_IN
from tests.support.servers import serve_app

QUEUE = {"queueRequest": "true"}


def submit(client: httpx.Client, requests: list[Any], model: str = TEXT_MODEL) -> httpx.Response:
    return client.post(run_path(model), params=QUEUE, json={"requests": requests})


def submitted(client: httpx.Client, requests: list[Any], model: str = TEXT_MODEL) -> str:
    queued = result(submit(client, requests, model))
    assert queued["status"] == "queued" and queued["model"] == model
    return queued["request_id"]


def poll(client: httpx.Client, request_id: str, model: str = TEXT_MODEL) -> httpx.Response:
    return run(client, {"request_id": request_id}, model)


def until_done(client: httpx.Client, request_id: str, model: str = TEXT_MODEL, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while (answer := result(poll(client, request_id, model)))["status"] != "done":
        assert answer["status"] in ("queued", "running")
        assert time.monotonic() < deadline, answer
        time.sleep(0.02)
    return answer


def test_a_batch_answers_at_once_and_each_item_in_order_with_its_reference(client, engine):
    requests = [
        {"prompt": "one", "external_reference": "first", "max_tokens": 2},
        {"messages": [{"role": "user", "content": "two words"}], "external_reference": "second"},
        {"prompt": "three", "max_tokens": 3},
    ]
    request_id = submitted(client, requests)
    done = until_done(client, request_id)
    assert done["request_id"] == request_id and done["model"] == TEXT_MODEL
    responses = done["responses"]
    assert [response["id"] for response in responses] == [0, 1, 2]
    assert [response["external_reference"] for response in responses] == ["first", "second", None]
    assert all(response["success"] and response["errors"] == [] for response in responses)
    assert [response["result"]["response"] for response in responses] == [
        engine.text(max_tokens=2),
        engine.text(),
        engine.text(max_tokens=3),
    ]
    assert [response["result"]["usage"]["completion_tokens"] for response in responses] == [2, 6, 3]
    item_usages = [response["result"]["usage"] for response in responses]
    assert done["usage"] == usage(sum(u["prompt_tokens"] for u in item_usages), 11)
    assert engine.priorities == [1, 1, 1]  # each item behind interactive requests (X-Priority: low's)
    assert result(poll(client, request_id)) == done  # results stay until they expire


def test_each_answer_and_the_jobs_usage_carry_the_cached_prompt_tokens(client, engine):
    engine.cached_tokens = 2
    done = until_done(client, submitted(client, [{"prompt": "one"}, {"prompt": "two"}]))
    assert [response["result"]["usage"]["prompt_tokens_details"] for response in done["responses"]] == [
        {"cached_tokens": 2}
    ] * 2
    assert done["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}


def test_queue_request_in_the_options_and_a_stand_in_name(client):
    response = client.post(run_path(STAND_IN), json={"requests": [{"prompt": "hi"}], "options": {"queueRequest": True}})
    request_id = result(response)["request_id"]
    assert response.headers["x-wai-stand-in"] == TEXT_MODEL
    assert until_done(client, request_id, STAND_IN)["responses"][0]["success"]
    assert until_done(client, request_id, TEXT_MODEL)["model"] == STAND_IN  # the same model's job


def test_an_item_that_fails_running_fails_alone_in_the_envelope_format(client, engine):
    too_long = " ".join(["word"] * CONTEXT_WINDOW)
    requests = [
        {"prompt": "fine", "external_reference": "ok"},
        {"prompt": too_long, "external_reference": "long"},
        {"prompt": "json", "response_format": {"type": "json_object"}},  # the fake's script is no JSON
    ]
    done = until_done(client, submitted(client, requests))
    first, long, json_mode = done["responses"]
    assert first["success"] and first["result"]["response"] == engine.text()
    assert long == {
        "id": 1,
        "result": {},
        "success": False,
        "errors": [{"code": 5021, "message": long["errors"][0]["message"]}],
        "messages": [],
        "external_reference": "long",
    }
    assert "exceeded this model context window limit" in long["errors"][0]["message"]
    assert not json_mode["success"] and json_mode["errors"][0]["code"] == 3030
    assert done["usage"] == first["result"]["usage"]  # failed items count nothing


def test_an_invalid_item_refuses_the_whole_batch(client, engine):
    message = workers_ai_error(submit(client, [{"prompt": "fine"}, {"prompt": ""}]), 400, 5006)
    assert "Length of '/prompt' must be >= 1" in message and "(in requests[1])" in message
    message = workers_ai_error(submit(client, [{"prompt": "x", "stream": True}]), 400, 5006)
    assert "requests[0] asks to stream" in message
    message = workers_ai_error(submit(client, [{"prompt": "x", "external_reference": 7}]), 400, 5006)
    assert "requests[0].external_reference must be a string" in message
    for body in ({"requests": []}, {"requests": "all of them"}, {"prompt": "no requests"}):
        assert "needs a body" in workers_ai_error(client.post(run_path(), params=QUEUE, json=body), 400, 5006)
    no_flag = run(client, {"requests": [{"prompt": "x"}]})
    assert "needs queueRequest=true" in workers_ai_error(no_flag, 400, 5006)
    embeddings = submit(client, [{"text": "x"}], EMBEDDING_MODEL)
    assert "text-generation models" in workers_ai_error(embeddings, 400, 5006)
    assert engine.requests == []


def test_an_unknown_or_other_models_request_id_is_404(client):
    assert "No such batch request nope" in workers_ai_error(poll(client, "nope"), 404, 3045)
    request_id = submitted(client, [{"prompt": "x"}])
    workers_ai_error(poll(client, request_id, EMBEDDING_MODEL), 404, 3045)
    assert "request_id must be" in workers_ai_error(poll(client, 5), 400, 5006)  # type: ignore[arg-type]
    until_done(client, request_id)


def test_batch_items_count_in_the_metrics_as_requests_of_protocol_batch(client):
    before = scrape(client)
    request_id = submitted(client, [{"prompt": "a"}, {"prompt": " ".join(["word"] * CONTEXT_WINDOW)}])
    until_done(client, request_id)
    after = scrape(client)
    delta = after - before
    assert delta.value("wai_batch_items_total", model=TEXT_MODEL, outcome="success") == 1
    assert delta.value("wai_batch_items_total", model=TEXT_MODEL, outcome="error") == 1
    # Each item is a request of protocol batch, with its own status and code, as an HTTP request is.
    assert delta.value("wai_requests_total", model=TEXT_MODEL, protocol="batch", status="200", code="none") == 1
    assert delta.value("wai_requests_total", model=TEXT_MODEL, protocol="batch", status="413", code="5021") == 1
    # The submission and the polls are the API requests, and they all succeeded.
    assert delta.value("wai_requests_total", model=TEXT_MODEL, protocol="workers_ai", status="200") >= 2
    assert delta.value("wai_requests_total", protocol="workers_ai", code="5021") == 0
    assert after.value("wai_batch_jobs", status="done") >= 1
    assert after.value("wai_requests_in_flight", model=TEXT_MODEL) == 0


def test_a_batch_item_is_measured_and_logged_as_the_same_http_request_is(client, caplog):
    """The same input run interactively and as a batch item: the same series move by the same
    amounts (but for the protocol label), and the two log lines have the same fields, the item's
    with its job, item, attempt and outcome beside them."""
    body = {"prompt": "the same input", "max_tokens": 5}
    series = (
        "wai_requests_total",
        "wai_prompt_tokens_total",
        "wai_generation_tokens_total",
        "wai_request_duration_seconds_count",
        "wai_time_to_first_token_seconds_count",
        "wai_inter_token_latency_seconds_count",
        "wai_workers_ai_cost_usd_total",
    )
    with caplog.at_level("INFO", logger="wai.requests"):
        before = scrape(client)
        result(run(client, body))
        interactive = scrape(client) - before
        request_id = submitted(client, [body])
        until_done(client, request_id)
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == "wai.requests"]
    batched = scrape(client) - before
    for name in series:
        http = interactive.value(name, model=TEXT_MODEL)
        assert http > 0 or name == "wai_workers_ai_cost_usd_total", name
        if name == "wai_requests_total":
            assert batched.value(name, model=TEXT_MODEL, protocol="batch") == http == 1
        elif name == "wai_request_duration_seconds_count":  # every request observes one: polls too
            assert batched.value(name, model=TEXT_MODEL) == batched.value("wai_requests_total", model=TEXT_MODEL)
        else:
            assert batched.value(name, model=TEXT_MODEL) == pytest.approx(2 * http), name
    http_line = next(line for line in lines if line["protocol"] == "workers_ai" and line["completion_tokens"])
    item_line = next(line for line in lines if line["protocol"] == "batch")
    assert set(item_line) == set(http_line) | {"batch", "item", "attempt", "outcome"}
    assert (item_line["batch"], item_line["item"], item_line["attempt"], item_line["outcome"]) == (
        request_id,
        0,
        1,
        "success",
    )
    assert item_line["status"] == 200 and item_line["code"] is None
    for field in ("model", "lora", "prompt_tokens", "completion_tokens"):
        assert item_line[field] == http_line[field], field


@pytest.fixture
def small_app(tmp_path):
    """An app of its own with small batch bounds, and its database path."""
    batch = {"max_items_per_job": 3, "max_payload_bytes": 1024, "max_jobs": 2, "result_retention_s": 0.5}
    with serve_app(fake_settings(tmp_path, batch=batch)) as served:
        yield served


def test_an_idle_runner_looks_for_work_once_a_second_not_in_a_loop(client, monkeypatch):
    """An idle server costs no CPU: the runner waits to be woken (or IDLE_POLL_S) between looks."""
    looks = []
    claim = BatchStore.claim
    monkeypatch.setattr(BatchStore, "claim", lambda store: looks.append(1) or claim(store))
    time.sleep(1.5)
    assert 1 <= len(looks) <= 3, len(looks)
    request_id = submitted(client, [{"prompt": "woken at once"}])  # a submission still wakes it
    assert until_done(client, request_id, timeout=0.5)["responses"][0]["success"]


def test_the_bounds_refuse_with_clear_errors_and_results_expire(small_app):
    with small_app.client() as client:
        message = workers_ai_error(submit(client, [{"prompt": "x"}] * 4), 400, 5006)
        assert "a batch holds at most 3 requests, not 4" in message
        message = workers_ai_error(submit(client, [{"prompt": "x" * 1100}]), 413, 3006)
        assert "at most 1024 bytes" in message
        small_app.text_engine.delay = 0.2  # the first job is still running when the third comes
        first, second = submitted(client, [{"prompt": "x"}]), submitted(client, [{"prompt": "y"}])
        full = submit(client, [{"prompt": "z"}])
        assert "Too many batch jobs kept (2)" in workers_ai_error(full, 429, 3046)
        assert full.headers["retry-after"] == "60"
        until_done(client, first)
        until_done(client, second)
        time.sleep(0.6)  # past the retention: the next submission makes room
        third = submitted(client, [{"prompt": "z"}])
        workers_ai_error(poll(client, first), 404, 3045)
        until_done(client, third)


def item_states(db: Path, request_id: str) -> list[tuple[str, int, int]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT state, attempts, completions FROM items WHERE job = ? ORDER BY idx", (request_id,)
        )
        return list(rows)


def test_items_running_at_shutdown_go_back_to_the_queue_and_finish_after_a_restart(tmp_path):
    settings = fake_settings(tmp_path, batch={"concurrency": 2})
    db = settings.batch_db_path
    with serve_app(settings) as served, served.client() as client:
        served.text_engine.delay = 0.5  # six steps: three seconds an item
        request_id = submitted(client, [{"prompt": f"item {index}"} for index in range(4)])
        deadline = time.monotonic() + 10
        while [state for state, _, _ in item_states(db, request_id)].count("running") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        aborted = served.text_engine.aborted
    assert len(aborted) == 2  # the stop cancelled both engine requests
    assert item_states(db, request_id) == [("queued", 1, 0)] * 2 + [("queued", 0, 0)] * 2
    with serve_app(settings) as served, served.client() as client:
        done = until_done(client, request_id)
        assert all(response["success"] for response in done["responses"])
        assert sorted(served.text_engine.requests) == sorted(
            [f"batch-{request_id}-{index}-2" for index in (0, 1)]
            + [f"batch-{request_id}-{index}-1" for index in (2, 3)]
        )
    assert item_states(db, request_id) == [("done", 2, 1)] * 2 + [("done", 1, 1)] * 2


def test_the_account_path_needs_the_same_key_as_run(tmp_path):
    with serve_app(fake_settings(tmp_path, api_keys=["secret"])) as served, served.client() as client:
        refused = client.post(f"{ACCOUNT_PATH}/run/{TEXT_MODEL}", params=QUEUE, json={"requests": [{"prompt": "x"}]})
        workers_ai_error(refused, 401, 10000)
        workers_ai_error(poll(client, "anything"), 401, 10000)
        client.headers["Authorization"] = "Bearer secret"
        until_done(client, submitted(client, [{"prompt": "x"}]))


def test_an_item_that_keeps_bringing_the_server_down_is_given_up(tmp_path):
    settings = fake_settings(tmp_path)
    store = BatchStore.open(settings.batch_db_path)
    store.submit(
        "job", TEXT_MODEL, [NewItem('{"prompt": "deadly"}', "null"), NewItem('{"prompt": "fine"}', "null")], 1.0, 10
    )
    for _ in range(3):  # three processes died running it: each start finds it running
        assert store.claim().index == 0
        store.close()
        store = BatchStore.open(settings.batch_db_path)
    store.close()
    with serve_app(settings) as served, served.client() as client:
        deadly, fine = until_done(client, "job")["responses"]
        assert deadly["errors"] == [{"code": 3043, "message": "Internal server error"}] and fine["success"]
        assert served.text_engine.requests == ["batch-job-1-1"]
