import json
import os
import shutil

import pytest

from verl.utils.checkpoint import (COMPLETE_MARKER, LATEST_FILE, CheckpointManager, export_steps, link_tree,
                                   load_trainer_state)


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


def _write_export(folder):
    os.makedirs(folder)
    with open(os.path.join(folder, "model.safetensors"), "w") as f:
        f.write("weights")


def test_exports_survive_rotation_and_are_listed_by_step(tmp_path):
    mgr = CheckpointManager(str(tmp_path), max_to_keep=1)
    for step in (5, 10, 15):
        export = mgr.save_export(step, _write_export)
        assert export == str(tmp_path / "exports" / f"global_step_{step}")
        mgr.save(step, {"global_step": step}, _write)
    assert mgr.complete_steps() == [15]  # full checkpoints rotate
    assert export_steps(str(tmp_path)) == [(s, str(tmp_path / "exports" / f"global_step_{s}")) for s in (5, 10, 15)]
    assert all((tmp_path / "exports" / f"global_step_{s}" / "model.safetensors").read_text() == "weights"
               for s in (5, 10, 15))
    assert export_steps(str(tmp_path / "nothing_here")) == []


def test_a_crashed_export_leaves_no_export_folder(tmp_path):
    mgr = CheckpointManager(str(tmp_path))

    def crash(folder):
        _write_export(folder)
        raise KeyboardInterrupt("killed mid-export")

    with pytest.raises(KeyboardInterrupt):
        mgr.save_export(3, crash)
    assert export_steps(str(tmp_path)) == []
    mgr.save_export(3, _write_export)  # the retry replaces the leftover
    assert [s for s, _ in export_steps(str(tmp_path))] == [3]
    assert os.listdir(tmp_path / "exports") == ["global_step_3"]


def test_link_tree_shares_the_files_and_outlives_the_source(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_text("A")
    (src / "sub" / "b.txt").write_text("B")
    link_tree(str(src), str(tmp_path / "dst"))
    assert os.stat(src / "a.bin").st_ino == os.stat(tmp_path / "dst" / "a.bin").st_ino
    shutil.rmtree(src)
    assert (tmp_path / "dst" / "a.bin").read_text() == "A" and (tmp_path / "dst" / "sub" / "b.txt").read_text() == "B"
