"""A checkpoint is evaluated with its training run's saved task settings (zerosearch/evaluation/train_config.py).

Fake run folders hold a saved config written the way Hydra writes ``.hydra/config.yaml`` (the
composed trainer config, unresolved) or the way the trainer writes an export's
``train_config.yaml``; the evaluation config is checked against values written here. No model is
loaded: ``build_config`` composes the config, and the CLI fails before any model is read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl.utils.checkpoint import TRAIN_CONFIG_FILE, CheckpointManager
from zerosearch.evaluation.evaluate import EvaluationInputError, build_config, compose_config, main
from zerosearch.evaluation.keys import keys_to_argv
from zerosearch.evaluation.train_config import TASK_KEYS

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "configs"
BAMBOO = REPO / "data" / "qa" / "bamboogle.jsonl"

# The stock configs/zerosearch_trainer.yaml values of the task keys (what evaluation used before).
STOCK = {
    "data.max_prompt_length": 512, "data.truncation": "error", "data.apply_chat_template": True,
    "data.max_response_length": 256, "actor_rollout_ref.rollout.max_new_tokens": 128,
    "retriever.max_turns": 2, "retriever.topk": 5, "retriever.max_obs_length": 512,
    "retriever.max_query_chars": 512, "retriever.invalid_action_template": None,
}
# A run trained with other task settings...
TRAINED = {
    "data.max_prompt_length": 4096, "data.truncation": "left", "data.apply_chat_template": False,
    "data.max_response_length": 3000, "actor_rollout_ref.rollout.max_new_tokens": 700,
    "retriever.max_turns": 5, "retriever.topk": 3, "retriever.max_obs_length": 2048,
    "retriever.max_query_chars": 200, "retriever.invalid_action_template": "/prompts/invalid.txt",
}
# ...and training-only settings that evaluation must not take (key, trained value, evaluation value).
TRAINING_ONLY = [
    ("data.train_batch_size", 16, 8),
    ("trainer.device", "cuda", "cpu"),
    ("actor_rollout_ref.rollout.name", "vllm", "hf"),
    ("actor_rollout_ref.rollout.temperature", 0.7, 1.0),
    ("actor_rollout_ref.rollout.val_kwargs.n", 5, 1),
    ("retriever.search_engine", "google", "wiki"),
    ("retriever.simulation.port", 7001, 6001),
    ("retriever.wiki.host", "wiki.cluster", "127.0.0.1"),
    ("reward.fn_kwargs.metric", "em", "f1"),
    ("trainer.seed", 7, 42),
]
LAUNCH_1, LAUNCH_2 = "2025-01-01_09-00-00", "2025-01-02_10-30-00"


def hydra_value(value):
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def saved_config_text(values, drop=()):
    """The trainer config composed with ``values`` (and the training-only settings), as Hydra saves
    it (unresolved YAML); keys in ``drop`` are deleted."""
    overrides = [f"{k}={hydra_value(v)}" for k, v in values.items()]
    overrides += [f"{k}={hydra_value(v)}" for k, v, _ in TRAINING_ONLY]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="zerosearch_trainer", overrides=["data.train_files=/data/train.parquet", *overrides])
    OmegaConf.set_struct(cfg, False)
    for key in drop:
        parent, _, leaf = key.rpartition(".")
        del OmegaConf.select(cfg, parent)[leaf]
    return OmegaConf.to_yaml(cfg)


def hf_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def make_run(root: Path, launches: dict[str, dict], steps=(10,)) -> Path:
    """RUN/hydra/<launch>/.hydra/config.yaml per launch, RUN/exports/global_step_N (HF folders)."""
    for name, values in launches.items():
        saved = root / "hydra" / name / ".hydra" / "config.yaml"
        saved.parent.mkdir(parents=True)
        saved.write_text(saved_config_text(values))
    for step in steps:
        hf_folder(root / "exports" / f"global_step_{step}")
    return root


def task_values(cfg):
    return {key: OmegaConf.select(cfg, key) for key in TASK_KEYS}


def config_of(model, tmp_path, **options):
    return compose_config(str(model), [], "wiki", tmp_path / "out", **options)


# ------------------------------------------------------------------------------------------ found
def test_an_export_of_a_run_is_evaluated_with_the_runs_task_settings(tmp_path, caplog):
    run = make_run(tmp_path / "run", {LAUNCH_1: TRAINED})
    with caplog.at_level(logging.INFO, logger="zerosearch.evaluation.evaluate"):
        cfg, use = config_of(run / "exports" / "global_step_10", tmp_path)
    saved = run / "hydra" / LAUNCH_1 / ".hydra" / "config.yaml"
    assert task_values(cfg) == TRAINED
    for key, _, evaluation_value in TRAINING_ONLY:
        assert OmegaConf.select(cfg, key) == evaluation_value, key
    assert cfg.actor_rollout_ref.model.path == str(run / "exports" / "global_step_10")
    assert (use.path, use.origin, use.applied, use.overridden) == (saved, "run", TRAINED, [])
    lines = [r.getMessage() for r in caplog.records if "training config" in r.getMessage()]
    assert len(lines) == 1
    assert str(saved) in lines[0] and "retriever.max_turns=5" in lines[0] and "retriever.topk=3" in lines[0]


def test_a_checkpoints_huggingface_folder_finds_its_run_too(tmp_path):
    run = make_run(tmp_path / "run", {LAUNCH_1: TRAINED})
    hf = hf_folder(run / "global_step_10" / "actor" / "huggingface")
    assert task_values(build_config(str(hf), [], "wiki", tmp_path / "out")) == TRAINED


def test_the_latest_launch_of_a_resumed_run_wins(tmp_path):
    older = {**TRAINED, "retriever.max_turns": 4, "retriever.topk": 2}
    run = make_run(tmp_path / "run", {LAUNCH_2: TRAINED, LAUNCH_1: older})
    cfg, use = config_of(run / "exports" / "global_step_10", tmp_path)
    assert (cfg.retriever.max_turns, cfg.retriever.topk) == (5, 3)
    assert use.path == run / "hydra" / LAUNCH_2 / ".hydra" / "config.yaml"


def test_the_config_the_trainer_writes_into_an_export_wins_over_the_runs(tmp_path):
    """An export written with save_export(config_yaml=...) carries the config of its own launch."""
    own = {**TRAINED, "retriever.max_turns": 3, "data.max_response_length": 1500}
    run = make_run(tmp_path / "run", {LAUNCH_1: TRAINED}, steps=())
    export = CheckpointManager(str(run)).save_export(
        20, lambda folder: hf_folder(Path(folder)), config_yaml=saved_config_text(own))
    assert Path(export, TRAIN_CONFIG_FILE).is_file()
    cfg, use = config_of(export, tmp_path)
    assert task_values(cfg) == own
    assert (use.path, use.origin) == (Path(export) / TRAIN_CONFIG_FILE, "export")


def test_the_launchers_saved_config_is_read(tmp_path):
    """What zerosearch.launch composes (and Hydra saves) for MAX_TURNS 5, TOPK 3 is what evaluation reads."""
    from zerosearch.launch.train import parse_launch_args

    model, data = hf_folder(tmp_path / "base_model"), tmp_path / "data"
    data.mkdir()
    for name in ("train.parquet", "test.parquet"):
        (data / name).touch()
    plan = parse_launch_args("grpo", ["MODEL_PATH", str(model), "DATA_PATH", str(data), "DEVICE", "cpu",
                                      "MAX_TURNS", "5", "TOPK", "3", "MAX_OBS_LENGTH", "2048",
                                      "MAX_PROMPT_LENGTH", "1024", "MAX_RESPONSE_LENGTH", "3000",
                                      "MAX_NEW_TOKENS", "400", "SAVE_DIR", str(tmp_path / "runs"),
                                      "EXPERIMENT_NAME", "exp"])
    with initialize_config_dir(config_dir=plan.config_dir, version_base="1.3"):
        cfg = compose(config_name=plan.config_name, overrides=plan.overrides)
    run = tmp_path / "runs" / "exp"
    (run / "hydra" / LAUNCH_1 / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / "hydra" / LAUNCH_1 / ".hydra" / "config.yaml")
    export = hf_folder(run / "exports" / "global_step_50")
    got = task_values(build_config(str(export), [], "wiki", tmp_path / "out"))
    assert {k: got[k] for k in ("retriever.max_turns", "retriever.topk", "retriever.max_obs_length",
                                "data.max_prompt_length", "data.max_response_length",
                                "actor_rollout_ref.rollout.max_new_tokens")} == {
        "retriever.max_turns": 5, "retriever.topk": 3, "retriever.max_obs_length": 2048,
        "data.max_prompt_length": 1024, "data.max_response_length": 3000,
        "actor_rollout_ref.rollout.max_new_tokens": 400}


# ------------------------------------------------------------------------------------------ precedence
def test_flags_and_overrides_win_over_the_saved_config(tmp_path):
    run = make_run(tmp_path / "run", {LAUNCH_1: TRAINED})
    cfg, use = config_of(run / "exports" / "global_step_10", tmp_path, max_turns=1,
                         overrides=["retriever.topk=7", "data.max_response_length=999"])
    assert (cfg.retriever.max_turns, cfg.retriever.topk, cfg.data.max_response_length) == (1, 7, 999)
    assert cfg.retriever.max_obs_length == 2048 and cfg.data.max_prompt_length == 4096  # the rest: the run's
    assert sorted(use.overridden) == ["data.max_response_length", "retriever.max_turns", "retriever.topk"]
    assert "retriever.topk" not in use.applied


def test_stock_config_flag_ignores_the_run(tmp_path):
    run = make_run(tmp_path / "run", {LAUNCH_1: TRAINED})
    cfg, use = config_of(run / "exports" / "global_step_10", tmp_path, stock_config=True)
    assert task_values(cfg) == STOCK
    assert (use.path, use.origin, use.applied) == (None, "--stock-config", {})


def test_train_config_names_a_file_or_a_run_for_a_folder_outside_any_run(tmp_path):
    run = make_run(tmp_path / "run", {LAUNCH_1: TRAINED})
    copied = hf_folder(tmp_path / "elsewhere" / "model")
    saved = run / "hydra" / LAUNCH_1 / ".hydra" / "config.yaml"
    for given in (saved, run):
        cfg, use = config_of(copied, tmp_path, train_config=given)
        assert task_values(cfg) == TRAINED
        assert (use.path, use.origin) == (saved, "--train-config")
    with pytest.raises(EvaluationInputError, match=r"--train-config .*nowhere does not exist"):
        config_of(copied, tmp_path, train_config=tmp_path / "nowhere")
    with pytest.raises(EvaluationInputError, match=r"--train-config .*elsewhere: no saved training config"):
        config_of(copied, tmp_path, train_config=tmp_path / "elsewhere")


# ------------------------------------------------------------------------------------------ none
def test_a_folder_outside_any_run_gets_the_stock_config_without_error(tmp_path, caplog):
    model = hf_folder(tmp_path / "models" / "Qwen2.5-3B-Instruct")
    with caplog.at_level(logging.INFO, logger="zerosearch.evaluation.evaluate"):
        cfg, use = config_of(model, tmp_path)
    assert task_values(cfg) == STOCK
    assert (use.path, use.origin) == (None, "none found")
    assert any("no saved training config found" in r.getMessage() and "stock" in r.getMessage()
               for r in caplog.records)


def test_a_warm_start_sft_runs_config_is_not_a_task_and_is_ignored(tmp_path, caplog):
    """The SFT trainer saves its config the same way; it holds no agent-loop settings."""
    with initialize_config_dir(config_dir=str(REPO / "verl" / "trainer" / "config"), version_base="1.3"):
        sft = compose(config_name="sft_trainer", overrides=["data.truncation=left"])
    saved = tmp_path / "warmstart" / "hydra" / ".hydra" / "config.yaml"
    saved.parent.mkdir(parents=True)
    OmegaConf.save(sft, saved)
    model = hf_folder(tmp_path / "warmstart" / "huggingface")
    with caplog.at_level(logging.INFO, logger="zerosearch.evaluation.evaluate"):
        cfg, use = config_of(model, tmp_path)
    assert task_values(cfg) == STOCK
    assert (use.path, use.origin, use.applied, use.used) == (saved, "not an RL search run", {}, False)
    assert any(f"{saved} (found for {model}) is not the config of a search-agent RL run" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(EvaluationInputError, match=f"--train-config {saved} is not the config of a search-agent"):
        config_of(model, tmp_path, train_config=saved)


# ------------------------------------------------------------------------------------------ broken
def test_an_unreadable_saved_config_is_an_error_naming_the_file(tmp_path):
    run = make_run(tmp_path / "run", {LAUNCH_1: TRAINED})
    saved = run / "hydra" / LAUNCH_1 / ".hydra" / "config.yaml"
    saved.write_text("data: {max_prompt_length: [unclosed\n")
    with pytest.raises(EvaluationInputError, match=f"cannot read the saved training config {saved}"):
        config_of(run / "exports" / "global_step_10", tmp_path)
    saved.write_text("- just\n- a list\n")
    with pytest.raises(EvaluationInputError, match=f"{saved} is not a YAML mapping"):
        config_of(run / "exports" / "global_step_10", tmp_path)


def test_a_saved_config_lacking_a_key_is_an_error_naming_file_and_key(tmp_path):
    run = make_run(tmp_path / "run", {}, steps=(10,))
    saved = run / "hydra" / LAUNCH_1 / ".hydra" / "config.yaml"
    saved.parent.mkdir(parents=True)
    saved.write_text(saved_config_text(TRAINED, drop=["retriever.max_obs_length"]))
    export = run / "exports" / "global_step_10"
    with pytest.raises(EvaluationInputError, match=f"{saved} lacks key retriever.max_obs_length"):
        config_of(export, tmp_path)
    # given explicitly, the key is not read: the rest still comes from the file
    cfg, use = config_of(export, tmp_path, overrides=["retriever.max_obs_length=1000"])
    assert cfg.retriever.max_obs_length == 1000 and cfg.retriever.max_turns == 5
    # an interpolation that cannot be resolved in the saved file is named too
    saved.write_text(saved_config_text(TRAINED).replace("max_turns: 5", "max_turns: ${nowhere.turns}"))
    with pytest.raises(EvaluationInputError, match=f"{saved}: key retriever.max_turns cannot be read"):
        config_of(export, tmp_path)


def test_cli_exits_2_naming_a_broken_saved_config(tmp_path, capsys):
    run = make_run(tmp_path / "run", {LAUNCH_1: TRAINED})
    saved = run / "hydra" / LAUNCH_1 / ".hydra" / "config.yaml"
    saved.write_text("retriever: [\n")
    argv = ["--model", str(run / "exports" / "global_step_10"), "--data", str(BAMBOO), "--search-engine", "wiki",
            "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and str(saved) in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--stock-config", "--train-config", str(saved)])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ evaluate.sh
def test_evaluate_sh_train_config_key():
    assert keys_to_argv(["MODEL_PATH", "m", "TRAIN_CONFIG", "stock"]) == ["--model", "m", "--stock-config"]
    assert keys_to_argv(["TRAIN_CONFIG", "run/hydra/x/.hydra/config.yaml"]) == [
        "--train-config", "run/hydra/x/.hydra/config.yaml"]


def test_run_json_records_the_training_config(tmp_path):
    """evaluate() writes which saved config it applied into run.json (scripted engine, tiny tokenizer)."""
    pytest.importorskip("transformers")
    from zerosearch.evaluation.evaluate import evaluate
    from zerosearch.miniature.tiny import build_tiny_model
    from zerosearch.prompts import make_prefix

    rows = [json.loads(line) for line in BAMBOO.read_text(encoding="utf-8").splitlines()[:2]]
    run = tmp_path / "run"
    model = build_tiny_model(run / "exports" / "global_step_10", "tiny",
                             corpus_texts=[make_prefix(r["question"]) for r in rows], seed=0, vocab_size=300)
    trained = {**TRAINED, "data.apply_chat_template": True, "retriever.invalid_action_template": None,
               "data.max_prompt_length": 1024}
    (run / "hydra" / LAUNCH_1 / ".hydra").mkdir(parents=True)
    (run / "hydra" / LAUNCH_1 / ".hydra" / "config.yaml").write_text(saved_config_text(trained))

    def answer(prompts, sampling):
        from verl.workers.rollout.base import GenerationOutput

        return [GenerationOutput([1, 2], [0.0, 0.0], "stop") for _ in prompts]

    evaluate(model, [BAMBOO], "wiki", tmp_path / "out", limit=2, generate=answer, progress=False, topk=4)
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["train_config"] == {
        "path": str(run / "hydra" / LAUNCH_1 / ".hydra" / "config.yaml"), "origin": "run",
        "applied": {k: v for k, v in trained.items() if k != "retriever.topk"}, "overridden": ["retriever.topk"]}
    assert info["config"]["retriever"]["max_turns"] == 5 and info["config"]["retriever"]["topk"] == 4
