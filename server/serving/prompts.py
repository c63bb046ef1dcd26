"""Prompt rendering: the chat template (or none, with `raw`), then token ids for the engine."""

from __future__ import annotations

from typing import Any

import jinja2

from server import errors
from server.serving.requests import Message, TextRequest
from server.serving.tool_prompt import conversation


def render_prompt(tokenizer: Any, request: TextRequest) -> list[int]:
    """Token ids of the prompt exactly as the model will see it."""
    if request.raw:
        # The prompt goes to the model as is; the tokenizer adds only what it always adds (BOS).
        text = request.prompt if request.prompt is not None else "\n".join(m.content for m in request.messages or ())
        return tokenizer.encode(text)
    messages = request.messages if request.messages is not None else (Message("user", request.prompt or ""),)
    # Tools are described in the system message by wai itself (serving/tool_prompt.py), the same for every
    # template: Llama 3 8B Instruct's own template knows no tools.
    try:
        text = tokenizer.apply_chat_template(
            conversation(messages, request.tools), add_generation_prompt=True, tokenize=False
        )
    except (jinja2.TemplateError, ValueError) as exc:
        # Templates reject some conversations (empty, roles that do not alternate): the client's input.
        raise errors.bad_input(f"the chat template rejected the messages: {exc}", param="messages") from exc
    # The template already wrote the special tokens (BOS, headers); do not add them twice.
    return tokenizer.encode(text, add_special_tokens=False)
