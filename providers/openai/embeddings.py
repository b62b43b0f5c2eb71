"""Embeddings over ``embeddings.create``: OpenAI's, or any OpenAI-compatible server's (``base_url``).

The SDK asks for base64 vectors unless told otherwise and decodes them itself; we leave it so,
since it halves the response. A ``base_url`` points at Ollama or another local server; its
model is ``embedding_model`` (a local model's name, e.g. "nomic-embed-text").
"""

from __future__ import annotations

from typing import Self

import numpy as np

from providers.base import ProviderContext, ProviderError
from providers.embeddings import Embedder, Vectors
from providers.openai._client import OpenAISettings, check, provider_error
from providers.openai.options import OpenAIOptions

DEFAULT_MODEL = "text-embedding-3-small"


class OpenAIEmbeddings(Embedder):
    name = "openai"
    Options = OpenAIOptions

    def __init__(
        self, settings: OpenAISettings, *, model: str = DEFAULT_MODEL, dimensions: int | None = None
    ) -> None:
        self.settings = settings
        self._model = model
        self.dimensions = dimensions
        self.timeout = settings.timeout
        self._client = settings.client()

    def __repr__(self) -> str:
        return f"OpenAIEmbeddings(model={self._model!r}, settings={self.settings!r})"

    @property
    def model(self) -> str:
        return self._model if self.dimensions is None else f"{self._model}@{self.dimensions}"

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        settings = OpenAISettings.from_context(ctx)
        dimensions = ctx.options.get("embedding_dimensions")
        return cls(
            settings,
            model=str(ctx.options.get("embedding_model") or DEFAULT_MODEL),
            dimensions=int(dimensions) if dimensions else None,
        )

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return check(ctx)

    async def _aclose(self) -> None:
        await self._client.close()

    async def _embed(self, texts: list[str]) -> Vectors:
        try:
            if self.dimensions is None:
                response = await self._client.embeddings.create(model=self._model, input=texts)
            else:
                response = await self._client.embeddings.create(
                    model=self._model, input=texts, dimensions=self.dimensions
                )
        except Exception as exc:
            raise provider_error(self.name, exc, self.settings) from None
        # The API names each vector's input by index; do not trust the list's order.
        ordered = sorted(response.data, key=lambda d: d.index)
        if [d.index for d in ordered] != list(range(len(texts))):
            raise ProviderError(
                f"{len(ordered)} vectors for {len(texts)} texts", provider=self.name, retryable=False
            )
        return np.array([d.embedding for d in ordered], dtype=np.float32)
