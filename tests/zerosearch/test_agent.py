"""SearchAgentLoop with a scripted engine and a recording search tool (no model, no server).

The tokenizer is character-level (one id per character) with the rollout tags as single tokens,
so every length below is worked out by hand: ``<search>q1</search>`` is 4 tokens, the observation
``\\n\\n<information>Doc 1: about q1</information>\\n\\n`` is 2 + 1 + 15 + 1 + 2 = 21 tokens.
"""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import zerosearch.agent as agent_module
from tests.zerosearch.char_tokenizer import char_tokenizer
from verl.protocol import DataProto
from verl.utils.dataset.rl_dataset import left_pad
from verl.workers.rollout.base import GenerationOutput
from zerosearch.agent import SearchAgentLoop
from zerosearch.prompts import INVALID_ACTION_MESSAGE
from zerosearch.reward import compute_score
from zerosearch.tools.base import NO_INFORMATION, SearchResult, SearchTool
from zerosearch.tools.failure import MalformedRepliesError, SearchFailureError

TAGS = ["<search>", "</search>", "<answer>", "</answer>", "<information>", "</information>"]
NEVER = object()  # script entry: emit "z" until max_new_tokens, never a tag


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer(TAGS)


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


class ScriptedEngine:
    """generate(): row k (found from its ``P<k>:`` prompt) plays ``scripts[k][turn]``."""

    def __init__(self, tok, scripts, overrun=""):
        self.tok, self.scripts, self.overrun = tok, scripts, overrun
        self.turns = {k: 0 for k in scripts}
        self.sampled = {k: [] for k in scripts}  # row -> list of (ids, log_probs) as returned
        self.calls = []  # (prompts, sampling)

    def __call__(self, prompts, sampling):
        self.calls.append(([list(p) for p in prompts], sampling))
        outs = []
        for p in prompts:
            row = int(re.match(r"P(\d+):", self.tok.decode(p)).group(1))
            turn = self.turns[row]
            self.turns[row] += 1
            spec = self.scripts[row][turn]
            if spec is NEVER:
                ids, reason = enc(self.tok, "z") * sampling.max_new_tokens, "length"
            else:
                ids = enc(self.tok, spec + self.overrun)
                reason = "eos" if spec.endswith("<eos>") else "stop"
                if len(ids) > sampling.max_new_tokens:
                    ids, reason = ids[: sampling.max_new_tokens], "length"
            lps = [-(row + 1) - 0.1 * turn - 0.001 * j for j in range(len(ids))]
            self.sampled[row].append((ids, lps))
            outs.append(GenerationOutput(token_ids=list(ids), log_probs=list(lps), finish_reason=reason))
        return outs


class RecordingTool(SearchTool):
    """Answers ``Doc 1: about <query>`` (or ``docs(query)``) and records every call.

    ``ok`` (a bool, or a function of the request's index in the call) False makes a request fail;
    ``malformed`` (same forms) makes it a malformed reply whose documents are ``garbage(query)``.
    """

    name = "fake"

    def __init__(self, docs=lambda q: f"Doc 1: about {q}", ok=True, malformed=False,
                 garbage=lambda q: f"Doc 19987. Its. Its in {q}"):
        super().__init__()
        self.docs, self.ok, self.malformed, self.garbage = docs, ok, malformed, garbage
        self.calls = []
        _OPEN_TOOLS.append(self)

    async def _search_uncached(self, requests):
        self.calls.append(list(requests))
        out = []
        for k, r in enumerate(requests):
            if self._pick(self.malformed, k):
                text = self.garbage(r.query)
                out.append(SearchResult(documents=text, ok=False, malformed=True,
                                        error=f"simulated reply has no 'Doc 1' line: {text!r}", latency_s=0.5))
                continue
            ok = self._pick(self.ok, k)
            documents = self.docs(r.query) if ok else NO_INFORMATION
            out.append(SearchResult(documents=documents, ok=ok, error=None if ok else "boom", latency_s=0.5))
        return out

    @staticmethod
    def _pick(flag, k):
        return flag(k) if callable(flag) else flag

    def describe(self):
        return "fake search at 127.0.0.1:6002"


_OPEN_TOOLS: list[RecordingTool] = []


@pytest.fixture(autouse=True)
def _close_tools():
    yield
    while _OPEN_TOOLS:
        _OPEN_TOOLS.pop().close()


def make_config(**over):
    cfg = OmegaConf.create(
        {
            "retriever": {
                "search_mode": "simulate_sft",
                "search_engine": "wiki",
                "topk": 5,
                "max_turns": 2,
                "max_obs_length": 100,
                "max_query_chars": 512,
                "start_threshold": 0.0,
                "end_threshold": 0.0,
                "base": 4.0,
                "total_steps": 10,
                "seed": 7,
                "max_failure_rate": 0.5,
                "max_malformed_rate": 0.9,
                "failure_window": 200,
                "failure_min_requests": 20,
                "failure_streak_rounds": 2,
                "wiki": {"host": "127.0.0.1", "port": 6002},
            },
            "actor_rollout_ref": {
                "rollout": {
                    "temperature": 0.9,
                    "top_p": 0.95,
                    "top_k": 50,
                    "max_new_tokens": 8,
                    "val_kwargs": {"do_sample": False, "temperature": 0.0, "top_p": 1.0},
                }
            },
            "data": {"max_prompt_length": 32, "max_response_length": 400},
            "trainer": {"total_training_steps": 10},
        }
    )
    for key, value in over.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def make_batch(tok, n, extra_left_pad=2):
    prompts = [enc(tok, f"P{k}:question {k}?") for k in range(n)]
    width = max(len(p) for p in prompts) + extra_left_pad
    padded = [left_pad(p, width, 0) for p in prompts]
    ids = torch.stack([row["input_ids"] for row in padded])
    mask = torch.stack([row["attention_mask"] for row in padded])
    golden = np.empty(n, dtype=object)
    for k in range(n):
        golden[k] = np.array([f"gold{k}", f"alias{k}"])
    return (
        DataProto.from_dict(
            tensors={"input_ids": ids, "attention_mask": mask},
            non_tensors={
                "question": [f"question {k}?" for k in range(n)],
                "golden_answers": golden,
                "uid": [f"u{k}" for k in range(n)],
            },
            meta_info={"origin": "test"},
        ),
        prompts,
    )


def segments_mask(parts):
    """[(length, bit), ...] -> flat list."""
    return [bit for length, bit in parts for _ in range(length)]


MAIN_SCRIPTS = {
    0: ["<answer>A0</answer>"],
    1: ["<search>q1</search>", "<answer>A1</answer>"],
    2: ["junk<eos>", "<search>q2</search>", "<answer>A2</answer>"],
    3: [NEVER, NEVER, NEVER],
    4: ["<search>q4</search>", "<search>q4b</search>", "<search>q</search>"],  # a search in the final turn
}


@pytest.fixture()
def main_run(tok):
    tool = RecordingTool()
    loop = SearchAgentLoop(make_config(), tok, search_tool=tool, val_search_tool=RecordingTool())
    engine = ScriptedEngine(tok, MAIN_SCRIPTS)
    batch, prompts = make_batch(tok, 5)
    out = loop.run(batch, engine, step=1)
    return out, engine, tool, prompts


def test_response_mask_and_layout_hand_computed(tok, main_run):
    out, _, _, _ = main_run
    L = len(enc(tok, INVALID_ACTION_MESSAGE))
    expected = {
        0: [(4, 1)],
        1: [(4, 1), (21, 0), (4, 1)],
        2: [(5, 1), (L, 0), (4, 1), (21, 0), (4, 1)],
        3: [(8, 1), (L, 0), (8, 1), (L, 0), (8, 1)],
        4: [(4, 1), (21, 0), (5, 1), (22, 0), (3, 1)],  # the final turn ends at its </search>
    }
    width = max(sum(n for n, _ in parts) for parts in expected.values())  # padded to the batch's longest
    assert out.batch["responses"].shape == (5, width)
    for row, parts in expected.items():
        mask = segments_mask(parts)
        mask += [0] * (width - len(mask))
        assert out.batch["response_mask"][row].tolist() == mask, row
        n_real = sum(n for n, _ in parts)
        assert out.batch["attention_mask"][row, -width:].tolist() == [1] * n_real + [0] * (width - n_real)
        assert out.batch["responses"][row, n_real:].tolist() == [tok.pad_token_id] * (width - n_real)


def test_trained_tokens_are_the_sampled_ids_with_their_log_probs(main_run):
    out, engine, _, _ = main_run
    for row, turns in engine.sampled.items():
        mask = out.batch["response_mask"][row].bool()
        sampled_ids = [i for ids, _ in turns for i in ids]
        sampled_lps = [lp for _, lps in turns for lp in lps]
        assert out.batch["responses"][row][mask].tolist() == sampled_ids
        torch.testing.assert_close(
            out.batch["rollout_log_probs"][row][mask], torch.tensor(sampled_lps, dtype=torch.float32)
        )
        assert out.batch["rollout_log_probs"][row][~mask].abs().sum().item() == 0.0
    # the EOS sampled by row 2 is kept and trained
    assert out.batch["responses"][2, 4].item() == 1 and out.batch["response_mask"][2, 4].item() == 1


def test_observations_and_invalid_message_text(tok, main_run):
    out, _, _, _ = main_run
    resp1 = out.batch["responses"][1]
    assert tok.decode(resp1[4:25].tolist()) == "\n\n<information>Doc 1: about q1</information>\n\n"
    L = len(enc(tok, INVALID_ACTION_MESSAGE))
    assert out.batch["responses"][2, 5 : 5 + L].tolist() == enc(tok, INVALID_ACTION_MESSAGE)
    assert tok.decode(out.batch["responses"][3, 8 : 8 + L].tolist()) == INVALID_ACTION_MESSAGE


def test_prompt_side_and_positions(tok, main_run):
    out, _, _, prompts = main_run
    P = max(len(p) for p in prompts)  # re-padded to the batch's longest prompt, not the input width
    assert out.batch["prompts"].shape == (5, P)
    for row, p in enumerate(prompts):
        assert out.batch["prompts"][row, P - len(p) :].tolist() == p
        assert out.batch["prompts"][row, : P - len(p)].tolist() == [tok.pad_token_id] * (P - len(p))
    torch.testing.assert_close(out.batch["input_ids"], torch.cat([out.batch["prompts"], out.batch["responses"]], 1))
    # row 0: prompt of len(p0), then 4 response tokens; positions count real tokens from 0
    p0 = len(prompts[0])
    pos = out.batch["position_ids"][0].tolist()
    assert pos[P - p0 : P + 4] == list(range(p0 + 4))
    assert pos[: P - p0] == [0] * (P - p0)


def test_queries_carry_their_own_rows_context(main_run):
    _, _, tool, _ = main_run
    assert len(tool.calls) == 2  # one batched call per search round, none in the final round
    got = [[(r.row, r.query, r.question, r.golden_answers, r.noisy) for r in call] for call in tool.calls]
    assert got == [
        [(1, "q1", "question 1?", ["gold1", "alias1"], False), (4, "q4", "question 4?", ["gold4", "alias4"], False)],
        [(2, "q2", "question 2?", ["gold2", "alias2"], False), (4, "q4b", "question 4?", ["gold4", "alias4"], False)],
    ]


def test_generation_calls(tok, main_run):
    _, engine, _, prompts = main_run
    assert [len(p) for p, _ in engine.calls] == [5, 4, 3]
    first, last = engine.calls[0][1], engine.calls[-1][1]
    assert first.stop == ["</search>", "</answer>"]
    assert first.stop_token_ids == [tok.convert_tokens_to_ids("</search>"), tok.convert_tokens_to_ids("</answer>")]
    assert last.stop == first.stop and last.stop_token_ids == first.stop_token_ids  # the final turn stops alike
    knobs = (first.do_sample, first.temperature, first.top_p, first.top_k, first.max_new_tokens)
    assert knobs == (True, 0.9, 0.95, 50, 8)
    # second round: row 1's context = its whole prompt + its response so far (4 sampled + 21 observation)
    ctx = engine.calls[1][0][0]
    assert ctx[: len(prompts[1])] == prompts[1] and len(ctx) == len(prompts[1]) + 25


def test_per_row_columns_and_metrics(tok, main_run):
    out, _, _, _ = main_run
    nt = out.non_tensor_batch
    assert list(nt["uid"]) == [f"u{k}" for k in range(5)]
    assert list(nt["num_turns"]) == [1, 2, 3, 3, 3]
    assert list(nt["num_searches"]) == [0, 1, 1, 0, 2]
    assert list(nt["num_valid_actions"]) == [1, 2, 2, 0, 3]
    assert list(nt["answered"]) == [True, True, True, False, False]  # row 4 searched in the final turn
    assert list(nt["search_queries"]) == [[], ["q1"], ["q2"], [], ["q4", "q4b"]]
    text = nt["trajectory_text"][1]
    assert text.startswith("P1:question 1?") and text.endswith("<answer>A1</answer>")
    assert out.meta_info["origin"] == "test"

    L = len(enc(tok, INVALID_ACTION_MESSAGE))
    m = out.meta_info["metrics"]
    assert m["search/turns_mean"] == pytest.approx(12 / 5)
    assert m["search/turns_max"] == 3
    assert m["search/valid_action_rate"] == pytest.approx(8 / 12)
    assert m["search/searches_per_row"] == pytest.approx(4 / 5)
    assert m["search/answered_rate"] == pytest.approx(3 / 5)
    assert m["search/obs_tokens_share"] == pytest.approx((85 + 3 * L) / (146 + 3 * L))
    assert m["search/failure_rate"] == 0.0
    assert m["search/p_noisy"] == 0.0 and m["search/noisy_share"] == 0.0
    assert m["search/requests"] == 4.0 and m["search/latency_mean_s"] == 0.5  # the tool's own counters


def test_generation_and_search_time_are_measured_apart(tok):
    """meta_info["timing"]: seconds inside generate and inside the tool's calls, measured where they happen."""

    class SlowEngine(ScriptedEngine):
        def __call__(self, prompts, sampling):
            time.sleep(0.03)
            return super().__call__(prompts, sampling)

    class SlowTool(RecordingTool):
        async def _search_uncached(self, requests):
            await asyncio.sleep(0.5)
            return await super()._search_uncached(requests)

    loop = SearchAgentLoop(make_config(), tok, search_tool=SlowTool(), val_search_tool=RecordingTool())
    batch, _ = make_batch(tok, 2)
    out = loop.run(batch, SlowEngine(tok, {0: MAIN_SCRIPTS[1], 1: MAIN_SCRIPTS[0]}), step=1)
    timing = out.meta_info["timing"]
    assert set(timing) == {"gen", "search"}
    assert 0.06 <= timing["gen"] < 0.5  # two generate calls of 0.03 s; the tool's 0.5 s is not in it
    assert timing["search"] >= 0.5  # one search round


def test_observation_truncation_keeps_both_tags(tok):
    tool = RecordingTool(docs=lambda q: "D" * 500)
    loop = SearchAgentLoop(make_config(**{"retriever.max_obs_length": 40}), tok, search_tool=tool)
    engine = ScriptedEngine(tok, {0: ["<search>q</search>", "<answer>x</answer>"]})
    out = loop.run(make_batch(tok, 1)[0], engine, step=1)
    obs = out.batch["responses"][0, 3:43].tolist()  # 3 sampled tokens, then a 40-token observation
    assert tok.decode(obs) == "\n\n<information>" + "D" * 34 + "</information>\n\n"
    assert out.batch["response_mask"][0].tolist() == [1] * 3 + [0] * 40 + [1] * 3
    assert out.meta_info["metrics"]["search/obs_truncated_share"] == 1.0


def test_the_users_invalid_action_message_is_the_observation_after_an_invalid_turn(tok, tmp_path):
    message = "\n(no action: use <search> or <answer>)\n"
    path = tmp_path / "invalid.txt"
    path.write_text(message, encoding="utf-8")
    loop = SearchAgentLoop(make_config(**{"retriever.invalid_action_template": str(path)}), tok,
                           search_tool=RecordingTool())
    engine = ScriptedEngine(tok, {0: ["junk", "<answer>a</answer>"]})
    out = loop.run(make_batch(tok, 1)[0], engine, step=1)
    L = len(enc(tok, message))  # 39 characters, two of them 8-character tags that are one token each
    assert L == 39 - 2 * 7
    assert tok.decode(out.batch["responses"][0, 4:4 + L].tolist()) == message
    assert out.batch["response_mask"][0].tolist() == [1] * 4 + [0] * L + [1] * 3


def test_a_bad_simulate_prompt_template_stops_the_loop_before_any_rollout(tok, tmp_path):
    path = tmp_path / "useful.txt"
    path.write_text("Query: {query}\nQuestion: {question}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{path} lacks the required placeholder {{answer}}"):
        SearchAgentLoop(make_config(**{"retriever.simulation": {"prompt_useful_template": str(path)}}), tok,
                        search_tool=RecordingTool())


def test_max_obs_length_must_leave_room_for_documents(tok):
    with pytest.raises(ValueError, match="max_obs_length"):
        SearchAgentLoop(make_config(**{"retriever.max_obs_length": 6}), tok, search_tool=RecordingTool())


def test_response_length_cap(tok):
    L = len(enc(tok, INVALID_ACTION_MESSAGE))
    cap = 8 + L + 5
    loop = SearchAgentLoop(make_config(**{"data.max_response_length": cap}), tok, search_tool=RecordingTool())
    engine = ScriptedEngine(tok, {0: [NEVER, NEVER, NEVER], 1: ["<answer>a</answer>"]})
    batch, prompts = make_batch(tok, 2)
    out = loop.run(batch, engine, step=1)
    # round 1: 8 tokens + message; round 2: only 5 tokens of budget are left -> max_new_tokens 5, then done
    assert [s.max_new_tokens for _, s in engine.calls] == [8, 5]
    assert out.batch["response_mask"][0].tolist() == [1] * 8 + [0] * L + [1] * 5
    assert out.batch["prompts"][0, -len(prompts[0]) :].tolist() == prompts[0]  # the question is never cut
    assert out.non_tensor_batch["num_turns"][0] == 2
    assert out.meta_info["metrics"]["search/length_cap_rate"] == pytest.approx(1 / 2)


def test_one_call_serves_rows_with_different_budgets(tok):
    # after round 1, row 0 used 6 + 20 tokens and row 1 used 3 + 20; with a cap of 29 they have 3 and 6 left
    loop = SearchAgentLoop(
        make_config(**{"data.max_response_length": 29, "retriever.max_turns": 1}), tok, search_tool=RecordingTool()
    )
    engine = ScriptedEngine(tok, {0: ["abc<search>q</search>", NEVER], 1: ["<search>q</search>", NEVER]})
    out = loop.run(make_batch(tok, 2)[0], engine, step=1)
    assert engine.calls[1][1].max_new_tokens == 6  # the call serves the row with the most room
    assert out.batch["responses"].shape[1] == 29
    assert out.batch["response_mask"][0].tolist() == [1] * 6 + [0] * 20 + [1] * 3
    assert out.batch["response_mask"][1].tolist() == [1] * 3 + [0] * 20 + [1] * 6
    torch.testing.assert_close(
        out.batch["rollout_log_probs"][0, 26:], torch.tensor(engine.sampled[0][1][1][:3], dtype=torch.float32)
    )


def test_search_without_room_for_observation_ends_the_row(tok):
    loop = SearchAgentLoop(make_config(**{"data.max_response_length": 8}), tok, search_tool=(tool := RecordingTool()))
    engine = ScriptedEngine(tok, {0: ["abcd<search>q</search>"]})
    out = loop.run(make_batch(tok, 1)[0], engine, step=1)
    assert tool.calls == []  # 7 tokens leave 1, not enough for the observation tags
    assert out.batch["response_mask"][0].tolist() == [1] * 7
    assert out.non_tensor_batch["search_queries"][0] == ["q"]


def test_overrun_after_stop_is_cut_in_token_space(tok):
    tool = RecordingTool()
    loop = SearchAgentLoop(make_config(**{"actor_rollout_ref.rollout.max_new_tokens": 30}), tok, search_tool=tool)
    engine = ScriptedEngine(tok, {0: ["<search>q</search>", "<answer>x</answer>"]}, overrun="tail")
    out = loop.run(make_batch(tok, 1)[0], engine, step=1)
    resp, mask = out.batch["responses"][0], out.batch["response_mask"][0]
    assert resp[:3].tolist() == engine.sampled[0][0][0][:3]  # "<search>q</search>", "tail" dropped
    assert mask.tolist() == [1] * 3 + [0] * 20 + [1] * 3
    torch.testing.assert_close(
        out.batch["rollout_log_probs"][0, :3], torch.tensor(engine.sampled[0][0][1][:3], dtype=torch.float32)
    )
    assert tool.calls[0][0].query == "q"


def test_zero_search_rounds_means_one_generation_whose_search_is_not_run(tok):
    tool = RecordingTool()
    loop = SearchAgentLoop(make_config(**{"retriever.max_turns": 0}), tok, search_tool=tool)
    engine = ScriptedEngine(tok, {0: ["<search>q</search>"]})
    out = loop.run(make_batch(tok, 1)[0], engine, step=1)
    assert engine.calls[0][1].stop == ["</search>", "</answer>"]
    assert tool.calls == [] and not out.non_tensor_batch["answered"][0]
    assert out.batch["response_mask"][0].tolist() == [1, 1, 1]


# The exploit the final turn's </search> stop closes: search, write one's own documents, answer.
FORGED = "<search>q</search><information>Doc 1: gold</information><answer>gold0</answer>"


@pytest.mark.parametrize("max_turns", [1, 2, 5])
def test_a_search_in_the_final_turn_ends_the_trajectory_unanswered(tok, max_turns):
    """Row 0 searches every round and the final turn; row 1 answers in the final turn. A scripted
    engine ignores the stops (it returns the forged tail), so the cut is the agent's own."""
    tool = RecordingTool()
    loop = SearchAgentLoop(make_config(**{"retriever.max_turns": max_turns,
                                          "actor_rollout_ref.rollout.max_new_tokens": 80}), tok, search_tool=tool)
    scripts = {0: [f"<search>s{t}</search>" for t in range(max_turns)] + [FORGED],
               1: [f"<search>s{t}</search>" for t in range(max_turns)] + ["<answer>gold1</answer>"]}
    engine = ScriptedEngine(tok, scripts)
    out = loop.run(make_batch(tok, 2)[0], engine, step=1)
    assert len(engine.calls) == max_turns + 1
    assert all(sampling.stop == ["</search>", "</answer>"] for _, sampling in engine.calls)
    assert len(tool.calls) == max_turns  # the final turn's search is never run
    nt = out.non_tensor_batch
    rounds = "".join(f"<search>s{t}</search>\n\n<information>Doc 1: about s{t}</information>\n\n"
                     for t in range(max_turns))
    assert nt["trajectory_text"][0] == "P0:question 0?" + rounds + "<search>q</search>"
    assert nt["trajectory_text"][1] == "P1:question 1?" + rounds + "<answer>gold1</answer>"
    assert list(nt["answered"]) == [False, True]
    # Under the reward, the forged answer earns nothing; the real one does.
    responses = [tok.decode(out.batch["responses"][r][out.batch["attention_mask"][r, -out.batch["responses"].shape[1]:]
                                                       .bool()].tolist()) for r in (0, 1)]
    assert [compute_score("t", text, [f"gold{r}"], metric="sub_em")["score"] for r, text in enumerate(responses)] \
        == [0.0, 1.0]
    assert list(nt["num_searches"]) == [max_turns, max_turns]
    assert list(nt["num_turns"]) == [max_turns + 1, max_turns + 1]
    # Each round: 4 sampled tokens ("<search>", "s", digit, "</search>") and a 21-token observation
    # (2 newlines, <information>, "Doc 1: about s<t>" (15), </information>, 2 newlines);
    # the final turn keeps "<search>", "q", "</search>" (3) for row 0 and the 7-token answer for row 1.
    for row, last in ((0, 3), (1, 7)):
        mask = segments_mask([(4, 1), (21, 0)] * max_turns + [(last, 1)])
        n = len(mask)
        assert out.batch["response_mask"][row, :n].tolist() == mask
        assert out.batch["response_mask"][row, n:].sum().item() == 0
        assert out.batch["attention_mask"][row, -out.batch["responses"].shape[1]:].sum().item() == n


def test_raw_prompt_ids_take_precedence(tok):
    batch, _ = make_batch(tok, 1)
    raw = enc(tok, "P0:raw prompt")
    batch.non_tensor_batch["raw_prompt_ids"] = np.array([raw, None], dtype=object)[:1]
    loop = SearchAgentLoop(make_config(), tok, search_tool=RecordingTool())
    engine = ScriptedEngine(tok, {0: ["<answer>x</answer>"]})
    out = loop.run(batch, engine, step=1)
    assert engine.calls[0][0][0] == raw
    assert out.batch["prompts"][0].tolist() == raw


def test_missing_question_column_is_named(tok):
    batch, _ = make_batch(tok, 1)
    batch.non_tensor_batch.pop("question")
    loop = SearchAgentLoop(make_config(), tok, search_tool=RecordingTool())
    with pytest.raises(KeyError, match="question"):
        loop.run(batch, ScriptedEngine(tok, {0: ["<answer>x</answer>"]}), step=1)


def test_validation_is_greedy_uses_the_val_tool_and_no_noise(tok):
    train_tool, val_tool = RecordingTool(), RecordingTool()
    cfg = make_config(**{"retriever.start_threshold": 1.0, "retriever.end_threshold": 1.0})
    loop = SearchAgentLoop(cfg, tok, search_tool=train_tool, val_search_tool=val_tool)
    engine = ScriptedEngine(tok, {0: ["<search>q</search>", "<answer>x</answer>"]})
    out = loop.run(make_batch(tok, 1)[0], engine, step=3, validate=True)
    s = engine.calls[0][1]
    assert (s.do_sample, s.temperature, s.top_p) == (False, 0.0, 1.0)
    assert train_tool.calls == [] and [r.noisy for r in val_tool.calls[0]] == [False]
    assert out.meta_info["metrics"]["search/p_noisy"] == 0.0


def test_curriculum_p_noisy_per_step(tok):
    cfg = make_config(**{"retriever.end_threshold": 0.5})
    loop = SearchAgentLoop(cfg, tok, search_tool=RecordingTool())
    # p(step) = 0 + (4**(step/10) - 1) / 3 * 0.5 ; step 5 -> (2 - 1)/3 * 0.5, step >= 10 -> 0.5
    for step, p in [(0, 0.0), (5, 1 / 6), (10, 0.5), (12, 0.5)]:
        out = loop.run(make_batch(tok, 1)[0], ScriptedEngine(tok, {0: ["<answer>x</answer>"]}), step=step)
        assert out.meta_info["metrics"]["search/p_noisy"] == pytest.approx(p)


def test_noisy_flags_follow_the_curriculum(tok):
    cfg = make_config(**{"retriever.start_threshold": 1.0, "retriever.end_threshold": 1.0})
    tool = RecordingTool()
    loop = SearchAgentLoop(cfg, tok, search_tool=tool)
    scripts = {k: ["<search>q</search>", "<answer>x</answer>"] for k in range(3)}
    out = loop.run(make_batch(tok, 3)[0], ScriptedEngine(tok, scripts), step=2)
    assert [r.noisy for r in tool.calls[0]] == [True, True, True]
    assert out.meta_info["metrics"]["search/noisy_share"] == 1.0
    # a real engine in training: no noise at all
    tool2 = RecordingTool()
    loop2 = SearchAgentLoop(make_config(**{"retriever.search_mode": "wiki", "retriever.end_threshold": 1.0}), tok,
                            search_tool=tool2)
    loop2.run(make_batch(tok, 3)[0], ScriptedEngine(tok, scripts), step=2)
    assert [r.noisy for r in tool2.calls[0]] == [False, False, False]


def test_curriculum_state_round_trip(tok):
    cfg = make_config(**{"retriever.end_threshold": 0.5})
    scripts = {k: ["<search>q</search>", "<answer>x</answer>"] for k in range(8)}

    def flags(loop, step):
        loop.run(make_batch(tok, 8)[0], ScriptedEngine(tok, scripts), step=step)
        return [r.noisy for r in loop._tools["train"].calls[-1]]

    first = SearchAgentLoop(cfg, tok, search_tool=RecordingTool())
    flags(first, 9)
    state = first.state_dict()
    assert state["curriculum"]["step"] == 9
    expected = flags(first, 10)

    resumed = SearchAgentLoop(cfg, tok, search_tool=RecordingTool())
    resumed.load_state_dict(state)
    assert resumed.state_dict()["curriculum"]["step"] == 9
    assert flags(resumed, 10) == expected
    # without the state the generator starts over, and these draws differ
    assert flags(SearchAgentLoop(cfg, tok, search_tool=RecordingTool()), 10) != expected


def test_a_dead_server_stops_after_two_empty_rounds_naming_the_server(tok):
    # One search per round (a late turn's handful): the first failed round alone must not stop the
    # run; the second in a row does (retriever.failure_streak_rounds=2), naming the server.
    loop = SearchAgentLoop(make_config(), tok, val_search_tool=RecordingTool(ok=False))
    engine = ScriptedEngine(tok, {0: ["<search>q</search>", "<search>q2</search>", "<answer>x</answer>"]})
    with pytest.raises(SearchFailureError, match=r"^2 of 2 search requests failed against fake search at "
                                                 r"127\.0\.0\.1:6002 in 2 search rounds in a row.*last error: boom"):
        loop.run(make_batch(tok, 1)[0], engine, step=1, validate=True)
    assert engine.turns[0] == 2  # stopped after the second round, before the answer


def test_a_malformed_reply_to_the_only_query_of_a_turn_is_passed_through(tok):
    # The failure that killed a demo run: the turn's only search got a reply without a "Doc 1" line.
    tool = RecordingTool(malformed=True)
    loop = SearchAgentLoop(make_config(), tok, search_tool=tool)
    engine = ScriptedEngine(tok, {0: ["<search>Grum</search>", "<search>G2</search>", "<answer>x</answer>"]})
    out = loop.run(make_batch(tok, 1)[0], engine, step=1)
    assert out.non_tensor_batch["answered"][0]  # the rollout went on to the answer
    resp, mask = out.batch["responses"][0], out.batch["response_mask"][0]
    observation = tok.decode(resp[mask == 0].tolist())
    assert observation == ("\n\n<information>Doc 19987. Its. Its in Grum</information>\n\n"
                           "\n\n<information>Doc 19987. Its. Its in G2</information>\n\n")
    m = out.meta_info["metrics"]
    assert (m["search/requests"], m["search/malformed"], m["search/failures"]) == (2.0, 2.0, 0.0)
    assert m["search/malformed_rate"] == 1.0 and m["search/failure_rate"] == 0.0


def test_garbage_to_everything_stops_the_run_saying_the_replies_are_malformed(tok):
    loop = SearchAgentLoop(make_config(), tok, search_tool=RecordingTool(malformed=True))
    scripts = {k: ["<search>q</search>", "<search>r</search>", "<answer>x</answer>"] for k in range(4)}
    # 4 rows x 2 rounds = 8 malformed replies per step; failure_min_requests=20 is reached in step 3's
    # first round (8 + 8 + 4 = 20), and 20 of 20 > max_malformed_rate 0.9.
    for step in (1, 2):
        assert loop.run(make_batch(tok, 4)[0], ScriptedEngine(tok, scripts), step=step).meta_info["metrics"][
            "search/malformed_rate"] == 1.0
    with pytest.raises(MalformedRepliesError) as err:
        loop.run(make_batch(tok, 4)[0], ScriptedEngine(tok, scripts), step=3)
    message = str(err.value)
    assert message.startswith("20 of 20 replies from fake search at 127.0.0.1:6002 over the run's last 20 searches "
                              "were malformed")
    assert "do not parse" in message and "Doc 19987. Its. Its in q" in message and "reachable" not in message


def test_the_failure_window_lives_across_steps(tok):
    # One failed search per step: the streak of empty rounds runs on from step to step, so the second
    # step stops; a step with an answer in between breaks the streak.
    outcomes = iter([False, True, False, False])
    tool = RecordingTool(ok=lambda k: next(outcomes))
    loop = SearchAgentLoop(make_config(), tok, search_tool=tool)
    script = {0: ["<search>q</search>", "<answer>x</answer>"]}
    for step in (1, 2, 3):  # failed, answered, failed
        loop.run(make_batch(tok, 1)[0], ScriptedEngine(tok, script), step=step)
    with pytest.raises(SearchFailureError, match=r"^2 of 2 search requests failed .* in 2 search rounds in a row"):
        loop.run(make_batch(tok, 1)[0], ScriptedEngine(tok, script), step=4)  # failed again: 2 in a row
    assert "health" not in str(loop.state_dict())  # a resumed run judges its server afresh


def test_training_and_validation_servers_are_judged_apart(tok):
    loop = SearchAgentLoop(make_config(), tok, search_tool=RecordingTool(ok=False), val_search_tool=RecordingTool())
    script = {0: ["<search>q</search>", "<answer>x</answer>"]}
    loop.run(make_batch(tok, 1)[0], ScriptedEngine(tok, script), step=1)  # training server: 1 empty round
    loop.run(make_batch(tok, 1)[0], ScriptedEngine(tok, script), step=1, validate=True)  # answered: not its streak
    with pytest.raises(SearchFailureError):
        loop.run(make_batch(tok, 1)[0], ScriptedEngine(tok, script), step=2)  # training server: 2 in a row


@pytest.mark.parametrize("key, value, message", [
    ("retriever.failure_window", 0, r"retriever\.failure_window"),
    ("retriever.max_malformed_rate", 2.0, r"retriever\.max_malformed_rate"),
    ("retriever.max_failure_rate", -0.5, r"retriever\.max_failure_rate"),
])
def test_failure_policy_keys_are_validated(tok, key, value, message):
    with pytest.raises(ValueError, match=message):
        SearchAgentLoop(make_config(**{key: value}), tok, search_tool=RecordingTool())


def test_failure_policy_keys_are_required(tok):
    cfg = make_config()
    del cfg.retriever["failure_streak_rounds"]
    with pytest.raises(KeyError, match=r"retriever\.failure_streak_rounds"):
        SearchAgentLoop(cfg, tok, search_tool=RecordingTool())


def test_failures_at_the_threshold_are_counted(tok):
    loop = SearchAgentLoop(make_config(), tok, search_tool=RecordingTool(ok=lambda k: k % 2 == 0))
    scripts = {k: ["<search>q</search>", "<answer>x</answer>"] for k in range(2)}
    out = loop.run(make_batch(tok, 2)[0], ScriptedEngine(tok, scripts), step=1)
    m = out.meta_info["metrics"]
    assert m["search/failure_rate"] == 0.5 and m["search/failures"] == 1.0 and m["search/requests"] == 2.0


def test_tools_are_built_lazily_from_config(tok, monkeypatch):
    built = []

    def fake_build(retriever_cfg, mode):
        built.append(mode)
        return RecordingTool()

    monkeypatch.setattr(agent_module, "build_search_tool", fake_build)
    loop = SearchAgentLoop(make_config(), tok)
    engine = ScriptedEngine(tok, {0: ["<answer>x</answer>", "<answer>y</answer>"]})
    loop.run(make_batch(tok, 1)[0], engine, step=1)
    engine.turns[0] = 1
    loop.run(make_batch(tok, 1)[0], engine, step=1, validate=True)
    assert built == ["simulate_sft", "wiki"]
    loop.close()


def test_query_is_capped_by_config(tok):
    tool = RecordingTool()
    loop = SearchAgentLoop(make_config(**{"retriever.max_query_chars": 3}), tok, search_tool=tool)
    engine = ScriptedEngine(tok, {0: ["<search>abcdef</search>", "<answer>x</answer>"]})
    out = loop.run(make_batch(tok, 1)[0], engine, step=1)
    assert tool.calls[0][0].query == "abc" and out.non_tensor_batch["search_queries"][0] == ["abc"]
