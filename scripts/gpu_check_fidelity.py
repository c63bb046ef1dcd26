"""The Llama 3 fidelity checks that need no known answers, over HTTP against a running wai.

tests/integration/test_llama3.py is the full set, with pytest, peft and a server of its own; a GPU node has
none of those, and random weights have no known answers. These are its checks that hold for any weights:
prompt tokens are the Llama 3 tokens of Meta's template, no stop token shows in an answer, the window is
7,968 tokens of prompt and max_tokens, a raw prompt goes in untouched, and an adapter shaped for the model is
served while one shaped for another is refused. Each check gives its name, pass or fail, and what it saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LLAMA3 = "@cf/meta/llama-3-8b-instruct"
ACCOUNT = "gpu-check"
WINDOW = 7968
README_MESSAGES = [
    {"role": "system", "content": "You are a friendly assistant"},
    {"role": "user", "content": "Why is pizza so good?"},
]
THREE_TURNS = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3 + 3?"},
]
SPECIAL_TOKENS = ("<|eot_id|>", "<|end_of_text|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>")


def by_hand(messages: list[dict[str, str]]) -> str:
    """Llama 3 Instruct's prompt format, written out as Meta documents it."""
    turns = "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>" for m in messages
    )
    return f"<|begin_of_text|>{turns}<|start_header_id|>assistant<|end_header_id|>\n\n"


def run_url(model: str = LLAMA3) -> str:
    return f"/client/v4/accounts/{ACCOUNT}/ai/run/{model}"


def finetunes_url(path: str = "") -> str:
    return f"/client/v4/accounts/{ACCOUNT}/ai/finetunes{path}"


def upload_adapter(client: Any, name: str, folder: Path, model: str = LLAMA3) -> Any:
    """Create a fine-tune and upload its two files, as `wrangler ai finetune create` does; the last answer."""
    created = client.post(finetunes_url(), json={"model": model, "name": name, "description": "random weights"})
    if created.status_code != 200:
        return created
    assets = finetunes_url(f"/{created.json()['result']['id']}/finetune-assets")
    answer = created
    for file_name in ("adapter_config.json", "adapter_model.safetensors"):
        with (folder / file_name).open("rb") as file:
            answer = client.post(assets, data={"file_name": file_name}, files={"file": (file_name, file)})
        if answer.status_code != 200:
            return answer
    return answer


@dataclass
class Fidelity:
    """The checks, against wai at `client`'s base URL, counting tokens with the served model's tokenizer."""

    client: Any  # an httpx.Client on wai's base URL
    tokenizer: Any  # a tokenizers.Tokenizer
    stand_in: str | None  # the x-wai-stand-in every answer through the Llama 3 name must carry
    adapter: Path  # shaped for the served model
    foreign_adapter: Path  # shaped for SmolLM2

    def count(self, text: str) -> int:
        """Llama 3 tokens of `text`, special tokens written in it included, nothing added."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def run(self, body: dict[str, Any]) -> Any:
        return self.client.post(run_url(), json=body)

    def checks(self) -> list[Callable[[], str]]:
        return [
            self.prompt_tokens_are_llama3_tokens,
            self.answers_never_show_a_stop_token,
            self.the_window_is_7968_tokens,
            self.a_raw_prompt_goes_in_untouched,
            self.an_adapter_for_the_model_is_served,
            self.an_adapter_for_another_model_is_refused,
        ]

    def run_all(self) -> list[dict[str, Any]]:
        results = []
        for check in self.checks():
            try:
                results.append({"check": check.__name__, "verdict": "pass", "detail": check()})
            except AssertionError as e:
                results.append({"check": check.__name__, "verdict": "fail", "detail": str(e)})
        return results

    def result(self, answer: Any) -> dict[str, Any]:
        assert answer.status_code == 200, f"{answer.status_code}: {answer.text[:300]}"
        assert answer.headers.get("x-wai-stand-in") == self.stand_in, (
            f"x-wai-stand-in is {answer.headers.get('x-wai-stand-in')!r}, expected {self.stand_in!r}"
        )
        return answer.json()["result"]

    def prompt_tokens_are_llama3_tokens(self) -> str:
        for messages in (README_MESSAGES, [{"role": "user", "content": "  Hello!\n"}], THREE_TURNS):
            usage = self.result(self.run({"messages": messages, "max_tokens": 4, "temperature": 0}))["usage"]
            expected = self.count(by_hand(messages))
            assert usage["prompt_tokens"] == expected, f"{usage['prompt_tokens']} prompt tokens, expected {expected}"
        assert self.count(by_hand(README_MESSAGES)) == 26, "README's example is not 26 Llama 3 tokens"
        return "the README example is 26 tokens, as Meta's template and tokenizer count it; so are two others"

    def answers_never_show_a_stop_token(self) -> str:
        body = {"model": LLAMA3, "messages": README_MESSAGES, "max_tokens": 32, "temperature": 0}
        chat = self.client.post("/v1/chat/completions", json=body)
        assert chat.status_code == 200, chat.text[:300]
        text = chat.json()["choices"][0]["message"]["content"] or ""
        assert not any(t in text for t in SPECIAL_TOKENS), f"a special token in {text!r}"
        assert chat.json()["usage"]["completion_tokens"] <= 32
        streamed = []
        body = {"messages": README_MESSAGES, "max_tokens": 32, "temperature": 0, "stream": True}
        with self.client.stream("POST", run_url(), json=body) as answer:
            assert answer.status_code == 200, answer.read()[:300]
            for line in answer.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    streamed.append(line[6:])
        joined = "".join(streamed)
        assert not any(t in joined for t in SPECIAL_TOKENS), "a special token in the stream"
        return f"OpenAI and streamed run answers ({len(streamed)} events) hold no special token"

    def the_window_is_7968_tokens(self) -> str:
        messages = [{"role": "user", "content": "Repeat after me: " + " ".join(["pizza"] * 7930)}]
        prompt_tokens = self.count(by_hand(messages))
        assert 7900 < prompt_tokens < WINDOW, f"the long prompt is {prompt_tokens} tokens"
        edge = self.run({"messages": messages, "max_tokens": WINDOW - prompt_tokens, "temperature": 0})
        assert self.result(edge)["usage"]["prompt_tokens"] == prompt_tokens
        over = self.run({"messages": messages, "max_tokens": WINDOW + 1 - prompt_tokens})
        assert over.status_code == 413, f"one token over the window: {over.status_code} {over.text[:200]}"
        error = over.json()["errors"][0]
        assert error["code"] == 5021, error
        return f"{prompt_tokens} prompt tokens + {WINDOW - prompt_tokens} max_tokens served; one more is 413 / 5021"

    def a_raw_prompt_goes_in_untouched(self) -> str:
        prompt = "Count down:\n5"
        raw = self.result(self.run({"prompt": prompt, "raw": True, "max_tokens": 4, "temperature": 0}))
        # Meta's tokenizer puts <|begin_of_text|> before every text it encodes; nothing else is added.
        assert raw["usage"]["prompt_tokens"] == self.count(prompt) + 1, raw["usage"]
        templated = self.result(self.run({"prompt": prompt, "max_tokens": 4, "temperature": 0}))
        expected = self.count(by_hand([{"role": "user", "content": prompt}]))
        assert templated["usage"]["prompt_tokens"] == expected, templated["usage"]
        return f"raw: {raw['usage']['prompt_tokens']} tokens; templated: {expected}"

    def an_adapter_for_the_model_is_served(self) -> str:
        uploaded = upload_adapter(self.client, "fidelity-adapter", self.adapter)
        assert uploaded.status_code == 200, f"upload: {uploaded.status_code} {uploaded.text[:300]}"
        body = {"messages": README_MESSAGES, "max_tokens": 8, "temperature": 0, "lora": "fidelity-adapter"}
        answer = self.result(self.run(body))
        assert not any(t in answer["response"] for t in SPECIAL_TOKENS), answer["response"]
        return f"uploaded ({self.adapter.name}) and answered {answer['usage']['completion_tokens']} tokens with it"

    def an_adapter_for_another_model_is_refused(self) -> str:
        refused = upload_adapter(self.client, "foreign-adapter", self.foreign_adapter)
        assert refused.status_code == 400, f"{refused.status_code}: {refused.text[:300]}"
        error = refused.json()["errors"][0]
        assert error["code"] == 3042 and "do not match the base model" in error["message"], error
        return "refused: " + error["message"][:120]
