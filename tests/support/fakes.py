"""Fakes of the engine interface (server/engine/types.py) for the fast tiers.

A whitespace tokenizer, scripted text and embedding engines and the factory that builds them, and
settings that need no model files; tests/support/servers.py serves the real app on them
(`serve_app`). Nothing here imports vLLM (tests/pipeline/test_no_vllm.py checks).
"""

from __future__ import annotations

import asyncio
import math
import random
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from server.config import ModelConfig, Settings
from server.engine.types import (
    Adapter,
    EngineState,
    EngineUnavailable,
    GenerationParams,
    TextDelta,
)
from tests.support.repo import STAND_IN  # TEXT_MODEL answers under this name too

T = TypeVar("T")

TEXT_MODEL = "@cf/test/fake"
EMBEDDING_MODEL = "@cf/test/embed"
CONTEXT_WINDOW = 64
DEFAULT_MAX_TOKENS = 8
EMBEDDING_CONTEXT_WINDOW = 16
EMBEDDING_DIMENSIONS = 8
MAX_RUNNING = 4  # the text engine's max_num_seqs
MAX_WAITING = 6
MAX_WAITING_TOKENS = 48

BOS = 1
DEFAULT_SCRIPT = ("Paris", "is", "the", "capital", "of", "France.")


# --- tokenizer ------------------------------------------------------------------------------


def token_id(word: str) -> int:
    """A word's id: deterministic, never BOS."""
    return 2 + zlib.crc32(word.encode()) % 50_000


class FakeTokenizer:
    """One token per whitespace-separated word; BOS first when special tokens are added."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [token_id(word) for word in text.split()]
        return [BOS, *ids] if add_special_tokens else ids

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        if tokenize:
            raise AssertionError("the server renders templates as text and encodes them itself")
        if not messages:
            raise ValueError("a conversation needs at least one message")
        lines = [f"<{message['role']}>: {message.get('content') or ''}" for message in messages]
        if tools:
            lines.insert(0, "<tools>: " + " ".join(tool["function"]["name"] for tool in tools))
        if add_generation_prompt:
            lines.append("<assistant>:")
        return "\n".join(lines)


def chat_text(messages: list[dict[str, Any]]) -> str:
    """What the fake template renders for `messages`."""
    return FakeTokenizer().apply_chat_template(messages)


def chat_prompt_ids(messages: list[dict[str, Any]]) -> list[int]:
    """The prompt ids the engine should get for `messages`: the template, with no BOS added again."""
    return FakeTokenizer().encode(chat_text(messages), add_special_tokens=False)


# --- engines --------------------------------------------------------------------------------


@dataclass
class Failure:
    """Raise `error(message)` before the delta of step `at_step` (0: before the first one)."""

    error: type[Exception]
    message: str = "scripted failure"
    at_step: int = 0
    times: int | None = None  # the next this many requests fail, the later ones succeed; None: every one


class FakeEngine:
    """Lifecycle, readiness and tokenizer access, as the Engine protocol wants them."""

    def __init__(self, model: ModelConfig, checkpoint: str):
        self.model = model
        self.checkpoint = checkpoint
        self.state = EngineState.STARTING
        self.tokenizer = FakeTokenizer()
        self.starts = 0
        self.stops = 0
        self.failure: Failure | None = None
        self.requests: list[str] = []  # request ids, in the order the engine got them

    async def start(self) -> None:
        self.starts += 1
        self.state = EngineState.READY

    async def stop(self) -> None:
        self.stops += 1
        self.state = EngineState.STOPPED

    def is_ready(self) -> bool:
        return self.state is EngineState.READY

    def die(self) -> None:
        self.state = EngineState.DEAD

    async def with_tokenizer(self, work: Callable[..., T], *args: Any) -> T:
        if self.state is EngineState.STARTING:
            raise EngineUnavailable(self.model.name)
        return await asyncio.to_thread(work, self.tokenizer, *args)

    def fail(
        self, error: type[Exception], message: str = "scripted failure", at_step: int = 0, times: int | None = None
    ) -> None:
        self.failure = Failure(error, message, at_step, times)

    def _raise_if_failing_at(self, step: int) -> None:
        failure = self.failure
        if failure is not None and failure.at_step == step:
            if failure.times is not None:
                failure.times -= 1
                if failure.times == 0:
                    self.failure = None
            raise failure.error(failure.message)

    def reset(self) -> None:
        self.state = EngineState.READY
        self.failure = None
        self.requests.clear()


class FakeTextEngine(FakeEngine):
    """Generates a script of words, one token per word, `delay` seconds apart.

    Choice 0 says the script; choice k > 0 says each word with k appended, so choices differ.
    Each delta carries one word (a space before every word after the first); the last one of a
    choice carries "length" when max_tokens cut the script, else "stop".
    """

    def __init__(self, model: ModelConfig, checkpoint: str, chat_template: str | None = None):
        super().__init__(model, checkpoint)
        self.chat_template = chat_template
        self.script: Sequence[str] = DEFAULT_SCRIPT
        self.delay = 0.0
        self.cached_tokens = 0  # prompt tokens every answer says the prefix cache served
        self.aborted: list[str] = []  # closed or cancelled before they finished
        self.priorities: list[int] = []  # each request's engine priority, in order
        self.finished: list[str] = []
        self.last_params: GenerationParams | None = None
        self.last_prompt: list[int] | None = None
        self.last_adapter: Adapter | None = None

    def reset(self) -> None:
        super().reset()
        self.script = DEFAULT_SCRIPT
        self.delay = 0.0
        self.cached_tokens = 0
        self.aborted.clear()
        self.finished.clear()
        self.priorities.clear()
        self.last_params = self.last_prompt = self.last_adapter = None

    def words(self, index: int = 0, max_tokens: int | None = None) -> list[str]:
        words = [word if index == 0 else f"{word}{index}" for word in self.script]
        return words[:max_tokens]

    def text(self, index: int = 0, max_tokens: int | None = None) -> str:
        """The whole text choice `index` says."""
        return " ".join(self.words(index, max_tokens))

    async def generate(
        self, prompt_token_ids: list[int], params: GenerationParams, request_id: str, adapter: Adapter | None = None
    ) -> AsyncIterator[TextDelta]:
        self.requests.append(request_id)
        self.last_params, self.last_prompt, self.last_adapter = params, list(prompt_token_ids), adapter
        self.priorities.append(params.priority)
        if not self.is_ready():
            raise EngineUnavailable(self.model.name)
        steps = min(len(self.script), params.max_tokens)
        finish_reason = "length" if len(self.script) > params.max_tokens else "stop"
        choices = [self.words(index, steps) for index in range(params.n)]
        try:
            for step in range(steps):
                self._raise_if_failing_at(step)
                if self.delay:
                    await asyncio.sleep(self.delay)
                for index, words in enumerate(choices):
                    yield TextDelta(
                        index=index,
                        text=words[step] if step == 0 else " " + words[step],
                        prompt_tokens=len(prompt_token_ids),
                        completion_tokens=step + 1,
                        finish_reason=finish_reason if step == steps - 1 else None,
                        cached_tokens=self.cached_tokens,
                    )
        except (GeneratorExit, asyncio.CancelledError):
            self.aborted.append(request_id)
            raise
        self.finished.append(request_id)


def unit_vector(token_ids: list[int], pooling: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic vector of length 1 for these ids and pooling."""
    rng = random.Random(f"{pooling}:{token_ids}")
    raw = [rng.uniform(-1, 1) for _ in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in raw))
    return [value / norm for value in raw]


class FakeEmbeddingEngine(FakeEngine):
    def __init__(self, model: ModelConfig, checkpoint: str):
        super().__init__(model, checkpoint)
        self.last_token_ids: list[list[int]] | None = None
        self.last_pooling: str | None = None

    def reset(self) -> None:
        super().reset()
        self.last_token_ids = self.last_pooling = None

    async def embed(self, token_ids: list[list[int]], pooling: str, request_id: str) -> list[list[float]]:
        self.requests.append(request_id)
        self.last_token_ids, self.last_pooling = token_ids, pooling
        if not self.is_ready():
            raise EngineUnavailable(self.model.name)
        self._raise_if_failing_at(0)
        return [unit_vector(ids, pooling) for ids in token_ids]


class FakeEngines:
    """The Engines factory: builds fakes and keeps them by model name, for tests to script."""

    def __init__(self) -> None:
        self.texts: dict[str, FakeTextEngine] = {}
        self.embeddings: dict[str, FakeEmbeddingEngine] = {}

    def text(self, model: ModelConfig, checkpoint: str, chat_template: str | None) -> FakeTextEngine:
        engine = self.texts[model.name] = FakeTextEngine(model, checkpoint, chat_template)
        return engine

    def embedding(self, model: ModelConfig, checkpoint: str) -> FakeEmbeddingEngine:
        engine = self.embeddings[model.name] = FakeEmbeddingEngine(model, checkpoint)
        return engine

    def all(self) -> list[FakeEngine]:
        return [*self.texts.values(), *self.embeddings.values()]

    def reset(self) -> None:
        for engine in self.all():
            engine.reset()


# --- settings -------------------------------------------------------------------


def roomy_fake_settings(root: Path, **overrides: Any) -> Settings:
    """fake_settings with room for the tools' system message (the fakes' own window is 64 words)."""
    settings = fake_settings(root, **overrides)
    settings.models[0] = settings.models[0].model_copy(update={"context_window": 4096, "default_max_tokens": 64})
    return settings


def fake_settings(root: Path, **overrides: Any) -> Settings:
    """A text model and an embedding model on the fakes; every folder under `root`.

    Fields that WAI_* variables could set are given explicitly, so the environment cannot change them.
    """
    weights = root / "weights"  # `weights.path` needs nothing prepared; the fakes never read it
    weights.mkdir(parents=True, exist_ok=True)
    models = [
        {
            "name": TEXT_MODEL,
            "stands_in_for": [STAND_IN],
            "weights": {"path": str(weights)},
            "context_window": CONTEXT_WINDOW,
            "default_max_tokens": DEFAULT_MAX_TOKENS,
            "lora": {"enabled": False},
            "engine": {"max_num_seqs": MAX_RUNNING},
            "queue": {"max_waiting_requests": MAX_WAITING, "max_waiting_prompt_tokens": MAX_WAITING_TOKENS},
        },
        {
            "name": EMBEDDING_MODEL,
            "task": "text-embeddings",
            "weights": {"path": str(weights)},
            "context_window": EMBEDDING_CONTEXT_WINDOW,
        },
    ]
    values: dict[str, Any] = {
        "api_keys": [],
        "cache_dir": root / "cache",
        "adapters_dir": root / "adapters",
        "models": models,
        "limits": {"max_body_bytes": 1_000_000},
        "streaming": {"padding": True, "padding_max_chars": 32},
        "metrics": {"api_key": None},
        "log_prompts": False,
        "config_dir": root,
    }
    return Settings(**{**values, **overrides})
