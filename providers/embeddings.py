"""The embeddings stage: texts in, one unit-length float32 vector per text out.

A template method like the other stages (providers.base): ``embed`` owns the
batching, the deadline, the error wrapping and the checks on what an adapter
returns (one finite, non-zero row per text, all of one width), and hands back
rows L2-normalised, so a dot product is the cosine similarity. An adapter
implements ``_embed`` for one batch; one that blocks (a local model) runs it
off the event loop itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from providers.base import ProviderError, guarded_call
from providers.options import ProviderOptions

Vectors = npt.NDArray[np.float32]


class Embedder(ABC):
    name: str = "embeddings"
    # The options this provider reads (providers.options); None: undeclared, passed on unchecked.
    Options: ClassVar[type[ProviderOptions] | None] = None
    # Texts per request: a knowledge base is added in one go, and servers cap a request's size.
    batch_size: int = 64
    timeout: float = 30.0  # per batch

    @property
    @abstractmethod
    def model(self) -> str:
        """The model that makes the vectors: an index records it (with the width) to detect a change."""

    @property
    def identity(self) -> str:
        """What a stored vector was made by: vectors of two identities are not comparable."""
        return f"{self.name}:{self.model}"

    async def prepare(self) -> None:
        """Load what the first request would otherwise wait for (a local model)."""
        await self._prepare()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised row per text, in order; (0, 0) for no texts."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ProviderError("cannot embed an empty text", provider=self.name, retryable=False)
        rows: list[Vectors] = []
        for start in range(0, len(texts), max(1, self.batch_size)):
            batch = list(texts[start : start + self.batch_size])
            got = await guarded_call(
                self._embed(batch), provider=self.name, what="embeddings", timeout=self.timeout
            )
            rows.append(self._checked(np.asarray(got, dtype=np.float32), len(batch)))
        if len({r.shape[1] for r in rows}) != 1:
            raise ProviderError(
                "batches came back with different widths", provider=self.name, retryable=False
            )
        return np.ascontiguousarray(np.concatenate(rows))

    async def aclose(self) -> None:
        await self._aclose()

    def _checked(self, got: Vectors, expected: int) -> Vectors:
        if got.ndim != 2 or got.shape[0] != expected or got.shape[1] == 0:
            raise ProviderError(
                f"expected {expected} vectors, got an array of shape {got.shape}",
                provider=self.name,
                retryable=False,
            )
        if not np.all(np.isfinite(got)):
            raise ProviderError("a vector holds NaN or infinity", provider=self.name, retryable=False)
        norms = np.linalg.norm(got, axis=1, keepdims=True)
        if np.any(norms == 0.0):
            raise ProviderError("a vector is all zeros", provider=self.name, retryable=False)
        unit: Vectors = (got / norms).astype(np.float32)
        return unit

    async def _prepare(self) -> None:
        return None

    async def _aclose(self) -> None:
        return None

    @abstractmethod
    async def _embed(self, texts: list[str]) -> Vectors | Sequence[Sequence[float]]:
        """Vectors for one batch (at most ``batch_size`` texts), in order; need not be normalised."""
