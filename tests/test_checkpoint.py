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


def test_temporary_files_of_interrupted_writes_are_removed_and_no_other(tmp_path):
    ckpt.save_checkpoint(str(tmp_path), 1, {"step": 1})
    leftovers = [tmp_path / "checkpoints" / ".tmp-ckpt-000000002.pt.ab_c9xyz", tmp_path / ".tmp-config.json.k2j4h5g6"]
    foreign = [tmp_path / "checkpoints" / ".tmp-notes.txt.ab_c9xyz", tmp_path / ".tmp-notes.txt.k2j4h5g6",
               tmp_path / ".tmp-config.json", tmp_path / ".tmp-config.json.TOOLONG99"]
    for path in leftovers + foreign:
        path.write_bytes(b"half")
    removed = ckpt.remove_temporary_files(str(tmp_path), ["config.json"])
    assert sorted(removed) == sorted(map(str, leftovers))
    assert not any(path.exists() for path in leftovers) and all(path.exists() for path in foreign)
    assert len(ckpt.list_checkpoints(str(tmp_path))) == 1


def _unreadable_files(tmp_path) -> dict[str, str]:
    """name -> path of files torch.load(weights_only=True) refuses, each for another reason."""

    class Exploit:
        def __reduce__(self):
            return (os.system, ("true",))

    files = {"code": tmp_path / "code.pt", "foreign_object": tmp_path / "date.pt", "garbage": tmp_path / "garbage.pt",
             "truncated": tmp_path / "truncated.pt"}
    with open(files["code"], "wb") as f:
        pickle.dump({"x": Exploit()}, f, protocol=2)
    import datetime

    torch.save({"saved": datetime.date(2026, 1, 1)}, files["foreign_object"])
    files["garbage"].write_bytes(b"not a checkpoint" * 4)
    torch.save({"w": torch.zeros(100)}, files["truncated"])
    files["truncated"].write_bytes(files["truncated"].read_bytes()[:200])
    return {name: str(path) for name, path in files.items()}


@pytest.mark.parametrize("case", ["code", "foreign_object", "garbage", "truncated"])
def test_a_refused_checkpoint_never_suggests_the_unsafe_option(tmp_path, case):
    path = _unreadable_files(tmp_path)[case]
    with pytest.raises(CheckpointError) as info:
        ckpt.load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable checkpoint (") and "\n" not in message
    assert "weights_only" not in message and "trust" not in message
    assert message.endswith("delete it to fall back to an older one, or train to write a new one")
    if case in ("code", "foreign_object"):
        assert "compactvid never unpickles" in message
