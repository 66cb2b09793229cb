import json
import os

import pytest

from verl.utils.checkpoint import COMPLETE_MARKER, LATEST_FILE, CheckpointManager, load_trainer_state


def _write(folder):
    with open(os.path.join(folder, "weights.bin"), "w") as f:
        f.write("w")


def test_save_is_complete_and_keeps_last_n(tmp_path):
    mgr = CheckpointManager(str(tmp_path), max_to_keep=2)
    for step in (1, 2, 3):
        mgr.save(step, {"global_step": step}, _write)
    assert mgr.complete_steps() == [2, 3]
    assert mgr.latest() == str(tmp_path / "global_step_3")
    assert (tmp_path / LATEST_FILE).read_text().strip() == "3"
    assert load_trainer_state(mgr.latest()) == {"global_step": 3}


def test_crash_during_save_leaves_previous_latest(tmp_path):
    mgr = CheckpointManager(str(tmp_path), max_to_keep=2)
    mgr.save(1, {"global_step": 1}, _write)

    def crash(folder):
        _write(folder)
        raise KeyboardInterrupt("killed mid-save")

    with pytest.raises(KeyboardInterrupt):
        mgr.save(2, {"global_step": 2}, crash)
    # the half-written folder is a temp dir, never a loadable checkpoint
    assert mgr.latest() == str(tmp_path / "global_step_1")
    assert not (tmp_path / "global_step_2").exists()
    # the next successful save cleans the leftovers
    mgr.save(2, {"global_step": 2}, _write)
    assert not any(n.startswith(".tmp") for n in os.listdir(tmp_path))
    assert mgr.complete_steps() == [1, 2]


def test_folder_without_marker_is_ignored_and_rejected(tmp_path):
    os.makedirs(tmp_path / "global_step_5")
    (tmp_path / "global_step_5" / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    mgr = CheckpointManager(str(tmp_path))
    assert mgr.latest() is None
    with pytest.raises(FileNotFoundError, match=COMPLETE_MARKER):
        load_trainer_state(str(tmp_path / "global_step_5"))
