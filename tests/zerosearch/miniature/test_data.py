"""prepare_world: files, parquet schema, shared world tokenizer, and warm-start demonstrations
built from real BM25 results with observations only in prompts."""

from __future__ import annotations

import json
import math
import re

import pyarrow.parquet as pq
import pytest

from zerosearch import prompts
from zerosearch.miniature import data
from zerosearch.miniature.world import OCCUPATIONS

pytestmark = pytest.mark.slow  # builds a world, two models and a BM25 index (~10 s)

TURN = re.compile(r"^<think> [^<>]+ </think>\n<search> [^<>]+ </search>$")
ANSWER = re.compile(r"^<think> [^<>]+ </think>\n<answer> ([^<>]+) </answer>$")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    paths = data.prepare_world(out, seed=5, n_people=40, n_cities=8, n_companies=20, vocab_size=700,
                               wrong_rate=0.5, topk=3)
    return out, paths


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_files_and_parquet_rows(prepared):
    out, paths = prepared
    for key in ("corpus", "corpus_train", "train", "val", "test", "world", "train_parquet", "val_parquet",
                "test_parquet", "policy_model", "simulation_model", "warmstart_sft"):
        assert paths[key].exists(), key
    assert len(_jsonl(paths["corpus"])) == 40 + 20
    for split in ("train", "val", "test"):
        qa = _jsonl(paths[split])
        rows = pq.read_table(paths[f"{split}_parquet"]).to_pylist()
        assert [r["id"] for r in rows] == [q["id"] for q in qa]
        first = rows[0]
        assert first["prompt"] == [{"role": "user", "content": prompts.make_prefix(qa[0]["question"])}]
        assert first["reward_model"] == {"style": "rule", "ground_truth": {"target": qa[0]["golden_answers"]}}
        assert first["extra_info"]["split"] == split
        assert len({r["uid"] for r in rows}) == len(rows)


def test_policy_and_simulation_share_one_world_tokenizer(prepared):
    from transformers import AutoTokenizer

    _, paths = prepared
    policy = (paths["policy_model"] / "tokenizer.json").read_bytes()
    assert policy == (paths["simulation_model"] / "tokenizer.json").read_bytes()
    tok = AutoTokenizer.from_pretrained(paths["policy_model"])
    for row in _jsonl(paths["corpus"])[:5]:
        assert tok.decode(tok.encode(row["text"], add_special_tokens=False)) == row["text"]
    for tag in ("<search>", "</search>", "<answer>", "</answer>", "<information>", "</information>"):
        assert len(tok.encode(tag, add_special_tokens=False)) == 1


def test_warmstart_demonstrations(prepared):
    from transformers import AutoTokenizer

    out, paths = prepared
    rows = pq.read_table(paths["warmstart_sft"]).to_pylist()
    train = {q["id"]: q for q in _jsonl(paths["train"])}
    world = json.loads((out / "world.json").read_text())
    tok = AutoTokenizer.from_pretrained(paths["policy_model"])
    by_question: dict[str, list[dict]] = {}
    for r in rows:
        by_question.setdefault(r["question_id"], []).append(r)
    assert set(by_question) == set(train)  # every training question demonstrated (no sample cap)

    wrong = 0
    for qid, turns in by_question.items():
        q = train[qid]
        chat = [{"role": "user", "content": prompts.make_prefix(q["question"])}]
        assert turns[0]["prompt"] == tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        assert [t["turn"] for t in turns] == list(range(1, len(turns) + 1))
        for prev, nxt in zip(turns, turns[1:]):
            # Each turn's prompt = previous prompt + previous response + a real observation.
            assert nxt["prompt"].startswith(prev["prompt"] + prev["response"] + "\n\n<information>Doc 1: (Title: ")
            assert nxt["prompt"].endswith("</information>\n\n")
        for t in turns[:-1]:
            assert t["action"] == "search" and TURN.match(t["response"]), t["response"]
        last = turns[-1]
        assert last["action"] == "answer"
        answer = ANSWER.match(last["response"]).group(1)
        # Observations never carry loss: they appear only in prompts.
        assert all("<information>" not in t["response"] for t in turns)
        gold = q["golden_answers"][0]
        assert (answer == gold) == last["correct"]
        if not last["correct"]:
            wrong += 1
            pool = world["cities"] if q["kind"] in ("birthplace", "headquarters", "founder_birthplace") else (
                [p["name"] for p in world["people"]] if q["kind"] == "founder" else OCCUPATIONS)
            assert answer in pool  # a distractor of the gold answer's type
            if q["kind"] != "occupation":  # ...taken from the documents when they hold another value of its type
                seen = last["prompt"].split("<|im_start|>assistant")[-1]
                others = [v for v in pool if v in seen and v != gold]
                assert answer in seen or not others, (answer, others)
    n = len(by_question)
    # wrong_rate 0.5: the share of wrong answers is Binomial(n, 0.5); allow 4 standard deviations.
    assert abs(wrong - n / 2) <= 4 * math.sqrt(n / 4)
    # Two-hop questions whose founder was retrieved get a second search for the founder.
    two_hop = [qid for qid in by_question if train[qid]["kind"] == "founder_birthplace"]
    assert any(len(by_question[qid]) == 3 for qid in two_hop)


def test_warmstart_rows_are_seeded(prepared):
    from transformers import AutoTokenizer

    from zerosearch.miniature.world import build_questions, build_world

    _, paths = prepared
    tok = AutoTokenizer.from_pretrained(paths["policy_model"])
    world = build_world(5, n_people=40, n_cities=8, n_companies=20)
    qs = build_questions(world)[:30]
    a = data.warmstart_rows(world, qs, tok, data._bm25(world), topk=3, wrong_rate=0.5, seed=1)
    b = data.warmstart_rows(world, qs, tok, data._bm25(world), topk=3, wrong_rate=0.5, seed=1)
    assert a == b
    none_wrong = data.warmstart_rows(world, qs, tok, data._bm25(world), topk=3, wrong_rate=0.0, seed=1)
    assert all(r["correct"] for r in none_wrong)
    with pytest.raises(ValueError, match="wrong_rate"):
        data.warmstart_rows(world, qs, tok, data._bm25(world), wrong_rate=1.5)


def _assistant_part(prompt: str) -> str:
    return prompt.split("<|im_start|>assistant")[-1]


def test_skip_rate_takes_away_only_the_first_search(prepared):
    """skip_rate: a seeded share of the questions answers a guess in its first turn instead of
    searching; the rows after that search are still written, and skip_rate=0 changes nothing."""
    from transformers import AutoTokenizer

    from zerosearch.miniature.world import build_questions, build_world

    _, paths = prepared
    tok = AutoTokenizer.from_pretrained(paths["policy_model"])
    world = build_world(5, n_people=40, n_cities=8, n_companies=20)
    qs = build_questions(world)
    retriever = data._bm25(world)
    plain = data.warmstart_rows(world, qs, tok, retriever, topk=1, wrong_rate=0.3, seed=2)
    assert plain == data.warmstart_rows(world, qs, tok, retriever, topk=1, wrong_rate=0.3, seed=2, skip_rate=0.0)
    skipping = data.warmstart_rows(world, qs, tok, retriever, topk=1, wrong_rate=0.3, seed=2, skip_rate=0.6)
    guesses = [r for r in skipping if r["action"] == "guess"]
    n = len(qs)
    # Binomial(n, 0.6) guesses; 4 standard deviations
    assert abs(len(guesses) - 0.6 * n) <= 4 * math.sqrt(n * 0.6 * 0.4)
    guessed = {r["question_id"] for r in guesses}
    kind = {q.id: q.kind for q in qs}
    for r in guesses:
        assert r["turn"] == 1 and "<information>" not in _assistant_part(r["prompt"])
        m = ANSWER.match(r["response"])
        assert m and r["response"].startswith("<think> I know the answer. </think>")
        pool = world.cities if kind[r["question_id"]] in ("birthplace", "headquarters", "founder_birthplace") else (
            [p.name for p in world.people] if kind[r["question_id"]] == "founder" else OCCUPATIONS)
        assert m.group(1) in pool
    # a guessed question has no first search row, but keeps every later row of its searched trajectory
    first_search = {r["question_id"] for r in skipping if r["action"] == "search" and r["turn"] == 1}
    assert not (first_search & guessed) and first_search | guessed == {q.id for q in qs}
    later = lambda rows: [(r["question_id"], r["turn"], r["prompt"]) for r in rows if r["turn"] > 1]  # noqa: E731
    assert later(skipping) == later(plain)
    assert later(skipping) and all("<information>" in _assistant_part(p) for _, _, p in later(skipping))
    with pytest.raises(ValueError, match="skip_rate"):
        data.warmstart_rows(world, qs, tok, retriever, skip_rate=-0.1)


def test_guess_rows_mark_their_guess_and_the_sft_data_leaves_it_unlearnt(prepared, tmp_path):
    """A guess row's guess_span is exactly its guessed answer; other rows have none. Read with
    data.loss_exclude_key=guess_span, the SFT rows of a guess learn "<think> I know the answer.
    </think>", the answer tags and eos, and not the guessed name."""
    from transformers import AutoTokenizer

    from verl.utils.dataset.sft_dataset import SFTDataset
    from zerosearch.miniature.world import build_questions, build_world

    _, paths = prepared
    tok = AutoTokenizer.from_pretrained(paths["policy_model"])
    world = build_world(5, n_people=40, n_cities=8, n_companies=20)
    rows = data.warmstart_rows(world, build_questions(world), tok, data._bm25(world), topk=1, wrong_rate=0.3,
                               seed=2, skip_rate=0.6)
    path = data._write_warmstart(rows, tmp_path / "ws.parquet")
    written = pq.read_table(path).to_pylist()
    assert [r["response"] for r in written] == [r["response"] for r in rows]
    guesses = [i for i, r in enumerate(written) if r["action"] == "guess"]
    assert guesses and all(written[i]["guess_span"] for i in guesses)
    for r in written:
        if r["action"] != "guess":
            assert r["guess_span"] == []
            continue
        (start, end), = r["guess_span"]
        assert r["response"][start:end] == ANSWER.match(r["response"]).group(1)
    cfg = {"prompt_key": "prompt", "response_key": "response", "max_length": 512, "truncation": "error",
           "apply_chat_template": False, "loss_exclude_key": "guess_span"}
    dataset = SFTDataset(str(path), tok, cfg)
    for i in guesses[:5]:
        item, r = dataset[i], written[i]
        n_p = len(tok(r["prompt"])["input_ids"])
        n = int(item["attention_mask"].sum())
        ids, mask = item["input_ids"][:n], item["loss_mask"][:n].bool()
        excluded = ids[n_p:][~mask[n_p:]].tolist()
        assert tok.decode(excluded).strip() == ANSWER.match(r["response"]).group(1)
        assert tok.decode(ids[mask].tolist()).startswith("<think> I know the answer. </think>")
    searched = next(i for i, r in enumerate(written) if r["action"] == "answer")
    assert int(dataset[searched]["loss_mask"].sum()) == len(tok(written[searched]["response"])["input_ids"]) + 1


def test_practice_worlds_demonstrate_other_names_only(tmp_path):
    """practice_worlds: every question of each practice world is demonstrated from its own corpus,
    and no practice row is about an entity of the target world (or of another practice world)."""
    from zerosearch.miniature.world import build_questions

    sizes = dict(n_people=30, n_cities=6, n_companies=12)
    paths = data.prepare_world(tmp_path, seed=5, vocab_size=700, wrong_rate=0.0, topk=1, practice_worlds=2, **sizes)
    rows = pq.read_table(paths["warmstart_sft"]).to_pylist()
    target = json.loads(paths["world"].read_text())
    target_names = [p["name"] for p in target["people"]] + [c["name"] for c in target["companies"]]
    train_ids = {q["id"] for q in _jsonl(paths["train"])}
    by_world: dict[int, list[dict]] = {}
    for r in rows:
        by_world.setdefault(r["world"], []).append(r)
    assert sorted(by_world) == [0, 1, 2]
    assert {r["question_id"] for r in by_world[0]} == train_ids
    n_questions = 2 * 30 + 3 * 12  # birthplace + occupation per person; founder, HQ, two-hop per company
    subjects = {}
    for i in (1, 2):
        ids = {r["question_id"] for r in by_world[i]}
        assert len(ids) == n_questions
        subjects[i] = {qid.split("-", 1)[1] for qid in ids}
        for r in by_world[i]:
            text = r["prompt"] + r["response"]
            assert not [n for n in target_names if n in text], r["question_id"]
        # each practice row's first observation comes from its own world's corpus
        searched = [r for r in by_world[i] if r["action"] == "answer" and r["turn"] == 2]
        assert searched
        for r in searched:
            subject = r["question_id"].split("-", 1)[1]
            assert f"(Title: {subject})" in r["prompt"], r["question_id"]
    assert not subjects[1] & subjects[2] and not (subjects[1] | subjects[2]) & set(target_names)
    assert len(build_questions(data.build_world(5, **sizes))) == n_questions
    with pytest.raises(ValueError, match="practice_worlds"):
        data.prepare_world(tmp_path / "bad", seed=5, vocab_size=700, practice_worlds=-1, **sizes)


def test_counterfactual_worlds_demonstrate_training_questions_with_redrawn_facts(tmp_path):
    """counterfactual_worlds: each copy demonstrates exactly the training questions, each answered
    with the value written in the document its row retrieved, facts that differ from the real
    ones, and no held-out person as an answer."""
    sizes = dict(n_people=30, n_cities=6, n_companies=12)
    paths = data.prepare_world(tmp_path, seed=5, vocab_size=700, wrong_rate=0.0, topk=1, counterfactual_worlds=2,
                               **sizes)
    rows = pq.read_table(paths["warmstart_sft"]).to_pylist()
    train = {q["id"]: q for q in _jsonl(paths["train"])}
    test_names = {q["id"].split("-", 1)[1] for q in _jsonl(paths["test"])}
    train_names = {q["id"].split("-", 1)[1] for q in train.values()} | {q["golden_answers"][0] for q in train.values()}
    held_out_people = test_names - train_names
    assert held_out_people
    by_copy: dict[int, list[dict]] = {}
    for r in rows:
        by_copy.setdefault(r["counterfactual"], []).append(r)
    assert sorted(by_copy) == [0, 1, 2] and {r["world"] for r in rows} == {0}
    answers = {}
    for i in (0, 1, 2):
        assert {r["question_id"] for r in by_copy[i]} == set(train), i
        final = [r for r in by_copy[i] if r["action"] == "answer"]
        for r in final:
            answer = r["response"].split("<answer>")[1].split("</answer>")[0].strip()
            documents = r["prompt"].split("<information>")[-1]
            assert answer in documents, (i, r["question_id"])  # read from the retrieved document
            # redrawn founders are training people: no answer (a loss target) names a held-out person
            assert answer not in held_out_people, (i, r["question_id"])
        answers[i] = {r["question_id"]: r["response"] for r in final}
    for i in (1, 2):
        shared = set(answers[0]) & set(answers[i])
        assert sum(answers[0][q] != answers[i][q] for q in shared) > 0.5 * len(shared)
    with pytest.raises(ValueError, match="counterfactual_worlds"):
        data.prepare_world(tmp_path / "bad", seed=5, vocab_size=700, counterfactual_worlds=-1, **sizes)


def test_the_simulation_model_can_have_its_own_preset(tmp_path):
    """simulation_model_size: the policy gets model_size's layers, the simulator the other preset's."""
    sizes = dict(n_people=20, n_cities=5, n_companies=8)
    paths = data.prepare_world(tmp_path, seed=5, vocab_size=600, topk=1, model_size="tiny-deep",
                               simulation_model_size="tiny-mha", **sizes)
    policy = json.loads((paths["policy_model"] / "config.json").read_text())
    simulator = json.loads((paths["simulation_model"] / "config.json").read_text())
    # tiny-deep: 4 layers of 4 heads; tiny-mha: 2 layers of 2 heads (zerosearch/miniature/tiny.py SIZES)
    assert (policy["num_hidden_layers"], policy["num_attention_heads"]) == (4, 4)
    assert (simulator["num_hidden_layers"], simulator["num_attention_heads"]) == (2, 2)


def _renaming_world():
    from zerosearch.miniature.world import build_world

    world = build_world(seed=11, n_people=30, n_cities=6, n_companies=12)
    company = world.companies[0]
    founder = company.founder
    person = next(p for p in world.people if p.name != founder)
    # the "training" entities: everyone but the last five people (held out)
    held = {p.name for p in world.people[-5:]} - {founder, person.name}
    train = {p.name for p in world.people} - held | {c.name for c in world.companies}
    rows = [
        {"prompt": f"Question: Where was {person.name} born?\nassistant\n",
         "response": f"<think> I need to search for {person.name}. </think>\n<search> Where was {person.name} born? </search>",
         "question_id": f"birthplace-{person.name}", "turn": 1, "action": "search", "correct": True, "world": 0,
         "counterfactual": 0, "renamed": 0},
        {"prompt": f"Question: Who founded {company.name}?\n<information>Doc 1: (Title: {company.name}) {company.name} "
                   f"is a bank company founded by {founder} in 1970.</information>\n",
         "response": f"<think> I found the answer. </think>\n<answer> {founder} </answer>",
         "question_id": f"founder-{company.name}", "turn": 2, "action": "answer", "correct": True, "world": 0,
         "counterfactual": 1, "renamed": 0},
    ]
    return world, person, company, founder, train, rows


def test_rename_rows_gives_every_row_fresh_names_consistent_within_it():
    """rename_rows: copy i of each row names no entity of the world, uses one drawn name per entity
    throughout the row (question, thought, query, document, answer), of the same kind, made of the
    training entities' words, and different rows draw different names."""
    world, person, company, founder, train, rows = _renaming_world()
    copies = data.rename_rows(rows * 20, world, train, copies=2, seed=3)
    assert len(copies) == 80 and [r["renamed"] for r in copies] == [1] * 40 + [2] * 40
    every_name = [p.name for p in world.people] + [c.name for c in world.companies]
    first_words = {n.split()[0] for n in train if n in {p.name for p in world.people}}
    last_words = {n.split()[1] for n in train if n in {p.name for p in world.people}}
    person_names, company_names = [], []
    for r in copies:
        text = r["prompt"] + r["response"]
        assert not [n for n in every_name if n in text], text
        assert r["question_id"] in (rows[0]["question_id"], rows[1]["question_id"])
        assert {k: r[k] for k in ("turn", "action", "correct", "world", "counterfactual")} == \
               {k: rows[r["turn"] - 1][k] for k in ("turn", "action", "correct", "world", "counterfactual")}
        if r["action"] == "search":
            name = re.match(r"Question: Where was (.+) born\?", r["prompt"]).group(1)
            assert r["response"] == (f"<think> I need to search for {name}. </think>\n"
                                     f"<search> Where was {name} born? </search>")
            first, last = name.split(" ")
            assert first in first_words and last in last_words
            person_names.append(name)
        else:
            m = re.match(r"Question: Who founded (.+)\?\n<information>Doc 1: \(Title: (.+)\) (.+) is a bank company "
                         r"founded by (.+) in 1970\.</information>\n$", r["prompt"])
            assert m and m.group(1) == m.group(2) == m.group(3), r["prompt"]
            assert m.group(1).rsplit(" ", 1)[1] in {c.name.rsplit(" ", 1)[1] for c in world.companies}
            assert r["response"] == f"<think> I found the answer. </think>\n<answer> {m.group(4)} </answer>"
            assert m.group(4) != m.group(1)
            company_names.append(m.group(1))
    # 40 draws each from ~25 x 25 person and 12 x 12 company combinations: mostly distinct
    assert len(set(person_names)) >= 30 and len(set(company_names)) >= 20
    assert data.rename_rows(rows, world, train, copies=0, seed=3) == []
    with pytest.raises(ValueError, match="renamed_copies"):
        data.rename_rows(rows, world, train, copies=-1, seed=3)


def test_rename_rows_stops_with_an_error_when_no_name_is_left():
    """One training person and one company: every combination of their words is a world name, so
    no fresh name exists; the draw ends with an error instead of looping."""
    world, person, company, founder, _, rows = _renaming_world()
    with pytest.raises(RuntimeError, match="no unused person name"):
        data.rename_rows(rows[:1], world, {person.name, company.name}, copies=1, seed=3)
