"""Dense retrieval: a sentence-transformers encoder and an exact faiss inner-product index.

sentence-transformers and faiss are imported only when a ``DenseRetriever`` is built; they come
with the ``dense`` extra (``pip install -e '.[dense]'``). Embeddings are L2-normalised, so the
score is the cosine similarity between query and document.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from typing import Sequence

import numpy as np

from zerosearch.retrieval.base import Hit, Retriever, corpus_documents, search_depth
from zerosearch.retrieval.corpus import Document, cache_key

logger = logging.getLogger(__name__)


class DenseUnavailableError(RuntimeError):
    """The dense backend cannot start: a missing package or model."""


def _import(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DenseUnavailableError(
            f"--method dense needs the Python package {package!r}, which is not importable ({exc}). "
            "Install the dense extra: pip install -e '.[dense]'; or serve with --method bm25."
        ) from exc


def check_model_arg(model: object) -> str:
    """``model`` must be a non-empty string; one that looks like a path must be a folder."""
    if not isinstance(model, str) or not model:
        raise DenseUnavailableError(
            "--method dense needs --model: the folder of a sentence-transformers model"
        )
    looks_like_path = os.sep in model or model.startswith(".") or os.path.isabs(model)
    if looks_like_path and not os.path.isdir(model):
        raise DenseUnavailableError(
            f"--model {model!r} is not a folder; pass --model with the folder of a "
            "sentence-transformers model (with modules.json and the weights)"
        )
    return model


def load_encoder(model: str, device: str):
    """A SentenceTransformer from a local folder (or a hub name when the hub is reachable)."""
    check_model_arg(model)
    st = _import("sentence_transformers", "sentence-transformers")
    try:
        return st.SentenceTransformer(model, device=device)
    except Exception as exc:  # the library raises OSError, ValueError, HF errors...
        raise DenseUnavailableError(
            f"could not load the sentence-transformers model {model!r} ({type(exc).__name__}: {exc}); "
            "pass --model with a local model folder (no download happens offline)"
        ) from exc


class DenseRetriever(Retriever):
    """Exact nearest-neighbour search over normalised embeddings.

    Args:
        documents: the corpus.
        model: a local sentence-transformers folder, or a hub name.
        device: torch device for the encoder (``cpu``, ``cuda``).
        batch_size: encoder batch size.
        query_prefix, passage_prefix: strings put before queries / documents (e5 models want
            ``"query: "`` and ``"passage: "``).
        cache_dir: when set, document embeddings are stored there as ``.npy``, keyed by corpus
            content, model and prefixes.
    """

    name = "dense"

    def __init__(
        self,
        documents: Sequence[Document],
        model: str,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        query_prefix: str = "",
        passage_prefix: str = "",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        documents = corpus_documents(documents, "DenseRetriever")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_model_arg(model)
        self._faiss = _import("faiss", "faiss-cpu")
        self.documents = documents
        self.model_name = model
        self.batch_size = batch_size
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.encoder = load_encoder(model, device)
        self.loaded_from_cache = False
        embeddings = self._document_embeddings(cache_dir)  # (N, D) float32
        self.index = self._faiss.IndexFlatIP(embeddings.shape[1])
        self.index.add(embeddings)

    def encode(self, texts: list[str]) -> np.ndarray:
        """texts (n) -> float32 (n, D), rows of unit L2 norm, C-contiguous."""
        emb = self.encoder.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)

    def _document_embeddings(self, cache_dir: str | os.PathLike | None) -> np.ndarray:
        texts = [self.passage_prefix + doc.index_text for doc in self.documents]
        if cache_dir is None:
            return self.encode(texts)
        model = os.path.abspath(self.model_name) if os.path.isdir(self.model_name) else self.model_name
        key = cache_key(self.documents, model=model, passage_prefix=self.passage_prefix)
        path = os.path.join(os.fspath(cache_dir), f"dense-{key}.npy")
        if os.path.isfile(path):
            emb = np.load(path, allow_pickle=False)
            if emb.ndim != 2 or emb.shape[0] != len(self.documents):
                raise ValueError(f"embedding cache {path!r} has shape {emb.shape}; delete it")
            self.loaded_from_cache = True
            return np.ascontiguousarray(emb, dtype=np.float32)
        emb = self.encode(texts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-dense-", suffix=".npy", dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, emb, allow_pickle=False)
        os.replace(tmp, path)
        return emb

    def search(self, queries: list[str], topk: int) -> list[list[Hit]]:
        k = search_depth(queries, topk, len(self.documents))
        if not queries:
            return []
        query_emb = self.encode([self.query_prefix + q for q in queries])  # (Q, D)
        scores, indices = self.index.search(query_emb, k)  # (Q, k) each
        return [
            [(self.documents[int(i)], float(s)) for i, s in zip(row_idx, row_scores) if i >= 0]
            for row_idx, row_scores in zip(indices, scores)
        ]
