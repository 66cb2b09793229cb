"""Everything the CPU miniature trains on, built from one seed: the synthetic world's corpus and QA
files, ZeroSearch parquet files, a tokenizer fitted to the world, the tiny policy and simulation
models, and the warm-start SFT set of the policy.

Output folder (``prepare_world(out_dir, seed)`` returns these paths by name)::

    corpus.jsonl            one {"id", "title", "text"} paragraph per person and company
                            (serve it with ``python -m zerosearch.retrieval.server --corpus``)
    corpus_train.jsonl      the paragraphs of the training entities only: what the simulation
                            model's tuning rows are collected from, so that it never sees a
                            held-out fact
    train.jsonl, val.jsonl, test.jsonl   QA lines {"id", "question", "golden_answers",
                            "data_source", "kind"}; held out by entity groups (see
                            ``world.split_questions``): val for design choices, test scored last
    world.json              the world itself
    train.parquet, val.parquet, test.parquet   ZeroSearch rows (zerosearch/data/qa_rows.py's builder)
    models/policy/, models/simulation/   tiny Qwen2 models sharing one tokenizer trained on the
                            training split's text (its paragraphs, questions and answers) and on
                            every prompt format they will see
    warmstart_sft.parquet   format demonstrations for a short policy SFT (below)

Nothing of a val or test entity reaches a model's training data: the tokenizer is fitted on
training paragraphs and questions, the warm start retrieves from the training paragraphs only
and guesses only training people, and the simulation model is tuned on results from
``corpus_train.jsonl`` (the demo serves it for that stage).

Warm-start demonstrations. For a seeded sample of training questions the trajectory is written
from *real* retrieval results (BM25 over the world corpus, in process, ``topk`` documents, the
observation formatted exactly as the wiki search tool formats it). Each turn is one SFT row whose
prompt is everything before the turn, so observation tokens are only ever prompt (never loss):

    turn 1  chat prompt                                  -> "<think> ... </think>\\n<search> Q </search>"
    turn 2  (two-hop only, when the first results name the founder)
            chat prompt + turn 1 + observation 1         -> "<think> ... </think>\\n<search> Q2 </search>"
    last    chat prompt + previous turns + observations  -> "<think> ... </think>\\n<answer> X </answer>"

"Not always right", in two ways, so that RL has something to fix:

- with probability ``skip_rate`` the demonstration does not search at all and answers at once
  with a guess (a value of the gold answer's type drawn from the world, so almost always wrong):
  one row ``chat prompt -> "<think> I know the answer. </think>\n<answer> G </answer>"``
  (``action`` ``guess``) replaces the first search row. The rows after that first search are
  still written (their prompts hold a search and its results, so they teach reading documents,
  not skipping): only the decision to search is taken away. A policy warmed up on these searches
  only sometimes; that searching pays is what RL has to discover. The ``guess_span`` column marks
  G's characters, so that the SFT trainer can leave the guess itself unlearnt
  (``data.loss_exclude_key=guess_span``, the demo's ``warmstart.learn_guesses: false``): the row
  then teaches answering at once, not which random value to answer;
- otherwise, with probability ``wrong_rate`` X is a distractor of the gold answer's type (another
  city, person or occupation) that appears in the retrieved documents; when the documents hold
  none (an occupation question usually retrieves only its person's paragraph), it is another
  value of that type from the world.

Practice worlds (``practice_worlds`` > 0). The warm start also demonstrates, in the same way,
every question of ``practice_worlds`` further worlds: drawn with other seeds from the same name
pools (``world.NamePools``: the same cities, first names, last names and company words), with no
person or company of the target world or of another practice world, each searched through a
BM25 index of its own corpus. They multiply the combinations of name words the policy sees, to
make recalling a memorised name a worse strategy than copying the question's (docs/demo.md
measures whether it helps: at the demo's scale it slowed learning down). RL
and evaluation use only the target world. The ``world`` column says which world a row comes
from (0: the target world; i: practice world i).

Counterfactual copies (``counterfactual_worlds`` > 0). The warm start also demonstrates the
*training* questions of copies of the target world in which every fact is redrawn
(``world.redraw_facts``: the same names, other occupations, birthplaces, founders and
headquarters), each searched through a BM25 index of its own corpus. The same question then has
different answers in different rows, each written in the document its row retrieves, so
recalling a memorised answer no longer lowers the loss and reading the document does. Founders
are drawn from training people only, so no demonstration answers with a held-out person (one may
still be named in a retrieved document, as in the real facts' rows). The ``counterfactual`` column
says which copy a row comes from (0: the real facts).

Renamed copies (``renamed_copies`` > 0). Every demonstration row of the target world (its real
facts and its counterfactual copies) is also written ``renamed_copies`` more times, each time with
every person and company the row names (in the question, the thoughts, the queries, the retrieved
documents and the answer) replaced, consistently within the row, by a name drawn afresh for that
row from the training entities' name words (``rename_rows``; never the name of an entity of the
world). A drawn name recurs in a handful of rows at most, so the name in a query or a thought can
only be predicted by copying it from the question or the document, and the answer only by
reading it: the two skills a held-out question needs, which a policy that has memorised the
training names can do without. The ``renamed`` column says which copy a row is (0: the names of
the world); ``question_id`` keeps the question the row was renamed from.

The ``correct`` column records whether the final answer is the gold one.
The ``prompt`` column holds the chat-templated text itself, so train it with
``data.apply_chat_template=false`` (``WARMSTART_SFT_OVERRIDES``).

Command line::

    python -m zerosearch.miniature.data --out DIR [--seed S] [--model-size tiny|tiny-mha|tiny-tied|small]
        [--practice-worlds K] [--counterfactual-worlds K]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from pathlib import Path
from typing import Collection, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from zerosearch.data import qa_rows as qa_search
from zerosearch import prompts
from zerosearch.miniature import tiny
from zerosearch.miniature.world import (OCCUPATIONS, SPLITS, Question, World, build_questions, build_world,
                                        draw_name_pools, entity_groups, qa_line, redraw_facts,
                                        split_entities, write_world)
from zerosearch.reward import normalize_answer
from zerosearch.tools.documents import format_documents, format_passage

logger = logging.getLogger(__name__)

# Overrides of verl/trainer/config/sft_trainer.yaml that the warm-start parquet needs.
WARMSTART_SFT_OVERRIDES = ("data.apply_chat_template=false", "data.prompt_key=prompt", "data.response_key=response")

_CITY_KINDS = ("birthplace", "headquarters", "founder_birthplace")

WARMSTART_SCHEMA = pa.schema([
    ("prompt", pa.string()),
    ("response", pa.string()),
    ("question_id", pa.string()),
    ("turn", pa.int64()),
    ("action", pa.string()),
    ("correct", pa.bool_()),
    ("world", pa.int64()),
    ("counterfactual", pa.int64()),
    ("renamed", pa.int64()),
    # [start, end) character spans of the response that the warm start may leave unlearnt
    # (data.loss_exclude_key of the SFT trainer): the guessed answer of a "guess" row
    ("guess_span", pa.list_(pa.list_(pa.int64()))),
])

# Seed offset between practice worlds (practice world i is drawn with seed + i * PRACTICE_SEED_STRIDE).
PRACTICE_SEED_STRIDE = 7919
# Seed offset between counterfactual copies (copy i redraws the facts with seed + i * COUNTERFACTUAL_SEED_STRIDE).
COUNTERFACTUAL_SEED_STRIDE = 104729
# Seed offset between renamed copies (copy i draws its names with seed + i * RENAMED_SEED_STRIDE).
RENAMED_SEED_STRIDE = 1299709


def world_texts(world: World, questions: Sequence[Question], topk: int = 3,
                entities: Collection[str] | None = None) -> list[str]:
    """Tokenizer corpus: paragraphs (of ``entities`` only, when given), questions, answers, the
    policy prompt with a tagged trajectory per question, and the simulation prompts (both kinds)
    with ``Doc i:`` lines."""
    paragraphs = world.paragraphs()
    texts: list[str] = []
    for row in paragraphs:
        if entities is None or row["title"] in entities:
            texts += [row["title"], row["text"]]
    by_title = {row["title"]: row for row in paragraphs}
    for q in questions:
        answer = q.golden_answers[0]
        docs = [by_title[e] for e in q.entities]
        doc_lines = format_documents([format_passage(d["title"], d["text"]) for d in docs])
        texts += [q.question, answer]
        texts.append(prompts.make_prefix(q.question) + f"<think> I need to search for {q.entities[0]}. </think>\n"
                     f"<search> {q.question} </search>" + prompts.format_observation(doc_lines)
                     + f"<think> I found the answer. </think>\n<answer> {answer} </answer>")
        for noisy in (False, True):
            texts.append(prompts.simulate_sft_prompt(q.question, q.question, answer, noisy, topk))
        texts.append(doc_lines)
    return texts


def tokenizer_corpus(world: World, train_questions: Sequence[Question],
                     practice: Sequence[tuple[World, Sequence[Question]]] = (), topk: int = 3) -> list[str]:
    """What the world tokenizer is fitted on: training material only (the paragraphs of the
    entities that ``train_questions`` name, those questions and their answers, the prompt formats
    around them) and the practice worlds' texts (they share no entity with the target world)."""
    entities = {e for q in train_questions for e in q.entities}
    texts = world_texts(world, train_questions, topk, entities=entities)
    for pw, pw_questions in practice:
        texts += world_texts(pw, pw_questions, topk)
    return texts


def _bm25(world: World, entities: Collection[str] | None = None):
    """In-process BM25 over ``world``'s paragraphs (of ``entities`` only, when given)."""
    from zerosearch.retrieval.bm25 import BM25Retriever
    from zerosearch.retrieval.corpus import Document

    return BM25Retriever([Document.from_title_text(r["id"], r["title"], r["text"]) for r in world.paragraphs()
                          if entities is None or r["title"] in entities])


def _candidates(world: World, kind: str, people: Collection[str] | None = None) -> list[str]:
    """Values of the answer type of ``kind``; persons only from ``people`` when given."""
    if kind in _CITY_KINDS:
        return list(world.cities)
    if kind == "founder":
        return [p.name for p in world.people if people is None or p.name in people]
    if kind == "occupation":
        return list(OCCUPATIONS)
    raise ValueError(f"no answer type known for question kind {kind!r}")


def _distractors(world: World, q: Question, seen_text: str, people: Collection[str] | None = None) -> list[str]:
    """Answers of the same type as ``q``'s gold that appear in ``seen_text``, gold excluded."""
    gold = {normalize_answer(g) for g in q.golden_answers}
    return sorted(c for c in _candidates(world, q.kind, people) if c in seen_text and normalize_answer(c) not in gold)


def warmstart_rows(world: World, questions: Sequence[Question], tokenizer, retriever, topk: int = 3,
                   wrong_rate: float = 0.5, seed: int = 0, skip_rate: float = 0.0, world_index: int = 0,
                   counterfactual: int = 0, people: Collection[str] | None = None) -> list[dict]:
    """Warm-start SFT rows for ``questions`` (see the module docstring); ``world_index`` and
    ``counterfactual`` fill the columns of those names; guessed and wrong answers that name a
    person name one of ``people`` (default: anyone in ``world``)."""
    for name, rate in (("wrong_rate", wrong_rate), ("skip_rate", skip_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {rate}")
    rng = random.Random(seed)
    skip_rng = random.Random(seed + 1)  # its own stream: skip_rate=0 leaves the other draws as they were
    founders = {c.name: c.founder for c in world.companies}
    rows: list[dict] = []

    def search(query: str) -> tuple[str, str]:
        hits = retriever.search([query], topk)[0]
        docs = [format_passage(doc.title, doc.text) for doc, _ in hits]
        return format_documents(docs), " ".join(docs)

    for q in questions:
        chat = [{"role": "user", "content": prompts.make_prefix(q.question)}]
        context = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        turn, seen = 1, ""

        def emit(response: str, action: str, correct: bool = True) -> None:
            rows.append({"prompt": context, "response": response, "question_id": q.id, "turn": turn,
                         "action": action, "correct": correct, "world": world_index,
                         "counterfactual": counterfactual, "renamed": 0})

        skip = skip_rate > 0.0 and skip_rng.random() < skip_rate
        if skip:
            guess = skip_rng.choice(_candidates(world, q.kind, people))
            emit(f"<think> I know the answer. </think>\n<answer> {guess} </answer>", "guess",
                 normalize_answer(guess) in {normalize_answer(g) for g in q.golden_answers})
        subject = q.entities[0]
        response = f"<think> I need to search for {subject}. </think>\n<search> {q.question} </search>"
        if not skip:
            emit(response, "search")
        documents, text = search(q.question)
        context += response + prompts.format_observation(documents)
        seen += " " + text
        turn += 1
        bridge = founders.get(subject) if q.kind == "founder_birthplace" else None
        if bridge is not None and bridge in text:
            follow_up = f"Where was {bridge} born?"
            response = (f"<think> {subject} was founded by {bridge}. I need to search for {bridge}. </think>\n"
                        f"<search> {follow_up} </search>")
            emit(response, "search")
            documents, text = search(follow_up)
            context += response + prompts.format_observation(documents)
            seen += " " + text
            turn += 1
        answer, correct = q.golden_answers[0], True
        if rng.random() < wrong_rate:
            options = (_distractors(world, q, seen, people)
                       or _distractors(world, q, " ".join(_candidates(world, q.kind, people)), people))
            answer, correct = rng.choice(options), False
        emit(f"<think> I found the answer. </think>\n<answer> {answer} </answer>", "answer", correct)
    return rows


def rename_rows(rows: Sequence[dict], world: World, entities: Collection[str], copies: int,
                seed: int) -> list[dict]:
    """``copies`` renamed copies of each of ``rows`` (warm-start rows of ``world``, its
    counterfactual copies included; see the module docstring), copy i with ``renamed`` = i.

    In each copied row every person and company of ``world`` named in its prompt or response is
    replaced, the same way throughout the row, by a name of the same kind drawn for that row: a
    first and a last name word of the people in ``entities``, or a company word and suffix of the
    companies in ``entities`` (the training entities: no word only a held-out name has). A drawn
    name is never the name of an entity of ``world``, and two entities of one row get two names.
    """
    if copies < 0:
        raise ValueError(f"renamed_copies must be >= 0, got {copies}")
    people = [p.name for p in world.people if p.name in entities]
    companies = [c.name for c in world.companies if c.name in entities]
    if copies and (not people or not companies):
        raise ValueError("rename_rows: `entities` must hold at least one person and one company of the world")
    words = {
        "person": (sorted({n.split(" ", 1)[0] for n in people}), sorted({n.split(" ", 1)[1] for n in people})),
        "company": (sorted({n.rsplit(" ", 1)[0] for n in companies}), sorted({n.rsplit(" ", 1)[1] for n in companies})),
    }
    kind_of = {p.name: "person" for p in world.people} | {c.name: "company" for c in world.companies}
    taken = set(kind_of)
    names = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(kind_of, key=len, reverse=True)) + r")\b")
    out: list[dict] = []
    for i in range(1, copies + 1):
        rng = random.Random(seed + i * RENAMED_SEED_STRIDE)
        for row in rows:
            mapping: dict[str, str] = {}

            def fresh(match: re.Match) -> str:
                old = match.group(0)
                if old not in mapping:
                    heads, tails = words[kind_of[old]]
                    for _ in range(10_000):  # as world.build_world draws its names: bounded, then an error
                        new = f"{rng.choice(heads)} {rng.choice(tails)}"
                        if new not in taken and new not in mapping.values():
                            mapping[old] = new
                            break
                    else:
                        raise RuntimeError(f"rename_rows: no unused {kind_of[old]} name left to draw from "
                                           f"{len(heads)} x {len(tails)} training name words")
                return mapping[old]

            out.append(row | {"prompt": names.sub(fresh, row["prompt"]), "response": names.sub(fresh, row["response"]),
                              "renamed": i})
    return out


def answer_span(response: str) -> tuple[int, int]:
    """[start, end) characters of X in a demonstration's "<answer> X </answer>"."""
    start = response.index("<answer> ") + len("<answer> ")
    return start, response.index(" </answer>", start)


def guess_span(row: dict) -> list[list[int]]:
    """The guessed answer's [start, end) characters in a "guess" row's response; [] for other rows."""
    return [list(answer_span(row["response"]))] if row["action"] == "guess" else []


def _write_warmstart(rows: list[dict], path: Path) -> Path:
    rows = [row | {"guess_span": guess_span(row)} for row in rows]
    pq.write_table(pa.Table.from_pylist(rows, schema=WARMSTART_SCHEMA), path)
    return path


def split_rl_pool(train: Sequence[Question], rl_fraction: float, seed: int) -> tuple[list[Question], list[Question]]:
    """(questions the warm start demonstrates, questions RL trains on) of the training split.

    With ``rl_fraction`` > 0 a seeded share of the training entity groups (``world.entity_groups``)
    is kept out of the warm start: RL then practises on entities whose facts the policy never saw,
    as it meets held-out questions, instead of questions it can answer from memory. With 0 both
    are the whole training split."""
    if not 0.0 <= rl_fraction < 1.0:
        raise ValueError(f"rl_fraction must be in [0, 1), got {rl_fraction}")
    if rl_fraction == 0.0:
        return list(train), list(train)
    groups = entity_groups(list(train))
    random.Random(seed + 5).shuffle(groups)
    pool = {e for g in groups[: max(1, int(len(groups) * rl_fraction))] for e in g}
    return [q for q in train if q.entities[0] not in pool], [q for q in train if q.entities[0] in pool]


def _parquet_rows(path: Path, split: str) -> list[dict]:
    """ZeroSearch parquet rows (``qa_rows.make_row``) of one QA jsonl file, in file order."""
    counters: dict[str, int] = {}
    rows: list[dict] = []
    if not path.read_text(encoding="utf-8").strip():  # an empty split (val_fraction 0)
        return rows
    for rec in qa_search.read_qa_jsonl(path):
        source = rec["data_source"]
        rows.append(qa_search.make_row(rec, split, counters.get(source, 0)))
        counters[source] = counters.get(source, 0) + 1
    return rows


def _read_questions(path: Path, questions: Sequence[Question]) -> list[Question]:
    by_id = {q.id: q for q in questions}
    with path.open(encoding="utf-8") as f:
        return [by_id[json.loads(line)["id"]] for line in f if line.strip()]


def prepare_world(out_dir: str | Path, seed: int = 0, *, n_people: int = 300, n_cities: int = 40,
                  n_companies: int = 150, test_fraction: float = 0.2, val_fraction: float = 0.1,
                  model_size: str = "tiny", simulation_model_size: str | None = None,
                  vocab_size: int | None = 2048, topk: int = 3, wrong_rate: float = 0.5,
                  warmstart_questions: int | None = None, skip_rate: float = 0.0,
                  practice_worlds: int = 0, counterfactual_worlds: int = 0, renamed_copies: int = 0,
                  rl_fraction: float = 0.0) -> dict[str, Path]:
    """Write the miniature's data and models into ``out_dir`` (see the module docstring).

    Args:
        seed: seeds the world, the split, the models' initial weights and the warm-start draws.
        n_people, n_cities, n_companies: size of the world.
        test_fraction, val_fraction: shares of the entity groups held out for test and val.
        model_size: preset of ``zerosearch.miniature.tiny`` for the policy, and for the simulation model
            unless ``simulation_model_size`` names another (``tiny`` is the fastest).
        vocab_size: BPE vocabulary of the world tokenizer (None: the size preset's default).
        topk: documents per search in the warm-start demonstrations.
        wrong_rate: probability that a searching demonstration answers with a distractor.
        skip_rate: probability that a demonstration answers at once with a guess, without searching.
        warmstart_questions: how many training questions get a demonstration (seeded sample;
            None = all).
        practice_worlds: further worlds, of the same size and with disjoint names, all of whose
            questions are demonstrated too (see the module docstring).
        counterfactual_worlds: copies of the target world with every fact redrawn
            (``world.redraw_facts``) whose *training* questions are demonstrated too (see the
            module docstring).
        renamed_copies: copies of the target world's demonstration rows (counterfactual ones
            included) with every name drawn afresh per row (``rename_rows``; see the module
            docstring).
        rl_fraction: share of the training entity groups whose questions the warm start does not
            demonstrate and RL trains on (``split_rl_pool``; ``train.parquet`` then holds only
            them, listed in ``rl_train.jsonl``). 0: RL trains on every training question.
    Returns: paths by name: corpus, corpus_train, train, val, test, world, train_parquet,
        val_parquet, test_parquet, policy_model, simulation_model, warmstart_sft.
    """
    from transformers import AutoTokenizer

    for name, count in (("practice_worlds", practice_worlds), ("counterfactual_worlds", counterfactual_worlds),
                        ("renamed_copies", renamed_copies)):
        if count < 0:
            raise ValueError(f"{name} must be >= 0, got {count}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pools = draw_name_pools(seed, n_cities=n_cities)
    world = build_world(seed, n_people=n_people, n_cities=n_cities, n_companies=n_companies, pools=pools)
    questions = build_questions(world)
    paths = {k: Path(v) for k, v in
             write_world(world, questions, str(out), test_fraction, seed, val_fraction).items()}
    split_qs = {split: _read_questions(paths[split], questions) for split in SPLITS}
    train_entities = split_entities(split_qs)["train"]
    logger.info("world: %d cities, %d people, %d companies, %d questions (%s)", len(world.cities),
                len(world.people), len(world.companies), len(questions),
                ", ".join(f"{k} {len(v)}" for k, v in split_qs.items()))
    paths["corpus_train"] = out / "corpus_train.jsonl"
    with paths["corpus_train"].open("w", encoding="utf-8") as f:
        for row in world.paragraphs():
            if row["title"] in train_entities:
                f.write(json.dumps(row) + "\n")
    sft_questions, rl_questions = split_rl_pool(split_qs["train"], rl_fraction, seed)
    if rl_fraction > 0:  # RL trains on the pool the warm start never saw
        paths["rl_train"] = out / "rl_train.jsonl"
        with paths["rl_train"].open("w", encoding="utf-8") as f:
            for q in rl_questions:
                f.write(json.dumps(qa_line(q)) + "\n")
    for split in SPLITS:
        source = paths["rl_train"] if split == "train" and rl_fraction > 0 else paths[split]
        rows = _parquet_rows(source, split)
        paths[f"{split}_parquet"] = qa_search.write_parquet(rows, out / f"{split}.parquet")
        logger.info("%s.parquet: %d rows", split, len(rows))

    practice: list[tuple[World, list[Question]]] = []
    used = world.entity_names()
    for i in range(1, practice_worlds + 1):
        pw = build_world(seed + i * PRACTICE_SEED_STRIDE, n_people=n_people, n_cities=n_cities,
                         n_companies=n_companies, exclude=used, pools=pools)
        practice.append((pw, build_questions(pw)))
        used |= pw.entity_names()
    if practice:
        logger.info("%d practice worlds for the warm start (names disjoint from the target world's)", len(practice))

    texts = tokenizer_corpus(world, split_qs["train"], practice, topk)
    for kind in tiny.KINDS:
        size = simulation_model_size if kind == "simulation" and simulation_model_size else model_size
        paths[f"{kind}_model"] = tiny.build_tiny_model(out / "models" / kind, size, corpus_texts=texts,
                                                       seed=seed, vocab_size=vocab_size, kind=kind)

    train_questions = sft_questions
    train_people = {p.name for p in world.people} & train_entities
    rng = random.Random(seed + 2)
    if warmstart_questions is not None and warmstart_questions < len(train_questions):
        train_questions = rng.sample(train_questions, warmstart_questions)
    tokenizer = AutoTokenizer.from_pretrained(paths["policy_model"])
    rows = warmstart_rows(world, train_questions, tokenizer, _bm25(world, train_entities), topk, wrong_rate, seed + 3,
                          skip_rate, people=train_people)
    for i, (pw, pw_questions) in enumerate(practice, start=1):
        rows += warmstart_rows(pw, pw_questions, tokenizer, _bm25(pw), topk, wrong_rate,
                               seed + 3 + i * PRACTICE_SEED_STRIDE, skip_rate, world_index=i)
    if counterfactual_worlds:
        train_ids = [q.id for q in train_questions]
        for i in range(1, counterfactual_worlds + 1):
            cw = redraw_facts(world, seed + i * COUNTERFACTUAL_SEED_STRIDE, founders_from=train_entities)
            by_id = {q.id: q for q in build_questions(cw)}
            rows += warmstart_rows(cw, [by_id[qid] for qid in train_ids], tokenizer, _bm25(cw, train_entities), topk,
                                   wrong_rate, seed + 3 + i * COUNTERFACTUAL_SEED_STRIDE, skip_rate, counterfactual=i,
                                   people=train_people)
        logger.info("%d counterfactual copies of the training questions' facts for the warm start",
                    counterfactual_worlds)
    if renamed_copies:
        target = [r for r in rows if r["world"] == 0]
        rows += rename_rows(target, world, train_entities, renamed_copies, seed + 4)
        logger.info("%d renamed copies of the target world's %d demonstration rows", renamed_copies, len(target))
    paths["warmstart_sft"] = _write_warmstart(rows, out / "warmstart_sft.parquet")
    searched = [r for r in rows if r["action"] == "answer"]
    logger.info("warmstart_sft.parquet: %d rows from %d questions; %d first turns guess without searching; "
                "%d of %d answers after searching are wrong", len(rows), len({r["question_id"] for r in rows}),
                sum(r["action"] == "guess" for r in rows), sum(not r["correct"] for r in searched), len(searched))
    return paths


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.miniature.data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-size", choices=sorted(tiny.SIZES), default="tiny")
    parser.add_argument("--simulation-model-size", choices=sorted(tiny.SIZES), default=None,
                        help="preset of the simulation model (default: --model-size)")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--topk", type=int, default=3, help="documents per search in the demonstrations")
    parser.add_argument("--wrong-rate", type=float, default=0.5,
                        help="share of searching demonstrations that answer a distractor")
    parser.add_argument("--skip-rate", type=float, default=0.0,
                        help="share of demonstrations that answer a guess without searching")
    parser.add_argument("--warmstart-questions", type=int, default=None, help="training questions demonstrated")
    parser.add_argument("--practice-worlds", type=int, default=0,
                        help="further worlds with disjoint names whose questions are demonstrated too")
    parser.add_argument("--renamed-copies", type=int, default=0,
                        help="copies of the demonstrations with every name drawn afresh per row")
    parser.add_argument("--rl-fraction", type=float, default=0.0,
                        help="share of training entity groups kept out of the warm start for RL to train on")
    parser.add_argument("--counterfactual-worlds", type=int, default=0,
                        help="copies of the world with redrawn facts whose training questions are demonstrated too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = prepare_world(args.out, args.seed, model_size=args.model_size,
                          simulation_model_size=args.simulation_model_size, vocab_size=args.vocab_size,
                          topk=args.topk, wrong_rate=args.wrong_rate, warmstart_questions=args.warmstart_questions,
                          skip_rate=args.skip_rate, practice_worlds=args.practice_worlds,
                          counterfactual_worlds=args.counterfactual_worlds, renamed_copies=args.renamed_copies,
                          rl_fraction=args.rl_fraction)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


if __name__ == "__main__":
    main()
