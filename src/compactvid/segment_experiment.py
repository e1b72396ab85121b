"""The `segments` experiment: a dense and a compact model trained on whole videos, then fine-tuned on
rated 5-frame segments (2019 release), with the segment mAP@N before and after fine-tuning.

The two models are experiment 2's DBoF pair (dense or circulant FC after DBoF). Each is first the seed
README's video-level run (`<output>/<name>`, the profile's flags, as the other experiments), then a
second run `<output>/<name>-segments`: ``--segment_labels --init_from=<output>/<name>`` on the rated
segments of the even-numbered validate files. The segment mAP of both models on the odd-numbered files,
before fine-tuning (the video-level model scoring segments) and after, is the result; results.json,
results.md and the figure (video-level GAP, then segment mAP before and after fine-tuning) go to the
output directory. Finished runs are not trained again.
"""

from __future__ import annotations

import json
import logging
import os
import statistics

from compactvid.errors import CompactVidError
from compactvid.experiments import EXPERIMENTS, SMALL_PROFILE, experiment_data, run_argv, train_run
from compactvid.plotting import Curve, plot_panels, read_metrics, validation_curve
from compactvid.run_dir import CONFIG_FILE, PARAMS_FILE

log = logging.getLogger(__name__)

NAME = "segments"
RUNS = EXPERIMENTS["exp2-dbof"].runs
SEGMENT_TRAIN = "{data}validate*[02468].tfrecord"
SEGMENT_EVAL = "{data}validate*[13579].tfrecord"

# Fine-tuning, on top of each run's own flags, and why: a few hundred rated segments make a few steps
# per epoch, and fine-tuning takes smaller steps than training from scratch. No validation during it:
# ranking every segment cost 10-30 times a video-level validation (a synthetic video has ~40 segments),
# so the segment mAP is measured once before and once after.
FINE_TUNING = {"segment_labels": "True", "data_augmentation": "False", "num_epochs": "4",
               "base_learning_rate": "0.0005", "eval_data_pattern": ""}


def run_segment_experiment(profile: str, output_dir: str, data_dir: str | None = None,
                           num_classes: int | None = None, overrides: dict[str, str] | None = None) -> dict:
    """Train, fine-tune and score both models (module docstring); returns the results, also written to
    `output_dir`/results.json beside results.md and segments.png. `overrides` replace flags of every run."""
    from compactvid.segment_evaluation import evaluate_segments_checkpoint

    data, extra = experiment_data(output_dir, data_dir, num_classes, segments=True)
    extra.update(overrides or {})
    segment_eval = SEGMENT_EVAL.format(data=data)
    runs = []
    for run in RUNS:
        video_dir, segment_dir = os.path.join(output_dir, run.name), os.path.join(output_dir, f"{run.name}-segments")
        train_run(run_argv(run, profile, data, video_dir, extra=extra), f"run {run.name} of {NAME}")
        before = evaluate_segments_checkpoint(video_dir, segment_eval)
        fine_tuning = {**extra, **FINE_TUNING, "train_data_pattern": SEGMENT_TRAIN.format(data=data),
                       "init_from": video_dir, **(overrides or {})}
        argv = run_argv(run, profile, data, segment_dir, extra=fine_tuning)
        train_run(argv, f"run {run.name}-segments of {NAME}")
        after = evaluate_segments_checkpoint(segment_dir, segment_eval)
        runs.append(_run_results(run, video_dir, segment_dir, before, after, argv))
    changed = {**(SMALL_PROFILE if profile == "small" else {}), **extra, **FINE_TUNING}
    results = {"experiment": NAME, "profile": profile, "runs": runs, "changed_flags": changed}
    write_segment_results(results, output_dir)
    return results


def _run_results(run, video_dir: str, segment_dir: str, before: dict, after: dict, argv: list[str]) -> dict:
    """One model's row of results.json."""
    with open(os.path.join(video_dir, PARAMS_FILE)) as f:
        params = json.load(f)
    video_records, segment_records = read_metrics(video_dir), read_metrics(segment_dir)
    gaps = [r["val_gap"] for r in video_records if "val_gap" in r]
    speeds = [r["examples_per_sec"] for r in segment_records if r.get("examples_per_sec")]
    with open(os.path.join(segment_dir, CONFIG_FILE)) as f:
        epochs = json.load(f)["num_epochs"]
    if not gaps:
        raise CompactVidError(f"{video_dir}: no validation was logged; was --eval_data_pattern empty?")
    return {
        "name": run.name, "label": run.label, "fine_tuning_flags": " ".join(argv),
        "parameters": params["total"], "compression": params["dense_total"] / params["total"],
        "video_val_gap": gaps[-1], "segment_map_before": before["map_at_n"], "segment_map_after": after["map_at_n"],
        "segment_classes": after["num_classes"], "rated_segments": after["rated_segments"],
        "fine_tuning_segments_per_sec": statistics.median(speeds) if speeds else None,
        "video_curve": [[round(x, 4), y] for x, y in validation_curve(video_records)],
        "segment_curve": [[0.0, before["map_at_n"]], [float(epochs), after["map_at_n"]]],
    }


def segment_results_table(results: dict) -> str:
    """results.json as a Markdown table."""
    lines = ["| Run | Parameters | Compression | Video val GAP | Segment mAP before | Segment mAP after "
             "| Fine-tuning segments/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        speed = f"{r['fine_tuning_segments_per_sec']:.0f}" if r["fine_tuning_segments_per_sec"] else "-"
        lines.append(f"| {r['label']} | {r['parameters']:,} | {r['compression']:.2f}x | {r['video_val_gap']:.4f} "
                     f"| {r['segment_map_before']:.4f} | {r['segment_map_after']:.4f} | {speed} |")
    return "\n".join(lines) + "\n"


def write_segment_results(results: dict, output_dir: str) -> str:
    """Write results.json, results.md and segments.png; return the figure's path."""
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    first = results["runs"][0]
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(f"# {NAME} ({results['profile']} profile)\n\nSegment mAP@N on the rated segments of "
                f"{SEGMENT_EVAL.format(data='')} ({first['segment_classes']} classes, {first['rated_segments']} "
                f"rated pairs), before and after fine-tuning on those of {SEGMENT_TRAIN.format(data='')}.\n\n"
                + segment_results_table(results))
    figure = os.path.join(output_dir, f"{NAME}.png")
    colors = {run.name: run.color for run in RUNS}
    panels = [("Video level", [Curve(r["label"], [tuple(p) for p in r["video_curve"]], colors[r["name"]])
                               for r in results["runs"]]),
              ("Segment mAP@N, before and after fine-tuning", [Curve(r["label"], [tuple(p) for p in r["segment_curve"]], colors[r["name"]])
                                          for r in results["runs"]])]
    plot_panels(panels, figure, ylabels=["Validation GAP", "Segment mAP@N"])
    return figure
