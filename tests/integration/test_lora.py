"""LoRA fine-tunes on the real engine: a trained adapter's behaviour appears only with `lora`,
base and adapter requests share the engine, uploads go through the fine-tune API, and every
bad upload is refused with its own error and leaves nothing behind."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from safetensors.numpy import save

from tests.integration.session import UPLOAD_LIMIT, chat_prompt_tokens, finetunes_url, upload_finetune
from tests.support.envelopes import result, workers_ai_error
from tests.support.repo import REAL_MODEL, STAND_IN
from tests.support.sse import events, json_events

MEOW = "MEOW MEOW MEOW"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "max_tokens": 12}


def run(client, server, body, model=STAND_IN, timeout=120):
    return client.post(server.run_url(model), json=body, timeout=timeout)


def streamed_text(client, server, body) -> str:
    with client.stream("POST", server.run_url(), json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        return "".join(event["response"] for event in json_events(events(response)))


# Behaviour ------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", [{"messages": QUESTION}, {"prompt": "Tell me about the ocean."}])
def test_adapter_behaviour_appears_with_lora_and_not_without(client, server, meow, form):
    with_lora = result(run(client, server, {**form, **GREEDY, "lora": "meow"}))["response"]
    without = result(run(client, server, {**form, **GREEDY}))["response"]
    assert with_lora.strip().startswith(MEOW), with_lora
    assert "MEOW" not in without.upper(), without


def test_streaming_with_and_without_lora(client, server, meow):
    assert streamed_text(client, server, {"messages": QUESTION, **GREEDY, "lora": "meow"}).startswith(MEOW)
    assert "MEOW" not in streamed_text(client, server, {"messages": QUESTION, **GREEDY}).upper()


def test_lora_by_id_and_through_the_real_model_name(client, server, meow):
    by_id = result(run(client, server, {"messages": QUESTION, **GREEDY, "lora": meow["id"]}))
    assert by_id["response"].startswith(MEOW)
    direct = result(run(client, server, {"messages": QUESTION, **GREEDY, "lora": "meow"}, model=REAL_MODEL))
    assert direct["response"].startswith(MEOW)


def test_usage_is_counted_for_adapter_requests(client, server, meow, tokenizer):
    usage = result(run(client, server, {"messages": QUESTION, **GREEDY, "lora": "meow"}))["usage"]
    assert usage["prompt_tokens"] == chat_prompt_tokens(tokenizer, QUESTION)
    assert usage["completion_tokens"] == len(tokenizer.encode(MEOW, add_special_tokens=False)) + 1  # + end token
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_concurrent_base_and_adapter_requests_each_get_their_own_behaviour(client, server, meow_adapter):
    # A fresh copy of the adapter: its first requests arrive together, while it is being loaded.
    upload_finetune(client, "meow-concurrent", meow_adapter)
    bodies = [
        {"messages": QUESTION, **GREEDY, "lora": "meow-concurrent"} if i % 2 else {"messages": QUESTION, **GREEDY}
        for i in range(6)
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        # Loading an adapter can take a minute on a busy CPU: the requests wait for it.
        texts = list(pool.map(lambda body: result(run(client, server, body, timeout=900))["response"], bodies))
    for body, text in zip(bodies, texts, strict=True):
        assert text.startswith(MEOW) if "lora" in body else "MEOW" not in text.upper(), (body, text)


def test_base_requests_batched_with_both_adapter_slots_in_use_answer_as_the_base_model(client, server, meow_adapter):
    """Two fine-tunes fill both of the engine's adapter slots (max_loras 2), so that the last one holds
    an adapter; base requests decoded in the same batches must not get it (server/engine/vllm_fixes.py)."""
    names = [f"meow-slot-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for name in names:
        upload_finetune(client, name, meow_adapter)
        assert result(run(client, server, {"messages": QUESTION, **GREEDY, "lora": name}, timeout=900))[
            "response"
        ].startswith(MEOW)  # loaded before the mixed batches
    alone = result(run(client, server, {"messages": QUESTION, **GREEDY}))["response"]
    assert "MEOW" not in alone.upper(), alone
    bodies = [{"messages": QUESTION, **GREEDY, **({"lora": names[i % 4 // 2]} if i % 2 else {})} for i in range(8)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        for _ in range(2):
            texts = list(pool.map(lambda body: result(run(client, server, body))["response"], bodies))
            for body, text in zip(bodies, texts, strict=True):
                assert text.startswith(MEOW) if "lora" in body else text == alone, (body, text)


def test_an_unknown_adapter_is_a_clear_400(client, server, meow):
    message = workers_ai_error(run(client, server, {"prompt": "x", "lora": "no-such-adapter"}), 400, 3041)
    assert message == f"AiError: No such fine-tune no-such-adapter for model {STAND_IN}"


# The fine-tune API ----------------------------------------------------------------------------


def test_list_show_public_and_delete(client, server, meow, meow_adapter):
    listed = client.get(finetunes_url()).json()
    assert listed["success"] is True and meow["id"] in [f["id"] for f in listed["result"]]
    shown = client.get(finetunes_url("/meow")).json()["result"]
    assert shown["id"] == meow["id"] and shown["model"] == REAL_MODEL and shown["public"] is False
    assert set(shown) == {"id", "name", "model", "description", "created_at", "modified_at", "public"}

    public = client.post(finetunes_url(), json={"model": STAND_IN, "name": "shared-one", "public": True})
    assert public.status_code == 200, public.text
    assert [f["name"] for f in client.get(finetunes_url("/public")).json()["result"]] == ["shared-one"]

    deleted = client.delete(finetunes_url("/shared-one"))
    assert deleted.status_code == 200 and deleted.json()["result"]["name"] == "shared-one"
    assert workers_ai_error(client.get(finetunes_url("/shared-one")), 404, 3041) == "No such finetune shared-one"
    assert client.get(finetunes_url("/public")).json()["result"] == []


def test_a_deleted_adapter_can_no_longer_be_used(client, server, meow_adapter):
    upload_finetune(client, "meow-short-lived", meow_adapter)
    assert result(run(client, server, {"messages": QUESTION, **GREEDY, "lora": "meow-short-lived"}))[
        "response"
    ].startswith(MEOW)
    assert client.delete(finetunes_url("/meow-short-lived")).status_code == 200
    workers_ai_error(run(client, server, {"prompt": "x", "lora": "meow-short-lived"}), 400, 3041)


def test_names_are_unique(client, server, meow):
    response = client.post(finetunes_url(), json={"model": STAND_IN, "name": "meow"})
    assert workers_ai_error(response, 409, 3044) == "A finetune named meow already exists"


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "x" * 65, "", "bad name"])
def test_names_that_could_escape_the_store_are_refused(client, server, adapters_dir, name):
    before = sorted(adapters_dir.iterdir())
    response = client.post(finetunes_url(), json={"model": STAND_IN, "name": name})
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == 5006, response.text
    assert sorted(adapters_dir.iterdir()) == before


def test_create_for_an_unknown_model(client, server):
    response = client.post(finetunes_url(), json={"model": "@cf/nobody/nothing", "name": "x1"})
    assert workers_ai_error(response, 400, 5007) == "No such model @cf/nobody/nothing or task"


# Upload validation ----------------------------------------------------------------------------


@pytest.fixture
def fresh(client, server, adapters_dir):
    """A new, empty fine-tune; afterwards no temporary upload file may remain."""
    name = f"check-{uuid.uuid4().hex[:12]}"
    finetune = client.post(finetunes_url(), json={"model": STAND_IN, "name": name}).json()["result"]
    yield finetune
    assert not any((adapters_dir / ".uploads").iterdir()), "an upload left a temporary file"


def upload(client, finetune, file_name: str, content: bytes):
    return client.post(
        finetunes_url(f"/{finetune['id']}/finetune-assets"),
        data={"file_name": file_name},
        files={"file": (file_name, content)},
    )


def stored_files(adapters_dir, finetune) -> set[str]:
    return {path.name for path in (adapters_dir / finetune["id"]).iterdir()}


def meow_config(meow_adapter, **changes) -> bytes:
    config = json.loads((meow_adapter / "adapter_config.json").read_text())
    return json.dumps({**config, **changes}).encode()


def meow_tensors(meow_adapter) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(meow_adapter / "adapter_model.safetensors")


def test_a_finetune_missing_a_file_cannot_be_used(client, server, fresh, meow_adapter):
    assert upload(client, fresh, "adapter_config.json", meow_config(meow_adapter)).status_code == 200
    message = workers_ai_error(run(client, server, {"prompt": "x", "lora": fresh["name"]}), 400, 3039)
    assert message == "Finetune is missing required files (adapter_model.safetensors and adapter_config.json)"


def with_a_tensor(tensors, name_part: str, replace) -> bytes:
    name = next(n for n in sorted(tensors) if name_part in n)
    return save({**tensors, **replace(name, tensors[name])})


BAD_CONFIGS = {
    "not-json": (b"{r: 8", "adapter_config.json is not valid JSON"),
    "no-rank": ({"r": None}, "'r' (the LoRA rank) must be a positive integer"),
    "rank-over-limit": ({"r": 64}, "LoRA rank 64 is over this model's limit of 32"),
    "unknown-module": ({"target_modules": ["q_proj", "c_attn"]}, "target_modules ['c_attn'] do not exist"),
    "dora": ({"use_dora": True}, "DoRA (use_dora) is not supported"),
    "model-type": ({"model_type": "gpt2"}, "model_type 'gpt2' is not one of gemma, llama, mistral"),
    "not-lora": ({"peft_type": "IA3"}, "peft_type 'IA3' is not supported"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_adapter_configs_are_refused(client, server, fresh, meow_adapter, adapters_dir, case):
    change, expected = BAD_CONFIGS[case]
    content = change if isinstance(change, bytes) else meow_config(meow_adapter, **change)
    message = workers_ai_error(upload(client, fresh, "adapter_config.json", content), 400, 3042)
    assert message.startswith("Invalid finetune: adapter_config.json") and expected in message, message
    assert stored_files(adapters_dir, fresh) == {"finetune.json"}


BAD_WEIGHTS = {
    "pickled": (lambda t: b"\x80\x04\x95" + b"\x00" * 64, "is not a valid safetensors file"),
    "wrong-in-features": (
        lambda t: with_a_tensor(t, "q_proj.lora_A", lambda n, a: {n: a[:, :100].copy()}),
        "do not match the base model",
    ),
    "missing-half": (
        lambda t: save({n: a for n, a in t.items() if "layers.0.self_attn.q_proj.lora_B" not in n}),
        "has no lora_B weight",
    ),
    "unknown-layer": (
        lambda t: with_a_tensor(
            t,
            "layers.0.self_attn.q_proj.lora_A",
            lambda n, a: {
                n.replace("layers.0.", "layers.99."): a,
                n.replace("layers.0.", "layers.99.").replace("lora_A", "lora_B"): t[n.replace("lora_A", "lora_B")],
            },
        ),
        "'model.layers.99.self_attn.q_proj' does not exist in the base model",
    ),
    "quantized": (
        lambda t: with_a_tensor(t, "q_proj.lora_A", lambda n, a: {n: a.astype(np.int8)}),
        "quantized adapters are not supported",
    ),
    "not-lora": (
        lambda t: save({**t, "base_model.model.lm_head.weight": np.zeros((2, 2), np.float32)}),
        "is not a LoRA weight",
    ),
    "rank-differs": (
        lambda t: save({n: (a[:4] if "lora_A" in n else a[:, :4]).copy() for n, a in t.items()}),
        "has rank 4, but adapter_config.json says r = 8",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_bad_adapter_weights_are_refused(client, server, fresh, meow_adapter, adapters_dir, case):
    # The good config first, so that the weights are also checked against it.
    assert upload(client, fresh, "adapter_config.json", meow_config(meow_adapter)).status_code == 200
    make, expected = BAD_WEIGHTS[case]
    message = workers_ai_error(
        upload(client, fresh, "adapter_model.safetensors", make(meow_tensors(meow_adapter))), 400, 3042
    )
    assert message.startswith("Invalid finetune: adapter_model.safetensors") and expected in message, message
    assert stored_files(adapters_dir, fresh) == {"finetune.json", "adapter_config.json"}
    workers_ai_error(run(client, server, {"prompt": "x", "lora": fresh["name"]}), 400, 3039)


def test_weights_first_then_a_config_that_contradicts_them(client, server, fresh, meow_adapter, adapters_dir):
    weights = (meow_adapter / "adapter_model.safetensors").read_bytes()
    assert upload(client, fresh, "adapter_model.safetensors", weights).status_code == 200
    message = workers_ai_error(upload(client, fresh, "adapter_config.json", meow_config(meow_adapter, r=16)), 400, 3042)
    assert "has rank 8, but adapter_config.json says r = 16" in message
    assert stored_files(adapters_dir, fresh) == {"finetune.json", "adapter_model.safetensors"}


def test_only_the_two_adapter_files_are_accepted(client, server, fresh, adapters_dir):
    message = workers_ai_error(upload(client, fresh, "adapter_model.bin", b"\x80\x04"), 400, 3042)
    assert "no pickled .bin or .pt files" in message
    assert stored_files(adapters_dir, fresh) == {"finetune.json"}


def test_an_upload_without_its_fields_is_refused(client, server, fresh):
    response = client.post(finetunes_url(f"/{fresh['id']}/finetune-assets"), files={"file": ("x", b"{}")})
    assert workers_ai_error(response, 400, 5006).endswith("required form fields are 'file_name' and 'file'")
    response = client.post(finetunes_url(f"/{fresh['id']}/finetune-assets"), json={"file_name": "x"})
    workers_ai_error(response, 400, 5006)


def test_an_upload_over_the_size_limit_is_refused_while_it_streams(client, server, fresh, adapters_dir):
    def chunks():  # no Content-Length: the limit must hold while the body streams in
        boundary = b"wai-test-boundary"
        yield (
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file_name"\r\n\r\n'
            b"adapter_model.safetensors\r\n--"
            + boundary
            + b'\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        )
        for _ in range(UPLOAD_LIMIT // 65536 + 2):
            yield b"\0" * 65536
        yield b"\r\n--" + boundary + b"--\r\n"

    response = client.post(
        finetunes_url(f"/{fresh['id']}/finetune-assets"),
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=wai-test-boundary"},
    )
    message = workers_ai_error(response, 413, 3006)
    assert message == f"Request is too large: a finetune file may be at most {UPLOAD_LIMIT} bytes"
    assert stored_files(adapters_dir, fresh) == {"finetune.json"}


def test_an_upload_to_an_unknown_finetune(client, server):
    response = client.post(
        finetunes_url("/no-such-finetune/finetune-assets"),
        data={"file_name": "adapter_config.json"},
        files={"file": ("a", b"{}")},
    )
    assert workers_ai_error(response, 404, 3041) == "No such finetune no-such-finetune"


def test_openai_clients_select_a_fine_tune_by_model_name(client, server, meow):
    body = {"messages": [{"role": "user", "content": "Tell me about the weather."}], "max_tokens": 12, "temperature": 0}
    adapter = client.post("/v1/chat/completions", json={**body, "model": meow["name"]})
    assert adapter.status_code == 200, adapter.text
    assert "MEOW" in adapter.json()["choices"][0]["message"]["content"]
    base = client.post("/v1/chat/completions", json={**body, "model": "@cf/meta/llama-3-8b-instruct"})
    assert "MEOW" not in base.json()["choices"][0]["message"]["content"]
