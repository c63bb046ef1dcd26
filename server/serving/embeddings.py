"""Text embeddings for every protocol: tokenize, check limits, pool on the engine, count usage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server import errors
from server.config import ModelConfig
from server.engine.types import EmbeddingEngine
from server.serving.engine_errors import engine_errors, ensure_ready
from server.serving.requests import EmbeddingRequest


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int
    pooling: str


class EmbeddingService:
    """One served embedding model: the public name's config and the engine behind it."""

    def __init__(self, model: ModelConfig, engine: EmbeddingEngine):
        self.model = model
        self.engine = engine

    async def embed(self, request: EmbeddingRequest, request_id: str) -> Embeddings:
        ensure_ready(self.engine)
        with engine_errors():
            token_ids = await self.engine.with_tokenizer(self._tokenize, request.texts)
            vectors = await self.engine.embed(token_ids, request.pooling, request_id)
        return Embeddings(vectors, sum(len(ids) for ids in token_ids), request.pooling)

    def _tokenize(self, tokenizer: Any, texts: tuple[str, ...]) -> list[list[int]]:
        # A text over the window is refused rather than cut: a silently truncated text would embed
        # something other than what the client sent.
        token_ids = [tokenizer.encode(text) for text in texts]
        for ids in token_ids:
            if len(ids) > self.model.context_window:
                raise errors.context_window_exceeded(len(ids), self.model.context_window, param="input")
        return token_ids
