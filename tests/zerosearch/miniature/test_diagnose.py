"""diagnose: teacher-forced skill scores, checked with an oracle that always predicts the next
token (every skill right), a model that never does (every skill wrong), and one that is right
everywhere except on name tokens (names wrong, answers right)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from zerosearch.miniature import data, diagnose
from zerosearch.miniature.world import OCCUPATIONS, build_questions, read_world

pytestmark = pytest.mark.slow  # builds a world and two models (~10 s)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    data.prepare_world(out, seed=3, n_people=30, n_cities=6, n_companies=12, vocab_size=1500, topk=1, wrong_rate=0.0)
    return out


class _TeacherForcedOracle(torch.nn.Module):
    """Logits that put the next token of the given sequence first, except where ``wrong(t)``."""

    def __init__(self, vocab: int, wrong=lambda token: False):
        super().__init__()
        self.vocab, self.wrong = vocab, wrong

    def forward(self, input_ids):
        b, t = input_ids.shape
        logits = torch.zeros(b, t, self.vocab)
        for i in range(t - 1):
            nxt = int(input_ids[0, i + 1])
            logits[0, i, (nxt + 1) % self.vocab if self.wrong(nxt) else nxt] = 1.0
        return SimpleNamespace(logits=logits)


def _rows(world_dir, tok):
    world = read_world(str(world_dir))
    ids = [json.loads(line)["id"] for line in (world_dir / "test.jsonl").read_text().splitlines()]
    by_id = {q.id: q for q in build_questions(world)}
    return world, data.warmstart_rows(world, [by_id[i] for i in ids], tok, data._bm25(world), topk=1, wrong_rate=0.0)


def test_oracle_scores_every_skill_and_a_wrong_model_none(world_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world_dir / "models" / "policy")
    world, rows = _rows(world_dir, tok)
    n_test = len((world_dir / "test.jsonl").read_text().splitlines())
    right = diagnose.score_rows(_TeacherForcedOracle(len(tok)), tok, rows)
    assert {"think_name", "query_name"} <= set(right) and any(k.startswith("answer/") for k in right)
    assert all(r == n for r, n in right.values())
    assert sum(n for k, (_, n) in right.items() if k.startswith("answer/")) == n_test  # one answer per question
    wrong = diagnose.score_rows(_TeacherForcedOracle(len(tok), wrong=lambda t: True), tok, rows)
    assert all(r == 0 for r, _ in wrong.values())
    # wrong on exactly the tokens of person and company names: the name skills fail, and so do the
    # answers that are names (founder), while cities and occupations are still read
    names = {p.name for p in world.people} | {c.name for c in world.companies}
    name_tokens = {t for n in names for t in tok.encode(" " + n, add_special_tokens=False)}
    others = {t for w in world.cities + OCCUPATIONS for t in tok.encode(" " + w, add_special_tokens=False)}
    assert name_tokens.isdisjoint(others)  # every word one token at this vocabulary
    no_names = diagnose.score_rows(_TeacherForcedOracle(len(tok), wrong=lambda t: t in name_tokens), tok, rows)
    assert no_names["think_name"][0] == 0 and no_names["query_name"][0] == 0
    for skill, (r, n) in no_names.items():
        if skill in ("answer/occupation", "answer/birthplace", "answer/headquarters", "answer/founder_birthplace"):
            assert r == n, skill
        if skill == "answer/founder":
            assert r == 0


def test_diagnose_end_to_end_and_bad_world(world_dir, tmp_path, capsys):
    scores = diagnose.main(["--model", str(world_dir / "models" / "policy"), "--world", str(world_dir), "--limit", "5"])
    out = capsys.readouterr().out
    assert "| think_name |" in out and sum(n for _, n in scores.values()) >= 5
    with pytest.raises(FileNotFoundError, match="world.json"):
        diagnose.diagnose(world_dir / "models" / "policy", tmp_path)
