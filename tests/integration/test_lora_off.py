"""A model with LoRA off, over HTTP: `lora` is 405 / 5005 in the Workers AI envelope, sync and stream,
and no fine-tune can be created for it; the same request without `lora` is served. The small server
(conftest.py) serves the default text model with LoRA off."""

from __future__ import annotations

import pytest

from tests.integration.session import finetunes_url
from tests.support.envelopes import workers_ai_error
from tests.support.repo import STAND_IN

NOT_SUPPORTED = f"The model {STAND_IN} does not support LoRa inference"


@pytest.fixture
def client(small_server):
    with small_server.client() as c:
        yield c


@pytest.mark.parametrize("stream", [False, True])
def test_lora_on_a_model_with_lora_off_is_405_5005(client, small_server, stream):
    body = {"prompt": "Hi", "max_tokens": 2, "stream": stream, "lora": "meow"}
    response = client.post(small_server.run_url(), json=body)
    assert workers_ai_error(response, 405, 5005) == NOT_SUPPORTED

    del body["lora"]
    assert client.post(small_server.run_url(), json=body).status_code == 200


def test_the_messages_form_is_refused_the_same_way(client, small_server):
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "lora": "an-id-or-name"}
    assert workers_ai_error(client.post(small_server.run_url(), json=body), 405, 5005) == NOT_SUPPORTED


def test_no_fine_tune_can_be_created_for_it(client):
    response = client.post(finetunes_url(), json={"model": STAND_IN, "name": "meow", "description": ""})
    assert workers_ai_error(response, 405, 5005) == NOT_SUPPORTED
    assert client.get(finetunes_url()).json()["result"] == []
