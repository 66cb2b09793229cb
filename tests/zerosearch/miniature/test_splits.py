"""Clean splits of the miniature, checked on a built world (prepare_world with counterfactual copies):
no val or test entity reaches the tokenizer's corpus, the warm-start rows, their guesses, or the
simulation model's tuning corpus; two-hop test questions go through held-out entities only."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from zerosearch.miniature import data
from zerosearch.miniature.world import build_questions, read_world, split_entities

pytestmark = pytest.mark.slow  # builds a world, two models and BM25 indexes (~15 s)


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    paths = data.prepare_world(out, seed=2, n_people=60, n_cities=8, n_companies=30, vocab_size=800, topk=1,
                               wrong_rate=0.3, skip_rate=0.6, counterfactual_worlds=2,
                               renamed_copies=1)
    world = read_world(str(out))
    by_id = {q.id: q for q in build_questions(world)}
    splits = {s: [by_id[r["id"]] for r in _jsonl(paths[s])] for s in ("train", "val", "test")}
    entities = split_entities(splits)
    held = entities["val"] | entities["test"]
    return paths, world, splits, entities, held


def test_splits_partition_questions_and_entities(built):
    _, world, splits, entities, held = built
    assert sum(len(v) for v in splits.values()) == len(build_questions(world))
    assert all(splits.values())
    assert entities["train"].isdisjoint(held) and entities["val"].isdisjoint(entities["test"])
    for q in splits["test"]:
        if q.kind in ("founder", "founder_birthplace"):
            assert set(q.entities) <= entities["test"], q.id  # company and founder both held out


def test_no_held_out_entity_in_warm_start_rows(built):
    paths, _, _, _, held = built
    rows = pq.read_table(paths["warmstart_sft"]).to_pylist()
    assert {r["counterfactual"] for r in rows} == {0, 1, 2} and {r["renamed"] for r in rows} == {0, 1}
    assert any(r["action"] == "guess" for r in rows) and any(not r["correct"] for r in rows)
    for r in rows:
        text = r["prompt"] + r["response"]
        leaked = [name for name in held if name in text]
        assert not leaked, (r["question_id"], r["counterfactual"], leaked)


def test_simulator_tuning_corpus_holds_training_paragraphs_only(built):
    paths, world, _, entities, held = built
    titles = [row["title"] for row in _jsonl(paths["corpus_train"])]
    assert set(titles) == entities["train"]
    assert len(_jsonl(paths["corpus"])) == len(world.people) + len(world.companies)
    assert not set(titles) & held


def test_tokenizer_corpus_is_training_material(built):
    _, world, splits, _, held = built
    texts = "\n".join(data.tokenizer_corpus(world, splits["train"], topk=1))
    assert not [name for name in held if name in texts]
    assert not [q.question for q in splits["test"] + splits["val"] if q.question in texts]
    # while every training paragraph is in it
    assert all(row["text"] in texts for row in world.paragraphs() if row["title"] not in held)


def test_rl_pool_is_kept_out_of_the_warm_start(tmp_path):
    from zerosearch.miniature.world import entity_groups

    paths = data.prepare_world(tmp_path, seed=3, n_people=40, n_cities=8, n_companies=20, vocab_size=700, topk=1,
                               wrong_rate=0.0, skip_rate=0.5, counterfactual_worlds=1, rl_fraction=0.5)
    train = {q["id"] for q in _jsonl(paths["train"])}
    rl = [q["id"] for q in _jsonl(paths["rl_train"])]
    assert rl and set(rl) < train
    # RL trains on the pool only, and the warm start demonstrates none of it (nor its counterfactual copies)
    assert [r["id"] for r in pq.read_table(paths["train_parquet"]).to_pylist()] == rl
    demonstrated = {r["question_id"] for r in pq.read_table(paths["warmstart_sft"]).to_pylist()}
    assert demonstrated == train - set(rl)
    # the pool is whole entity groups: a company's questions and its founder's go together
    world = read_world(str(tmp_path))
    by_id = {q.id: q for q in build_questions(world)}
    pool_entities = {e for i in rl for e in by_id[i].entities}
    other_entities = {e for i in train - set(rl) for e in by_id[i].entities}
    assert pool_entities.isdisjoint(other_entities)
    assert len(entity_groups([by_id[i] for i in rl])) == len(entity_groups([by_id[i] for i in train])) // 2
    with pytest.raises(ValueError, match="rl_fraction"):
        data.split_rl_pool([], 1.0, 0)
