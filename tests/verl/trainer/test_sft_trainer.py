"""SFT trainer: response-only loss, learning, gradient accumulation, resume and HF export on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from verl.trainer.sft_trainer import SFTTrainer, run_sft, sft_loss
from tests.verl import tiny_models

CONFIG = Path(__file__).resolve().parents[3] / "verl" / "trainer" / "config" / "sft_trainer.yaml"

PAIRS = [
    ("Where was Brato Kell born?", "Brato Kell was born in Vostrand."),
    ("Who founded Zimra Works?", "Zimra Works was founded by Tala Menz."),
    ("What is the occupation of Orla Fenn?", "Orla Fenn is a painter."),
    ("Where are the headquarters of Quen Labs?", "The headquarters of Quen Labs are in Drasil."),
    ("Where was Mira Tosk born?", "Mira Tosk was born in Kelvar."),
    ("Who founded Stoun Group?", "Stoun Group was founded by Pell Arno."),
    ("What is the occupation of Vinn Ordo?", "Vinn Ordo is a chemist."),
    ("Where are the headquarters of Grel Holdings?", "The headquarters of Grel Holdings are in Murath."),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    texts = [p + " " + r for p, r in PAIRS] * 10
    return Path(tiny_models.model(tmp_path_factory.mktemp("sft_model") / "m", size="tiny", texts=texts, seed=0,
                                  vocab_size=400))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sft_data") / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": p, "response": r} for p, r in PAIRS]), path)
    return path


def _config(model_dir: Path, data_file: Path, out: Path, **trainer):
    cfg = OmegaConf.load(CONFIG)
    cfg.model.path = str(model_dir)
    cfg.data.train_files = str(data_file)
    cfg.data.max_length = 64
    cfg.data.train_batch_size = 4
    cfg.data.micro_batch_size = 2
    cfg.optim.lr = 3e-3
    cfg.trainer.device = "cpu"
    cfg.trainer.default_local_dir = str(out)
    cfg.trainer.logger = ["jsonl"]
    cfg.trainer.total_training_steps = 4
    for key, value in trainer.items():
        OmegaConf.update(cfg, key, value)
    OmegaConf.resolve(cfg)
    return cfg


def test_sft_loss_matches_hand_computed_cross_entropy_on_response_tokens_only():
    # One row of 4 tokens over a vocabulary of 3; tokens 0-1 are the prompt, 2-3 the response.
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])
    input_ids = torch.tensor([[1, 0, 2, 1]])
    loss_mask = torch.tensor([[0, 0, 1, 1]])
    total, n = sft_loss(logits, input_ids, loss_mask)
    # Predicted positions: logits[1] -> token 2 (response), logits[2] -> token 1 (response);
    # logits[0] -> token 0 is a prompt token and carries no loss.
    lse1 = math.log(math.exp(0.0) + math.exp(1.0) + math.exp(0.0))
    lse2 = math.log(2 * math.exp(0.0) + math.exp(3.0))
    expected = (lse1 - 0.0) + (lse2 - 0.0)
    assert n == 2
    assert total.item() == pytest.approx(expected, abs=1e-5)

    # Changing the label of a prompt position (token 1 at t=1) leaves the loss unchanged...
    changed_prompt = input_ids.clone()
    changed_prompt[0, 1] = 2
    assert sft_loss(logits, changed_prompt, loss_mask)[0].item() == pytest.approx(total.item(), abs=1e-6)
    # ...while changing a response token changes it (token 1 -> 2 at t=3: lse2 - 3 instead of lse2 - 0).
    changed_response = input_ids.clone()
    changed_response[0, 3] = 2
    assert sft_loss(logits, changed_response, loss_mask)[0].item() == pytest.approx(expected - 3.0, abs=1e-5)


def test_loss_decreases_on_a_fixed_tiny_set(model_dir, data_file, tmp_path):
    trainer = SFTTrainer(_config(model_dir, data_file, tmp_path / "run", **{"trainer.total_training_steps": 30}))
    losses = [trainer.train_step(next(trainer.iterator))["train/loss"] for _ in range(30)]
    # A random 1M-parameter model starts near ln(vocab) per token and memorises 8 pairs quickly.
    assert losses[0] > 4.0
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_gradient_accumulation_matches_one_big_micro_batch(model_dir, data_file, tmp_path):
    a = SFTTrainer(_config(model_dir, data_file, tmp_path / "a", **{"data.micro_batch_size": 4}))
    b = SFTTrainer(_config(model_dir, data_file, tmp_path / "b", **{"data.micro_batch_size": 1}))
    # Compare the accumulated gradients (Adam's first step would magnify float noise on ~0 grads).
    a.optimizer.step = b.optimizer.step = lambda: None
    batch = [0, 3, 5, 6]
    la, lb = a.train_step(batch)["train/loss"], b.train_step(batch)["train/loss"]
    assert la == pytest.approx(lb, rel=1e-5)
    for (name, pa_), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(pa_.grad, pb.grad, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_rows_sorted_by_length_give_the_same_gradient(model_dir, data_file, tmp_path):
    a = SFTTrainer(_config(model_dir, data_file, tmp_path / "a", **{"data.micro_batch_size": 4,
                                                                     "data.sort_by_length": False}))
    b = SFTTrainer(_config(model_dir, data_file, tmp_path / "b", **{"data.micro_batch_size": 2,
                                                                     "data.sort_by_length": True}))
    a.optimizer.step = b.optimizer.step = lambda: None
    batch = [0, 1, 2, 3]  # lengths differ (PAIRS), so sorting regroups the micro-batches
    assert sorted(batch, key=b._row_length) != batch
    la, lb = a.train_step(batch)["train/loss"], b.train_step(batch)["train/loss"]
    assert la == pytest.approx(lb, rel=1e-5)
    for (name, pa_), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(pa_.grad, pb.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_resume_continues_the_same_run(model_dir, data_file, tmp_path):
    run_sft(_config(model_dir, data_file, tmp_path / "straight"))
    # Same run cut after 2 steps (checkpoint at the end), then resumed for steps 3-4.
    run_sft(_config(model_dir, data_file, tmp_path / "resumed", **{"trainer.total_training_steps": 2}))
    assert (tmp_path / "resumed" / "global_step_2" / "COMPLETE").exists()
    resumed = SFTTrainer(_config(model_dir, data_file, tmp_path / "resumed"))
    resumed.fit()
    assert resumed.step == 4
    straight = load_file(tmp_path / "straight" / "huggingface" / "model.safetensors")
    again = load_file(tmp_path / "resumed" / "huggingface" / "model.safetensors")
    initial = load_file(Path(model_dir) / "model.safetensors")
    assert straight.keys() == again.keys()
    for key in straight:
        assert torch.equal(straight[key], again[key]), key
    assert any(not torch.equal(straight[k], initial[k]) for k in straight)  # training did move the weights


def test_hf_export_loads_with_transformers(model_dir, data_file, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer = SFTTrainer(_config(model_dir, data_file, tmp_path / "run", **{"trainer.total_training_steps": 2}))
    trainer.fit()
    export = tmp_path / "run" / "huggingface"
    model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(export)
    ids = torch.tensor([tok.encode(PAIRS[0][0])])
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, trainer.model(ids).logits)
    assert tok.decode(ids[0]) == PAIRS[0][0]


def test_bad_config_is_reported_with_the_key(model_dir, data_file, tmp_path):
    with pytest.raises(ValueError, match="micro_batch_size"):
        SFTTrainer(_config(model_dir, data_file, tmp_path / "x", **{"data.micro_batch_size": 3}))
    with pytest.raises(FileNotFoundError, match="model.path"):
        SFTTrainer(_config(tmp_path / "missing", data_file, tmp_path / "y"))
    with pytest.raises(ValueError, match="model.dtype"):
        SFTTrainer(_config(model_dir, data_file, tmp_path / "z", **{"model.dtype": "fp8"}))
