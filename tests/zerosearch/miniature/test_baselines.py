"""Policy-free baselines of the miniature: the majority answer per kind, and the scripted reader's
turns on hand-written contexts (the world's sentence patterns)."""

import pytest

from zerosearch.miniature.baselines import majority_answers, majority_records, question_kind, scripted_turn

PROMPT = "<|im_start|>user\nAnswer the given question. ... <answer> Beijing </answer>. Question: {q}\n<|im_end|>\n" \
         "<|im_start|>assistant\n"


def _obs(*docs):
    lines = "\n".join(f"Doc {i}: (Title: {t}) {x}" for i, (t, x) in enumerate(docs, start=1))
    return f"\n\n<information>{lines}</information>\n\n"


def test_question_kinds():
    assert question_kind("Where was the founder of Zunta Labs born?") == ("founder_birthplace", "Zunta Labs")
    assert question_kind("Where was Brato Kell born?") == ("birthplace", "Brato Kell")
    assert question_kind("What is the occupation of Orla Fenn?") == ("occupation", "Orla Fenn")
    assert question_kind("Who founded Zimra Works?") == ("founder", "Zimra Works")
    assert question_kind("Where are the headquarters of Quen Labs?") == ("headquarters", "Quen Labs")
    with pytest.raises(ValueError, match="not a question"):
        question_kind("Who is the mayor?")


def test_scripted_turns_one_hop():
    ctx = PROMPT.format(q="What is the occupation of Orla Fenn?")
    assert scripted_turn(ctx) == "<search> What is the occupation of Orla Fenn? </search>"
    ctx += scripted_turn(ctx) + _obs(("Mira Tosk", "Mira Tosk is a poet who was born in Kelvar in 1950."),
                                     ("Orla Fenn", "Orla Fenn is an architect who was born in Drasil in 1961."))
    # reads the paragraph titled with the entity asked about, not the first one
    assert scripted_turn(ctx) == "<answer> architect </answer>"
    ctx = PROMPT.format(q="Where are the headquarters of Quen Labs?")
    ctx += scripted_turn(ctx) + _obs(("Quen Labs", "Quen Labs is a glass company founded by Tala Menz in 1990. "
                                                   "Its headquarters are in Murath."))
    assert scripted_turn(ctx) == "<answer> Murath </answer>"


def test_scripted_turns_two_hop():
    ctx = PROMPT.format(q="Where was the founder of Zimra Works born?")
    ctx += scripted_turn(ctx) + _obs(("Zimra Works", "Zimra Works is a mining company founded by Tala Menz in 1931. "
                                                     "Its headquarters are in Vostrand."))
    assert scripted_turn(ctx) == "<search> Where was Tala Menz born? </search>"
    ctx += scripted_turn(ctx) + _obs(("Tala Menz", "Tala Menz is a farmer who was born in Kelvar in 1901."))
    assert scripted_turn(ctx) == "<answer> Kelvar </answer>"
    # nothing to read: an answer that scores 0 rather than a crash
    ctx = PROMPT.format(q="Who founded Zimra Works?")
    ctx += scripted_turn(ctx) + _obs(("Mira Tosk", "Mira Tosk is a poet who was born in Kelvar in 1950."))
    assert scripted_turn(ctx) == "<answer> unknown </answer>"


def test_majority_answer_per_kind_from_training_questions():
    train = [{"kind": "birthplace", "golden_answers": [c]} for c in ("Kelvar", "Drasil", "Drasil", "Kelvar", "Amo")]
    train += [{"kind": "occupation", "golden_answers": ["poet"]}]
    # Kelvar and Drasil tie at 2: alphabetical order picks Drasil
    assert majority_answers(train) == {"birthplace": "Drasil", "occupation": "poet"}
    test = [{"id": "birthplace-A", "kind": "birthplace", "data_source": "mini_1hop", "question": "q1",
             "golden_answers": ["Drasil"]},
            {"id": "occupation-A", "kind": "occupation", "data_source": "mini_1hop", "question": "q2",
             "golden_answers": ["farmer"]}]
    recs = majority_records(train, test)
    assert [r["em"] for r in recs] == [1.0, 0.0] and [r["answer"] for r in recs] == ["Drasil", "poet"]
