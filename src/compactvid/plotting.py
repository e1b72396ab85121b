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


@dataclass(frozen=True)
class FrontierPoint:
    """One run on the frontier figure: its name, family (colour), structure (marker: ``dense``,
    ``circulant``, ``fully-compact``, ``lowrank``, ``monarch``), budget (a label such as ``4x``, or ""),
    bytes and GAP."""

    name: str
    family: str
    structure: str
    budget: str
    bytes: int
    gap: float


def pareto_front(points: Sequence[FrontierPoint]) -> list[FrontierPoint]:
    """The points no other point beats, by bytes ascending: each is better than every smaller point (a
    point of equal bytes and GAP to a front point is on the front too)."""
    front: list[FrontierPoint] = []
    for point in sorted(points, key=lambda p: (p.bytes, -p.gap)):
        if not front or point.gap > front[-1].gap or (point.gap == front[-1].gap and point.bytes == front[-1].bytes):
            front.append(point)
    return front


# Marker per structure.
_MARKERS = {"dense": "o", "circulant": "s", "fully-compact": "P", "lowrank": "^", "monarch": "D"}


def plot_frontier(points: Sequence[FrontierPoint], colors: dict[str, str], output: str) -> None:
    """Validation GAP against bytes (log scale), one colour per family and one marker per structure, the
    Pareto front drawn as a step line through its points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8.4, 5.2))
    for point in points:
        ax.scatter(point.bytes, point.gap, color=colors[point.family], marker=_MARKERS[point.structure], s=46,
                   edgecolors="black", linewidths=0.4, zorder=3)
        if point.budget:
            ax.annotate(point.budget, (point.bytes, point.gap), textcoords="offset points", xytext=(4, 3),
                        fontsize=7, color=colors[point.family])
    front = pareto_front(points)
    ax.step([p.bytes for p in front], [p.gap for p in front], where="post", color="black", linewidth=1.0,
            linestyle="--", zorder=2, label="Pareto front")
    ax.scatter([p.bytes for p in front], [p.gap for p in front], s=150, facecolors="none", edgecolors="black",
               linewidths=1.0, zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("Bytes of the weights in float16 (log scale)")
    ax.set_ylabel("Best validation GAP")
    ax.set_title("Validation GAP against bytes", fontweight="bold")
    ax.grid(which="both", linestyle="--", alpha=0.4)
    handles = [Line2D([], [], color=color, marker="o", linestyle="", label=family) for family, color in colors.items()
               if any(p.family == family for p in points)]
    handles += [Line2D([], [], color="gray", marker=marker, linestyle="", label=structure)
                for structure, marker in _MARKERS.items()]
    handles.append(Line2D([], [], color="black", linestyle="--", label="Pareto front"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, frameon=True)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=150)
    plt.close(fig)
