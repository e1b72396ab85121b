"""Segment training (2019 release): the weighted loss, --init_from, and `experiment segments` at a tiny size."""

from __future__ import annotations

import json

import pytest
import torch

from compactvid.cli import main
from compactvid.config import Config
from compactvid.errors import ConfigError
from compactvid.evaluate import initialize_from_run
from compactvid.losses import CrossEntropyLoss
from compactvid.models.registry import create_model


def test_loss_counts_the_rated_classes_only():
    predictions = torch.tensor([[0.9, 0.2, 0.7], [0.1, 0.6, 0.3]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    weights = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    loss = CrossEntropyLoss()(predictions, labels, weights)
    want = -(torch.log(torch.tensor(0.9 + 1e-5)) + torch.log(torch.tensor(0.8 + 1e-5))
             + torch.log(torch.tensor(0.6 + 1e-5))) / 2
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    loss.backward()
    assert predictions.grad[weights == 0].abs().sum() == 0 and predictions.grad[weights == 1].abs().min() > 0


def test_init_from_loads_a_run_with_the_same_model_only(tmp_path):
    from compactvid import checkpoint as ckpt

    saved = Config(num_classes=5, add_dbof=True, dbof_cluster_size=8, fc_hidden_size=8, feature_sizes="16,8",
                   train_dir=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(saved.to_json())
    torch.manual_seed(1)
    trained = create_model(saved.model_args())
    ckpt.save_checkpoint(saved.train_dir, 7, {"model": trained.state_dict(), "position": {"step": 7}})
    config = Config(**{**saved.to_dict(), "train_dir": str(tmp_path / "new"), "init_from": saved.train_dir})
    torch.manual_seed(2)
    model = create_model(config.model_args())
    assert initialize_from_run(model, config) == 7
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
    other = Config(**{**config.to_dict(), "fc_hidden_size": 16})
    with pytest.raises(ConfigError, match="--fc_hidden_size=8 there, 16 here"):
        initialize_from_run(create_model(other.model_args()), other)


TINY = {"num_epochs": "2", "dbof_cluster_size": "32", "fc_hidden_size": "16", "iterations": "5", "n_bagging": "1",
        "batch_size": "8", "moe_num_mixtures": "2", "eval_every_steps": "0", "log_every_steps": "2"}


@pytest.mark.slow
def test_segment_experiment_tiny(tmp_path, capsys, one_thread):
    from compactvid.data.synthetic import write_dataset
    from compactvid.segment_experiment import run_segment_experiment

    data = tmp_path / "data"
    write_dataset(str(data), 80, 6, seed=3, num_shards=2, progress=False, segments=True)
    out = tmp_path / "segments"
    results = run_segment_experiment("small", str(out), data_dir=str(data), num_classes=6, overrides=TINY)
    assert json.loads((out / "results.json").read_text()) == results
    assert [r["name"] for r in results["runs"]] == ["dense", "compact"]
    for run in results["runs"]:
        assert 0 < run["segment_map_before"] <= 1 and 0 < run["segment_map_after"] <= 1
        assert run["segment_classes"] > 0 and run["rated_segments"] > 0
        assert "--segment_labels=True" in run["fine_tuning_flags"] and "--init_from=" in run["fine_tuning_flags"]
        assert run["segment_curve"] == [[0.0, run["segment_map_before"]], [2.0, run["segment_map_after"]]]
        config = json.loads((out / f"{run['name']}-segments" / "config.json").read_text())
        assert config["segment_labels"] and config["train_data_pattern"].endswith("validate*[02468].tfrecord")
    assert results["runs"][1]["compression"] > 1
    assert (out / "segments.png").stat().st_size > 10_000
    assert "Segment mAP before" in (out / "results.md").read_text()
    # a segment run cannot use a loss that would count unrated classes as absent
    assert main(["train", f"--train_dir={tmp_path}/bad", f"--train_data_pattern={data}/validate*", "--segment_labels",
                 "--label_loss=HingeLoss", "--num_classes=6"]) == 1
    assert "only CrossEntropyLoss does" in capsys.readouterr().err
