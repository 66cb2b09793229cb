"""The interface every retrieval backend (BM25, dense) implements for the server."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Sequence

from zerosearch.retrieval.corpus import Document, load_corpus

Hit = tuple[Document, float]


class Retriever(ABC):
    """A searchable corpus.

    Attributes:
        name: the method name reported by ``/health`` (``bm25``, ``dense``).
        documents: the corpus, in file order.
    """

    name: str = "base"
    documents: Sequence[Document]

    @abstractmethod
    def search(self, queries: list[str], topk: int) -> list[list[Hit]]:
        """Best ``topk`` documents per query, best first, as ``(document, score)``.

        One inner list per query, in query order. A query may get fewer than ``topk`` hits (a
        corpus smaller than ``topk``, or, for BM25, fewer documents sharing a term with it).
        """

    def __len__(self) -> int:
        return len(self.documents)

    @classmethod
    def from_corpus(cls, path: str | os.PathLike, *args, **kwargs) -> "Retriever":
        """The retriever over the corpus file ``path``; other arguments go to the constructor."""
        return cls(load_corpus(path), *args, **kwargs)


def check_topk(topk: object) -> int:
    """``topk`` must be a positive int (bool is rejected); returns it."""
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    return topk


def check_queries(queries: object) -> list[str]:
    """``queries`` must be a list of strings; returns it."""
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise ValueError(f"queries must be a list of strings, got {type(queries).__name__}")
    return queries


def corpus_documents(documents: Sequence[Document], who: str) -> list[Document]:
    """``documents`` as a list; a ValueError naming ``who`` (the retriever class) when it is empty."""
    if len(documents) == 0:
        raise ValueError(f"{who} needs at least one document")
    return list(documents)


def search_depth(queries: object, topk: object, n_documents: int) -> int:
    """Check a search call's ``queries`` and ``topk``; the hits to fetch per query, min(topk, n_documents)."""
    check_queries(queries)
    return min(check_topk(topk), n_documents)

