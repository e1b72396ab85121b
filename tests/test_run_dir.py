"""The run directory: compactvid starts only in its own or an empty directory, deletes only what it wrote,
and one run at a time holds it (real processes: a second `train`, kill -9, `eval` beside a training)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from compactvid import checkpoint as ckpt
from compactvid import run_dir
from compactvid.cli import main
from compactvid.errors import RunDirError
from compactvid.run_dir import LOCK_FILE, RUN_FILE, RunLock, read_marker, read_metrics
from tiny_dataset import TINY_FLAGS, write_tiny_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_dataset(str(root), 12)
    write_tiny_dataset(str(root), 6, prefix="validate", seed=1)
    return {"train": str(root / "train*.tfrecord"), "validate": str(root / "validate*.tfrecord")}


def train_argv(train_dir, data, *extra) -> list[str]:
    return ["train", f"--train_dir={train_dir}", f"--train_data_pattern={data['train']}", *TINY_FLAGS, *extra]


def snapshot(directory) -> dict[str, bytes]:
    """Every file under `directory`, by relative path, with its bytes."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = f.read()
    return files


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_directory_that_holds_other_files_is_refused_and_left_untouched(tmp_path, data, capsys):
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    for name, text in [("config.json", "{}"), ("metrics.jsonl", "their metrics\n"), ("notes.txt", "mine"),
                       (".tmp-config.json.abcd1234", "theirs"), ("events.out.tfevents.1.host.1.0", "events")]:
        (foreign / name).write_text(text)
    before = snapshot(foreign)
    for extra in ([], ["--start_new_model"]):
        assert main(train_argv(foreign, data, "--num_epochs=1", *extra)) == 1
        assert f"not a compactvid run (no {RUN_FILE}) and not empty" in one_line_error(capsys)
        assert snapshot(foreign) == before  # not even a lock file


def test_root_and_home_are_refused(tmp_path, data, capsys, monkeypatch):
    assert main(train_argv("/", data)) == 1
    assert "refusing to run in /" in one_line_error(capsys)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert main(train_argv(home, data)) == 1
    assert f"refusing to run in {home}" in one_line_error(capsys)
    assert os.listdir(home) == []


def test_start_new_model_removes_only_what_the_run_wrote(tmp_path, data):
    run = tmp_path / "run"
    assert main(train_argv(run, data, "--num_epochs=1")) == 0
    ours = read_marker(str(run))
    assert len(ours["event_files"]) == 1 and (run / ours["event_files"][0]).exists()
    foreign = {"notes.txt": "mine", "events.out.tfevents.9.other.9.0": "another run's events",
               ".tmp-notes.txt.abcd1234": "an editor's file", "checkpoints/.tmp-model.pt.abcd1234": "theirs",
               "checkpoints/best.pt": "theirs"}
    for name, text in foreign.items():
        (run / name).write_text(text)
    (run / ".tmp-metrics.jsonl.k2j4h5g6").write_text("a write a kill interrupted")
    assert main(train_argv(run, data, "--num_epochs=1", "--start_new_model", "--dbof_cluster_size=16")) == 0
    assert all((run / name).read_text() == text for name, text in foreign.items())
    assert not (run / ".tmp-metrics.jsonl.k2j4h5g6").exists() and not (run / ours["event_files"][0]).exists()
    new = read_marker(str(run))
    assert new["run_id"] != ours["run_id"] and len(new["event_files"]) == 1
    assert ckpt.load_latest_checkpoint(str(run))[1]["position"]["step"] == 3  # 12 videos, batches of 4


def test_one_run_holds_the_directory_while_eval_may_read_it(tmp_path, data, capsys):
    """A real second process: `train` is refused with the holder's pid; `eval` reads beside it; the lock
    dies with the process (kill -9), and the run resumes."""
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "compactvid.cli", *train_argv(
        run, data, "--num_epochs=100000", "--checkpoint_steps=0", "--log_every_steps=1")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(ckpt.list_checkpoints(str(run))) < 2:
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "timed out waiting for the first training"
            time.sleep(0.05)
        assert main(train_argv(run, data, "--num_epochs=100000")) == 1
        assert f"is in use by another `compactvid train` (pid {first.pid} on host" in one_line_error(capsys)
        assert main(["eval", f"--train_dir={run}", f"--eval_data_pattern={data['validate']}", "--run_once",
                     "--num_readers=0"]) == 0
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    step = ckpt.load_latest_checkpoint(str(run))[1]["position"]["step"]
    # kill -9 left no stale lock; --num_epochs as the first run's, as the default's 5 epochs (15 steps) may
    # already be done when the kill lands late
    assert main(train_argv(run, data, "--num_epochs=100000", f"--max_steps={step + 2}",
                           "--log_every_steps=1")) == 0
    steps = [r["step"] for r in read_metrics(run) if "loss" in r]
    assert steps == list(range(1, step + 3))  # one writer: every step logged once


def test_the_lock_is_exclusive_and_released(tmp_path):
    lock = RunLock(str(tmp_path))
    with pytest.raises(RunDirError, match=f"pid {os.getpid()} on host"):
        RunLock(str(tmp_path))  # another open file description, as another process would have
    lock.release()
    RunLock(str(tmp_path)).release()
    assert (tmp_path / LOCK_FILE).exists()


def test_a_full_disk_gives_one_line_and_keeps_the_last_checkpoint(tmp_path, data, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(train_argv(run, data, "--num_epochs=1")) == 0
    before = snapshot(run / "checkpoints")
    capsys.readouterr()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.os, "fsync", full)  # the first write that must reach the disk fails, as when full
    assert main(train_argv(run, data, "--num_epochs=2")) == 1
    message = one_line_error(capsys)
    assert "No space left on device; free some space, then run the same command again" in message
    assert snapshot(run / "checkpoints") == before  # nothing lost, no temporary file left


def test_an_unwritable_train_dir_gives_one_line(tmp_path, data, capsys, monkeypatch):
    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(run_dir.os, "makedirs", denied)  # what a directory of another user answers
    assert main(train_argv(tmp_path / "run", data)) == 1
    assert "run: Permission denied; choose a --train_dir you can write to" in one_line_error(capsys)


def test_a_run_of_an_earlier_compactvid_resumes_and_is_marked(tmp_path, data, capsys):
    """A run written before RUN_FILE existed (config.json, checkpoints, metrics, its events) is adopted."""
    run = tmp_path / "run"
    assert main(train_argv(run, data, "--num_epochs=1")) == 0
    events = read_marker(str(run))["event_files"]
    (run / RUN_FILE).unlink()
    (run / LOCK_FILE).unlink()
    assert main(train_argv(run, data, "--num_epochs=2")) == 0
    assert read_marker(str(run))["event_files"][: len(events)] == events
    assert ckpt.load_latest_checkpoint(str(run))[1]["position"]["step"] == 6  # resumed at 3, one more epoch


@pytest.mark.parametrize("config", ["{}", '{"train_dir": "x", "model": "LogisticModel"}', "not json"])
def test_a_config_json_that_is_not_a_whole_compactvid_config_is_foreign(tmp_path, data, capsys, config):
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "config.json").write_text(config)
    (foreign / "metrics.jsonl").write_text("their metrics\n")
    before = snapshot(foreign)
    assert main(train_argv(foreign, data, "--num_epochs=1", "--start_new_model")) == 1
    assert "not a compactvid run" in one_line_error(capsys)
    assert snapshot(foreign) == before
