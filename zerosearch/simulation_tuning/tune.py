"""Stage 4: supervised tuning of the simulation LLM with ``verl.trainer.sft_trainer``.

``tune(model, train_file, out_dir, ...)`` composes ``verl/trainer/config/sft_trainer.yaml`` with
the overrides of ``tune_overrides`` and runs the trainer in process; ``sft_command`` gives the
same run as a shell command. The trainer writes resumable checkpoints under ``out_dir``
(re-running the same command resumes) and the Hugging Face folder ``out_dir/huggingface``, which
``scripts/launch_simulation_server.sh`` serves as is (``serve_command``).

GPU recipe (the paper's settings: learning rate 1e-6, batch size 2, 1,000 steps,
balanced useful/noisy rows; backbones Qwen2.5-3B/7B/14B-Instruct). The trainer is one process on
one GPU, AdamW with float32 state:

    size  weights + grads + AdamW          flags
    3B    float32 master, bf16 autocast    --dtype float32 --autocast-dtype bfloat16
          (~48 GB + activations: one 80 GB GPU, gradient checkpointing on)
    7B    bfloat16 weights and state       --dtype bfloat16 (~56 GB: one 80 GB GPU);
          (pure bf16 rounds away most 1e-6 updates of weights of size ~1e-2: prefer a larger lr
          such as 1e-5, or more GPUs with a sharded trainer)
    14B   does not fit one 80 GB GPU with AdamW in this trainer (~112 GB in bf16); use a sharded
          trainer (FSDP/DeepSpeed) with the same data, prompt format and hyper-parameters

    python -m zerosearch.simulation_tuning tune --model Qwen2.5-3B-Instruct \\
        --train-file work/sft/train.parquet --out work/sim_3b --device cuda \\
        --lr 1e-6 --steps 1000 --sft-batch-size 2 --micro-batch-size 1 \\
        --dtype float32 --autocast-dtype bfloat16 --max-length 1024 --gradient-checkpointing

A global batch of 2 is 2 rows per optimizer step (``--sft-batch-size``), accumulated over
``sft-batch-size / micro-batch-size`` forward/backward passes. Then serve it with
``scripts/launch_simulation_server.sh work/sim_3b/huggingface`` and train with
``retriever.search_mode=simulate_sft``.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "verl" / "trainer" / "config"
LAUNCHER = Path(__file__).resolve().parents[2] / "scripts" / "launch_simulation_server.sh"


@dataclass
class TuneSettings:
    """What a tuning run changes in ``sft_trainer.yaml`` (the rest keeps its documented defaults).

    Attributes mirror the CLI flags: lr, steps (optimizer steps), batch_size (rows per step),
    micro_batch_size (rows per forward/backward), max_length (prompt + response tokens), device,
    dtype (weights), autocast_dtype (compute; None = off), gradient_checkpointing, seed,
    save_freq (-1 = at the end only), val_file, extra (further ``key=value`` overrides).
    """

    lr: float = 1e-6
    steps: int = 1000
    batch_size: int = 2
    micro_batch_size: int = 1
    max_length: int = 1024
    device: str = "cuda"
    dtype: str = "float32"
    autocast_dtype: str | None = "bfloat16"
    gradient_checkpointing: bool = False
    seed: int = 0
    save_freq: int = -1
    val_file: str | None = None
    extra: list[str] = field(default_factory=list)


def tune_overrides(model: str | Path, train_file: str | Path, out_dir: str | Path, s: TuneSettings) -> list[str]:
    """Hydra overrides of ``sft_trainer.yaml`` for one tuning run."""
    if s.batch_size < 1 or s.micro_batch_size < 1 or s.batch_size % s.micro_batch_size:
        raise ValueError(f"batch_size ({s.batch_size}) must be a positive multiple of micro_batch_size "
                         f"({s.micro_batch_size})")
    if s.steps < 1:
        raise ValueError(f"steps must be >= 1, got {s.steps}")
    out = Path(out_dir).resolve()
    overrides = [
        f"model.path={Path(model).resolve()}",
        f"data.train_files={Path(train_file).resolve()}",
        f"data.val_files={Path(s.val_file).resolve() if s.val_file else 'null'}",
        f"data.train_batch_size={s.batch_size}",
        f"data.micro_batch_size={s.micro_batch_size}",
        f"data.max_length={s.max_length}",
        f"optim.lr={s.lr}",
        f"trainer.total_training_steps={s.steps}",
        f"trainer.device={s.device}",
        f"trainer.seed={s.seed}",
        f"trainer.save_freq={s.save_freq}",
        f"trainer.default_local_dir={out}",
        f"trainer.experiment_name={out.name}",
        f"model.dtype={s.dtype}",
        f"model.autocast_dtype={s.autocast_dtype or 'null'}",
        f"model.enable_gradient_checkpointing={str(bool(s.gradient_checkpointing)).lower()}",
    ]
    return overrides + list(s.extra)


def sft_command(overrides: list[str]) -> str:
    """The shell command that runs the same tuning as ``tune``."""
    return shlex.join([sys.executable, "-m", "verl.trainer.sft_trainer", *overrides])


def serve_command(hf_dir: str | Path, served_model_name: str = "simulation") -> str:
    """How to serve the tuned simulator for training (``retriever.simulation.model`` = the name)."""
    return shlex.join([str(LAUNCHER), str(hf_dir), "SERVED_MODEL_NAME", served_model_name])


def tune(model: str | Path, train_file: str | Path, out_dir: str | Path, settings: TuneSettings) -> Path:
    """Run the SFT trainer in process; returns the exported Hugging Face folder."""
    from hydra import compose, initialize_config_dir

    from verl.trainer.sft_trainer import run_sft

    overrides = tune_overrides(model, train_file, out_dir, settings)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = compose(config_name="sft_trainer", overrides=overrides)
    run_sft(config)
    return Path(out_dir).resolve() / "huggingface"
