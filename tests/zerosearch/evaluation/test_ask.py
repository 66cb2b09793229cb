"""``python -m zerosearch.evaluation.ask``: one question -> the agent loop of evaluation -> a readable trajectory.

End to end on a tiny Qwen2 rewired into a bigram machine (tests/e2e/bigram_models.py) that writes
``<think> need facts</think><search> capital city</search><answer> Paris</answer>`` after every
newline, with the real retrieval server (BM25 over the shipped Wikipedia paragraphs) and the
``wiki`` backend. With one search round the first turn stops at ``</search>`` and gets documents;
the last turn writes the same text and stops at its ``</search>`` too: that search is not run and
the trajectory ends without an answer (the model never gets to write its own documents and answer).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from zerosearch.evaluation import ask

REPO = Path(__file__).resolve().parents[3]
WIKI = REPO / "data" / "corpus" / "wiki_paragraphs.jsonl"
CHAIN = "\n<think> need facts</think><search> capital city</search><answer> Paris</answer>"
QUERY = "capital city"
# Short turns and a short observation keep the two generations cheap.
SHORT = ["--override", "actor_rollout_ref.rollout.max_new_tokens=24", "--override", "data.max_response_length=160",
         "--override", "retriever.max_obs_length=64"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def bigram_model(tmp_path_factory):
    from tests.e2e.bigram_models import rewire_as_bigram
    from zerosearch.miniature.tiny import build_tiny_model

    return str(rewire_as_bigram(build_tiny_model(tmp_path_factory.mktemp("ask") / "policy", size="tiny", seed=0), CHAIN))


@pytest.fixture(scope="module")
def wiki_server():
    """The real retrieval server on 127.0.0.1, and the title of its top hit for QUERY."""
    from zerosearch.retrieval.background import BackgroundServer
    from zerosearch.retrieval.bm25 import BM25Retriever
    from zerosearch.retrieval.server import create_app

    retriever = BM25Retriever.from_corpus(WIKI)
    title = retriever.search([QUERY], 2)[0][0][0].title
    with BackgroundServer(create_app(retriever), host="127.0.0.1", port=0, startup_timeout_s=30) as server:
        yield server.port, title


def run(model, port, *extra, stdin="", stdout=None):
    stdout = stdout if stdout is not None else io.StringIO()
    records = ask.main(["--model", model, "--retriever-port", str(port), "--max-turns", "1", "--topk", "2",
                        "--device", "cpu", *SHORT, *extra], stdin=io.StringIO(stdin), stdout=stdout)
    return records, stdout.getvalue()


def test_plain_output_shows_every_section_and_the_json_record_agrees(bigram_model, wiki_server, tmp_path):
    port, top_title = wiki_server
    out_json = tmp_path / "rec" / "ask.jsonl"
    records, text = run(bigram_model, port, "--json", str(out_json), "What is the capital of France")

    assert "\x1b[" not in text  # not a terminal: plain text
    lines = text.splitlines()
    expected_in_order = [
        "Question: What is the capital of France?",
        "Turn 1", "  think: need facts", f"  search: {QUERY}", "  information:",
        "Turn 2", "  think: need facts", f"  search (not run): {QUERY}",
        "Answer: (none: no <answer>...</answer> in the response) (1 search, 2 turns)",
    ]
    at = -1
    for line in expected_in_order:  # each after the one before
        at = lines.index(line, at + 1)
    docs = lines[lines.index("  information:") + 1]
    assert docs.startswith(f"    Doc 1: (Title: {top_title})")

    (record,) = [json.loads(line) for line in out_json.read_text(encoding="utf-8").splitlines()]
    assert record == records[0]
    assert record["question"] == "What is the capital of France?"
    assert record["answer"] is None and "answer:" not in text
    assert record["queries"] == [QUERY]
    assert record["num_searches"] == 1 and record["num_turns"] == 2
    assert record["search_engine"] == "wiki" and record["model"] == bigram_model
    kinds = [(s["turn"], s["kind"]) for s in record["steps"]]
    assert kinds == [(1, "think"), (1, "search"), (1, "information"), (2, "think"), (2, "search_not_run")]
    # the steps are what was printed, and every one of them is in the trajectory as generated
    assert ask.render(record) == text
    info = record["steps"][2]["text"]
    assert f"<search> {QUERY}</search>\n\n<information>{info}</information>" in record["trajectory"]
    assert record["trajectory"].endswith(f"<search> {QUERY}</search>")  # the final turn stops there
    assert record["num_searches"] == sum(s["kind"] == "information" for s in record["steps"])
    assert record["queries"] == [s["text"] for s in record["steps"] if s["kind"] == "search"]


def test_questions_from_stdin_one_per_line(bigram_model, wiki_server, tmp_path):
    port, _ = wiki_server
    out_json = tmp_path / "many.jsonl"
    records, text = run(bigram_model, port, "--json", str(out_json),
                        stdin="Who wrote Hamlet\n\n  What is the capital of France?  \n")
    assert [r["question"] for r in records] == ["Who wrote Hamlet?", "What is the capital of France?"]
    assert text.count("Question: ") == 2 and text.count("Answer: (none") == 2
    assert [json.loads(line)["question"] for line in out_json.read_text().splitlines()] == [
        "Who wrote Hamlet?", "What is the capital of France?"]


def test_colours_on_a_terminal_only(bigram_model, wiki_server, monkeypatch):
    port, _ = wiki_server
    monkeypatch.delenv("NO_COLOR", raising=False)
    records, coloured = run(bigram_model, port, "Capital of France?", stdout=Terminal())
    assert f"\x1b[1;33m{QUERY}\x1b[0m" in coloured  # the query in bold yellow
    assert ANSI.sub("", coloured) == ask.render(records[0], color=False)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not ask.use_color(Terminal())
    assert not ask.use_color(io.StringIO())


def test_an_invalid_turn_and_its_correction_message_are_shown():
    steps = ask.policy_steps("hmm <think>a\nb</think> tail", 3)
    assert steps == [{"turn": 3, "kind": "text", "text": "hmm"}, {"turn": 3, "kind": "think", "text": "a\nb"},
                     {"turn": 3, "kind": "text", "text": "tail"}]
    note = ask.observation_step("\nMy previous action is invalid. Let me try again.\n", 3)
    assert note == {"turn": 3, "kind": "note", "text": "My previous action is invalid. Let me try again."}
    record = {"question": "Q?", "steps": steps + [note], "answer": None, "num_searches": 0, "num_turns": 1}
    assert ask.render(record).splitlines() == [
        "Question: Q?", "Turn 3", "  text: hmm", "  think:", "    a", "    b", "  text: tail",
        "  note: My previous action is invalid. Let me try again.",
        "Answer: (none: no <answer>...</answer> in the response) (0 searches, 1 turn)",
    ]


@pytest.mark.parametrize("extra, message", [
    (["--search-engine", "simulate_sft"], "give --answer"),
    (["--search-engine", "bing"], "--search-engine must be one of"),
    (["--engine", "sglang"], "--engine must be one of"),
])
def test_bad_inputs_exit_2_naming_the_flag(bigram_model, capsys, extra, message):
    with pytest.raises(SystemExit) as info:
        ask.main(["--model", bigram_model, "--device", "cpu", *extra, "Q?"])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_a_folder_without_config_json_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        ask.main(["--model", str(tmp_path), "--device", "cpu", "Q?"])
    assert info.value.code == 2 and "config.json" in capsys.readouterr().err
