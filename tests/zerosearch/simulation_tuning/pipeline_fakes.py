"""Hand-made questions, paragraphs and a fake search tool shared by the simulation-tuning tests."""

from __future__ import annotations

import json

from zerosearch.tools import NO_INFORMATION, SearchResult, SearchTool

QUESTIONS = [
    {"id": "q1", "question": "Where was Tala Menz born?", "golden_answers": ["Vostrand"]},
    {"id": "q2", "question": "Who founded Zimra Works?", "golden_answers": ["Tala Menz"]},
    {"id": "q3", "question": "Where was the founder of Zimra Works born?", "golden_answers": ["Vostrand"]},
    {"id": "q4", "question": "what is the capital of france?", "golden_answers": ["Paris"]},
]
CORPUS = {
    "Tala Menz": "Tala Menz is a poet who was born in Vostrand in 1950.",
    "Zimra Works": "Zimra Works is a glass company founded by Tala Menz in 1980.",
    "Orla Fenn": "Orla Fenn is a painter who was born in Kelvar in 1931.",
}


class FakeTool(SearchTool):
    """Returns the corpus paragraphs that share a capitalised word with the query; a query
    containing "Zimra" fails while ``fail_zimra`` is set. Records every query it receives."""

    name = "fake"

    def __init__(self, fail_zimra: bool = False):
        super().__init__(cache_size=0)
        self.fail_zimra = fail_zimra
        self.queries: list[str] = []

    async def _search_uncached(self, requests):
        out = []
        for r in requests:
            self.queries.append(r.query)
            if self.fail_zimra and "Zimra" in r.query:
                out.append(SearchResult(NO_INFORMATION, ok=False, error="boom"))
                continue
            words = {w.strip("?") for w in r.query.split() if w[:1].isupper()}
            hits = [f"(Title: {t}) {text}" for t, text in CORPUS.items() if words & set(f"{t} {text}".split())]
            docs = "\n".join(f"Doc {i}: {h}" for i, h in enumerate(hits, 1)) or NO_INFORMATION
            out.append(SearchResult(docs))
        return out

    def describe(self):
        return "fake"


def collected_file(tmp_path):
    path = tmp_path / "collected.jsonl"
    rows = [
        {"id": "a#0", "question_id": "a", "question": "Where was Tala Menz born?", "golden_answers": ["Vostrand"],
         "query": "Tala Menz", "documents": [CORPUS["Tala Menz"], CORPUS["Orla Fenn"], CORPUS["Zimra Works"]]},
        {"id": "b#0", "question_id": "b", "question": "Where was Orla Fenn born?", "golden_answers": ["Kelvar"],
         "query": "Orla Fenn", "documents": [CORPUS["Orla Fenn"]]},
        {"id": "c#0", "question_id": "c", "question": "Who founded Zimra Works?", "golden_answers": ["Tala Menz"],
         "query": "Zimra Works", "documents": [CORPUS["Zimra Works"], CORPUS["Orla Fenn"]]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
