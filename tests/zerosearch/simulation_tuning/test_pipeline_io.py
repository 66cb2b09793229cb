"""Simulation tuning against real servers and models: the LLM judge over HTTP (retries, bad
replies), checkpoint-policy collection through the agent loop, and the whole CLI on a small
synthetic world served by the project's retrieval server."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from safetensors.torch import load_file

from verl.workers.rollout.base import GenerationOutput
from zerosearch.miniature import tiny
from zerosearch.miniature import world as world_mod
from zerosearch.miniature.data import world_texts
from zerosearch.retrieval.background import BackgroundServer
from zerosearch.retrieval.bm25 import BM25Retriever
from zerosearch.retrieval.server import create_app
from zerosearch.simulation_tuning import __main__ as cli
from zerosearch.simulation_tuning import collect, label
from zerosearch.simulation_tuning.records import read_jsonl

from pipeline_fakes import QUESTIONS, FakeTool, collected_file


def _judge_app(mode: str) -> FastAPI:
    """A stand-in judge: says yes when the document holds the answer named in the prompt. The first
    request gets HTTP 500 (a retry must follow); mode "maybe" always answers "maybe"."""
    app = FastAPI()
    app.state.calls = 0

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.calls += 1
        if app.state.calls == 1:
            return JSONResponse({"error": "warming up"}, status_code=500)
        prompt = body["messages"][0]["content"]
        answer = re.search(r"The correct answer is: (.*)\.\n", prompt).group(1)
        document = re.search(r"Document: (.*)\n\n", prompt).group(1)
        verdict = "maybe" if mode == "maybe" else ("Yes." if answer in document else "no")
        return {"choices": [{"message": {"role": "assistant", "content": verdict}}]}

    return app


@pytest.mark.slow
def test_llm_judge_labels_over_http_with_retries(tmp_path):
    collected = collected_file(tmp_path)
    app = _judge_app("ok")
    with BackgroundServer(app) as server:
        judge = label.LLMJudge(server.url + "/v1", "judge", timeout=10, max_retries=2, backoff=0.01)
        stats = label.label(collected, tmp_path / "labelled.jsonl", judge, progress=False)
    assert stats == {"records": 3, "useful": 3, "noisy": 3, "unlabelled": 0}
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "labelled.jsonl")}
    assert rows["a#0"]["labels"] == ["useful", "noisy", "noisy"]
    assert rows["b#0"]["labels"] == ["useful"] and rows["c#0"]["labels"] == ["useful", "noisy"]
    assert rows["a#0"]["judge"] == "llm:judge"
    assert app.state.calls == 6 + 1  # six documents, one retried request


@pytest.mark.slow
def test_llm_judge_stops_when_replies_are_unusable(tmp_path):
    collected = collected_file(tmp_path)
    with BackgroundServer(_judge_app("maybe")) as server:
        judge = label.LLMJudge(server.url, "judge", timeout=10, max_retries=1, backoff=0.01)
        with pytest.raises(RuntimeError, match="6 of 6 judgements failed"):
            label.label(collected, tmp_path / "labelled.jsonl", judge, progress=False)
    assert not (tmp_path / "labelled.jsonl").exists() or read_jsonl(tmp_path / "labelled.jsonl") == []


def test_parse_verdict():
    assert label.parse_verdict(" Yes, it does.") == label.USEFUL
    assert label.parse_verdict("NO") == label.NOISY
    with pytest.raises(Exception, match="yes or no"):
        label.parse_verdict("yesterday")


def test_checkpoint_policy_collection_records_every_search_of_the_agent_loop(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from verl.workers.rollout import hf_rollout

    model_dir = tiny.build_tiny_model(tmp_path / "policy", "tiny", corpus_texts=[q["question"] for q in QUESTIONS] * 5,
                                      vocab_size=300)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)

    def fake_generate(self, prompts, sampling):
        # A policy that searches for the question's subject once, then answers.
        outs = []
        for ids in prompts:
            question, _, response = tok.decode(ids).partition("<|im_start|>assistant")
            if "<information>" in response:
                reply = "<answer> Vostrand </answer>"
            else:
                subject = "Zimra Works" if "Zimra" in question else "Tala Menz"
                reply = f"<think> look it up </think>\n<search> {subject} </search>"
            new = tok.encode(reply, add_special_tokens=False)
            outs.append(GenerationOutput(new, [0.0] * len(new), "stop"))
        return outs

    monkeypatch.setattr(hf_rollout.HFRollout, "generate", fake_generate)
    cfg = OmegaConf.load(cli.DEFAULT_RETRIEVER_CONFIG)
    cfg.seed = 0
    out = tmp_path / "collected.jsonl"
    with FakeTool() as tool:
        stats = collect.collect_with_policy(QUESTIONS[:3], tool, out, backend="wiki", policy_dir=str(model_dir),
                                            retriever_cfg=cfg, max_turns=2, max_new_tokens=32, progress=False)
        assert tool.queries == ["Tala Menz", "Zimra Works", "Zimra Works"]
    assert stats["questions"] == 3 and stats["records"] == 3
    rows = read_jsonl(out)
    assert [(r["question_id"], r["query"]) for r in rows] == [("q1", "Tala Menz"), ("q2", "Zimra Works"),
                                                              ("q3", "Zimra Works")]
    assert rows[0]["documents"][0] == f"(Title: Tala Menz) Tala Menz is a poet who was born in Vostrand in 1950."
    assert rows[1]["golden_answers"] == ["Tala Menz"] and rows[1]["policy"] == str(model_dir)


@pytest.mark.slow
def test_cli_all_on_a_small_world_served_by_the_retrieval_server(tmp_path, capsys):
    world = world_mod.build_world(seed=1, n_people=24, n_cities=6, n_companies=12)
    questions = world_mod.build_questions(world)
    paths = world_mod.write_world(world, questions, str(tmp_path / "world"), test_fraction=0.2, seed=1)
    sim = tiny.build_tiny_model(tmp_path / "sim", "tiny", corpus_texts=world_texts(world, questions), seed=1,
                                vocab_size=600, kind="simulation")
    retriever = BM25Retriever.from_corpus(paths["corpus"])
    work = tmp_path / "work"
    with BackgroundServer(create_app(retriever)) as server:
        args = ["--topk", "3", "all", "--work-dir", str(work), "--questions", paths["train"], "--backend", "wiki",
                "--wiki-port", str(server.port), "--limit", "20", "--model", str(sim), "--steps", "3",
                "--device", "cpu", "--autocast-dtype", "none", "--sft-batch-size", "2", "--max-length", "256",
                "--lr", "1e-3"]
        result = cli.main(args)
    assert result["collect"]["questions"] == 20 and result["collect"]["failed"] == 0
    collected = read_jsonl(work / "collected.jsonl")
    assert len({r["question_id"] for r in collected}) == 20
    # Every single-hop question's entity query reaches the paragraph that holds its answer.
    by_title = {json.loads(line)["title"]: json.loads(line)["text"] for line in open(paths["corpus"])}
    for r in collected:
        if r["query"] in by_title:
            assert any(by_title[r["query"]] in d for d in r["documents"]), r["query"]
    train = pq.read_table(work / "sft" / "train.parquet").to_pylist()
    assert train and sum(r["kind"] == "useful" for r in train) * 2 == len(train)
    hf = work / "model" / "huggingface"
    assert result["huggingface"] == str(hf)
    tuned, base = load_file(hf / "model.safetensors"), load_file(sim / "model.safetensors")
    assert any(not torch.equal(tuned[k], base[k]) for k in base)
    printed = capsys.readouterr().out
    assert "launch_simulation_server.sh" in printed and str(hf) in printed


def test_collect_topk_sets_the_documents_fetched_not_the_rows():
    """--collect-topk K2 fetches K2 documents per query when collecting; --topk alone does both."""
    base = ["collect", "--questions", "q.jsonl", "--backend", "wiki", "--out", "c.jsonl"]
    assert cli.retriever_config(cli.build_parser().parse_args(["--topk", "1", *base])).topk == 1
    args = cli.build_parser().parse_args(["--topk", "1", "--collect-topk", "3", *base])
    assert cli.retriever_config(args).topk == 3 and args.topk == 1
