"""Point 3: bad input stops the run before any work starts, with an error that names the file, the
config key or the row; nothing is silently dropped or replaced.

The data and model cases go through the trainer's own entry (``load_config`` + ``build_trainer``
with the ZeroSearch config), which validates everything before Ray starts; Ray is stubbed out so
that a case that slipped through fails here instead of starting a cluster. The dataset's unit
tests (tests/verl/utils/dataset/test_rl_dataset.py) cover each malformed row shape in detail.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from reliability_helpers import SearchingPolicy, agent_config, char_tokenizer_without_tags, prompt_batch

import verl.trainer.main_ppo as main_ppo
from verl.trainer.main_ppo import build_trainer, load_config
from zerosearch.agent import SearchAgentLoop
from zerosearch.launch.train import parse_launch_args
from zerosearch.launch.keys import LaunchArgumentError

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    def refuse(config):
        raise AssertionError("bad input was not caught before Ray started")

    monkeypatch.setattr(main_ppo, "init_ray", refuse)


def trainer_config(model, train_file, *extra):
    return load_config([f"data.train_files={train_file}", f"actor_rollout_ref.model.path={model}",
                        "trainer.device=cpu", *extra], config_dir=CONFIGS, config_name="zerosearch_trainer")


def rewrite(src, dst, change):
    """Copy of the parquet ``src`` with ``change(list of row dicts)`` applied."""
    rows = pq.read_table(src).to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows), dst)
    return str(dst)


def test_missing_column(searching_model_dir, train_parquet, tmp_path):
    bad = tmp_path / "no_prompt.parquet"
    pq.write_table(pq.read_table(train_parquet).drop_columns(["prompt"]), bad)
    with pytest.raises(KeyError, match=rf"{bad}: no prompt column 'prompt' \(data.prompt_key\)"):
        build_trainer(trainer_config(searching_model_dir, bad))


def test_wrong_type_names_the_row(searching_model_dir, train_parquet, tmp_path):
    # A parquet column has one type, so a wrongly typed prompt column is wrong from row 0 on.
    def prompts_as_plain_strings(rows):
        for r in rows:
            r["prompt"] = r["prompt"][0]["content"]

    bad = rewrite(train_parquet, tmp_path / "strings.parquet", prompts_as_plain_strings)
    with pytest.raises(TypeError, match=r"strings\.parquet row 0 column 'prompt': expected a non-empty chat list"):
        build_trainer(trainer_config(searching_model_dir, bad))


def test_empty_golden_answers_name_the_row(searching_model_dir, train_parquet, tmp_path):
    bad = rewrite(train_parquet, tmp_path / "empty_gold.parquet", lambda rows: rows[5].update(golden_answers=[]))
    with pytest.raises(ValueError, match=r"empty_gold\.parquet row 5 column 'golden_answers': expected a non-empty list"):
        build_trainer(trainer_config(searching_model_dir, bad))


def test_non_utf8_text_names_the_column_and_index(searching_model_dir, train_parquet, tmp_path):
    table = pq.read_table(train_parquet)
    n = table.num_rows
    data = b"".join(b"ok" for _ in range(n - 1)) + b"\xff\xfe"
    offsets = np.arange(0, 2 * n + 1, 2, dtype=np.int32)
    broken = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)])
    bad = tmp_path / "latin1.parquet"
    pq.write_table(table.set_column(table.column_names.index("question"), "question", broken), bad)
    with pytest.raises(ValueError, match=rf"latin1\.parquet: column 'question' is malformed .*UTF-?8.*index {n - 1}"):
        build_trainer(trainer_config(searching_model_dir, bad))


def test_overlong_prompts_list_the_rows_or_follow_the_truncation_policy(searching_model_dir, train_parquet, tmp_path):
    from transformers import AutoTokenizer

    from verl.utils.dataset.rl_dataset import RLHFDataset

    tok = AutoTokenizer.from_pretrained(searching_model_dir)
    texts = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False)
             for r in pq.read_table(train_parquet).to_pylist()]
    lengths = [len(tok.encode(t, add_special_tokens=False)) for t in texts]
    limit = int(np.percentile(lengths, 90))
    too_long = [i for i, n in enumerate(lengths) if n > limit]
    shown = ", ".join(str(i) for i in too_long[:20])
    with pytest.raises(ValueError, match=rf"max_prompt_length={limit} tokens at {train_parquet} rows {shown}.* "
                                         rf"\({len(too_long)} rows in all\)"):
        build_trainer(trainer_config(searching_model_dir, train_parquet, f"data.max_prompt_length={limit}"))

    cfg = trainer_config(searching_model_dir, train_parquet, f"data.max_prompt_length={limit}", "data.truncation=left")
    with pytest.warns(UserWarning, match=rf"{len(too_long)} prompts .* cut on the left: .*rows {shown}"):
        data = RLHFDataset(train_parquet, tok, cfg.data)
    assert len(data) == len(lengths)  # nothing dropped
    assert len(data[too_long[0]]["raw_prompt_ids"]) == limit


def test_tensor_parallel_rollout_is_refused_before_anything_loads(searching_model_dir, train_parquet, monkeypatch):
    import transformers

    def no_loading(*args, **kwargs):
        raise AssertionError("the tokenizer was loaded before the rollout's tensor parallelism was checked")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_loading)
    with pytest.raises(ValueError, match=r"actor_rollout_ref\.rollout\.tensor_model_parallel_size=2 is not supported"):
        build_trainer(trainer_config(searching_model_dir, train_parquet,
                                     "actor_rollout_ref.rollout.tensor_model_parallel_size=2"))


def test_model_path_that_is_not_a_model(train_parquet, tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(FileNotFoundError, match=rf"actor_rollout_ref.model.path='{tmp_path}' has no config.json"):
        build_trainer(trainer_config(str(tmp_path), train_parquet))
    with pytest.raises(FileNotFoundError, match=r"actor_rollout_ref.model.path=.*weights.bin' is not a folder"):
        build_trainer(trainer_config(str(tmp_path / "weights.bin"), train_parquet))


def test_simulation_server_refuses_a_model_path_that_is_not_a_model(tmp_path):
    from zerosearch.simulation.server import main as serve

    with pytest.raises(SystemExit, match=rf"--model: {tmp_path} is not a model folder"):
        serve(["--model", str(tmp_path), "--port", "1"])


@pytest.mark.parametrize("override,key", [
    ("trainer.totl_training_steps=3", "trainer.totl_training_steps"),
    ("retriever.simulation.prot=openai", "retriever.simulation.prot"),
    ("actor_rollout_ref.actor.optim.learning_rate=1e-5", "actor_rollout_ref.actor.optim.learning_rate"),
])
def test_config_key_that_does_not_exist(override, key):
    with pytest.raises(Exception, match=rf"Could not override '{re.escape(key)}'"):
        load_config(["data.train_files=x", "actor_rollout_ref.model.path=y", override],
                    config_dir=CONFIGS, config_name="zerosearch_trainer")


def test_unknown_search_mode_names_the_key(searching_model_dir, train_parquet):
    data_dir = str(Path(train_parquet).parent)
    with pytest.raises(LaunchArgumentError, match=r"bad value for SEARCH_MODE.*bing"):
        parse_launch_args("grpo", ["MODEL_PATH", searching_model_dir, "DATA_PATH", data_dir, "SEARCH_MODE", "bing"])
    cfg = agent_config(6001, search_mode="bing")
    with pytest.raises(ValueError, match=r"retriever.search_mode='bing' is not a search mode; valid: simulate_sft"):
        SearchAgentLoop(cfg, char_tokenizer_without_tags())
    cfg = agent_config(6001, search_engine="google_scholar")
    with pytest.raises(ValueError, match=r"retriever.search_engine='google_scholar'"):
        SearchAgentLoop(cfg, char_tokenizer_without_tags())


@pytest.mark.slow
def test_tokenizer_without_the_tags_still_parses_and_trains_only_sampled_tokens(fault_server_factory):
    """A tokenizer that never learnt the tags spells them in several tokens; the loop then stops on
    the stop strings, parses the same actions and keeps exactly the sampled ids."""
    tok = char_tokenizer_without_tags()
    assert len(tok.encode("<search>", add_special_tokens=False)) == 8
    server = fault_server_factory()
    queries = ["first topic", "second topic"]
    loop = SearchAgentLoop(agent_config(server.port), tok)
    try:
        out = loop.run(prompt_batch(tok, 2), SearchingPolicy(tok, queries), step=1)
    finally:
        loop.close()
    assert list(out.non_tensor_batch["num_searches"]) == [2, 2]
    assert [list(q) for q in out.non_tensor_batch["search_queries"]] == [[q, q] for q in queries]
    for k in range(2):
        mask = out.batch["response_mask"][k].bool()
        sampled = tok.decode(out.batch["responses"][k][mask].tolist())
        assert sampled == f"<search>{queries[k]}</search>" * 2 + f"<answer>a{k}</answer>"
        assert torch.all(out.batch["rollout_log_probs"][k][mask] == -0.5)
    assert server.stats()["received"] == 4
