"""The synthetic world: seeded, held out by entity, and every question answerable from the corpus."""

from __future__ import annotations

import filecmp

import pytest

from zerosearch.miniature import world as w


@pytest.fixture(scope="module")
def small():
    world = w.build_world(seed=7, n_people=60, n_cities=10, n_companies=30)
    return world, w.build_questions(world)


def test_same_seed_same_world_and_files(tmp_path):
    a, b = w.build_world(seed=3), w.build_world(seed=3)
    assert a == b
    assert w.build_world(seed=4).people != a.people
    pa = w.write_world(a, w.build_questions(a), str(tmp_path / "a"), seed=3)
    pb = w.write_world(b, w.build_questions(b), str(tmp_path / "b"), seed=3)
    for key in ("corpus", "train", "val", "test", "world"):
        assert filecmp.cmp(pa[key], pb[key], shallow=False), key


def test_names_are_unique(small):
    world, _ = small
    names = world.cities + [p.name for p in world.people] + [c.name for c in world.companies]
    assert len(names) == len(set(names))


def test_held_out_entities_never_appear_in_training_questions(small):
    world, questions = small
    splits = w.split_questions(questions, test_fraction=0.25, seed=7, val_fraction=0.1)
    train, val, test = splits["train"], splits["val"], splits["test"]
    ids = [{q.id for q in part} for part in (train, val, test)]
    assert ids[0].isdisjoint(ids[1]) and ids[0].isdisjoint(ids[2]) and ids[1].isdisjoint(ids[2])
    assert len(train) + len(val) + len(test) == len(questions)
    assert test and val and train
    entities = w.split_entities(splits)
    # no entity is named by questions of two splits: every val/test question is about held-out entities only
    assert entities["train"].isdisjoint(entities["val"] | entities["test"])
    assert entities["val"].isdisjoint(entities["test"])
    # two-hop test questions go through held-out entities only: the company and its founder
    two_hop = [q for q in test if q.kind == "founder_birthplace"]
    assert two_hop and all(set(q.entities) <= entities["test"] and len(q.entities) == 2 for q in two_hop)
    # 60 people and 30 companies, each company grouped with its founder: 30 pairs + 30 lone people
    # = 60 groups; 25 % of them (15) are test, 10 % (6) val
    assert len(w.entity_groups(questions)) == 60
    n_test_groups = len({frozenset(g) for g in w.entity_groups(test)})
    assert n_test_groups == 15 and len({frozenset(g) for g in w.entity_groups(val)}) == 6
    # Answers that name a person: the person is part of the question's entities (no leak via answers).
    for q in train:
        if q.kind == "founder":
            assert q.golden_answers[0] in q.entities


def test_every_question_is_answerable_from_its_entities_paragraphs(small):
    world, questions = small
    text_of = {row["title"]: row["text"] for row in world.paragraphs()}
    people = {p.name: p for p in world.people}
    companies = {c.name: c for c in world.companies}
    assert {q.kind for q in questions} == {"birthplace", "occupation", "founder", "headquarters", "founder_birthplace"}
    for q in questions:
        answer = q.golden_answers[0]
        assert answer in text_of[q.entities[-1]], q.id
        if q.hops == 2:
            company = companies[q.entities[0]]
            # The bridge (the founder) is named in the company's paragraph; the answer is the
            # founder's birthplace.
            assert company.founder == q.entities[1] and company.founder in text_of[company.name]
            assert answer == people[company.founder].birthplace
    # Hand-checked phrasing of one paragraph of each kind.
    p = world.people[0]
    article = "an" if p.occupation[0] in "aeiou" else "a"
    assert text_of[p.name] == f"{p.name} is {article} {p.occupation} who was born in {p.birthplace} in {p.birth_year}."
    c = world.companies[0]
    assert text_of[c.name] == (f"{c.name} is a {c.industry} company founded by {c.founder} in {c.founded_year}. "
                               f"Its headquarters are in {c.headquarters}.")


def test_exclude_keeps_a_second_world_from_the_same_pools_disjoint(small):
    """build_world(exclude=..., pools=...) shares the name words and cities but no person or company."""
    world, _ = small
    pools = w.draw_name_pools(7, n_cities=10)
    other = w.build_world(seed=8, n_people=60, n_cities=10, n_companies=30, exclude=world.entity_names(), pools=pools)
    assert world.entity_names().isdisjoint(other.entity_names())
    assert len(other.entity_names()) == 60 + 30
    assert other.cities == world.cities
    assert {p.name.split()[0] for p in other.people} <= set(pools.first_names)
    with pytest.raises(ValueError, match="n_cities"):
        w.build_world(seed=8, n_cities=11, pools=pools)


def test_held_out_people_are_new_combinations_of_trained_words():
    """At the demo's size, the words of a held-out person's name (all but a few: the warm start's
    practice worlds cover the rest) occur in training questions about other people, but never
    the whole name."""
    world = w.build_world(seed=0)
    splits = w.split_questions(w.build_questions(world), test_fraction=0.2, seed=0)
    train, test = splits["train"], splits["test"]
    train_text = " ".join(q.question for q in train)
    train_words = set(train_text.replace("?", "").split())
    people = {p.name for p in world.people}
    held = {e for q in test for e in q.entities if e in people} - {e for q in train for e in q.entities}
    assert len(held) > 20
    for name in held:
        assert name not in train_text
    unseen = [name for name in held if not set(name.split()) <= train_words]
    assert len(unseen) <= 0.05 * len(held), unseen


def test_redraw_facts_keeps_names_and_questions_and_changes_answers(small):
    world, questions = small
    founders_from = {p.name for p in world.people[:40]}
    copy = w.redraw_facts(world, seed=11, founders_from=founders_from)
    assert copy.cities == world.cities and copy.entity_names() == world.entity_names()
    assert [p.name for p in copy.people] == [p.name for p in world.people]
    # every founder is one of the allowed people, and no two companies share one
    founders = [c.founder for c in copy.companies]
    assert set(founders) <= founders_from and len(set(founders)) == len(founders)
    # the same questions (ids and text), answerable from the copy's own paragraphs
    copy_questions = w.build_questions(copy)
    assert [(q.id, q.question) for q in copy_questions] == [(q.id, q.question) for q in questions]
    texts = {r["title"]: r["text"] for r in copy.paragraphs()}
    for q in copy_questions:
        assert q.golden_answers[0] in texts[q.entities[-1]], q.id
    # most answers differ: 10 occupations and 10 cities give ~90 % changed at random
    changed = sum(a.golden_answers != b.golden_answers for a, b in zip(questions, copy_questions))
    assert changed > 0.7 * len(questions)
    assert w.redraw_facts(world, seed=11, founders_from=founders_from) == copy
    with pytest.raises(ValueError, match="distinct founders"):
        w.redraw_facts(world, seed=11, founders_from={world.people[0].name})
