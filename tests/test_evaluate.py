"""Evaluation: the metrics of a model over a dataset, and `compactvid eval`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from compactvid import metrics
from compactvid.cli import main
from compactvid.data.loader import make_loader
from compactvid.evaluate import evaluate, load_trained_model
from compactvid.losses import CrossEntropyLoss
from compactvid.checkpoint import list_checkpoints
from tiny_dataset import train_tiny_run, write_tiny_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    train_tiny_run(str(root / "run"), str(root / "data"))
    return {"dir": str(root / "run"), "validate": str(root / "data" / "validate*.tfrecord")}


def test_evaluate_gives_the_metrics_of_all_predictions_together(run):
    config, model, _ = load_trained_model(run["dir"])
    loader = make_loader(run["validate"], config, training=False, batch_size=3)  # batches of 3, 3, 3, 1
    results = evaluate(model, loader, CrossEntropyLoss(), torch.device("cpu"), config.num_classes, top_k=3)
    with torch.inference_mode():
        batches = list(loader)
        predictions = torch.cat([model(b["frames"]) for b in batches]).numpy().astype(np.float64)
    labels = torch.cat([b["labels"] for b in batches]).numpy().astype(np.float64)
    assert results["gap"] == pytest.approx(metrics.gap(predictions, labels, top_k=3), abs=1e-6)
    assert results["map"] == pytest.approx(metrics.mean_ap(predictions, labels, top_k=3), abs=1e-6)
    assert results["hit_at_1"] == pytest.approx(metrics.hit_at_1(predictions, labels), abs=1e-6)
    assert results["perr"] == pytest.approx(metrics.perr(predictions, labels), abs=1e-6)
    p = np.clip(predictions, 0, 1)
    loss = np.mean(np.sum(-(labels * np.log(p + 1e-5) + (1 - labels) * np.log(1 - p + 1e-5)), axis=1))
    assert results["loss"] == pytest.approx(loss, rel=1e-5)


def test_eval_rebuilds_the_model_from_the_run_and_matches_its_last_validation(run, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", f"--train_dir={run['dir']}", f"--eval_data_pattern={run['validate']}", "--run_once",
                 f"--json={out}"]) == 0
    results = json.loads(out.read_text())
    with open(f"{run['dir']}/metrics.jsonl") as f:
        validation = [json.loads(line) for line in f][-1]
    assert results["step"] == validation["step"]
    for key in ("gap", "map", "hit_at_1", "perr", "loss"):
        assert results[key] == pytest.approx(validation[f"val_{key}"], abs=1e-6)


def test_eval_json_goes_to_stdout_without_a_path(run, capsys):
    assert main(["eval", f"--train_dir={run['dir']}", f"--eval_data_pattern={run['validate']}", "--run_once",
                 "--json", "--top_k=2"]) == 0
    out, err = capsys.readouterr()
    results = json.loads(out)
    assert err.startswith("step ")
    assert {"gap", "map", "hit_at_1", "perr", "loss"} <= set(results)


def test_eval_without_a_checkpoint_says_where_it_looked(tmp_path, run, capsys):
    assert main(["eval", f"--train_dir={tmp_path}", f"--eval_data_pattern={run['validate']}", "--run_once"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{tmp_path}/checkpoints: no checkpoint to evaluate" in err


@pytest.mark.slow
def test_eval_without_run_once_evaluates_each_new_checkpoint(tmp_path):
    data, train_dir = tmp_path / "data", tmp_path / "run"
    train_tiny_run(str(train_dir), str(data))
    watcher = subprocess.Popen([sys.executable, "-m", "compactvid.cli", "eval", f"--train_dir={train_dir}",
                                f"--eval_data_pattern={data}/validate*.tfrecord", "--poll_seconds=0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert watcher.stdout.readline().startswith("step 8: GAP@k")
        from tiny_dataset import TINY_FLAGS

        assert main(["train", f"--train_dir={train_dir}", f"--train_data_pattern={data}/train*.tfrecord",
                     "--num_epochs=2", *TINY_FLAGS]) == 0
        started = time.monotonic()
        assert watcher.stdout.readline().startswith("step 16: GAP@k")
        assert time.monotonic() - started < 60
    finally:
        watcher.kill()
        watcher.wait()


def test_eval_on_files_without_labels_is_an_error(run, tmp_path, capsys):
    write_tiny_dataset(str(tmp_path), 6, labels=False, prefix="test")
    assert main(["eval", f"--train_dir={run['dir']}", f"--eval_data_pattern={tmp_path}/test*.tfrecord",
                 "--run_once"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: these files have no labels (6 videos in 2 files" in err


def _watch(train_dir: str, pattern: str) -> subprocess.Popen:
    """`compactvid eval` in watch mode (JSON lines to stdout), killed after two minutes whatever happens."""
    process = subprocess.Popen([sys.executable, "-m", "compactvid.cli", "eval", f"--train_dir={train_dir}",
                                f"--eval_data_pattern={pattern}", "--json", "--poll_seconds=0.2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, process.kill)
    watchdog.daemon = True
    watchdog.start()
    return process


def test_watch_mode_falls_back_from_an_unreadable_newest_checkpoint_and_says_so(run, tmp_path):
    train_dir = str(shutil.copytree(run["dir"], tmp_path / "run"))
    good = list_checkpoints(train_dir)[-1][0]
    (tmp_path / "run" / "checkpoints" / f"ckpt-{good + 1:09d}.pt").write_bytes(b"a disk that filled up")
    process = _watch(train_dir, run["validate"])
    try:
        line = process.stdout.readline()
    finally:
        process.terminate()
        _, err = process.communicate()
    assert json.loads(line)["step"] == good, err
    assert err.count(f"ckpt-{good + 1:09d}.pt: not a readable checkpoint") == 1
    assert "evaluating the next older checkpoint instead" in err


def test_watch_mode_without_a_checkpoint_says_it_is_waiting(run, tmp_path):
    process = _watch(str(tmp_path), run["validate"])
    try:
        line = process.stderr.readline()
    finally:
        process.terminate()
        process.communicate()
    assert f"waiting for a checkpoint in {tmp_path}/checkpoints" in line
