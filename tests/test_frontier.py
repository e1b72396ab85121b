"""The frontier experiment: its runs and their flags, the Pareto front, and the whole experiment at a tiny size."""

import json

import pytest

from compactvid.cli import main
from compactvid.data.synthetic import write_dataset
from compactvid.flags import parse_config
from compactvid.frontier import FRONTIER_FAMILIES, frontier_runs, parse_families, run_frontier
from compactvid.fully_compact import FULLY_COMPACT
from compactvid.errors import ConfigError
from compactvid.models.registry import create_model
from compactvid.models.report import parameter_report
from compactvid.plotting import FrontierPoint, pareto_front

TINY = {"num_epochs": "1", "dbof_cluster_size": "32", "fc_hidden_size": "16", "iterations": "5",
        "n_bagging": "1", "batch_size": "8", "moe_num_mixtures": "2", "netvlad_cluster_size": "4",
        "nextvlad_cluster_size": "4", "nextvlad_hidden_size": "16", "groups": "4", "log_every_steps": "2"}


def test_nine_runs_per_family_with_their_levels_flags():
    runs = frontier_runs()
    assert len(runs) == 27 and len({r.name for r in runs}) == 27
    for family in FRONTIER_FAMILIES:
        levels = [r.level for r in runs if r.family == family]
        assert levels == ["dense", "circulant", "fully-compact", "lowrank-1x", "lowrank-4x", "lowrank-16x",
                          "monarch-1x", "monarch-4x", "monarch-16x"]
        fully = next(r for r in runs if r.family == family and r.level == "fully-compact")
        for run in runs:
            if run.family == family and run.budget:
                # the structure replaces the circulant layers of the fully compact network, nothing else
                assert run.flags == fully.flags + (f"--compact_layer={run.structure}", f"--compact_budget={run.budget}")
        assert set(FULLY_COMPACT[family]) <= set(fully.flags)


@pytest.mark.parametrize("structure", ["lowrank", "monarch"])
def test_budgets_grow_the_structured_layers(structure):
    """At 1x, 4x, 16x the network holds more weights, all in its structured layers (NetVLAD at the small
    profile's sizes)."""
    sizes = ["--netvlad_cluster_size=16", "--fc_hidden_size=512", "--num_classes=20", "--moe_num_mixtures=4"]
    totals, dense = [], set()
    for run in frontier_runs(("NetVLAD",)):
        if run.structure == structure:
            config, _ = parse_config(list(run.flags) + sizes)
            report = parameter_report(create_model(config.model_args()), config.model_args())
            totals.append(report["total"])
            dense.add(sum(r["params"] for r in report["components"] if not r["structure"]))
    assert totals[0] < totals[1] < totals[2] and len(dense) == 1


def test_pareto_front_keeps_the_runs_no_smaller_run_beats():
    points = [FrontierPoint(name, "DBoF", "dense", "", size, gap) for name, size, gap in [
        ("a", 10, 0.5), ("b", 20, 0.4), ("c", 30, 0.6), ("d", 30, 0.55), ("e", 40, 0.6), ("f", 5, 0.1)]]
    assert [p.name for p in pareto_front(points)] == ["f", "a", "c"]
    assert pareto_front([]) == []


def test_families_flag_is_checked():
    assert parse_families("DBoF, NeXtVLAD") == ("DBoF", "NeXtVLAD")
    with pytest.raises(ConfigError, match="--families=NetFV: choose among DBoF,NetVLAD,NeXtVLAD"):
        parse_families("NetFV")


def test_families_flag_is_refused_outside_the_frontier(capsys, tmp_path):
    assert main(["experiment", "exp1", "--families=DBoF", f"--output_dir={tmp_path}"]) == 1
    assert "only the frontier experiment reads it" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# Two of the three families, to keep the suite's time: NetVLAD's runs differ from DBoF's only by the flags
# the unit tests above check. Resuming is run_experiment's (tests/test_experiments.py).
FAMILIES = ("DBoF", "NeXtVLAD")


@pytest.mark.slow
def test_frontier_experiment_at_a_tiny_size(tmp_path):
    data = tmp_path / "data"
    write_dataset(str(data), 90, 6, seed=3, num_shards=2, progress=False)
    out = tmp_path / "frontier"
    results = run_frontier("small", str(out), data_dir=str(data), num_classes=6, families=FAMILIES, overrides=TINY)
    saved = json.loads((out / "results.json").read_text())
    assert saved == results and len(saved["runs"]) == 18
    for run in saved["runs"]:
        assert 0 < run["best_val_gap"] <= 1 and run["inference_ms_per_video"] > 0 and run["train_videos_per_sec"] > 0
        assert run["float16_bytes"] * 2 == run["bytes"] == run["parameters"] * 4 and "float16_export_bytes" not in run
        assert f"--train_dir={out / run['name']}" in run["flags"]
    by_name = {r["name"]: r for r in saved["runs"]}
    for family in ("dbof", "nextvlad"):
        dense, fully = by_name[f"{family}-dense"], by_name[f"{family}-fully-compact"]
        assert fully["parameters"] < by_name[f"{family}-circulant"]["parameters"] < dense["parameters"]
        assert by_name[f"{family}-lowrank-1x"]["parameters"] < by_name[f"{family}-lowrank-16x"]["parameters"]
        assert "--compact_layer=monarch" in by_name[f"{family}-monarch-4x"]["flags"]
    front = [r for r in saved["runs"] if r["pareto"]]
    smallest = min(saved["runs"], key=lambda r: (r["float16_bytes"], -r["best_val_gap"]))
    best = max(saved["runs"], key=lambda r: (r["best_val_gap"], -r["float16_bytes"]))
    assert smallest in front and best in front
    assert all(not (o["float16_bytes"] <= r["float16_bytes"] and o["best_val_gap"] > r["best_val_gap"])
               for r in front for o in saved["runs"])
    table = (out / "results.md").read_text()
    assert table.count("| yes |") == len(front) and "NeXtVLAD | monarch-16x" in table
    assert (out / "frontier.png").stat().st_size > 10_000
