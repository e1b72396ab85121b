"""Validation GAP against epochs, read from train_dirs' metrics.jsonl, drawn as the seed's figures are."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from compactvid.config import Config
from compactvid.errors import DataError
from compactvid.models.args import EMBEDDINGS
from compactvid.run_dir import CONFIG_FILE, METRICS_FILE, read_metrics


def validation_curve(records: Sequence[dict]) -> list[tuple[float, float]]:
    """[(epochs, val_gap)] of every validation, with fractional epochs = examples / examples per epoch.

    Examples per epoch are those seen by the end of the first epoch (the largest `examples` logged in
    epoch 1); a run stopped inside its first epoch is plotted against that epoch's examples so far.
    """
    validations = [r for r in records if "val_gap" in r]
    if not validations:
        return []
    per_epoch = max(r["examples"] for r in records if r["epoch"] == 1) if any(
        r["epoch"] == 1 for r in records) else max(r["examples"] for r in records)
    return [(r["examples"] / per_epoch, r["val_gap"]) for r in validations]


def describe(config: Config) -> str:
    """A legend for a run, from its config: embeddings, what is compact, the classifier."""
    embeddings = [e.label for e in EMBEDDINGS.values() if getattr(config, e.add_flag)]
    compact = ["DBoF"] if config.dbof_circulant else []
    compact += ["FC" for e in EMBEDDINGS.values() if getattr(config, e.fc_circulant_flag)]
    if config.video_level_classifier_model != "MoeModel":
        compact += ["MoE"] if "Circulant" in config.video_level_classifier_model else []
    parts = ["+".join(embeddings) or config.model]
    parts.append(f"compact {', '.join(dict.fromkeys(compact))}" if compact else "dense")
    if config.use_d_matrix and "FC" in compact:
        parts.append("D in {-1,1}")
    if config.no_audio:
        parts.append("no audio")
    return ", ".join(parts)


@dataclass(frozen=True)
class Curve:
    label: str
    points: list[tuple[float, float]]
    color: str | None = None


def plot_panels(panels: Sequence[tuple[str, Sequence[Curve]]], output: str,
                ylabels: Sequence[str] | None = None) -> None:
    """Draw one panel per (title, curves) side by side: validation GAP (or `ylabels[i]`) vs epochs, as the
    seed's figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.2), squeeze=False)
    for index, (ax, (title, curves)) in enumerate(zip(axes[0], panels)):
        for curve in curves:
            ax.plot([x for x, _ in curve.points], [y for _, y in curve.points], color=curve.color, label=curve.label, linewidth=1.6,
                    marker="o" if len(curve.points) < 15 else None, markersize=3)
        ax.set_title(title, fontweight="bold")
        ax.set_xlabel("Epochs")
        ax.set_ylabel(ylabels[index] if ylabels else "Validation GAP")
        ax.set_xlim(left=0)
        ax.grid(axis="y", linestyle="--", alpha=0.6)
        ax.legend(loc="lower right" if len(curves) < 3 else "best", frameon=True)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=150)
    plt.close(fig)


def plot_runs(train_dirs: Sequence[str], output: str, title: str = "Validation GAP") -> None:
    """`compactvid plot`: one curve per train_dir, labelled from its config.json."""
    curves = []
    for train_dir in train_dirs:
        config = Config.from_json_file(os.path.join(train_dir, CONFIG_FILE))
        points = validation_curve(read_metrics(train_dir))
        if not points:
            raise DataError(f"{os.path.join(train_dir, METRICS_FILE)}: no validation yet; train with "
                            f"--eval_data_pattern")
        curves.append(Curve(f"{describe(config)} ({os.path.basename(os.path.normpath(train_dir))})", points))
    plot_panels([(title, curves)], output)
