"""Simulation-tuning stages on small hand-made slices: parsing, scripted queries, rule judge,
resumable collect and label, balanced build."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from zerosearch.simulation_tuning import build_sft, collect, label
from zerosearch.simulation_tuning.records import load_questions, read_jsonl, repair_tail
from zerosearch.tools import NO_INFORMATION

from pipeline_fakes import CORPUS, QUESTIONS, FakeTool, collected_file

def test_split_documents_strips_the_doc_prefix_and_joins_continuation_lines():
    text = "Doc 1: (Title: A) first doc\nDoc 2: second\ncontinued here\nDoc 3:third"
    assert collect.split_documents(text) == ["(Title: A) first doc", "second continued here", "third"]
    assert collect.split_documents(NO_INFORMATION) == []
    assert collect.split_documents("  ") == []


def test_scripted_queries_are_the_question_then_capitalised_runs():
    """The first query is the question as a searching policy writes it, "?" included: a simulator
    tuned on queries without it was served the policy's queries with it and, on one seed of the
    CPU miniature, answered 'Doc 191: ...' / 'Doc 19994.' to most of them (P(':' | 'Doc 1') 0.0002
    with the '?', 1.0 without)."""
    assert collect.scripted_queries("Where was the founder of Zunta Labs born?") == [
        "Where was the founder of Zunta Labs born?", "Zunta Labs"]
    assert collect.scripted_queries("Were Scott Derrickson and Ed Wood of the same nationality?") == [
        "Were Scott Derrickson and Ed Wood of the same nationality?", "Scott Derrickson", "Ed Wood"]
    assert collect.scripted_queries("Who wrote Hamlet's sequel?") == ["Who wrote Hamlet's sequel?", "Hamlet"]
    assert collect.scripted_queries("Were Scott Derrickson and Ed Wood friends?", max_subqueries=1) == [
        "Were Scott Derrickson and Ed Wood friends?", "Scott Derrickson"]
    assert collect.scripted_queries("  what is the capital of france? ") == ["what is the capital of france?"]
    assert collect.scripted_queries("Who founded Zunta Labs") == ["Who founded Zunta Labs", "Zunta Labs"]


def test_rule_judge_is_normalised_answer_containment():
    assert label.rule_label("The Eiffel Tower stands in Paris.", ["paris"]) == label.USEFUL
    assert label.rule_label("The Eiffel Tower stands in Paris.", ["Lyon", "Marseille"]) == label.NOISY
    # Punctuation and articles are dropped on both sides: "U.S.A." -> "usa", "The Hague" -> "hague".
    assert label.rule_label("He was born in the U.S.A. in 1950.", ["USA"]) == label.USEFUL
    assert label.rule_label("The court sits in The Hague.", ["the hague"]) == label.USEFUL


def test_collect_writes_one_record_per_query_and_resumes(tmp_path):
    out = tmp_path / "collected.jsonl"
    tool = FakeTool()
    stats = collect.collect_scripted(QUESTIONS, tool, out, backend="wiki", limit=2, batch_size=1, progress=False)
    # q1: question + "Tala Menz"; q2: question + "Zimra Works".
    assert stats == {"questions": 2, "records": 4, "failed": 0, "empty": 0}
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["q1#0", "q1#1", "q2#0", "q2#1"]
    assert rows[1]["query"] == "Tala Menz"
    assert rows[1]["documents"] == [f"(Title: Tala Menz) {CORPUS['Tala Menz']}",
                                    f"(Title: Zimra Works) {CORPUS['Zimra Works']}"]
    assert rows[0]["golden_answers"] == ["Vostrand"] and rows[0]["backend"] == "wiki"

    # A crash mid-write leaves half a line; the next run removes it and only does q3, q4.
    with out.open("a") as f:
        f.write('{"id": "q3#0", "question_id": "q3", "quest')
    tool.queries.clear()
    stats = collect.collect_scripted(QUESTIONS, tool, out, backend="wiki", progress=False)
    assert tool.queries == ["Where was the founder of Zimra Works born?", "Zimra Works",
                            "what is the capital of france?"]
    assert stats["questions"] == 2 and stats["empty"] == 1  # q4 matches no paragraph
    ids = [r["id"] for r in read_jsonl(out)]
    assert ids == ["q1#0", "q1#1", "q2#0", "q2#1", "q3#0", "q3#1", "q4#0"]


def test_collect_leaves_questions_with_a_failed_search_for_the_next_run(tmp_path):
    out = tmp_path / "collected.jsonl"
    stats = collect.collect_scripted(QUESTIONS[:3], FakeTool(fail_zimra=True), out, backend="wiki", progress=False)
    assert stats["questions"] == 1 and stats["failed"] == 4  # both queries of q2 and of q3
    assert {r["question_id"] for r in read_jsonl(out)} == {"q1"}
    stats = collect.collect_scripted(QUESTIONS[:3], FakeTool(), out, backend="wiki", progress=False)
    assert stats["questions"] == 2
    assert sorted({r["question_id"] for r in read_jsonl(out)}) == ["q1", "q2", "q3"]


def test_repair_tail_keeps_complete_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n{"c": 3')
    assert repair_tail(path) == len('{"c": 3')
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n'
    assert repair_tail(path) == 0


def test_label_rule_judge_and_resume(tmp_path):
    collected = collected_file(tmp_path)
    out = tmp_path / "labelled.jsonl"
    # A previous run already labelled record b#0 (with a label the rule would not give: it must be kept).
    first = read_jsonl(collected)[1]
    out.write_text(json.dumps({**first, "labels": ["noisy"], "judge": "rule"}) + "\n")
    stats = label.label(collected, out, progress=False)
    assert stats == {"records": 2, "useful": 2, "noisy": 3, "unlabelled": 0}
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert list(rows) == ["b#0", "a#0", "c#0"]
    assert rows["b#0"]["labels"] == ["noisy"]
    assert rows["a#0"]["labels"] == ["useful", "noisy", "noisy"]
    assert rows["c#0"]["labels"] == ["useful", "noisy"]  # "Tala Menz" is in the Zimra Works paragraph
    assert label.label(collected, out, progress=False)["records"] == 0


def _sft_prompt(kind: str, count: str, question: str, answer: str, query: str) -> str:
    """The simulate_sft prompt, written out from spec section 4.2."""
    return (f"You are the Google search engine.\n"
            f"Given a query, you need to generate {count} {kind} document{'s' if count != 'one' else ''} for the query.\n"
            f"\n"
            f'The user is trying to answer the question: "{question}" whose answer is {answer}.\n'
            f"Each document should contain about 30 words, and these documents should contain {kind} information.\n"
            f"\n"
            f"Query: {query}\n"
            f"{kind.capitalize()} Output:\n")


def test_build_writes_a_balanced_seeded_simulate_sft_set(tmp_path):
    collected = collected_file(tmp_path)
    labelled = tmp_path / "labelled.jsonl"
    label.label(collected, labelled, progress=False)
    # Candidates: a useful(1) + a noisy(2), b useful(1), c useful(1) + c noisy(1): 3 useful, 2 noisy.
    rows = build_sft.candidate_rows(read_jsonl(labelled), "", topk=5)
    assert sorted(r["kind"] for r in rows) == ["noisy", "noisy", "useful", "useful", "useful"]
    a_noisy = next(r for r in rows if r["question_id"] == "a" and r["kind"] == "noisy")
    # The messages the search client sends at serving time: an empty system message, then the prompt.
    assert a_noisy["prompt"] == [{"role": "system", "content": ""}, {"role": "user", "content": _sft_prompt(
        "noisy", "two", "Where was Tala Menz born?", "Vostrand", "Tala Menz")}]
    assert a_noisy["response"] == f"Doc 1: {CORPUS['Orla Fenn']}\nDoc 2: {CORPUS['Zimra Works']}"
    b_useful = next(r for r in rows if r["question_id"] == "b")
    assert b_useful["prompt"][1]["content"] == _sft_prompt("useful", "one", "Where was Orla Fenn born?", "Kelvar",
                                                           "Orla Fenn")
    assert b_useful["response"] == f"Doc 1: {CORPUS['Orla Fenn']}"
    # topk caps the documents per row.
    assert build_sft.candidate_rows(read_jsonl(labelled), "", topk=1)[1]["response"] == f"Doc 1: {CORPUS['Orla Fenn']}"

    paths = build_sft.build(labelled, tmp_path / "sft", system_prompt="", topk=5, seed=3)
    table = pq.read_table(paths["train"]).to_pylist()
    assert len(table) == 4 and sum(r["kind"] == "useful" for r in table) == 2
    assert {(json.dumps(r["prompt"]), r["response"]) for r in table if r["kind"] == "noisy"} == {
        (json.dumps(r["prompt"]), r["response"]) for r in rows if r["kind"] == "noisy"}
    again = pq.read_table(build_sft.build(labelled, tmp_path / "sft2", system_prompt="", topk=5,
                                          seed=3)["train"]).to_pylist()
    assert again == table
    # system_prompt overrides the system message; None leaves it out.
    assert build_sft.candidate_rows(read_jsonl(labelled), "Be brief.")[0]["prompt"][0] == {
        "role": "system", "content": "Be brief."}
    assert [m["role"] for m in build_sft.candidate_rows(read_jsonl(labelled), None)[0]["prompt"]] == ["user"]


def test_build_refuses_a_set_without_one_kind(tmp_path):
    path = tmp_path / "labelled.jsonl"
    path.write_text(json.dumps({"id": "a#0", "question_id": "a", "question": "Q?", "golden_answers": ["x"],
                                "query": "q", "documents": ["x y"], "labels": ["useful"]}) + "\n")
    with pytest.raises(ValueError, match="0 noisy"):
        build_sft.build(path, tmp_path / "out", system_prompt="")


def test_load_questions_reads_jsonl_and_parquet_and_rejects_bad_rows(tmp_path):
    from scripts.data_process import qa_search

    jsonl = tmp_path / "qa.jsonl"
    jsonl.write_text("".join(json.dumps({**q, "data_source": "t"}) + "\n" for q in QUESTIONS))
    assert [q["id"] for q in load_questions(jsonl)] == ["q1", "q2", "q3", "q4"]
    written = qa_search.main(["--train", str(jsonl), "--test", "--train-split-ratio", "1", "--out", str(tmp_path)])
    from_parquet = load_questions(written["train"])
    assert [q["golden_answers"] for q in from_parquet] == [q["golden_answers"] for q in QUESTIONS]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "question": "Q?", "golden_answers": []}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl object 1: 'golden_answers'"):
        load_questions(bad)
