"""OpenAIEmbeddings through the real openai SDK against the fake's /v1/embeddings on loopback."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from providers import registry
from providers.base import ProviderContext, ProviderError
from providers.openai.embeddings import DEFAULT_MODEL, OpenAIEmbeddings
from tests.fakes.openai_server import EmbeddingsReply, FakeOpenAI, Fault, bag_of_words_vector, fake_fixture

KEY = "sk-test-embeddings-0123456789abcdef"


fake = fake_fixture(KEY)


def make(url: str, **options: object) -> OpenAIEmbeddings:
    embedder = registry.create_embedder(
        "openai", ProviderContext("test", options={"base_url": url, **options})
    )
    assert isinstance(embedder, OpenAIEmbeddings)
    return embedder


async def test_vectors_come_back_unit_length_in_order_through_base64(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    embedder = make(url, embedding_model="embed-test")
    texts = ["where can I park my car", "is there a car park", "when are the stitches taken out"]
    try:
        vectors = await embedder.embed(texts)
    finally:
        await embedder.aclose()
    assert vectors.dtype == np.float32 and vectors.shape == (3, 256)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for text, row in zip(texts, vectors, strict=True):
        expected = bag_of_words_vector(text, 256)
        assert np.allclose(row, expected / np.linalg.norm(expected), atol=1e-6)
    # Texts sharing words are nearer than texts sharing none (the fake's bag of words).
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    body = server.requests[-1].body
    # The SDK asks for base64 unless told otherwise: the fake answered in kind and the SDK decoded it.
    assert body == {"model": "embed-test", "input": texts, "encoding_format": "base64"}
    assert embedder.identity == "openai:embed-test"


async def test_texts_go_in_batches(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    embedder = make(url)
    embedder.batch_size = 2
    try:
        vectors = await embedder.embed([f"passage number {i}" for i in range(5)])
    finally:
        await embedder.aclose()
    assert vectors.shape == (5, 256)
    assert [len(r.body["input"]) for r in server.requests] == [2, 2, 1]
    assert server.requests[0].body["model"] == DEFAULT_MODEL


async def test_dimensions_are_asked_for_and_named_in_the_identity(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    embedder = make(url, embedding_dimensions=16)
    try:
        vectors = await embedder.embed(["hello"])
    finally:
        await embedder.aclose()
    assert vectors.shape == (1, 16)
    assert server.requests[-1].body["dimensions"] == 16
    assert embedder.identity == f"openai:{DEFAULT_MODEL}@16"


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (400, False)])
async def test_http_errors_become_provider_errors(
    fake: tuple[FakeOpenAI, str], status: int, retryable: bool
) -> None:
    server, url = fake
    server.embeddings_replies.append(EmbeddingsReply(fault=Fault(status=status)))
    embedder = make(url)
    try:
        with pytest.raises(ProviderError) as caught:
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()
    assert caught.value.status == status and caught.value.retryable is retryable


async def test_a_wrong_key_never_shows_in_the_error_or_the_log(
    fake: tuple[FakeOpenAI, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, url = fake
    wrong = "sk-wrong-key-which-must-not-leak-42"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    caplog.set_level(logging.DEBUG)
    embedder = make(url)
    try:
        with pytest.raises(ProviderError) as caught:
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()
    assert caught.value.status == 401
    assert wrong not in str(caught.value) and wrong not in repr(embedder)
    assert wrong not in caplog.text


async def test_a_slow_server_times_out(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    server.embeddings_replies.append(EmbeddingsReply(delay=5.0))
    embedder = make(url, timeout=0.3)
    try:
        with pytest.raises(ProviderError) as caught:
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()
    assert caught.value.retryable


async def test_empty_text_is_refused_before_any_request(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    embedder = make(url)
    try:
        with pytest.raises(ProviderError, match="empty text"):
            await embedder.embed(["fine", "  "])
        assert (await embedder.embed([])).shape == (0, 0)
    finally:
        await embedder.aclose()
    assert server.requests == []
