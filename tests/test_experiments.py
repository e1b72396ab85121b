"""The seed's experiments end to end at a tiny size: runs, results.json, results.md, the figure, resuming."""

import json
import logging
import os
import shlex

import pytest

from compactvid.cli import main
from compactvid.data.synthetic import write_dataset
from compactvid.experiments import EXPERIMENTS, PROFILES, run_argv, run_experiment
from compactvid.flags import parse_config
from compactvid.plotting import describe, validation_curve
from seed_commands import seed_params

TINY = {"num_epochs": "2", "dbof_cluster_size": "32", "fc_hidden_size": "16", "iterations": "5",
        "n_bagging": "1", "batch_size": "8", "moe_num_mixtures": "2", "eval_every_steps": "2",
        "log_every_steps": "2"}
RUN_FIELDS = {"name", "flags", "parameters", "bytes", "float16_bytes", "float16_export_bytes", "compression", "best_val_gap", "final_val_gap", "val_map",
              "val_hit_at_1", "val_perr", "train_videos_per_sec", "inference_ms_per_video", "curve"}


def test_every_run_is_the_readme_command_line():
    seed = seed_params("d/")
    for experiment in EXPERIMENTS.values():
        for run in experiment.runs:
            argv = run_argv(run, "paper", "d/", "out")
            paper = [f"--{flag}={value}" for flag, value in PROFILES["paper"].items()]
            assert argv[1:] == shlex.split(run.flags) + seed + paper
            parse_config(argv)  # every flag is accepted
    netfv = EXPERIMENTS["exp2-netfv"].runs[1].flags
    assert "--fc_fisher_circulant=True" in netfv and "netvlad" not in netfv


def test_legends_describe_the_runs():
    dense, _ = parse_config(["--add_dbof", "--no_audio"])
    compact, _ = parse_config(["--add_netvlad", "--fc_netvlad_circulant", "--use_d_matrix"])
    moe, _ = parse_config(["--add_dbof", "--video_level_classifier_model=Circulant_MoeModel"])
    assert describe(dense) == "DBoF, dense, no audio"
    assert describe(compact) == "NetVLAD, compact FC, D in {-1,1}"
    assert describe(moe) == "DBoF, compact MoE"


def test_validation_curve_in_fractional_epochs():
    records = [{"step": 5, "epoch": 1, "examples": 50, "val_gap": 0.3}, {"step": 10, "epoch": 1, "examples": 100},
               {"step": 10, "epoch": 1, "examples": 100, "val_gap": 0.4},
               {"step": 15, "epoch": 2, "examples": 150, "val_gap": 0.5}]
    assert validation_curve(records) == [(0.5, 0.3), (1.0, 0.4), (1.5, 0.5)]


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_change_only_their_listed_flags(profile):
    run = EXPERIMENTS["exp3"].runs[0]
    readme = ["--train_dir=out", *shlex.split(run.flags), *seed_params("d/")]
    changed = {a.split("=")[0][2:] for a in set(run_argv(run, profile, "d/", "out")) - set(readme)}
    assert changed == set(PROFILES[profile])


def test_paper_profile_trains_in_float32_and_says_so(monkeypatch, caplog, tmp_path):
    config, _ = parse_config(run_argv(EXPERIMENTS["exp3"].runs[0], "paper", "d/", "out"))
    assert config.mixed_precision is False  # the paper's precision, not the bfloat16 autocast default

    class Stop(Exception):
        pass

    def stop(config):
        raise Stop

    monkeypatch.setattr("compactvid.train.train", stop)  # the notes come before the first run trains
    with caplog.at_level(logging.INFO, logger="compactvid.experiments"), pytest.raises(Stop):
        run_experiment("exp3", "paper", str(tmp_path), data_dir=str(tmp_path), num_classes=5)
    assert any("float32 throughout, as the paper" in r.getMessage() for r in caplog.records)


@pytest.fixture(scope="module")
def trained_exp1(tmp_path_factory):
    """Experiment 1 trained at a tiny size: (its output folder, its data folder, what run_experiment returned)."""
    data = tmp_path_factory.mktemp("data")
    write_dataset(str(data), 90, 6, seed=3, num_shards=2, progress=False)
    out = tmp_path_factory.mktemp("exp1")
    results = run_experiment("exp1", "small", str(out), data_dir=str(data), num_classes=6, overrides=TINY)
    return out, data, results


def run_files(out) -> dict:
    """Each run's metrics.jsonl and checkpoint names, to tell whether a run was trained again."""
    return {name: ((out / name / "metrics.jsonl").read_text(), sorted(os.listdir(out / name / "checkpoints")))
            for name in ("dc", "cd")}


@pytest.mark.slow
def test_experiment_results_json_describes_each_run(trained_exp1):
    out, _, results = trained_exp1
    saved = json.loads((out / "results.json").read_text())
    assert saved["experiment"] == "exp1" and saved["profile"] == "small"
    assert [r["name"] for r in saved["runs"]] == ["dc", "cd"]
    for run in saved["runs"]:
        assert RUN_FIELDS <= set(run)
        assert 0 < run["best_val_gap"] <= 1 and run["final_val_gap"] <= run["best_val_gap"]
        assert run["compression"] > 1  # compact FC after DBoF
        assert run["inference_ms_per_video"] > 0 and run["train_videos_per_sec"] > 0
        assert run["float16_export_bytes"] > run["bytes"] / 2  # float16 weights, plus the graph
        assert "--use_d_matrix=True" in run["flags"] or run["name"] == "dc"
    # The learned diagonal has twice the parameters of the fixed one in the compact FC layers.
    assert saved["runs"][0]["parameters"] > saved["runs"][1]["parameters"]
    assert results == saved | {"changed_flags": results["changed_flags"]}


@pytest.mark.slow
def test_experiment_curves_reach_the_last_epoch(trained_exp1):
    for run in trained_exp1[2]["runs"]:
        epochs = [point[0] for point in run["curve"]]
        assert len(epochs) >= 3 and epochs == sorted(epochs) and epochs[-1] == pytest.approx(2.0)


@pytest.mark.slow
def test_experiment_writes_its_figure_and_table(trained_exp1):
    out = trained_exp1[0]
    assert (out / "exp1.png").stat().st_size > 10_000
    table = (out / "results.md").read_text()
    assert "Compact FC w/general approach" in table and "--fc_dbof_circulant" in table


@pytest.mark.slow
def test_experiment_refuses_to_retrain_its_runs_with_other_model_flags(trained_exp1, capsys):
    out, data, _ = trained_exp1
    before = run_files(out)
    # The CLI uses the small profile's sizes, not the tiny ones the runs were trained with.
    args = ["experiment", "exp1", "--output_dir", str(out), "--data_dir", str(data), "--num_classes", "6"]
    assert main(args) == 1
    assert "dbof_cluster_size" in capsys.readouterr().err
    assert run_files(out) == before


@pytest.mark.slow
def test_experiment_rerun_does_not_train_finished_runs_again(trained_exp1):
    out, data, results = trained_exp1
    before = run_files(out)
    again = run_experiment("exp1", "small", str(out), data_dir=str(data), num_classes=6, overrides=TINY)
    assert run_files(out) == before
    assert [r["best_val_gap"] for r in again["runs"]] == [r["best_val_gap"] for r in results["runs"]]


@pytest.mark.slow
def test_plot_command_draws_runs_and_refuses_other_folders(trained_exp1, tmp_path):
    out, data, _ = trained_exp1
    figure = tmp_path / "plot" / "gap.png"
    assert main(["plot", str(out / "dc"), str(out / "cd"), "--output", str(figure)]) == 0
    assert figure.stat().st_size > 10_000
    assert main(["plot", str(data), "--output", str(figure)]) == 1  # not a train_dir: one-line error
