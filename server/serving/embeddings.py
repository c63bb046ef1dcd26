"""Text embeddings for every protocol: tokenize, check limits, pool on the engine, count usage."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from server import errors
from server.config import ModelConfig
from server.engine.vllm_engine import EmbeddingEngine, EngineRejected, EngineUnavailable
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
        if not self.engine.is_ready():
            raise errors.capacity_exceeded(status=503, retry_after_s=5)
        token_ids = await asyncio.to_thread(self._tokenize, request.texts)
        try:
            vectors = await self.engine.embed(token_ids, request.pooling, request_id)
        except EngineUnavailable as exc:
            raise errors.capacity_exceeded(status=503, retry_after_s=5) from exc
        except EngineRejected as exc:
            raise errors.bad_input(str(exc)) from exc
        return Embeddings(vectors, sum(len(ids) for ids in token_ids), request.pooling)

    def _tokenize(self, texts: tuple[str, ...]) -> list[list[int]]:
        # A text over the window is refused rather than cut: a silently truncated text would embed
        # something other than what the client sent.
        token_ids = [self.engine.tokenizer.encode(text) for text in texts]
        for ids in token_ids:
            if len(ids) > self.model.context_window:
                raise errors.context_window_exceeded(len(ids), self.model.context_window, param="input")
        return token_ids
