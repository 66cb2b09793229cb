"""Prompts against the wording of the spec (sections 3.3, 4.2 and 6), written out here by hand."""

from __future__ import annotations

import pytest

from zerosearch.prompts import (
    INVALID_ACTION_MESSAGE,
    PromptTemplateError,
    build_simulation_prompt,
    format_observation,
    invalid_action_message,
    make_prefix,
    number_word,
    preprocess_question,
    render_simulate_prompt,
    simulate_prompt_templates,
)

SPEC_POLICY_SENTENCES = [
    "Answer the given question.",
    "You must conduct reasoning inside <think> and </think> first every time you get new information.",
    "After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query "
    "</search> and it will return the top searched results between <information> and </information>.",
    "You can search as many times as your want.",
    "If you find no further external knowledge needed, you can directly provide the answer inside <answer> "
    "and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>.",
    "Question: who wrote hamlet?",
]


def test_policy_prompt_is_the_six_sentences():
    assert make_prefix("  who wrote hamlet ") == " ".join(SPEC_POLICY_SENTENCES) + "\n"
    assert make_prefix("who wrote hamlet?").endswith("Question: who wrote hamlet?\n")


def test_question_preprocessing():
    assert preprocess_question(" Is it? ") == "Is it?"
    assert preprocess_question("where is paris") == "where is paris?"
    with pytest.raises(ValueError, match="empty"):
        preprocess_question("   ")


def test_observation_and_invalid_message():
    assert format_observation(" Doc 1: a\nDoc 2: b \n") == "\n\n<information>Doc 1: a\nDoc 2: b</information>\n\n"
    msg = INVALID_ACTION_MESSAGE
    assert msg.startswith("\n") and msg.endswith("\n") and msg.count("\n") == 2
    assert "My previous action is invalid" in msg
    assert "<search> and </search>" in msg and "<answer> and </answer>" in msg
    assert msg.rstrip().endswith("Let me try again.")


@pytest.mark.parametrize("noisy", [False, True])
def test_simulate_sft_exact_lines(noisy):
    word, Word = ("noisy", "Noisy") if noisy else ("useful", "Useful")
    expected = (
        "You are the Google search engine.\n"
        f"Given a query, you need to generate five {word} documents for the query.\n"
        "\n"
        'The user is trying to answer the question: "who wrote hamlet?" whose answer is William Shakespeare.\n'
        f"Each document should contain about 30 words, and these documents should contain {word} information.\n"
        "\n"
        "Query: hamlet author\n"
        f"{Word} Output:\n"
    )
    assert build_simulation_prompt("simulate_sft", "hamlet author", "who wrote hamlet", "William Shakespeare", noisy, 5) == expected


def test_number_of_documents_follows_topk():
    assert [number_word(k) for k in (1, 3, 10, 11, 20)] == ["one", "three", "ten", "11", "20"]
    three = build_simulation_prompt("simulate_sft", "q", "Q?", "A", False, 3)
    assert "generate three useful documents for the query." in three
    assert "generate 12 noisy documents" in build_simulation_prompt("simulate_sft", "q", "Q?", "A", True, 12)
    assert "generate one useful document for the query." in build_simulation_prompt("simulate_sft", "q", "Q?", "A", False, 1)
    with pytest.raises(ValueError):
        number_word(0)


def test_simulate_prompt_useful():
    text = build_simulation_prompt("simulate_prompt", "hamlet author", "who wrote hamlet?", "William Shakespeare", False, 5)
    lines = text.split("\n")
    assert lines[0] == "You are the Google search engine."
    assert "five useful documents" in lines[1]
    assert "Here is an example:" in lines
    demo = lines.index("Query: George Washington Bridge opening year")
    assert lines[demo + 1] == "Useful Output:"
    docs = lines[demo + 2 : demo + 7]
    assert [d.split(":")[0] for d in docs] == [f"Doc {i}" for i in range(1, 6)]
    assert "October 25, 1931" in docs[0] and "Othmar Ammann" in docs[0]
    assert "Hudson River Bridge" in docs[1] and "3,500-foot" in docs[1]
    assert "1962" in docs[2] and "twelve lanes" in docs[2]
    assert "four years" in docs[3]
    assert "103 million" in docs[4] and "Port Authority" in docs[4]
    assert all(20 <= len(d.split()) <= 45 for d in docs)
    assert 'The user is trying to answer the question: "who wrote hamlet?" whose answer is William Shakespeare.' in lines
    assert "You should generate documents that can help the user find the answer." in lines
    assert "Each document should contain about 30 words." in lines
    assert "You must directly output the English documents and not output any other texts." in lines
    assert text.endswith("\nQuery: hamlet author\nUseful Output:\n")


def test_simulate_prompt_noisy():
    text = build_simulation_prompt("simulate_prompt", "hamlet author", "who wrote hamlet?", "William Shakespeare", True, 5)
    lines = text.split("\n")
    assert "five related but noisy documents" in lines[1]
    demo = lines.index("Query: George Washington Bridge opening year")
    assert lines[demo + 1] == "Noisy Output:"
    docs = lines[demo + 2 : demo + 7]
    assert [d.split(":")[0] for d in docs] == [f"Doc {i}" for i in range(1, 6)]
    assert not any("1931" in d for d in docs)  # noisy demos avoid the opening date
    assert "Brooklyn Bridge" in docs[1]
    assert "William Shakespeare" not in text and "who wrote hamlet" not in text
    assert (
        "Each document should contain about 30 words, and these documents should contain related but noisy information."
        in lines
    )
    assert "You must directly output the English documents and not output any other texts." in lines
    assert text.endswith("\nQuery: hamlet author\nNoisy Output:\n")


def test_unknown_simulation_mode():
    with pytest.raises(ValueError, match="simulate_sft"):
        build_simulation_prompt("google", "q", "Q?", "A", False)


# ----------------------------------------------------------------------------------------- user wording
def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_template_of_the_shipped_wording_renders_the_shipped_prompt(tmp_path):
    # the shipped prompt with marker values, the markers turned back into placeholders
    for noisy in (False, True):
        shipped = build_simulation_prompt("simulate_prompt", "QQQ", "WWW?", "AAA", noisy, 5)
        phrase = "five noisy documents" if noisy else "five useful documents"
        template = shipped.replace("QQQ", "{query}").replace("WWW?", "{question}").replace("AAA", "{answer}")
        template = template.replace(phrase, "{documents}").replace("generate five related", "generate {topk_word} related")
        kind = "noisy" if noisy else "useful"
        cfg = {"simulation": {f"prompt_{kind}_template": write(tmp_path, f"{kind}.txt", template)}}
        loaded = simulate_prompt_templates(cfg)[kind]
        for topk in (5, 3):
            assert render_simulate_prompt(loaded, "hamlet author", "who wrote hamlet", "William Shakespeare", noisy, topk) == \
                build_simulation_prompt("simulate_prompt", "hamlet author", "who wrote hamlet", "William Shakespeare", noisy, topk)


def test_every_placeholder_by_hand(tmp_path):
    path = write(tmp_path, "mine.txt", "q={query} s={question} a={answer} n={topk} w={topk_word} d={documents} {{x}}\n")
    template = simulate_prompt_templates({"simulation": {"prompt_useful_template": path}})["useful"]
    assert render_simulate_prompt(template, "hamlet author", " who wrote hamlet ", "Shakespeare", False, 3) == \
        "q=hamlet author s=who wrote hamlet? a=Shakespeare n=3 w=three d=three useful documents {x}\n"
    assert render_simulate_prompt(template, "q", "Q", "A", True, 12) == "q=q s=Q? a=A n=12 w=12 d=12 noisy documents {x}\n"


def test_null_keys_keep_the_shipped_wording():
    assert simulate_prompt_templates({"simulation": {"prompt_useful_template": None, "prompt_noisy_template": None}}) == {}
    assert simulate_prompt_templates({}) == {} and simulate_prompt_templates(None) == {}
    assert invalid_action_message({"invalid_action_template": None}) == INVALID_ACTION_MESSAGE
    assert invalid_action_message({}) == INVALID_ACTION_MESSAGE


@pytest.mark.parametrize("kind, text, placeholder", [
    ("useful", "Query: {query}\nQuestion: {question}\n", "{answer}"),  # lacks the answer
    ("useful", "{answer} {question}\n", "{query}"),
    ("noisy", "noisy documents please\n", "{query}"),
])
def test_a_template_lacking_a_required_placeholder_is_refused_naming_file_and_placeholder(tmp_path, kind, text, placeholder):
    path = write(tmp_path, f"{kind}.txt", text)
    with pytest.raises(PromptTemplateError) as err:
        simulate_prompt_templates({"simulation": {f"prompt_{kind}_template": path}})
    message = str(err.value)
    assert path in message and f"lacks the required placeholder {placeholder}" in message
    assert f"retriever.simulation.prompt_{kind}_template" in message


@pytest.mark.parametrize("text, expected", [
    ("{query} {qestion} {answer} {question}", "unknown placeholder {qestion}"),
    ("{query} {} {answer} {question}", "unknown placeholder {}"),
    ("{query} {0} {answer} {question}", "unknown placeholder {0}"),
    ("{query} {answer} {question} {", "not valid format text"),
    ("   \n", "is empty"),
])
def test_bad_template_files_are_named(tmp_path, text, expected):
    path = write(tmp_path, "t.txt", text)
    with pytest.raises(PromptTemplateError) as err:
        simulate_prompt_templates({"simulation": {"prompt_useful_template": path}})
    assert path in str(err.value) and expected in str(err.value)
    with pytest.raises(PromptTemplateError, match="cannot read template .*missing.txt"):
        simulate_prompt_templates({"simulation": {"prompt_noisy_template": str(tmp_path / "missing.txt")}})


def test_the_invalid_action_message_file_is_read_verbatim(tmp_path):
    text = "\nThat was not an action. Use <search> q </search> or <answer> a </answer>; {braces} stay.\n"
    assert invalid_action_message({"invalid_action_template": write(tmp_path, "inv.txt", text)}) == text
    with pytest.raises(PromptTemplateError, match=r"retriever\.invalid_action_template: template .*empty.txt is empty"):
        invalid_action_message({"invalid_action_template": write(tmp_path, "empty.txt", "\n")})


def test_split_context_finds_the_question_of_a_policy_context():
    from zerosearch.prompts import make_prefix, split_context

    context = make_prefix("Who founded Zimra Works") + "<search> Zimra Works </search>"
    assert split_context(context) == ("Who founded Zimra Works?", "<search> Zimra Works </search>")
    with pytest.raises(ValueError, match="no 'Question: '"):
        split_context("<search> x </search>")
