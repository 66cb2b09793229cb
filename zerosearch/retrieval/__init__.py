"""Local retrieval server: a jsonl corpus behind one HTTP contract (BM25 or dense).

Modules: ``corpus`` (reading corpora), ``base`` (the ``Retriever`` interface), ``bm25`` (bm25s),
``dense`` (sentence-transformers + faiss, optional), ``server`` (FastAPI app and CLI), ``limits``
(body-size and logging middleware), ``health`` (waiting for a server), ``background`` (serving
in a thread).
"""

from zerosearch.retrieval.base import Hit, Retriever
from zerosearch.retrieval.corpus import CorpusError, Document, load_corpus

__all__ = ["CorpusError", "Document", "Hit", "Retriever", "load_corpus"]
