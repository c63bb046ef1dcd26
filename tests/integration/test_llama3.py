"""The Llama 3 path over HTTP on the real engine: token counts in Llama 3 tokens through Meta's chat
template, the stop tokens, the 7,968-token window, raw prompts and LoRA uploads shaped for Llama 3.

By default the server runs configs/llama-3-tiny.yaml: Meta Llama 3's tokenizer and Instruct template
on a tiny random-weight model (`wai prepare` recipe llama-3-tiny-random) whose greedy answers are
known: "3210" then <|eot_id|> in a chat; after a raw prompt ending in a digit, a countdown to "0" then
<|eot_id|>; after one ending in a letter "a".."j", back to "a" then <|end_of_text|>.
WAI_LLAMA3_CONFIG=configs/llama-3-8b-instruct.yaml runs the same tests against the real model on a
GPU node: each test then checks what holds for any Llama 3 Instruct model, and the one that needs the
tiny model's known answers says so in its skip reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PretrainedConfig

from server.config import ModelConfig, load_settings
from server.llama3_checkpoints import (
    BEGIN_OF_TEXT,
    DIGITS,
    DOUBLE_NEWLINE,
    END_OF_TEXT,
    EOT,
    LETTERS,
    tiny_llama3_model,
    tiny_llama3_successors,
)
from server.prepare import resolve_checkpoint
from tests.integration.session import LLAMA3 as LLAMA3_SERVER
from tests.integration.session import finetunes_url, llama3_config, upload_finetune
from tests.support.envelopes import result
from tests.support.servers import RunningServer
from tests.support.sse import events, json_events

LLAMA3 = "@cf/meta/llama-3-8b-instruct"
TINY = "@cf/wai/llama-3-tiny-random"
WINDOW = 7968
# README's example request, the one users try first.
README_MESSAGES = [
    {"role": "system", "content": "You are a friendly assistant"},
    {"role": "user", "content": "Why is pizza so good?"},
]
# A question any instruction-tuned model answers well within 64 tokens, and then stops.
SHORT_ANSWER = [
    {"role": "system", "content": "Answer with one word."},
    {"role": "user", "content": "Is the sky blue on a clear day?"},
]
SPECIAL_TOKENS = ("<|eot_id|>", "<|end_of_text|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>")
LLAMA3_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# SmolLM2-135M-Instruct, the default config's model: what a fine-tune made for it looks like.
SMOLLM2_135M = LlamaConfig(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    tie_word_embeddings=True,
)


@dataclass
class Served:
    server: RunningServer
    model: ModelConfig
    checkpoint: str
    tokenizer: object

    @property
    def is_tiny(self) -> bool:
        """Whether the served weights are the tiny model's, whose answers are known."""
        return self.model.weights.recipe == "llama-3-tiny-random"


@pytest.fixture(scope="module")
def llama3(tmp_path_factory) -> Served:
    """One server for the module (session.py's launch_llama3, started early): the tiny Llama 3 model, or
    the config WAI_LLAMA3_CONFIG names."""
    server = LLAMA3_SERVER.ready(tmp_path_factory)
    settings = load_settings(llama3_config())
    [model] = [m for m in settings.models if LLAMA3 in m.served_names]
    checkpoint = resolve_checkpoint(model, settings.cache_dir)
    try:
        yield Served(server, model, checkpoint, AutoTokenizer.from_pretrained(checkpoint))
    finally:
        server.stop()


@pytest.fixture
def client(llama3: Served):
    with llama3.server.client() as c:
        yield c


def run(client, served: Served, body: dict):
    return client.post(served.server.run_url(LLAMA3), json=body)


def by_hand(messages: list[dict]) -> str:
    """Llama 3 Instruct's prompt format, written out as Meta documents it."""
    turns = "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>" for m in messages
    )
    return f"<|begin_of_text|>{turns}<|start_header_id|>assistant<|end_header_id|>\n\n"


def count(served: Served, text: str) -> int:
    """Llama 3 tokens of `text`, special tokens written in it included, nothing added."""
    return len(served.tokenizer.encode(text, add_special_tokens=False))


def assert_no_special_tokens(text: str) -> None:
    assert not any(token in text for token in SPECIAL_TOKENS), repr(text)


# The tiny model -------------------------------------------------------------------------------


def test_the_tiny_model_is_the_same_every_build_and_answers_as_designed():
    """Its builder, without the engine: the same weights from every build, and transformers' own
    greedy decoding follows the successors the tests below rely on."""
    first, second = tiny_llama3_model(), tiny_llama3_model()
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )
    model = first.float()
    successors = tiny_llama3_successors()
    for prompt in ([BEGIN_OF_TEXT, 9906, DOUBLE_NEWLINE], [BEGIN_OF_TEXT, 9906, 198, DIGITS[6]], [198, LETTERS[4]]):
        with torch.no_grad():
            ids = model.generate(
                torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=[END_OF_TEXT, EOT]
            )[0, len(prompt) :].tolist()
        expected, token = [], prompt[-1]
        while token not in (END_OF_TEXT, EOT):
            token = successors.get(token, EOT)
            expected.append(token)
        assert ids == expected


# Token counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [
        README_MESSAGES,
        [{"role": "user", "content": "  Hello!\n"}],  # the template trims each message
        [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3 + 3?"},
        ],
    ],
    ids=["readme-example", "trimmed", "three-turns"],
)
def test_prompt_tokens_are_the_llama3_tokens_of_the_templated_prompt(client, llama3, messages):
    response = run(client, llama3, {"messages": messages, "max_tokens": 8, "temperature": 0})
    usage = result(response)["usage"]
    assert usage["prompt_tokens"] == count(llama3, by_hand(messages))
    if messages is README_MESSAGES:
        # <|begin_of_text|>, 4 tokens per header (start, role, end, "\n\n"), 5 + 6 of content, 2 <|eot_id|>.
        assert usage["prompt_tokens"] == 26
    # Replies through the Llama 3 name say which model answered, unless it is Llama 3 itself.
    assert response.headers.get("x-wai-stand-in") == (TINY if llama3.is_tiny else None)


# Stop tokens ----------------------------------------------------------------------------------


def test_a_chat_answer_stops_at_eot_and_never_shows_it(client, llama3):
    body = {"model": LLAMA3, "messages": SHORT_ANSWER, "max_tokens": 64}
    answer = client.post("/v1/chat/completions", json={**body, "temperature": 0}).json()
    [choice] = answer["choices"]
    assert choice["finish_reason"] == "stop", answer
    assert answer["usage"]["completion_tokens"] < 64
    assert_no_special_tokens(choice["message"]["content"])
    if llama3.is_tiny:
        assert choice["message"]["content"] == "3210"
        assert answer["usage"]["completion_tokens"] == 5  # "3", "2", "1", "0", <|eot_id|>


def test_a_streamed_answer_never_shows_a_stop_token(client, llama3):
    body = {"messages": SHORT_ANSWER, "max_tokens": 64, "temperature": 0, "stream": True}
    with client.stream("POST", llama3.server.run_url(LLAMA3), json=body) as response:
        assert response.status_code == 200, response.read()
        streamed = list(json_events(events(response)))
    text = "".join(event["response"] for event in streamed)
    assert_no_special_tokens(text)
    assert streamed[-1]["usage"]["completion_tokens"] < 64
    if llama3.is_tiny:
        assert text == "3210"


@pytest.mark.parametrize(
    ("prompt", "answer", "stop_token"),
    [("Count down:\n7", "6543210", "<|eot_id|>"), ("Back to a:\nd", "cba", "<|end_of_text|>")],
    ids=["eot", "end-of-text"],
)
def test_generation_stops_at_each_llama3_stop_token(client, llama3, prompt, answer, stop_token):
    if not llama3.is_tiny:
        pytest.skip(f"choosing that the model ends with {stop_token} needs the tiny model's known answers")
    body = {"model": LLAMA3, "prompt": prompt, "max_tokens": 32, "temperature": 0}
    completion = client.post("/v1/completions", json=body).json()
    [choice] = completion["choices"]
    assert choice["text"] == answer
    assert choice["finish_reason"] == "stop"
    # One token per character (the model emits single digits and letters), then the stop token.
    assert completion["usage"]["completion_tokens"] == len(answer) + 1


def test_per_request_timings_come_from_the_engines_run(client, llama3):
    body = {"model": LLAMA3, "prompt": "Count down:\n7", "max_tokens": 32, "temperature": 0}
    completion = client.post("/v1/completions", json=body).json()
    timings, tokens = completion["metrics"], completion["usage"]["completion_tokens"]
    assert tokens >= 2 and timings["time_to_first_token_ms"] > 0 and timings["queue_time_ms"] is not None
    assert 0 <= timings["queue_time_ms"] <= timings["time_to_first_token_ms"]
    assert timings["mean_itl_ms"] * (tokens - 1) == pytest.approx(timings["generation_time_ms"], rel=0.01)
    spent_s = (timings["time_to_first_token_ms"] + timings["generation_time_ms"]) / 1000
    assert timings["tokens_per_second"] == pytest.approx(tokens / spent_s, rel=0.01)


# The context window ---------------------------------------------------------------------------


def test_the_window_is_7968_llama3_tokens_of_prompt_and_max_tokens(client, llama3):
    messages = [{"role": "user", "content": "Repeat after me: " + " ".join(["pizza"] * 7930)}]
    prompt_tokens = count(llama3, by_hand(messages))
    assert 7900 < prompt_tokens < WINDOW
    at_the_edge = run(client, llama3, {"messages": messages, "max_tokens": WINDOW - prompt_tokens, "temperature": 0})
    assert result(at_the_edge)["usage"]["prompt_tokens"] == prompt_tokens
    over = run(client, llama3, {"messages": messages, "max_tokens": WINDOW + 1 - prompt_tokens})
    assert over.status_code == 413, over.text
    [error] = over.json()["errors"]
    assert error["code"] == 5021
    assert error["message"] == (
        f"AiError: The estimated number of input and maximum output tokens ({WINDOW + 1}) "
        f"exceeded this model context window limit ({WINDOW})"
    )


# Raw prompts ----------------------------------------------------------------------------------


def test_a_raw_prompt_goes_to_the_model_untouched(client, llama3):
    prompt = "Count down:\n5"
    raw = result(run(client, llama3, {"prompt": prompt, "raw": True, "max_tokens": 16, "temperature": 0}))
    # Meta's tokenizer puts <|begin_of_text|> before every text it encodes; nothing else is added.
    assert raw["usage"]["prompt_tokens"] == count(llama3, prompt) + 1
    templated = result(run(client, llama3, {"prompt": prompt, "max_tokens": 16, "temperature": 0}))
    assert templated["usage"]["prompt_tokens"] == count(llama3, by_hand([{"role": "user", "content": prompt}]))
    if llama3.is_tiny:  # the model saw the prompt's own last token, "5", not the template's "\n\n"
        assert (raw["response"], templated["response"]) == ("43210", "3210")


# LoRA fine-tunes ------------------------------------------------------------------------------


def untrained_adapter(base: PretrainedConfig, folder: Path) -> Path:
    """A LoRA adapter on all of Llama 3's attention and MLP projections, as peft writes an untrained
    one (lora_B zero, so the model answers as without it), for the shapes of `base`."""
    with torch.device("meta"):  # shapes only: no base weights are loaded
        model = AutoModelForCausalLM.from_config(base)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=LLAMA3_MODULES, task_type="CAUSAL_LM")
    shapes = get_peft_model_state_dict(get_peft_model(model, config))
    generator = torch.Generator().manual_seed(0)
    tensors = {
        name: (torch.randn(t.shape, generator=generator) * 0.01 if ".lora_A." in name else torch.zeros(t.shape))
        for name, t in shapes.items()
    }
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    save_file(
        {name: t.to(torch.bfloat16).contiguous() for name, t in tensors.items()}, folder / "adapter_model.safetensors"
    )
    return folder


def needs_lora(served: Served) -> None:
    if not served.model.lora.enabled:
        pytest.skip(f"LoRA is off for {served.model.name} in this config")


def test_an_adapter_shaped_for_llama3_is_accepted_and_served(client, llama3, tmp_path):
    needs_lora(llama3)
    folder = untrained_adapter(AutoConfig.from_pretrained(llama3.checkpoint), tmp_path / "llama3-adapter")
    upload_finetune(client, "llama3-untrained", folder, model=LLAMA3)
    answer = result(
        run(
            client,
            llama3,
            {"messages": README_MESSAGES, "max_tokens": 16, "temperature": 0, "lora": "llama3-untrained"},
        )
    )
    assert_no_special_tokens(answer["response"])
    if llama3.is_tiny:
        assert answer["response"] == "3210"


def test_an_adapter_shaped_for_smollm2_is_refused(client, llama3, tmp_path):
    needs_lora(llama3)
    folder = untrained_adapter(SMOLLM2_135M, tmp_path / "smollm-adapter")
    created = client.post(finetunes_url(), json={"model": LLAMA3, "name": "smollm-shaped", "description": ""})
    assert created.status_code == 200, created.text
    assets = finetunes_url(f"/{created.json()['result']['id']}/finetune-assets")

    def upload(file_name: str):
        with (folder / file_name).open("rb") as file:
            return client.post(assets, data={"file_name": file_name}, files={"file": (file_name, file)})

    assert upload("adapter_config.json").status_code == 200  # the module names are Llama's too
    refused = upload("adapter_model.safetensors")
    assert refused.status_code == 400, refused.text
    [error] = refused.json()["errors"]
    assert error["code"] == 3042
    assert error["message"].startswith(
        "Invalid finetune: adapter_model.safetensors: shapes of 'model.layers.0.mlp.down_proj' "
        "do not match the base model: lora_A [8, 1536] and lora_B [576, 8]"
    ), error["message"]
    unusable = run(client, llama3, {"prompt": "Hello", "lora": "smollm-shaped"})
    assert unusable.status_code == 400 and unusable.json()["errors"][0]["code"] == 3039, unusable.text
