"""RayPPOTrainer.save_checkpoint: a never-rotated weights-only export at every save, full
checkpoints rotating by trainer.max_ckpt_to_keep, and global_step_N/actor/huggingface kept."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from verl.trainer.ppo.ray_trainer import RayPPOTrainer
from verl.utils.checkpoint import CheckpointManager, export_steps


class FakeActorGroup:
    """Writes a marker file per call, recording (method, path, dtype)."""

    def __init__(self):
        self.calls = []

    def save_checkpoint(self, path):
        self.calls.append(("save_checkpoint", path, None))
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "model_optim.pt"), "w") as f:
            f.write("state")

    def export_hf(self, path, dtype=None):
        self.calls.append(("export_hf", path, dtype))
        os.makedirs(path, exist_ok=True)
        for name in ("model.safetensors", "config.json", "tokenizer.json"):
            with open(os.path.join(path, name), "w") as f:
                f.write(f"{name} {dtype}")


def make_trainer(root, save_exports=True, save_hf=True, keep=1):
    cfg = OmegaConf.create({
        "trainer": {"save_exports": save_exports, "save_hf": save_hf},
        "actor_rollout_ref": {"model": {"dtype": "bfloat16"}},
    })
    trainer = RayPPOTrainer.__new__(RayPPOTrainer)
    trainer.config = cfg
    trainer.ckpt = CheckpointManager(str(root), keep)
    trainer.actor_rollout_wg = FakeActorGroup()
    trainer.use_critic = False
    trainer.train_iterator = SimpleNamespace(state_dict=lambda: {})
    trainer.agent_loop = SimpleNamespace(state_dict=lambda: {})
    trainer.kl_ctrl = SimpleNamespace(value=0.0)
    return trainer


def test_exports_outlive_rotation_and_the_last_checkpoint_keeps_its_hf_folder(tmp_path):
    trainer = make_trainer(tmp_path, keep=1)
    for step in (2, 4, 6):
        trainer.global_step = step
        trainer.save_checkpoint()
    assert trainer.ckpt.complete_steps() == [6]
    assert [s for s, _ in export_steps(str(tmp_path))] == [2, 4, 6]
    for step in (2, 4, 6):
        export = tmp_path / "exports" / f"global_step_{step}"
        assert (export / "model.safetensors").read_text() == "model.safetensors bfloat16"  # the compute dtype
        assert (export / "tokenizer.json").is_file()
        # the run's config beside the weights, resolved (what evaluation takes the task from)
        saved = OmegaConf.load(export / "train_config.yaml")
        assert saved.actor_rollout_ref.model.dtype == "bfloat16" and saved.trainer.save_exports is True
    # the path the demo reads after the last step: the export's files, not a second export
    hf = tmp_path / "global_step_6" / "actor" / "huggingface"
    assert os.path.samefile(hf / "model.safetensors", tmp_path / "exports" / "global_step_6" / "model.safetensors")
    exports = [c for c in trainer.actor_rollout_wg.calls if c[0] == "export_hf"]
    assert len(exports) == 3 and all(dtype == "bfloat16" for _, _, dtype in exports)


@pytest.mark.parametrize("save_hf", [True, False])
def test_without_exports_the_checkpoint_is_as_before(tmp_path, save_hf):
    trainer = make_trainer(tmp_path, save_exports=False, save_hf=save_hf, keep=2)
    trainer.global_step = 3
    trainer.save_checkpoint()
    assert not (tmp_path / "exports").exists()
    hf = tmp_path / "global_step_3" / "actor" / "huggingface"
    assert hf.is_dir() == save_hf
    if save_hf:
        assert (hf / "model.safetensors").read_text() == "model.safetensors None"  # as trained
