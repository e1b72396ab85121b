"""The `frontier` experiment: DBoF, NetVLAD and NeXtVLAD networks at every level of compactness and with
every structure, trained alike and judged on one figure, validation GAP against the bytes of the float16
weights, with the Pareto front marked.

Nine runs per family (`compactvid.fully_compact` holds the families' flags):

- ``dense``; ``circulant``: the paper's compact switches (`PAPER_COMPACT`); ``fully-compact``: every
  matrix above 1 M parameters at the README's sizes made circulant (`FULLY_COMPACT`);
- ``lowrank-1x``, ``-4x``, ``-16x`` and ``monarch-1x``, ``-4x``, ``-16x``: the fully compact network's
  switches building low-rank or Monarch layers (``--compact_layer``) sized at 1, 4 and 16 times the
  weights of the circulant layer each switch builds (``--compact_budget``): the fully compact set,
  because it is the one where every large matrix is structured, so that the structure is what differs.

Each run is the seed README's PARAMS with the profile's changes (as the paper's experiments), then the
frontier profile's sizes of its family, then its family's and level's flags. ``--profile small`` shrinks
the networks and the schedule so that the 27 runs finish on a 2-core CPU within half an hour;
``--profile paper`` keeps the README's sizes (NeXtVLAD: its authors' local script's) for GPUs and the
real dataset. Finished runs are not trained again.

Bytes are those of the trained parameters stored in float32 and in float16, what the structure decides;
a float16 ONNX artifact adds its graph (`compactvid export`; `benchmarks/bench_export.py` measures the
files), left out here because exporting 27 models would take longer than training them on a CPU.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from compactvid.errors import ConfigError
from compactvid.experiments import (EVAL_PATTERN, PROFILES, Experiment, Run, collect_results, experiment_data,
                                    run_argv, train_run)
from compactvid.fully_compact import FAMILIES, FULLY_COMPACT, PAPER_COMPACT
from compactvid.plotting import FrontierPoint, pareto_front, plot_frontier

log = logging.getLogger(__name__)

NAME = "frontier"
FRONTIER_FAMILIES = ("DBoF", "NetVLAD", "NeXtVLAD")
BUDGETS = (1, 4, 16)
STRUCTURES = ("lowrank", "monarch")

# Sizes per profile and family, on top of the profile's flags, and why. Paper: NeXtVLAD as its authors'
# local script trains it (the seed's PARAMS have no NeXtVLAD flags). Small: a 2-core CPU trains the 27
# runs within half an hour: 3 epochs of 2 bagged samples (27 runs, not 2 to 4 as the paper's experiments),
# validation once per epoch, NetVLAD with 16 clusters (64 make 36 M dense parameters) and NeXtVLAD with
# 16 clusters and a 256-wide hidden layer (its script's 128 and 2048 make 89 M); batches of 20 videos:
# four times the updates for the same computation (with 80, the 21 updates of 3 epochs left the fully
# compact DBoF network at 0.42 validation GAP, 0.53 with 20).
FRONTIER_SIZES: dict[str, dict[str, dict[str, str]]] = {
    "paper": {"NeXtVLAD": {"nextvlad_cluster_size": "128", "nextvlad_hidden_size": "2048"}},
    "small": {"*": {"num_epochs": "3", "n_bagging": "2", "batch_size": "20", "eval_every_steps": "0"},
              "NetVLAD": {"netvlad_cluster_size": "16"},
              "NeXtVLAD": {"nextvlad_cluster_size": "16", "nextvlad_hidden_size": "256"}},
}
COLORS = {"DBoF": "tab:red", "NetVLAD": "tab:blue", "NeXtVLAD": "tab:green"}


@dataclass(frozen=True)
class FrontierRun:
    """One run: its family, its structure (``dense``, ``circulant``, ``fully-compact``, ``lowrank``,
    ``monarch``), the budget of a low-rank or Monarch run (multiple of the circulant layers' weights) and
    the flags that make it so (family's and structure's)."""

    family: str
    structure: str
    flags: tuple[str, ...]
    budget: int | None = None

    @property
    def level(self) -> str:
        """``dense``, ``circulant``, ``fully-compact``, ``lowrank-4x``, ..."""
        return self.structure if self.budget is None else f"{self.structure}-{self.budget}x"

    @property
    def name(self) -> str:
        return f"{self.family.lower()}-{self.level}"


def frontier_runs(families: tuple[str, ...] = FRONTIER_FAMILIES) -> list[FrontierRun]:
    """The runs of `families`, nine per family, in the module doc's order."""
    runs = []
    for family in families:
        base = FAMILIES[family]
        runs += [FrontierRun(family, "dense", tuple(base)),
                 FrontierRun(family, "circulant", tuple(base + PAPER_COMPACT[family])),
                 FrontierRun(family, "fully-compact", tuple(base + FULLY_COMPACT[family]))]
        runs += [FrontierRun(family, structure, tuple(base + FULLY_COMPACT[family] + [
            f"--compact_layer={structure}", f"--compact_budget={budget}"]), budget)
                 for structure in STRUCTURES for budget in BUDGETS]
    return runs


def parse_families(text: str) -> tuple[str, ...]:
    """``"DBoF,NeXtVLAD"`` -> the families, checked against `FRONTIER_FAMILIES` (ConfigError names the flag)."""
    families = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in families if name not in FRONTIER_FAMILIES]
    if unknown or not families:
        raise ConfigError(f"--families={text}: choose among {','.join(FRONTIER_FAMILIES)}")
    return families


def _as_overrides(flags: tuple[str, ...]) -> dict[str, str]:
    """``("--add_dbof", "--compact_budget=4")`` -> ``{"add_dbof": "True", "compact_budget": "4"}``."""
    return dict((flag[2:].split("=", 1) + ["True"])[:2] for flag in flags)


def run_frontier(profile: str, output_dir: str, data_dir: str | None = None, num_classes: int | None = None,
                 families: tuple[str, ...] = FRONTIER_FAMILIES, overrides: dict[str, str] | None = None) -> dict:
    """Train every run of `families` in `output_dir`/<run name> (resuming or skipping finished ones),
    then write results.json, results.md and frontier.png there; returns the results. `overrides` replace
    flags of every run (after the family's sizes, before its level's flags)."""
    if profile not in PROFILES:
        raise ConfigError(f"--profile={profile}: choose one of {', '.join(PROFILES)}")
    data, extra = experiment_data(output_dir, data_dir, num_classes)
    sizes = FRONTIER_SIZES[profile]
    runs, argvs = frontier_runs(families), {}
    # The flags live in each run's overrides (they must replace the seed's --model), not in Run.flags.
    experiment = Experiment(NAME, "Validation GAP against bytes",
                            tuple(Run(r.name, f"{r.family} {r.level}", "", COLORS[r.family]) for r in runs))
    changed = {**PROFILES[profile], **extra, **(overrides or {})}
    log.info("experiment %s, profile %s: %d runs; flags changed from the README's: %s; sizes per family: %s", NAME,
             profile, len(runs), " ".join(f"--{k}={v}" for k, v in changed.items()), sizes)
    for run, listed in zip(runs, experiment.runs):
        flags = {**extra, **sizes.get("*", {}), **sizes.get(run.family, {}), **(overrides or {}),
                 **_as_overrides(run.flags)}
        argv = argvs[run.name] = run_argv(listed, profile, data, os.path.join(output_dir, run.name), extra=flags)
        train_run(argv, f"run {run.name} of {NAME}")
    results = collect_results(experiment, profile, output_dir, argvs, EVAL_PATTERN.format(data=data),
                              artifact_bytes=False)
    for row, run in zip(results["runs"], runs):
        row.update(family=run.family, structure=run.structure, budget=run.budget, level=run.level)
        row.pop("curve")
    front = {p.name for p in pareto_front([_point(row) for row in results["runs"]])}
    for row in results["runs"]:
        row["pareto"] = row["name"] in front
    results["changed_flags"] = changed
    results["family_sizes"] = sizes
    write_frontier_results(results, output_dir)
    return results


def _point(row: dict) -> FrontierPoint:
    return FrontierPoint(row["name"], row["family"], row["structure"], f"{row['budget']}x" if row["budget"] else "",
                         row["float16_bytes"], row["best_val_gap"])


def frontier_table(results: dict) -> str:
    """results.json as a Markdown table, Pareto-optimal runs in bold."""
    lines = ["| Family | Run | Parameters | MB (float32) | MB (float16) | Best val GAP | Train videos/s "
             "| Batch-1 ms | Pareto |", "|---|---|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in results["runs"]:
        speed = f"{r['train_videos_per_sec']:.0f}" if r["train_videos_per_sec"] else "-"
        gap = f"**{r['best_val_gap']:.4f}**" if r["pareto"] else f"{r['best_val_gap']:.4f}"
        lines.append(f"| {r['family']} | {r['level']} | {r['parameters']:,} | {r['bytes'] / 1e6:.3f} "
                     f"| {r['float16_bytes'] / 1e6:.3f} | {gap} | {speed} "
                     f"| {r['inference_ms_per_video']:.2f} | {'yes' if r['pareto'] else ''} |")
    return "\n".join(lines) + "\n"


def write_frontier_results(results: dict, output_dir: str) -> str:
    """Write results.json, results.md and frontier.png; return the figure's path."""
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(f"# {NAME} ({results['profile']} profile)\n\nBest validation GAP against the bytes of each "
                f"run's weights in float16; the Pareto front (no other run smaller and better) in bold.\n\n"
                + frontier_table(results))
    figure = os.path.join(output_dir, f"{NAME}.png")
    plot_frontier([_point(row) for row in results["runs"]], COLORS, figure)
    return figure
