"""Checkpoint files: atomic writes, rotation, safe loading, RNG round trip."""

import os
import pickle
import random

import numpy as np
import pytest
import torch

from compactvid import checkpoint as ckpt
from compactvid.errors import CheckpointError


def test_save_then_load_round_trips_tensors_and_plain_values(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 7, "config": {"a": None, "b": (1, "x")}}
    path = ckpt.save_checkpoint(str(tmp_path), 7, state)
    assert os.path.basename(path) == "ckpt-000000007.pt"
    loaded = ckpt.load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["step"] == 7 and loaded["config"] == {"a": None, "b": (1, "x")}


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for step in (1, 2, 3, 4, 10):
        ckpt.save_checkpoint(str(tmp_path), step, {"step": step}, keep=3)
    assert [step for step, _ in ckpt.list_checkpoints(str(tmp_path))] == [3, 4, 10]
    path, state = ckpt.load_latest_checkpoint(str(tmp_path))
    assert state["step"] == 10 and path.endswith("ckpt-000000010.pt")


def test_loading_refuses_to_run_code(tmp_path):
    """A pickle that would call a function on load is rejected (weights_only), not executed."""
    path = tmp_path / "checkpoints" / "ckpt-000000001.pt"
    path.parent.mkdir()

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with open(path, "wb") as f:
        pickle.dump({"x": Exploit()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="ckpt-000000001.pt: not a readable checkpoint"):
        ckpt.load_checkpoint(str(path))
    assert not (tmp_path / "pwned").exists()


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    ckpt.save_checkpoint(str(tmp_path), 1, {"step": 1})
    newest = ckpt.save_checkpoint(str(tmp_path), 2, {"step": 2})
    with open(newest, "r+b") as f:
        f.truncate(10)
    path, state = ckpt.load_latest_checkpoint(str(tmp_path))
    assert state["step"] == 1


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "config.json"
    ckpt.write_text_atomically(str(target), "old")

    def fail(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.write_atomically(str(target), fail)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["config.json"]


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    state = ckpt.capture_rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand())
    path = ckpt.save_checkpoint(str(tmp_path), 1, {"rng": state})
    torch.manual_seed(99), random.seed(99), np.random.seed(99)
    ckpt.restore_rng_state(ckpt.load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


def test_temporary_files_of_interrupted_writes_are_removed(tmp_path):
    ckpt.save_checkpoint(str(tmp_path), 1, {"step": 1})
    leftover = tmp_path / "checkpoints" / ".tmp-ckpt-000000002.pt.abc"
    leftover.write_bytes(b"half")
    ckpt.remove_temporary_files(str(tmp_path))
    assert not leftover.exists()
    assert len(ckpt.list_checkpoints(str(tmp_path))) == 1
