"""A synthetic world that no model can know in advance, for the CPU miniature of the paper.

Fictional people, cities and companies with attributes and relations; one Wikipedia-style
paragraph per entity (the corpus the local retrieval server indexes) and single-hop and two-hop
questions about them. Everything is a function of the seed.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Collection
from dataclasses import asdict, dataclass, field

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "pr", "r", "s", "st", "t",
           "tr", "v", "z", "th", "sh", "qu"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei"]
_CODAS = ["", "n", "r", "l", "s", "th", "x", "m", "k"]
OCCUPATIONS = ["painter", "chemist", "sailor", "architect", "poet", "banker", "surgeon", "engineer", "farmer",
               "composer"]
INDUSTRIES = ["shipping", "textile", "software", "mining", "brewing", "publishing", "railway", "glass"]
COMPANY_SUFFIXES = ["Works", "Group", "Labs", "Holdings", "Company", "Industries", "Partners", "Systems", "Trading",
                    "Foundry", "Mills", "Brothers"]


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def _word(rng: random.Random, n_syllables: int) -> str:
    return "".join(_syllable(rng) for _ in range(n_syllables)).capitalize()


@dataclass
class Person:
    name: str
    occupation: str
    birthplace: str
    birth_year: int


@dataclass
class Company:
    name: str
    industry: str
    founder: str
    headquarters: str
    founded_year: int


@dataclass
class Question:
    id: str
    question: str
    golden_answers: list[str]
    hops: int
    kind: str
    entities: list[str] = field(default_factory=list)


@dataclass
class World:
    cities: list[str]
    people: list[Person]
    companies: list[Company]

    def entity_names(self) -> set[str]:
        """The name of every person and company (the entities with a paragraph)."""
        return {p.name for p in self.people} | {c.name for c in self.companies}

    def paragraphs(self) -> list[dict]:
        """One corpus line {"id", "title", "text"} per person and company."""
        rows = []
        for p in self.people:
            rows.append({"id": f"person-{len(rows)}", "title": p.name,
                         "text": f"{p.name} is {_article(p.occupation)} {p.occupation} who was born in {p.birthplace} "
                                 f"in {p.birth_year}."})
        for c in self.companies:
            rows.append({"id": f"company-{len(rows)}", "title": c.name,
                         "text": f"{c.name} is a {c.industry} company founded by {c.founder} in {c.founded_year}. "
                                 f"Its headquarters are in {c.headquarters}."})
        return rows


@dataclass(frozen=True)
class NamePools:
    """The words names are made of. A person is a first name and a last name, a company a company
    word and a suffix. So a held-out person's name is a new *combination* of words the policy has
    seen in training questions, as with real names (each word one token of the world tokenizer),
    rather than a sequence of sub-words it may never have produced."""

    cities: tuple[str, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    company_words: tuple[str, ...]


def draw_name_pools(seed: int = 0, n_cities: int = 40, n_first_names: int = 64, n_last_names: int = 64,
                    n_company_words: int = 96) -> NamePools:
    """Draw distinct two-syllable words for each pool (no word in two pools)."""
    rng = random.Random(seed)
    used: set[str] = set()

    def pool(n: int) -> tuple[str, ...]:
        words = []
        while len(words) < n:
            word = _word(rng, 2)
            if word not in used:
                used.add(word)
                words.append(word)
        return tuple(words)

    return NamePools(pool(n_cities), pool(n_first_names), pool(n_last_names), pool(n_company_words))


def _person(name: str, rng: random.Random, cities: list[str]) -> Person:
    """A person called ``name`` with an occupation, a birthplace and a birth year drawn from ``rng``."""
    return Person(name, rng.choice(OCCUPATIONS), rng.choice(cities), rng.randint(1900, 1999))


def _company(name: str, founder: str, rng: random.Random, cities: list[str]) -> Company:
    """A company called ``name``, founded by ``founder``, with an industry, headquarters and a
    founding year drawn from ``rng``."""
    return Company(name, rng.choice(INDUSTRIES), founder, rng.choice(cities), rng.randint(1920, 2020))


def build_world(seed: int = 0, n_people: int = 300, n_cities: int = 40, n_companies: int = 150,
                exclude: Collection[str] = (), pools: NamePools | None = None) -> World:
    """Draw a world: unique names for people and companies from ``pools`` (default: the pools of
    ``draw_name_pools(seed, n_cities)``), its cities the first ``n_cities`` of the city pool; each
    company has a founder.

    No person or company is given a name in ``exclude`` (the names of another world drawn from
    the same pools that must not share an entity with this one)."""
    pools = draw_name_pools(seed, n_cities=n_cities) if pools is None else pools
    if n_cities > len(pools.cities):
        raise ValueError(f"n_cities={n_cities} exceeds the city pool ({len(pools.cities)} names)")
    rng = random.Random(seed)
    used: set[str] = set(exclude)

    def fresh(make) -> str:
        for _ in range(10_000):
            name = make()
            if name not in used:
                used.add(name)
                return name
        raise RuntimeError("could not draw a unique name; lower the entity counts or enlarge the name pools")

    cities = list(pools.cities[:n_cities])
    people = [_person(fresh(lambda: f"{rng.choice(pools.first_names)} {rng.choice(pools.last_names)}"), rng, cities)
              for _ in range(n_people)]
    founders = rng.sample(people, k=min(n_companies, n_people))
    companies = [_company(fresh(lambda: f"{rng.choice(pools.company_words)} {rng.choice(COMPANY_SUFFIXES)}"), f.name,
                          rng, cities) for f in founders]
    return World(cities, people, companies)


def redraw_facts(world: World, seed: int, founders_from: Collection[str] | None = None) -> World:
    """The same cities, people and companies with every fact drawn anew: each person's occupation,
    birthplace and birth year, each company's industry, founder, headquarters and founding year.

    A *counterfactual* copy of ``world``: the same questions, other answers. Founders are distinct
    and drawn from the people named in ``founders_from`` (default: everyone), so that a copy made
    for training questions gives no held-out person as a founder."""
    rng = random.Random(seed)
    people = [_person(p.name, rng, world.cities) for p in world.people]
    candidates = [p.name for p in people if founders_from is None or p.name in founders_from]
    if len(candidates) < len(world.companies):
        raise ValueError(f"redraw_facts: {len(world.companies)} companies need distinct founders, but only "
                         f"{len(candidates)} people may found one")
    founders = rng.sample(candidates, k=len(world.companies))
    companies = [_company(c.name, f, rng, world.cities) for c, f in zip(world.companies, founders)]
    return World(list(world.cities), people, companies)


def build_questions(world: World) -> list[Question]:
    """Single-hop questions about people and companies, and two-hop questions through founders.

    ``entities`` lists every person or company a question is about or answers with (subject
    first, then the founder for founder and two-hop questions); the train/test split holds out by
    these. Every answer is written in the paragraph of the last entity listed.
    """
    by_name = {p.name: p for p in world.people}
    qs: list[Question] = []
    for p in world.people:
        qs.append(Question(f"birthplace-{p.name}", f"Where was {p.name} born?", [p.birthplace], 1, "birthplace", [p.name]))
        qs.append(Question(f"occupation-{p.name}", f"What is the occupation of {p.name}?", [p.occupation], 1,
                           "occupation", [p.name]))
    for c in world.companies:
        qs.append(Question(f"founder-{c.name}", f"Who founded {c.name}?", [c.founder], 1, "founder",
                           [c.name, c.founder]))
        qs.append(Question(f"headquarters-{c.name}", f"Where are the headquarters of {c.name}?", [c.headquarters], 1,
                           "headquarters", [c.name]))
        f = by_name[c.founder]
        qs.append(Question(f"founder_birthplace-{c.name}", f"Where was the founder of {c.name} born?", [f.birthplace],
                           2, "founder_birthplace", [c.name, f.name]))
    return qs


SPLITS = ("train", "val", "test")


def entity_groups(questions: list[Question]) -> list[list[str]]:
    """The entities in groups that no question crosses: two entities named by one question (a
    company and its founder) are in the same group. Sorted, so the result is a function of the
    questions alone."""
    parent: dict[str, str] = {}

    def root(e: str) -> str:
        while parent.setdefault(e, e) != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    for q in questions:
        for other in q.entities[1:]:
            parent[root(other)] = root(q.entities[0])
        root(q.entities[0])
    groups: dict[str, list[str]] = {}
    for e in sorted(parent):
        groups.setdefault(root(e), []).append(e)
    return sorted(groups.values())


def split_questions(questions: list[Question], test_fraction: float, seed: int,
                    val_fraction: float = 0.0) -> dict[str, list[Question]]:
    """Hold out questions by *entity*, in three splits: train, val (for design choices) and test
    (scored at the end).

    Entities are split in groups (``entity_groups``: a company together with its founder, a person
    who founded nothing alone), a seeded ``test_fraction`` of the groups to test and
    ``val_fraction`` to val. Every question lies inside one group, so it goes to that group's
    split: no train question names a val or test entity, a two-hop test question goes through
    held-out entities only (its company and its founder), and a test founder question's answer is
    a held-out person.

    Returns: ``{"train": [...], "val": [...], "test": [...]}`` in question order."""
    for name, fraction in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    if test_fraction + val_fraction >= 1.0:
        raise ValueError(f"test_fraction + val_fraction must be < 1, got {test_fraction} + {val_fraction}")
    groups = entity_groups(questions)
    random.Random(seed + 1).shuffle(groups)
    n_test, n_val = int(len(groups) * test_fraction), int(len(groups) * val_fraction)
    split_of = {e: split for i, group in enumerate(groups) for e in group
                for split in ["test" if i < n_test else "val" if i < n_test + n_val else "train"]}
    out: dict[str, list[Question]] = {split: [] for split in SPLITS}
    for q in questions:
        out[split_of[q.entities[0]]].append(q)
    return out


def split_entities(splits: dict[str, list[Question]]) -> dict[str, set[str]]:
    """The entities that the questions of each split name."""
    return {split: {e for q in qs for e in q.entities} for split, qs in splits.items()}


def qa_line(q: Question) -> dict:
    """The QA jsonl record of ``q`` (the fields of data/qa, with the question's ``kind``)."""
    return {"id": q.id, "question": q.question, "golden_answers": q.golden_answers,
            "data_source": f"mini_{q.hops}hop", "kind": q.kind}


def write_world(world: World, questions: list[Question], out_dir: str, test_fraction: float = 0.2,
                seed: int = 0, val_fraction: float = 0.0) -> dict[str, str]:
    """Write corpus.jsonl, train.jsonl, val.jsonl, test.jsonl (QA lines as in data/qa, with the
    question's ``kind``) and world.json."""
    os.makedirs(out_dir, exist_ok=True)
    splits = split_questions(questions, test_fraction, seed, val_fraction)
    paths = {"corpus": os.path.join(out_dir, "corpus.jsonl"), "world": os.path.join(out_dir, "world.json")}
    with open(paths["corpus"], "w", encoding="utf-8") as f:
        for row in world.paragraphs():
            f.write(json.dumps(row) + "\n")
    for split, rows in splits.items():
        paths[split] = os.path.join(out_dir, f"{split}.jsonl")
        with open(paths[split], "w", encoding="utf-8") as f:
            for q in rows:
                f.write(json.dumps(qa_line(q)) + "\n")
    with open(paths["world"], "w", encoding="utf-8") as f:
        json.dump({"cities": world.cities, "people": [asdict(p) for p in world.people],
                   "companies": [asdict(c) for c in world.companies]}, f)
    return paths


def read_world(world_dir: str) -> World:
    """The World that ``write_world`` stored in ``world_dir/world.json``."""
    path = os.path.join(world_dir, "world.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no world.json (write one with python -m zerosearch.miniature.data)")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return World(raw["cities"], [Person(**p) for p in raw["people"]], [Company(**c) for c in raw["companies"]])
