"""BM25 ranking against hand-tokenised documents and an independent float64 BM25 formula."""

import math

import pytest

from zerosearch.retrieval.bm25 import BM25Retriever
from zerosearch.retrieval.corpus import Document

# (title, text) and the tokens a reader gets by hand: lower case, words of 2+ letters, without the
# English stopwords the/a/is/of/and/in/are/on. Title tokens come first.
CORPUS = [
    (("Apple", "The apple is red and the apple is sweet."), ["apple", "apple", "red", "apple", "sweet"]),
    (
        ("Banana", "A banana is yellow. Bananas grow in bunches."),
        ["banana", "banana", "yellow", "bananas", "grow", "bunches"],
    ),
    (
        ("Fruit salad", "Salad of apple, banana and cherry, x."),
        ["fruit", "salad", "salad", "apple", "banana", "cherry"],
    ),
    (
        ("Cherry", "Cherry trees bloom in spring; cherry wood is RED."),
        ["cherry", "cherry", "trees", "bloom", "spring", "cherry", "wood", "red"],
    ),
    (("Cars", "Red cars are fast on the road."), ["cars", "red", "cars", "fast", "road"]),
]
QUERIES = {
    "red apple": ["red", "apple"],
    "Cherry": ["cherry"],
    "banana salad": ["banana", "salad"],
    "yellow fruit of the bunches": ["yellow", "fruit", "bunches"],
    "spring road": ["spring", "road"],
}
K1, B = 1.5, 0.75


def documents() -> list[Document]:
    return [Document.from_title_text(f"d{i}", title, text) for i, ((title, text), _) in enumerate(CORPUS)]


def reference_scores(query_tokens: list[str]) -> list[float]:
    """Lucene-variant BM25 in float64 over the hand-made token lists."""
    docs = [tokens for _, tokens in CORPUS]
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    scores = []
    for d in docs:
        s = 0.0
        for t in query_tokens:
            df = sum(t in other for other in docs)
            if df == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = d.count(t)
            s += idf * tf / (tf + K1 * (1 - B + B * len(d) / avgdl))
        scores.append(s)
    return scores


@pytest.fixture(scope="module")
def retriever() -> BM25Retriever:
    return BM25Retriever(documents(), k1=K1, b=B)


def test_hand_worked_single_term(retriever):
    # "cherry": df = 2 (d2, d3), N = 5, avgdl = 30 / 5 = 6.
    # idf = ln(1 + 3.5 / 2.5) = ln 2.4; d3: tf 3, len 8 -> 3 / (3 + 1.5 * (0.25 + 0.75 * 8/6)) = 3 / 4.875
    # d2: tf 1, len 6 -> 1 / (1 + 1.5) = 0.4
    (hits,) = retriever.search(["Cherry"], 5)
    assert [doc.id for doc, _ in hits] == ["d3", "d2"]
    assert hits[0][1] == pytest.approx(math.log(2.4) * 3 / 4.875, rel=1e-5)
    assert hits[1][1] == pytest.approx(math.log(2.4) * 0.4, rel=1e-5)


@pytest.mark.parametrize("query", list(QUERIES))
def test_matches_reference_formula(retriever, query):
    ref = reference_scores(QUERIES[query])
    expected = sorted((i for i, s in enumerate(ref) if s > 0), key=lambda i: -ref[i])
    assert len({round(ref[i], 9) for i in expected}) == len(expected), "test corpus must have no ties"
    (hits,) = retriever.search([query], 5)
    assert [doc.id for doc, _ in hits] == [f"d{i}" for i in expected]
    for (doc, score), i in zip(hits, expected):
        assert score == pytest.approx(ref[i], rel=1e-5)


def test_batch_equals_one_by_one_and_topk_cuts(retriever):
    queries = list(QUERIES)
    batched = retriever.search(queries, 2)
    assert len(batched) == len(queries)
    for query, hits in zip(queries, batched):
        assert [d.id for d, _ in hits] == [d.id for d, _ in retriever.search([query], 5)[0][:2]]


def test_no_match_gives_no_hits(retriever):
    assert retriever.search(["zebra unicorn", "the of and", ""], 3) == [[], [], []]
    assert retriever.search([], 3) == []


def test_topk_larger_than_corpus(retriever):
    (hits,) = retriever.search(["red"], 50)
    assert sorted(d.id for d, _ in hits) == ["d0", "d3", "d4"]


@pytest.mark.parametrize("topk", [0, -1, True, 2.0, "3"])
def test_bad_topk(retriever, topk):
    with pytest.raises(ValueError, match="topk"):
        retriever.search(["red"], topk)


def test_bad_arguments():
    with pytest.raises(ValueError, match="queries"):
        BM25Retriever(documents()).search("red apple", 3)
    with pytest.raises(ValueError, match="at least one document"):
        BM25Retriever([])
    with pytest.raises(ValueError, match="b must be"):
        BM25Retriever(documents(), b=1.5)


def test_title_is_indexed_for_search_r1_documents():
    docs = [
        Document.from_contents("0", '"Zanzibar"\nAn island off the coast.'),
        Document.from_contents("1", '"Other"\nText.'),
    ]
    (hits,) = BM25Retriever(docs).search(["zanzibar"], 3)
    assert [d.id for d, _ in hits] == ["0"]


def test_index_cache_round_trip(tmp_path, monkeypatch):
    first = BM25Retriever(documents(), cache_dir=tmp_path)
    assert (
        not first.loaded_from_cache
        and first.cache_path
        and (tmp_path / first.cache_path.split("/")[-1]).is_dir()
    )

    def no_rebuild(self):
        raise AssertionError("index rebuilt although a cache exists")

    monkeypatch.setattr(BM25Retriever, "_build", no_rebuild)
    second = BM25Retriever(documents(), cache_dir=tmp_path)
    assert second.loaded_from_cache
    for query in QUERIES:
        a, b = first.search([query], 5)[0], second.search([query], 5)[0]
        assert [d.id for d, _ in a] == [d.id for d, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b])
    monkeypatch.undo()
    changed = documents()[:-1]
    third = BM25Retriever(changed, cache_dir=tmp_path)
    assert not third.loaded_from_cache and third.cache_path != first.cache_path
