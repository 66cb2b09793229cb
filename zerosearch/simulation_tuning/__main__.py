"""Command line of the simulation-LLM tuning pipeline.

    python -m zerosearch.simulation_tuning collect --questions QA.jsonl|.parquet --backend wiki|google \\
        [--policy scripted|HF_DIR] --out collected.jsonl [--limit N]
    python -m zerosearch.simulation_tuning label --collected collected.jsonl --out labelled.jsonl \\
        [--judge-url http://host:port --judge-model NAME]
    python -m zerosearch.simulation_tuning build --labelled labelled.jsonl --out sft/
    python -m zerosearch.simulation_tuning tune --model HF_DIR --train-file sft/train.parquet --out sim/
    python -m zerosearch.simulation_tuning all --questions ... --backend ... --model HF_DIR --work-dir W

Options before the stage: ``--seed S``, ``--topk K`` (documents per SFT row, and per query when
collecting) and ``--collect-topk K2`` (documents per query when collecting, when it should be more
than K: with K = 1 most top results are useful, and the documents ranked below them give the
noisy rows a balanced set needs).

Every stage is resumable: run the same command again after an interruption. ``all`` writes
``W/collected.jsonl``, ``W/labelled.jsonl``, ``W/sft/`` and ``W/model/`` (the tuned model in
``W/model/huggingface``). The search backends read ``configs/retriever/default.yaml`` (or
``--retriever-config``); ``--wiki-host``/``--wiki-port`` override the retrieval server address.
The SFT rows carry the system message of that file's ``simulation.system_prompt``, the one the
search client sends the simulator at serving time.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

from zerosearch.simulation_tuning import build_sft, collect, label, tune
from zerosearch.simulation_tuning.records import load_questions

DEFAULT_RETRIEVER_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "retriever" / "default.yaml"


def retriever_config(args: argparse.Namespace):
    """The ``retriever`` block with the CLI's topk, seed and wiki address applied."""
    from omegaconf import OmegaConf

    path = Path(args.retriever_config)
    if not path.is_file():
        raise FileNotFoundError(f"--retriever-config {path} does not exist")
    cfg = OmegaConf.load(path)
    cfg.seed = args.seed
    cfg.topk = args.collect_topk if args.collect_topk is not None else args.topk
    if args.wiki_host is not None:
        cfg.wiki.host = args.wiki_host
    if args.wiki_port is not None:
        cfg.wiki.port = args.wiki_port
    return cfg


def system_prompt(args: argparse.Namespace) -> str | None:
    """``simulation.system_prompt`` of the retriever config: the system message of the SFT rows."""
    from omegaconf import OmegaConf

    path = Path(args.retriever_config)
    if not path.is_file():
        raise FileNotFoundError(f"--retriever-config {path} does not exist")
    cfg = OmegaConf.load(path)
    if "simulation" not in cfg or "system_prompt" not in cfg.simulation:
        raise ValueError(f"--retriever-config {args.retriever_config}: missing key simulation.system_prompt")
    return cfg.simulation.system_prompt


def run_collect(args: argparse.Namespace, out: Path) -> dict:
    from zerosearch.tools import build_search_tool

    questions = load_questions(args.questions)
    cfg = retriever_config(args)
    with build_search_tool(cfg, args.backend) as tool:
        if args.policy == "scripted":
            return collect.collect_scripted(questions, tool, out, backend=args.backend, limit=args.limit,
                                            batch_size=args.batch_size, max_subqueries=args.max_subqueries)
        return collect.collect_with_policy(questions, tool, out, backend=args.backend, policy_dir=args.policy,
                                           retriever_cfg=cfg, limit=args.limit, batch_size=args.batch_size,
                                           max_turns=args.max_turns, temperature=args.temperature, seed=args.seed,
                                           device=args.policy_device)


def run_label(args: argparse.Namespace, collected: Path, out: Path) -> dict:
    judge = None
    if args.judge_url or args.judge_model:
        if not (args.judge_url and args.judge_model):
            raise SystemExit("error: the LLM judge needs both --judge-url and --judge-model")
        judge = label.LLMJudge(args.judge_url, args.judge_model, api_key_env=args.judge_api_key_env,
                               concurrency=args.judge_concurrency, timeout=args.judge_timeout,
                               max_retries=args.judge_max_retries, seed=args.seed)
    return label.label(collected, out, judge, max_failure_rate=args.max_failure_rate)


def _settings(args: argparse.Namespace, val_file: str | None) -> tune.TuneSettings:
    return tune.TuneSettings(lr=args.lr, steps=args.steps, batch_size=args.batch_size_sft,
                             micro_batch_size=args.micro_batch_size, max_length=args.max_length, device=args.device,
                             dtype=args.dtype, autocast_dtype=None if args.autocast_dtype == "none" else args.autocast_dtype,
                             gradient_checkpointing=args.gradient_checkpointing, seed=args.seed,
                             save_freq=args.save_freq, val_file=val_file, extra=list(args.override))


def run_tune(args: argparse.Namespace, train_file: str, out: Path, val_file: str | None) -> Path:
    settings = _settings(args, val_file)
    overrides = tune.tune_overrides(args.model, train_file, out, settings)
    print(f"[tune] {tune.sft_command(overrides)}", flush=True)
    if args.dry_run:
        return out / "huggingface"
    hf = tune.tune(args.model, train_file, out, settings)
    print(f"[tune] tuned simulator: {hf}\n[tune] serve it with: {tune.serve_command(hf)}", flush=True)
    return hf


def _add_collect(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", required=True, help="QA jsonl (data/qa format) or ZeroSearch parquet")
    p.add_argument("--backend", required=True, choices=collect.BACKENDS, help="real search engine to collect from")
    p.add_argument("--policy", default="scripted", help="'scripted' or a policy checkpoint folder (HF)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N questions")
    p.add_argument("--batch-size", type=int, default=32, help="questions per search call / rollout batch")
    p.add_argument("--max-subqueries", type=int, default=2, help="scripted policy: entity sub-queries per question")
    p.add_argument("--max-turns", type=int, default=4, help="checkpoint policy: search rounds per question")
    p.add_argument("--temperature", type=float, default=1.0, help="checkpoint policy: sampling temperature")
    p.add_argument("--policy-device", default="cpu", help="checkpoint policy: torch device")
    p.add_argument("--wiki-host", default=None, help="retrieval server host(s) (default: from the config)")
    p.add_argument("--wiki-port", type=int, default=None, help="retrieval server port (default: from the config)")


def _add_retriever_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retriever-config", default=str(DEFAULT_RETRIEVER_CONFIG),
                   help="retriever block (yaml): the search backends (collect) and the simulator's system "
                        "message, simulation.system_prompt (build)")


def _add_label(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible server(s) of the LLM judge (default: rule)")
    p.add_argument("--judge-model", default=None, help="served model name of the LLM judge")
    p.add_argument("--judge-api-key-env", default=None, help="environment variable holding the judge's API key")
    p.add_argument("--judge-concurrency", type=int, default=16)
    p.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per judge request attempt")
    p.add_argument("--judge-max-retries", type=int, default=3)
    p.add_argument("--max-failure-rate", type=float, default=0.5, help="stop when more judgements of a batch fail")


def _add_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-docs", type=int, default=1, help="fewest documents of a kind that make a row")
    p.add_argument("--val-fraction", type=float, default=0.0, help="share of questions held out as val.parquet")


def _add_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Hugging Face folder of the base simulation model")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--sft-batch-size", dest="batch_size_sft", type=int, default=2, help="rows per optimizer step")
    p.add_argument("--micro-batch-size", type=int, default=1, help="rows per forward/backward")
    p.add_argument("--max-length", type=int, default=1024, help="prompt + response tokens")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="weight dtype")
    p.add_argument("--autocast-dtype", default="bfloat16", choices=("bfloat16", "float16", "auto", "none"),
                   help="compute dtype under torch.autocast; auto: bfloat16 where the hardware has it natively")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--save-freq", type=int, default=-1, help="checkpoint every N steps (-1: at the end)")
    p.add_argument("--override", action="append", default=[], help="extra sft_trainer.yaml override key=value")
    p.add_argument("--dry-run", action="store_true", help="print the trainer command and stop")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.simulation_tuning",
                                     description="Collect, label, build and tune a simulation LLM.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--topk", type=int, default=5, help="documents per query (collected and per SFT row)")
    parser.add_argument("--collect-topk", type=int, default=None,
                        help="documents fetched per query when collecting (default --topk); more than --topk "
                             "gives more noisy documents to build rows of --topk documents from")
    sub = parser.add_subparsers(dest="stage", required=True)

    p = sub.add_parser("collect", help="run a policy against a real search backend")
    _add_collect(p)
    _add_retriever_config(p)
    p.add_argument("--out", required=True, help="output jsonl")

    p = sub.add_parser("label", help="label each document useful or noisy")
    p.add_argument("--collected", required=True)
    p.add_argument("--out", required=True, help="output jsonl")
    _add_label(p)

    p = sub.add_parser("build", help="balanced SFT parquet in the simulate_sft format")
    p.add_argument("--labelled", required=True)
    p.add_argument("--out", required=True, help="output folder (train.parquet, val.parquet)")
    _add_build(p)
    _add_retriever_config(p)

    p = sub.add_parser("tune", help="SFT the simulation model and export it")
    p.add_argument("--train-file", required=True)
    p.add_argument("--val-file", default=None)
    p.add_argument("--out", required=True, help="output folder (checkpoints + huggingface/)")
    _add_tune(p)

    p = sub.add_parser("all", help="collect, label, build and tune into --work-dir")
    p.add_argument("--work-dir", required=True)
    _add_collect(p)
    _add_retriever_config(p)
    _add_label(p)
    _add_build(p)
    _add_tune(p)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    if getattr(args, "batch_size", 32) < 1:
        raise SystemExit("error: --batch-size must be >= 1")
    result: dict = {}
    if args.stage == "collect":
        result = run_collect(args, Path(args.out))
    elif args.stage == "label":
        result = run_label(args, Path(args.collected), Path(args.out))
    elif args.stage == "build":
        result = {k: str(v) for k, v in build_sft.build(args.labelled, args.out, system_prompt=system_prompt(args),
                                                       topk=args.topk, min_docs=args.min_docs,
                                                       val_fraction=args.val_fraction, seed=args.seed).items()}
    elif args.stage == "tune":
        result = {"huggingface": str(run_tune(args, args.train_file, Path(args.out), args.val_file))}
    else:
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        result["collect"] = run_collect(args, work / "collected.jsonl")
        print(f"[collect] {json.dumps(result['collect'])}", flush=True)
        result["label"] = run_label(args, work / "collected.jsonl", work / "labelled.jsonl")
        print(f"[label] {json.dumps(result['label'])}", flush=True)
        sft = build_sft.build(work / "labelled.jsonl", work / "sft", system_prompt=system_prompt(args), topk=args.topk,
                              min_docs=args.min_docs, val_fraction=args.val_fraction, seed=args.seed)
        result["build"] = {k: str(v) for k, v in sft.items()}
        val = str(sft["val"]) if "val" in sft else None
        result["huggingface"] = str(run_tune(args, str(sft["train"]), work / "model", val))
    if args.stage in ("collect", "label"):
        print(f"[{args.stage}] {json.dumps(result)}", flush=True)
    return result


if __name__ == "__main__":
    main()
