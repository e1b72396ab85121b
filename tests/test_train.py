"""The training loop: semantics of a step, the files of a run, resume, refusal, signals, DDP, seed flags."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import torch
from torch import nn

from compactvid import checkpoint as ckpt
from compactvid.cli import main
from compactvid.config import Config
from compactvid.errors import ConfigError
from compactvid.models.registry import create_model
from compactvid.run_dir import check_resume_flags, read_metrics
from compactvid.train import clip_gradient_norms, create_optimizer, learning_rate
from seed_commands import SEED_LINES, seed_argv
from tiny_dataset import TINY_FLAGS, write_tiny_dataset

TRAIN_VIDEOS, BATCH = 30, 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_dataset(str(root), TRAIN_VIDEOS)
    write_tiny_dataset(str(root), 10, prefix="validate", seed=1)
    return {"train": str(root / "train*.tfrecord"), "validate": str(root / "validate*.tfrecord")}


def train_flags(train_dir, data, *extra):
    return [f"--train_dir={train_dir}", f"--train_data_pattern={data['train']}", *TINY_FLAGS, *extra]


def run_train(train_dir, data, *extra) -> int:
    return main(["train", *train_flags(train_dir, data, *extra)])


def newest_position(train_dir) -> dict:
    return ckpt.load_latest_checkpoint(str(train_dir))[1]["position"]


# --- one step ------------------------------------------------------------------------------------------

def test_learning_rate_decays_in_stairs_of_examples():
    config = Config(base_learning_rate=0.1, learning_rate_decay=0.5, learning_rate_decay_examples=100)
    assert [learning_rate(config, n) for n in (0, 99, 100, 199, 250)] == [0.1, 0.1, 0.05, 0.05, 0.025]


def test_each_gradient_tensor_is_clipped_on_its_own():
    big, small = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    big.grad, small.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])
    clip_gradient_norms(iter([big, small]), 1.0)
    torch.testing.assert_close(big.grad, torch.tensor([0.6, 0.8, 0.0]))
    torch.testing.assert_close(small.grad, torch.tensor([0.3, 0.4]))  # a global clip would shrink it too


def test_optimizers_by_the_seeds_names_or_torchs():
    params = [nn.Parameter(torch.zeros(2))]
    adam = create_optimizer(Config(base_learning_rate=2e-4), params)
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["lr"] == 2e-4
    assert type(create_optimizer(Config(optimizer="GradientDescentOptimizer"), params)) is torch.optim.SGD
    assert type(create_optimizer(Config(optimizer="AdamW"), params)) is torch.optim.AdamW
    with pytest.raises(ConfigError, match="--optimizer='Bogus'"):
        create_optimizer(Config(optimizer="Bogus"), params)


def test_structured_parameters_get_no_weight_decay_when_the_optimizer_decays():
    from compactvid.layers.circulant import CirculantLinear

    model = nn.Sequential(CirculantLinear(8, 8, bias=True), nn.Linear(8, 4))
    structured = [p for p in model.parameters() if getattr(p, "_is_structured", False)]
    assert structured and len(structured) < len(list(model.parameters()))
    adamw = create_optimizer(Config(optimizer="AdamW"), model.parameters())
    assert [(len(g["params"]), g["weight_decay"]) for g in adamw.param_groups] == [
        (len(list(model.parameters())) - len(structured), 0.01), (len(structured), 0.0)]
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    adamw.step()  # zero gradients: only the decay moves weights
    for p, old in zip(model.parameters(), before):
        assert torch.equal(p, old) == getattr(p, "_is_structured", False)
    assert len(create_optimizer(Config(), model.parameters()).param_groups) == 1  # Adam decays nothing


# --- the files of a run ------------------------------------------------------------------------------

def test_an_epoch_writes_config_params_checkpoint_metrics_and_events(tmp_path, data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert run_train(run, data, f"--eval_data_pattern={data['validate']}", "--num_epochs=1",
                     "--log_every_steps=2") == 0
    assert Config.from_json_file(str(run / "config.json")).dbof_cluster_size == 8
    assert json.loads((run / "params.json").read_text())["total"] > 0
    steps = -(-TRAIN_VIDEOS // BATCH)  # the last batch is smaller
    assert [s for s, _ in ckpt.list_checkpoints(str(run))] == [steps]
    position = newest_position(run)
    assert (position["epoch"], position["examples"], position["batches_in_epoch"]) == (1, TRAIN_VIDEOS, 0)

    logged = read_metrics(run)
    counts = {"step", "epoch", "examples", "videos"}
    assert [r["step"] for r in logged[:-2]] == list(range(2, steps + 1, 2))
    assert all(set(r) == counts | {"loss", "lr", "examples_per_sec"} for r in logged[:-2])
    assert set(logged[-2]) == counts | {"epoch_loss", "epoch_complete"}  # the end of the epoch
    assert set(logged[-1]) == counts | {"val_gap", "val_map", "val_hit_at_1", "val_perr", "val_loss"}
    assert all(r["step"] == steps and r["examples"] == TRAIN_VIDEOS for r in logged[-2:])
    assert logged[-2]["epoch_complete"] and 0 < logged[-2]["epoch_loss"] < 10
    assert 0 < logged[-1]["val_gap"] <= 1

    events = EventAccumulator(str(run)).Reload()
    assert {"train/loss", "train/lr", "train/examples_per_sec", "validation/gap"} <= set(events.Tags()["scalars"])


def test_a_run_resumes_from_its_newest_checkpoint(tmp_path, data, caplog):
    run = tmp_path / "run"
    assert run_train(run, data, "--num_epochs=1", "--log_every_steps=1") == 0
    caplog.set_level(logging.INFO)
    assert run_train(run, data, "--num_epochs=2", "--log_every_steps=1") == 0
    steps = -(-TRAIN_VIDEOS // BATCH)
    assert f"resuming from step {steps}" in caplog.text
    assert newest_position(run)["examples"] == 2 * TRAIN_VIDEOS
    steps_logged = list(range(1, steps + 1))
    assert [r["step"] for r in read_metrics(run)] == steps_logged + [steps] + [s + steps for s in steps_logged] + [
        2 * steps]  # the epoch records end each epoch


def test_a_resume_continues_inside_the_epoch_where_it_stopped(tmp_path, data):
    run = tmp_path / "run"
    assert run_train(run, data, "--max_steps=3", "--num_epochs=1") == 0
    saved = newest_position(run)
    assert {k: saved[k] for k in ("step", "epoch", "batches_in_epoch", "videos", "examples", "epoch_examples")} \
        == {"step": 3, "epoch": 0, "batches_in_epoch": 3, "videos": 3 * BATCH, "examples": 3 * BATCH,
            "epoch_examples": 3 * BATCH}
    assert read_metrics(run)[-1] | {"epoch_loss": None} == {  # the end of the run, inside its epoch
        "step": 3, "epoch": 1, "videos": 3 * BATCH, "examples": 3 * BATCH, "epoch_loss": None,
        "epoch_complete": False}
    assert run_train(run, data, "--num_epochs=1") == 0
    position = newest_position(run)
    assert (position["epoch"], position["examples"]) == (1, TRAIN_VIDEOS)  # every video once, none twice
    assert read_metrics(run)[-1]["epoch_complete"] and read_metrics(run)[-1]["examples"] == TRAIN_VIDEOS


def test_a_complete_run_has_nothing_left_to_do(tmp_path, data, caplog):
    run = tmp_path / "run"
    assert run_train(run, data, "--num_epochs=1") == 0
    caplog.set_level(logging.INFO)
    assert run_train(run, data, "--num_epochs=1") == 0
    assert "nothing to do" in caplog.text


# --- refusals and starting over -----------------------------------------------------------------------

def test_changed_model_flags_are_refused_with_each_difference_and_the_ways_out(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert run_train(run, data, "--num_epochs=1") == 0
    before = ckpt.list_checkpoints(str(run))
    assert run_train(run, data, "--num_epochs=2", "--dbof_cluster_size=16", "--noadd_dbof", "--add_netvlad") == 1
    message = capsys.readouterr().err
    assert "--dbof_cluster_size: saved 8, now 16" in message
    assert "--add_dbof: saved True, now False" in message
    assert "--add_netvlad: saved False, now True" in message
    assert "--start_new_model" in message and "another --train_dir" in message
    assert ckpt.list_checkpoints(str(run)) == before


def test_equal_meanings_are_not_differences():
    saved = Config(feature_names=None, model="CirculantDiagonalNetwork")
    check_resume_flags(saved, Config(feature_names="rgb,audio", feature_sizes="1024,128",
                                     model="CirulantDiagonalNetwork", num_epochs=99), "dir")
    with pytest.raises(ConfigError, match="--feature_names: saved None, now 'rgb'"):
        check_resume_flags(saved, Config(feature_names="rgb", feature_sizes="1024"), "dir")


def test_start_new_model_removes_only_what_training_wrote(tmp_path, data):
    run = tmp_path / "run"
    assert run_train(run, data, "--num_epochs=1") == 0
    (run / "notes.txt").write_text("mine")
    (run / "mine").mkdir()
    (run / "mine" / "config.json").write_text("{}")
    assert run_train(run, data, "--num_epochs=1", "--start_new_model", "--dbof_cluster_size=16") == 0
    assert (run / "notes.txt").read_text() == "mine" and (run / "mine" / "config.json").exists()
    assert newest_position(run)["examples"] == TRAIN_VIDEOS  # started over
    assert len([n for n in os.listdir(run) if n.startswith("events.out.tfevents.")]) == 1


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert run_train(run, data, "--num_epochs=1") == 0
    before = ckpt.list_checkpoints(str(run))
    # A learning rate of 1e30 sends the weights to infinity within two steps: the loss becomes NaN.
    assert run_train(run, data, "--num_epochs=3", "--base_learning_rate=1e30") == 1
    message = capsys.readouterr().err
    assert "the loss is nan" in message or "the loss is infinite" in message
    assert f"{before[-1][1]} (step {before[-1][0]}), is kept" in message
    assert ckpt.list_checkpoints(str(run)) == before


def test_video_level_models_train_on_mean_features(tmp_path, capsys):
    write_tiny_dataset(str(tmp_path / "data"), 20, video_level=True)
    write_tiny_dataset(str(tmp_path / "data"), 8, video_level=True, prefix="validate", seed=1)
    run = tmp_path / "run"
    assert main(["train", f"--train_dir={run}", f"--train_data_pattern={tmp_path}/data/train*",
                 f"--eval_data_pattern={tmp_path}/data/validate*", "--frame_features=False", "--model=MoeModel",
                 "--feature_sizes=16,8", "--num_classes=5", "--batch_size=4", "--num_readers=0",
                 "--num_epochs=2"]) == 0
    assert Config.from_json_file(str(run / "config.json")).feature_name_list == ["mean_rgb", "mean_audio"]
    assert newest_position(run)["examples"] == 40
    assert "val_gap" in read_metrics(run)[-1]


def test_validation_runs_every_eval_every_steps_and_once_at_the_end_of_the_epoch(tmp_path, data):
    run = tmp_path / "run"
    assert run_train(run, data, f"--eval_data_pattern={data['validate']}", "--eval_every_steps=4",
                     "--num_epochs=1", "--log_every_steps=100") == 0
    assert [r["step"] for r in read_metrics(run) if "val_gap" in r] == [4, 8]  # step 8 ends the epoch


def test_data_augmentation_counts_two_examples_per_video_and_the_schedule_counts_videos(tmp_path, data):
    run = tmp_path / "run"
    assert run_train(run, data, "--num_epochs=1", "--data_augmentation", "--log_every_steps=1",
                     "--learning_rate_decay_examples=8", "--learning_rate_decay=0.5") == 0
    position = newest_position(run)
    assert (position["videos"], position["examples"]) == (TRAIN_VIDEOS, 2 * TRAIN_VIDEOS)
    logged = read_metrics(run)
    assert [r["examples"] for r in logged[:3]] == [2 * BATCH, 4 * BATCH, 6 * BATCH]
    assert [r["lr"] for r in logged[:3]] == [0.01, 0.01, 0.005]  # a halving every 8 videos, the seed's way


@pytest.mark.parametrize("videos", [0, 1])
def test_an_epoch_without_a_batch_trains_nothing_and_says_why(tmp_path, capsys, videos):
    write_tiny_dataset(str(tmp_path / "data"), videos, num_files=1)
    run = tmp_path / "run"
    assert run_train(run, {"train": str(tmp_path / "data" / "train*.tfrecord")}) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("compactvid train: error: --train_data_pattern=") and "an epoch gave no batch" in err[-1]
    assert ckpt.list_checkpoints(str(run)) == []


def test_no_epoch_to_train_is_refused(tmp_path, data, capsys):
    assert run_train(tmp_path / "run", data, "--num_epochs=-1") != 0
    assert "--num_epochs=-1: must be a positive integer" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without GPUs")
def test_num_gpu_without_gpus_trains_in_one_cpu_process(tmp_path, data, caplog):
    caplog.set_level(logging.INFO)
    assert run_train(tmp_path / "run", data, "--num_gpu=4", "--num_readers=100", "--max_steps=1") == 0
    assert "--num_gpu=4: no GPU in use, training in one CPU process" in caplog.text
    assert "--num_readers=100: using" in caplog.text


# --- other processes: signals, kill -9, DDP --------------------------------------------------------------

def start_training(train_dir, data, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "compactvid.cli", "train", *train_flags(train_dir, data, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process, timeout=180.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training exited early ({process.returncode}): {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for training")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_then_stops(tmp_path, data):
    run = tmp_path / "run"
    process = start_training(run, data, "--num_epochs=100000", "--log_every_steps=1", "--checkpoint_steps=0")
    wait_for(lambda: (run / "metrics.jsonl").exists() and len(read_metrics(run)) >= 3, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "run the same command to resume" in err
    saved = newest_position(run)
    assert saved["step"] >= 3 and saved["step"] == read_metrics(run)[-1]["step"]


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_a_loadable_checkpoint(tmp_path, data, caplog):
    run = tmp_path / "run"
    # A checkpoint every step: the kill most likely lands in the middle of writing one.
    process = start_training(run, data, "--num_epochs=100000", "--checkpoint_steps=1")
    wait_for(lambda: len(ckpt.list_checkpoints(str(run))) >= 3, process)
    process.kill()
    process.wait(timeout=30)
    path, state = ckpt.load_latest_checkpoint(str(run))
    assert path == ckpt.list_checkpoints(str(run))[-1][1]  # the newest file loads
    caplog.set_level(logging.INFO)
    epochs = state["position"]["epoch"] + 1
    assert run_train(run, data, f"--num_epochs={epochs}") == 0
    assert f"resuming from step {state['position']['step']}" in caplog.text
    assert newest_position(run)["examples"] == epochs * TRAIN_VIDEOS
    assert not [n for n in os.listdir(run / "checkpoints") if n.startswith(".tmp-")]


@pytest.mark.slow
def test_two_ddp_processes_read_each_video_of_an_epoch_once(tmp_path):
    """13 videos over 3 files: the two processes' shares differ, so one runs out of batches first."""
    write_tiny_dataset(str(tmp_path / "data"), 13, num_files=3)
    run = tmp_path / "run"
    flags = train_flags(run, {"train": str(tmp_path / "data" / "train*.tfrecord")}, "--batch_size=2",
                        "--num_epochs=1", "--device=cpu", "--log_every_steps=100")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "compactvid.cli", "train", *flags], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    position = newest_position(run)
    assert (position["epoch"], position["examples"]) == (1, 13)
    (end,) = read_metrics(run)  # no step was a logging step: the epoch's record says where it ended
    assert (end["step"], end["examples"], end["epoch_complete"]) == (position["step"], 13, True)
    assert 0 < end["epoch_loss"] < 10


SPAWN = """
import sys
from compactvid.flags import parse_config
from compactvid import train
config, _ = parse_config(sys.argv[1:])
sys.exit(train.train_spawned(config, 2))  # what --num_gpu=2 does with 2 GPUs, here with gloo on CPU
"""


@pytest.mark.slow
def test_sum_gradients_makes_the_processes_step_as_the_seeds_towers(tmp_path, data):
    """Two gloo processes, one plain SGD step, no clipping: summing the gradients at learning rate lr
    moves the weights exactly as averaging them at 2 lr."""
    runs = {"sum": ("--sum_gradients", "--base_learning_rate=0.1"), "mean": ("--base_learning_rate=0.2",)}
    for name, flags in runs.items():
        result = subprocess.run([sys.executable, "-c", SPAWN, *train_flags(
            tmp_path / name, data, *flags, "--optimizer=GradientDescentOptimizer", "--clip_gradient_norm=0",
            "--max_steps=1", "--device=cpu")], capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr[-3000:]
    summed, averaged = (ckpt.load_latest_checkpoint(str(tmp_path / name))[1]["model"] for name in runs)
    torch.manual_seed(0)  # --seed: the initial weights of both runs
    initial = create_model(Config.from_json_file(str(tmp_path / "sum" / "config.json")).model_args()).state_dict()
    assert sum(not torch.equal(initial[name], summed[name]) for name in summed) > 5  # the step moved them
    for name in summed:
        torch.testing.assert_close(summed[name], averaged[name], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_num_gpu_processes_stop_together_on_sigterm_with_a_checkpoint(tmp_path, data):
    run = tmp_path / "run"
    assert run_train(run, data, "--max_steps=2") == 0  # one process, stopped inside the epoch
    process = subprocess.Popen([sys.executable, "-c", SPAWN, *train_flags(run, data, "--num_epochs=100000",
                                "--device=cpu", "--log_every_steps=1", "--checkpoint_steps=0")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (run / "metrics.jsonl").exists() and len(read_metrics(run)) >= 3, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "2 processes now, 1 when saved: random generators re-seeded, and the epoch in progress restarts" in err
    saved = newest_position(run)
    assert saved["step"] >= 3 and saved["step"] == read_metrics(run)[-1]["step"]
    assert saved["examples"] == read_metrics(run)[-1]["examples"]


# --- the seed README's command lines -----------------------------------------------------------------

@pytest.fixture(scope="module")
def full_size_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("yt8m")
    write_tiny_dataset(str(folder), 2, num_files=1, rgb=1024, audio=128, classes=3862)
    # a file for PARAMS' validate[A-Za-z]* (2017 names): each part of a pattern must match a file
    write_tiny_dataset(str(folder), 1, num_files=1, rgb=1024, audio=128, classes=3862, prefix="validateaA")
    return str(folder) + os.sep


@pytest.fixture(scope="module")
def out_folder():
    """One OUT_FOLDER for every line, as in the README (--start_new_model empties it each time); in memory
    where possible, since each checkpoint at these sizes is about 450 MB."""
    in_memory = os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 4 * 2**30
    folder = tempfile.mkdtemp(prefix="compactvid-seed-", dir="/dev/shm" if in_memory else None)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", SEED_LINES)
def test_the_seed_readme_command_lines_train_a_step(name, full_size_data, out_folder):
    argv = [f"--train_dir={out_folder}", *seed_argv(name, full_size_data), "--max_steps=1"]
    assert main(["train", *argv]) == 0
    assert newest_position(out_folder)["step"] == 1


# --- the whole workflow ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_eval_inference_on_generated_data_learns(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["make-data", f"--output_dir={data}", "--num_videos=800", "--num_classes=20", "--quiet"]) == 0
    assert main(["train", f"--train_dir={run}", f"--train_data_pattern={data}/train*.tfrecord",
                 f"--eval_data_pattern={data}/validate*.tfrecord", "--num_classes=20", "--add_dbof",
                 "--dbof_cluster_size=32", "--fc_hidden_size=32", "--iterations=10", "--batch_size=16",
                 "--num_epochs=4", "--batch_norm_decay=0.9", "--num_readers=0"]) == 0
    assert main(["eval", f"--train_dir={run}", f"--eval_data_pattern={data}/validate*.tfrecord", "--run_once",
                 f"--json={tmp_path / 'eval.json'}"]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["gap"] > 0.5, results
    assert main(["inference", f"--train_dir={run}", f"--input_data_pattern={data}/test*.tfrecord",
                 f"--output_file={tmp_path / 'predictions.csv'}"]) == 0
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0] == "VideoId,LabelConfidencePairs" and len(rows) == 1 + 80  # the test split: 10%
    assert all(len(row.split(",")[1].split()) == 2 * 20 for row in rows[1:])  # top 20 of 20 classes
