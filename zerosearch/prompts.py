"""Every text ZeroSearch shows a model: the policy instruction, the search observation, the
invalid-action message, and the prompts that make an LLM play a search engine.

Simulation prompts (``build_simulation_prompt``):
    simulate_sft     the format the released fine-tuned simulation LLMs were tuned on. Useful and
                     noisy variants differ only in the words useful/noisy. The question and its
                     first gold answer are given in both.
    simulate_prompt  few-shot prompts for an untuned instruct model, with five demo documents about
                     the George Washington Bridge. The noisy variant deliberately leaves out the
                     question and answer: an untuned model that is shown the answer tends to write
                     it into documents that should be noisy. Both variants start with the same
                     first line (no stray trailing space in the noisy one).
The number of documents asked for follows ``topk`` (a word for 1..10, digits above; the released
simulators were tuned on "five").

User wording (``read_template``): the ``simulate_prompt`` prompts and the invalid-action message can
be read from files named in the config (``retriever.simulation.prompt_useful_template``,
``prompt_noisy_template``, ``retriever.invalid_action_template``); null keeps the wording above.
A prompt template is ``str.format`` text with the placeholders of ``SIMULATE_PROMPT_PLACEHOLDERS``
(``{{`` and ``}}`` for literal braces); a file that lacks a required placeholder, or names an
unknown one, is refused with an error naming the file and the placeholder.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Iterable, Mapping

SIMULATION_MODES = ("simulate_sft", "simulate_prompt")

POLICY_INSTRUCTION = (
    "Answer the given question. "
    "You must conduct reasoning inside <think> and </think> first every time you get new information. "
    "After reasoning, if you find you lack some knowledge, you can call a search engine by "
    "<search> query </search> and it will return the top searched results between <information> and "
    "</information>. "
    "You can search as many times as your want. "
    "If you find no further external knowledge needed, you can directly provide the answer inside "
    "<answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>. "
    "Question: {question}\n"
)

INVALID_ACTION_MESSAGE = (
    "\nMy previous action is invalid. "
    "To search, I should put my query between <search> and </search>. "
    "To answer, I should put my final answer between <answer> and </answer>. "
    "Let me try again.\n"
)

_NUMBER_WORDS = {
    1: "one",
    2: "two",
    3: "three",
    4: "four",
    5: "five",
    6: "six",
    7: "seven",
    8: "eight",
    9: "nine",
    10: "ten",
}

_DEMO_QUERY = "George Washington Bridge opening year"

_USEFUL_DEMO_DOCS = (
    "Doc 1: The George Washington Bridge, a suspension bridge designed by the engineer Othmar Ammann, "
    "opened to traffic on October 25, 1931, linking Upper Manhattan in New York City with Fort Lee, "
    "New Jersey.",
    "Doc 2: First called the Hudson River Bridge, the crossing was renamed for George Washington, the "
    "first president of the United States. Its 3,500-foot main span was the longest in the world when "
    "it was completed.",
    "Doc 3: A lower deck was added to the George Washington Bridge in 1962, turning it into a "
    "double-decked bridge that today carries twelve lanes of traffic over the Hudson River.",
    "Doc 4: Building the George Washington Bridge took about four years. When it opened in 1931 it "
    "joined the road and transport networks of New York and New Jersey across the Hudson.",
    "Doc 5: Run by the Port Authority of New York and New Jersey, the George Washington Bridge carries "
    "more than 103 million vehicles a year, which makes it one of the busiest bridges on Earth.",
)

_NOISY_DEMO_DOCS = (
    "Doc 1: Work on the George Washington Bridge ran into trouble: costs climbed past the planned "
    "budget, and strikes by construction workers stopped progress on the steel towers for weeks.",
    "Doc 2: Visitors often mix up the George Washington Bridge and the Brooklyn Bridge, and for years "
    "New York politicians and planners argued over which river crossing should be funded first.",
    "Doc 3: The name of the George Washington Bridge was argued over at length, with officials putting "
    "forward several other names to honor local figures before a final choice was made.",
    "Doc 4: Drivers regularly complain about the tolls and daily traffic jams on the George Washington "
    "Bridge, and environmental groups have raised concerns about exhaust fumes near its approaches.",
    "Doc 5: Architects still debate the look of the George Washington Bridge, whose steel towers were "
    "left bare rather than covered in stone as first planned, giving it a plain industrial appearance.",
)


def preprocess_question(question: str) -> str:
    """Strip whitespace and end the question with "?" when it does not already."""
    if not isinstance(question, str):
        raise TypeError(f"question must be str, got {type(question).__name__}")
    question = question.strip()
    if not question:
        raise ValueError("question is empty")
    if not question.endswith("?"):
        question += "?"
    return question


QUESTION_MARK = "Question: "  # where make_prefix's prompt states the question (POLICY_INSTRUCTION)


def make_prefix(question: str) -> str:
    """The policy prompt: the instruction followed by ``Question: {question}\\n``."""
    return POLICY_INSTRUCTION.format(question=preprocess_question(question))


def split_context(context: str) -> tuple[str, str]:
    """(question, what follows the question's line) of a decoded policy context: the prompt of
    ``make_prefix`` (chat-templated or not) and the response so far. ValueError when the context
    holds no ``Question: `` line."""
    at = context.rfind(QUESTION_MARK)
    if at < 0:
        raise ValueError(f"no '{QUESTION_MARK}' in the policy context: {context[-200:]!r}")
    question, _, rest = context[at + len(QUESTION_MARK):].partition("\n")
    return question.strip(), rest


def format_observation(documents: str) -> str:
    """The observation appended after a search: ``\\n\\n<information>{docs}</information>\\n\\n``."""
    return f"\n\n<information>{documents.strip()}</information>\n\n"


def number_word(n: int) -> str:
    """1..10 -> "one".."ten"; larger counts as digits."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of documents must be an int >= 1, got {n!r}")
    return _NUMBER_WORDS.get(n, str(n))


def _documents_phrase(kind: str, topk: int) -> str:
    return f"{number_word(topk)} {kind} document{'s' if topk != 1 else ''}"


def simulate_sft_prompt(query: str, question: str, answer: str, noisy: bool, topk: int = 5) -> str:
    """Prompt of a fine-tuned simulation LLM (the released checkpoints were tuned on topk=5)."""
    kind = "noisy" if noisy else "useful"
    lines = [
        "You are the Google search engine.",
        f"Given a query, you need to generate {_documents_phrase(kind, topk)} for the query.",
        "",
        f'The user is trying to answer the question: "{preprocess_question(question)}" whose answer is {answer}.',
        f"Each document should contain about 30 words, and these documents should contain {kind} information.",
        "",
        f"Query: {query}",
        f"{kind.capitalize()} Output:",
    ]
    return "\n".join(lines) + "\n"


def simulate_prompt_prompt(query: str, question: str, answer: str, noisy: bool, topk: int = 5) -> str:
    """Few-shot prompt for an untuned instruct model; the noisy variant omits question and answer."""
    if noisy:
        lines = [
            "You are the Google search engine.",
            "Imitate the style of the example below and generate "
            f"{number_word(topk)} related but noisy document{'s' if topk != 1 else ''} for the query.",
            "",
            "Here is an example:",
            f"Query: {_DEMO_QUERY}",
            "Noisy Output:",
            *_NOISY_DEMO_DOCS,
            "",
            "Each document should contain about 30 words, and these documents should contain related "
            "but noisy information.",
            "You must directly output the English documents and not output any other texts.",
            "",
            f"Query: {query}",
            "Noisy Output:",
        ]
    else:
        lines = [
            "You are the Google search engine.",
            f"Imitate the style of the example below and generate {_documents_phrase('useful', topk)} "
            "for the query.",
            "",
            "Here is an example:",
            f"Query: {_DEMO_QUERY}",
            "Useful Output:",
            *_USEFUL_DEMO_DOCS,
            "",
            f'The user is trying to answer the question: "{preprocess_question(question)}" whose answer is {answer}.',
            "You should generate documents that can help the user find the answer.",
            "Each document should contain about 30 words.",
            "You must directly output the English documents and not output any other texts.",
            "",
            f"Query: {query}",
            "Useful Output:",
        ]
    return "\n".join(lines) + "\n"


def simulation_messages(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    """The chat messages a simulation LLM receives for one simulation ``prompt``.

    A system message holding ``system_prompt``, then the prompt as the user message;
    ``system_prompt`` None gives the user message alone (the chat template's own default then
    applies). The search client sends these at serving time and the simulation-tuning pipeline
    writes them into its SFT rows, so a tuned simulator is served exactly what it was tuned on.
    ``retriever.simulation.system_prompt`` (configs/retriever/default.yaml) holds the default: ""
    (an empty system message, with which the released simulators were tuned and served).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"simulation_messages: prompt must be a string, got {type(prompt).__name__}")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ValueError("simulation_messages: system_prompt (retriever.simulation.system_prompt) must be a "
                         f"string or null, got {system_prompt!r}")
    user = [{"role": "user", "content": prompt}]
    return user if system_prompt is None else [{"role": "system", "content": system_prompt}, *user]


def build_simulation_prompt(mode: str, query: str, question: str, answer: str, noisy: bool, topk: int = 5) -> str:
    """The simulation prompt of ``mode`` (``simulate_sft`` or ``simulate_prompt``) for one query."""
    if mode == "simulate_sft":
        return simulate_sft_prompt(query, question, answer, noisy, topk)
    if mode == "simulate_prompt":
        return simulate_prompt_prompt(query, question, answer, noisy, topk)
    raise ValueError(f"simulation mode must be one of {SIMULATION_MODES}, got {mode!r}")


# ----------------------------------------------------------------------------------------- user wording
# Placeholders of a simulate_prompt template and what they are filled with.
SIMULATE_PROMPT_PLACEHOLDERS = {
    "query": "the search query",
    "question": "the row's question (stripped, ending in '?')",
    "answer": "the row's first gold answer",
    "topk": "the number of documents, in digits",
    "topk_word": "the number of documents as the shipped prompts write it ('five'; digits above ten)",
    "documents": "'five useful documents' / 'five noisy documents' (the count, the kind, the plural)",
}
# The useful prompt must tell the simulator what the user is after; the noisy one may leave it out
# (the shipped noisy prompt does, on purpose).
SIMULATE_PROMPT_REQUIRED = {"useful": ("query", "question", "answer"), "noisy": ("query",)}


class PromptTemplateError(ValueError):
    """A user template file is missing, unreadable, empty, or has a bad or missing placeholder."""


def _placeholders(text: str, path: str, key: str) -> set[str]:
    """The field names of a ``str.format`` template; errors name the file and the placeholder."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
    except ValueError as e:
        raise PromptTemplateError(f"{key}: template {path} is not valid format text ({e}); write {{{{ and }}}} "
                                  "for literal braces") from None
    # "{a.b}" and "{a[0]}" name a; a positional "{}" or "{0}" keeps its text and is reported as unknown
    return {field.split(".", 1)[0].split("[", 1)[0] or field for field in fields}


def read_template(path: str | Path, key: str, required: Iterable[str] = (), allowed: Iterable[str] | None = None) -> str:
    """The text of the template file ``path`` (config key ``key``), checked.

    ``allowed`` = None reads the file verbatim (no placeholders are parsed); otherwise every
    placeholder must be in ``allowed`` and every one of ``required`` must appear.
    """
    path = str(Path(path).expanduser())
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PromptTemplateError(f"{key}: cannot read template {path}: {e}") from None
    if not text.strip():
        raise PromptTemplateError(f"{key}: template {path} is empty")
    if allowed is None:
        return text
    names = _placeholders(text, path, key)
    unknown = sorted(names - set(allowed))
    if unknown:
        raise PromptTemplateError(f"{key}: template {path} has unknown placeholder {{{unknown[0]}}}; "
                                  f"known: {', '.join('{' + p + '}' for p in allowed)}")
    missing = [name for name in required if name not in names]
    if missing:
        raise PromptTemplateError(f"{key}: template {path} lacks the required placeholder {{{missing[0]}}}")
    return text


def _option(cfg: Mapping[str, Any] | None, dotted: str) -> Any:
    """``cfg[a][b]`` for ``"a.b"``, None when any level is missing (the new keys are optional)."""
    node: Any = cfg
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return None
        node = node.get(part)
    return node


def simulate_prompt_templates(retriever_cfg: Mapping[str, Any] | None) -> dict[str, str]:
    """The user's simulate_prompt templates named by ``retriever.simulation.prompt_{useful,noisy}_template``
    (read and checked), keyed "useful" / "noisy"; a kind whose key is null is absent."""
    templates = {}
    for kind, required in SIMULATE_PROMPT_REQUIRED.items():
        key = f"simulation.prompt_{kind}_template"
        path = _option(retriever_cfg, key)
        if path is not None:
            templates[kind] = read_template(path, f"retriever.{key}", required, SIMULATE_PROMPT_PLACEHOLDERS)
    return templates


def render_simulate_prompt(template: str, query: str, question: str, answer: str, noisy: bool, topk: int = 5) -> str:
    """Fill a checked simulate_prompt template (see ``SIMULATE_PROMPT_PLACEHOLDERS``)."""
    return template.format(query=query, question=preprocess_question(question), answer=answer, topk=topk,
                           topk_word=number_word(topk), documents=_documents_phrase("noisy" if noisy else "useful", topk))


def invalid_action_message(retriever_cfg: Mapping[str, Any] | None) -> str:
    """The message appended after a turn with no valid action: the file named by
    ``retriever.invalid_action_template`` read verbatim (newlines included, no placeholders), or
    ``INVALID_ACTION_MESSAGE`` when it is null."""
    path = _option(retriever_cfg, "invalid_action_template")
    return INVALID_ACTION_MESSAGE if path is None else read_template(path, "retriever.invalid_action_template")
