"""The Responses API's stored responses with `database_url`: two replicas (apps on the fakes) sharing one
Postgres database answer for each other's responses; Postgres down answers 503 / 3048 in OpenAI's error
format where a call needs the store. The SQLite store's own rules: test_responses.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from server.config import Settings
from tests.support.envelopes import openai_body, openai_error
from tests.support.fakes import TEXT_MODEL, fake_settings
from tests.support.servers import serve_app
from tests.support.stores import postgres_server, until_refused
from tests.support.waiting import wait_for

RESPONSES = "/v1/responses"


def shared_settings(root: Path, database_url: str) -> Settings:
    return fake_settings(root, database_url=database_url, cluster={"store_timeout_s": 1})


def create(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post(RESPONSES, json={"model": TEXT_MODEL, "input": "Weather in Paris?", **body})


def stream_events(client: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    with client.stream("POST", RESPONSES, json={"model": TEXT_MODEL, "input": "Hi", "stream": True, **body}) as r:
        assert r.status_code == 200
        return [json.loads(line.removeprefix("data: ")) for line in r.iter_lines() if line.startswith("data: ")]


def streamed(client: httpx.Client, **body: Any) -> dict[str, Any]:
    """The response as a stream's last event carries it."""
    events = stream_events(client, **body)
    assert events[-1]["type"] == "response.completed", events[-1]
    return events[-1]["response"]


def test_a_response_kept_by_one_replica_is_read_continued_and_deleted_through_another(postgres, tmp_path):
    url = postgres.new_database()
    with (
        serve_app(shared_settings(tmp_path / "a", url)) as a,
        serve_app(shared_settings(tmp_path / "b", url)) as b,
        a.client() as through_a,
        b.client() as through_b,
    ):
        first = openai_body(create(through_a))
        assert openai_body(through_b.get(f"{RESPONSES}/{first['id']}")) == first
        later = openai_body(create(through_b, input="And tomorrow?", previous_response_id=first["id"]))
        assert later["previous_response_id"] == first["id"]
        prompt_after_two_turns = list(b.text_engine.last_prompt or [])
        stream = streamed(through_a, previous_response_id=later["id"])
        assert len(a.text_engine.last_prompt or []) > len(prompt_after_two_turns)  # both turns before it
        assert openai_body(through_b.get(f"{RESPONSES}/{stream['id']}"))["id"] == stream["id"]
        deleted = openai_body(through_b.delete(f"{RESPONSES}/{first['id']}"))
        assert deleted == {"id": first["id"], "object": "response.deleted", "deleted": True}
        openai_error(through_a.get(f"{RESPONSES}/{first['id']}"), 404, 3047)
        openai_error(through_a.delete(f"{RESPONSES}/{first['id']}"), 404, 3047)


def test_postgres_down_answers_503_where_the_store_is_needed_and_text_still_serves(tmp_path):
    with postgres_server() as server:
        url = server.new_database()
        with serve_app(shared_settings(tmp_path, url)) as served, served.client() as client:
            kept = openai_body(create(client))
            server.stop()
            until_refused(url)
            for refused in (
                client.get(f"{RESPONSES}/{kept['id']}"),
                client.delete(f"{RESPONSES}/{kept['id']}"),
                create(client, previous_response_id=kept["id"]),
                create(client),  # store: true, OpenAI's default: the answer could not be kept
            ):
                error = openai_error(refused, 503, 3048)
                assert error["message"] == "The responses store is unavailable, please try again."
                assert error["type"] == "server_error" and refused.headers["retry-after"] == "5"
            last = stream_events(client)[-1]  # a stream has begun: the failure to keep it is its last event
            assert (last["type"], last["code"]) == ("error", "3048")
            assert openai_body(create(client, store=False))["status"] in ("completed", "incomplete")
            server.start()
            back = wait_for(lambda: answered(client.get(f"{RESPONSES}/{kept['id']}")), "the store to be back", 30)
            assert back.json() == kept


def answered(response: httpx.Response) -> httpx.Response | None:
    """The answer once the store is back (the pool reconnects by itself); None while it still is not."""
    if response.status_code == 503:
        return None
    return response
