"""The seed README's experiments as named lists of runs, each run being the README's command line.

`--profile paper` keeps the README's PARAMS (GPUs, the real dataset) and trains in float32 as the paper
(`PAPER_PROFILE`); `--profile small` overrides the few flags listed in `SMALL_PROFILE` so that an
experiment finishes on a 2-core CPU.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import statistics
import time
from dataclasses import dataclass

from compactvid.errors import CompactVidError, ConfigError
from compactvid.plotting import Curve, plot_panels, read_metrics, validation_curve
from compactvid.run_dir import PARAMS_FILE

log = logging.getLogger(__name__)

# The seed README's PARAMS, verbatim but for the data folder and the GPU count, which are filled in.
SEED_PARAMS = (
    "--train_data_pattern={data}train*.tfrecord,{data}validate[A-Za-z]*.tfrecord --frame_features=True "
    "--feature_names=rgb,audio --feature_sizes=1024,128 --iterations=15 --sample_random_frames=True "
    "--num_gpu={num_gpu} --num_readers=100 --batch_size=80 --num_epochs=15 --base_learning_rate=0.0002 "
    "--learning_rate_decay=0.8 --data_augmentation=True --n_bagging=10 --moe_num_mixtures=4 "
    "--moe_add_batch_norm=True --k_factor=1 --dbof_cluster_size=8192 --fc_hidden_size=512 "
    "--fv_cluster_size=64 --netvlad_cluster_size=64 --model=CirulantDiagonalNetwork --start_new_model"
)

# Validation files the seed does not train on (it trains on validate[A-Za-z]*).
EVAL_PATTERN = "{data}validate[0-9]*.tfrecord"

# The flags the paper profile changes, and why: the paper trained in float32, where compactvid's default
# is bfloat16 autocast on GPU; the seed summed its GPU towers' gradients before clipping them, where DDP
# averages them (no effect on one process).
PAPER_PROFILE: dict[str, str] = {"mixed_precision": "False", "sum_gradients": "True"}

# The flags the small profile changes, and why: a 2-core CPU must finish an experiment in minutes.
SMALL_PROFILE: dict[str, str] = {
    "num_gpu": "1",
    "num_readers": "1",
    "num_epochs": "6",
    "n_bagging": "4",
    "dbof_cluster_size": "1024",
    "base_learning_rate": "0.002",  # a few hundred steps instead of the paper's hundreds of thousands
    "eval_every_steps": "4",  # several points per epoch, as the seed's curves
}


@dataclass(frozen=True)
class Run:
    """One training run of an experiment: a short name (its sub-directory), its legend, its own flags."""

    name: str
    label: str
    flags: str
    color: str


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    runs: tuple[Run, ...]
    note: str = ""


_MOE = "--video_level_classifier_model=MoeModel"

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment(
        "exp1", "GAP given the pooling method used with DBoF embedding",
        (Run("dc", "Compact FC w/general approach", f"--add_dbof=True --fc_dbof_circulant=True {_MOE}", "red"),
         Run("cd", "Compact FC w/CD and D ∈ {-1, 1}",
             f"--add_dbof=True --use_d_matrix=True --fc_dbof_circulant=True {_MOE}", "blue")),
        note="The README's first command of experiment 1 omits --fc_dbof_circulant=True, yet its figure and "
             "the paper compare two *compact* FC layers (learned diagonal vs fixed +-1 diagonal); the flag is "
             "added so that the run is the one plotted."),
    Experiment(
        "exp2-dbof", "DBoF",
        (Run("dense", "Dense", f"--add_dbof=True {_MOE}", "red"),
         Run("compact", "Compact", f"--add_dbof=True --fc_dbof_circulant=True {_MOE}", "blue"))),
    Experiment(
        "exp2-netvlad", "NetVLAD",
        (Run("dense", "Dense", f"--add_netvlad=True {_MOE}", "red"),
         Run("compact", "Compact", f"--add_netvlad=True --fc_netvlad_circulant=True {_MOE}", "blue"))),
    Experiment(
        "exp2-netfv", "NetFV",
        (Run("dense", "Dense", f"--add_fisher_vector=True {_MOE}", "red"),
         Run("compact", "Compact", f"--add_fisher_vector=True --fc_fisher_circulant=True {_MOE}", "blue")),
        note="The README's compact NetFV command passes --fc_netvlad_circulant=True, which has no effect with "
             "only NetFV enabled; --fc_fisher_circulant=True is what it meant and what runs here."),
    Experiment(
        "exp3", "Comparison of the effect of compactness over\ndifferent layers with the base model",
        (Run("dense", "Dense Model", f"--add_dbof=True --no_audio=True {_MOE}", "red"),
         Run("compact-dbof", "Model with compact DBoF",
             f"--add_dbof=True --no_audio=True --dbof_circulant=True {_MOE}", "gold"),
         Run("compact-fc", "Model with compact FC",
             f"--add_dbof=True --no_audio=True --fc_dbof_circulant=True {_MOE}", "blue"),
         Run("compact-moe", "Model with compact MoE",
             "--add_dbof=True --no_audio=True --video_level_classifier_model=Circulant_MoeModel", "green"))),
]}

PROFILES = {"paper": PAPER_PROFILE, "small": SMALL_PROFILE}


def run_argv(run: Run, profile: str, data_dir: str, train_dir: str, num_gpu: int = 4,
             extra: dict[str, str] | None = None) -> list[str]:
    """The `compactvid train` arguments of one run: the README's command line, profile overrides applied.

    `data_dir` ends with a path separator (as the README's TRAIN_FOLDER). `extra` adds or replaces flags
    (e.g. --num_classes and --eval_data_pattern, which the seed did not have).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    argv = [f"--train_dir={train_dir}"] + shlex.split(run.flags)
    argv += shlex.split(SEED_PARAMS.format(data=data_dir, num_gpu=num_gpu))
    overrides = {**PROFILES[profile], **(extra or {})}
    return _override(argv, overrides)


def _override(argv: list[str], overrides: dict[str, str]) -> list[str]:
    """Replace `--name=value` entries of `argv` by the overrides' values; append overrides not present."""
    result, done = [], set()
    for arg in argv:
        name = arg[2:].split("=", 1)[0]
        if name in overrides:
            result.append(f"--{name}={overrides[name]}")
            done.add(name)
        else:
            result.append(arg)
    result += [f"--{name}={value}" for name, value in overrides.items() if name not in done]
    return result


# The synthetic dataset an experiment generates when it is given no --data_dir.
SYNTHETIC_DATA = {"num_videos": 800, "num_classes": 20, "seed": 0}


def ensure_synthetic_data(data_dir: str, num_videos: int, num_classes: int, seed: int, segments: bool = False) -> None:
    """Generate the synthetic dataset in `data_dir` once (with segment ratings: `segments`); later calls
    reuse it (a marker file says done)."""
    from compactvid.data.synthetic import write_dataset

    marker = os.path.join(data_dir, ".compactvid-dataset.json")
    wanted = {"num_videos": num_videos, "num_classes": num_classes, "seed": seed, **({"segments": True} if segments
                                                                                   else {})}
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == wanted:
                return
        raise ConfigError(f"{data_dir} holds a synthetic dataset made with other settings ({marker}); "
                          f"pass another --output_dir or --data_dir")
    write_dataset(data_dir, num_videos, num_classes, seed, overwrite=False, segments=segments)
    with open(marker, "w") as f:
        json.dump(wanted, f)


def existing_training_files(data: str) -> dict[str, str]:
    """{"train_data_pattern": ...} without the parts of the README's that match no file in `data` (the
    synthetic data and the 2018 release name their validation files validate0000..., which the README's
    validate[A-Za-z]* misses), or {} when every part matches: a part that matches nothing is an error."""
    from compactvid.data.paths import expand_pattern
    from compactvid.errors import DataError

    pattern = next(arg.split("=", 1)[1] for arg in shlex.split(SEED_PARAMS) if arg.startswith("--train_data_pattern="))
    parts = pattern.format(data=data).split(",")
    found = []
    for part in parts:
        try:
            expand_pattern(part)
            found.append(part)
        except DataError:
            log.info("%s matches no file: the runs train without it", part)
    return {} if len(found) == len(parts) else {"train_data_pattern": ",".join(found or parts)}


def experiment_data(output_dir: str, data_dir: str | None, num_classes: int | None,
                    segments: bool = False) -> tuple[str, dict[str, str]]:
    """(the data folder ending with a separator, the flags every run of an experiment gets beside the
    profile's: validation files, resuming, the training files that exist, --num_classes). Without
    `data_dir`, the synthetic dataset (with segment ratings: `segments`) in `output_dir`/data."""
    if data_dir is None:
        data_dir = os.path.join(output_dir, "data")
        ensure_synthetic_data(data_dir, **SYNTHETIC_DATA, segments=segments)
        num_classes = num_classes or SYNTHETIC_DATA["num_classes"]
    data = data_dir.rstrip("/") + "/"
    extra = {"eval_data_pattern": EVAL_PATTERN.format(data=data), "start_new_model": "False",
             **existing_training_files(data), **({"num_classes": str(num_classes)} if num_classes else {})}
    return data, extra


def run_experiment(name: str, profile: str, output_dir: str, data_dir: str | None = None,
                   num_classes: int | None = None, overrides: dict[str, str] | None = None) -> dict:
    """Train every run of experiment `name` (resuming or skipping finished ones), then write the results.

    Each run trains in `output_dir`/<run name> (a normal --train_dir). Returns the results dict also
    written to `output_dir`/results.json, beside results.md and the figure `<name>.png`.
    """
    experiment = EXPERIMENTS[name]
    data, extra = experiment_data(output_dir, data_dir, num_classes)
    extra.update(overrides or {})
    changed = {**PROFILES[profile], **extra}
    log.info("experiment %s, profile %s: flags changed from the README's: %s", name, profile,
             " ".join(f"--{k}={v}" for k, v in changed.items()))
    log.info("experiment %s: %s", name, "float32 throughout, as the paper (--mixed_precision=False)"
             if changed.get("mixed_precision") == "False" else
             "bfloat16 autocast on GPU (--mixed_precision), float32 on CPU")
    argvs = {}
    for run in experiment.runs:
        argv = argvs[run.name] = run_argv(run, profile, data, os.path.join(output_dir, run.name), extra=extra)
        train_run(argv, f"run {run.name} of {name}")
    results = collect_results(experiment, profile, output_dir, argvs, EVAL_PATTERN.format(data=data))
    results["changed_flags"] = changed
    write_results(results, experiment, output_dir)
    return results


def train_run(argv: list[str], what: str) -> None:
    """`compactvid train` with `argv` (resuming, or doing nothing when finished); CompactVidError naming
    `what` and its train_dir when the run stops."""
    from compactvid.flags import parse_config
    from compactvid.train import train

    log.info("%s: compactvid train %s", what, " ".join(argv))
    config, _ = parse_config(argv)
    status = train(config)
    if status != 0:
        raise CompactVidError(f"{what} stopped (exit status {status}); see {config.train_dir}; rerun the same "
                              f"command to resume it")


def inference_ms_per_video(train_dir: str, data_pattern: str, videos: int = 40) -> float:
    """Median milliseconds of one forward pass on one video (batch 1, one thread) with the newest checkpoint."""
    import torch

    from compactvid.data.loader import make_loader, prepare_frames
    from compactvid.evaluate import load_trained_model

    config, model, _ = load_trained_model(train_dir)
    config.num_readers = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times = []
    try:
        with torch.inference_mode():
            batches = make_loader(data_pattern, config, training=False, batch_size=1, dequantize=False)
            for i, batch in enumerate(batches):
                started = time.perf_counter()
                model(prepare_frames(batch["frames"], batch["num_frames"]))
                if i >= 3:  # the first calls allocate and warm caches
                    times.append(time.perf_counter() - started)
                if len(times) == videos:
                    break
    finally:
        torch.set_num_threads(threads)
    return 1000 * statistics.median(times)


def float16_export_bytes(train_dir: str) -> int:
    """Bytes of the newest checkpoint's float16 ONNX export (`compactvid export --dtype=float16`)."""
    from compactvid.evaluate import load_trained_model
    from compactvid.export import export_bytes, input_shape

    config, model, _ = load_trained_model(train_dir)
    return export_bytes(model, input_shape(config.model_args()))


def collect_results(experiment: Experiment, profile: str, output_dir: str, argvs: dict[str, list[str]],
                    eval_pattern: str, artifact_bytes: bool = True) -> dict:
    """The results.json dict of an experiment whose runs are trained in `output_dir`/<run name>;
    `artifact_bytes`: with each run's float16 ONNX export's bytes (an export per run: seconds to minutes)."""
    runs = []
    for run in experiment.runs:
        train_dir = os.path.join(output_dir, run.name)
        records = read_metrics(train_dir)
        with open(os.path.join(train_dir, PARAMS_FILE)) as f:
            params = json.load(f)
        validations = [r for r in records if "val_gap" in r]
        if not validations:
            raise CompactVidError(f"{train_dir}: no validation was logged; was --eval_data_pattern empty?")
        last = validations[-1]
        # Videos per second (the table's unit): the logged examples per second, two per video under augmentation.
        speeds = [r["examples_per_sec"] * r["videos"] / r["examples"] for r in records if r.get("examples_per_sec")]
        runs.append({
            "name": run.name, "label": run.label, "flags": " ".join(argvs[run.name]),
            "parameters": params["total"], "bytes": params["bytes"]["float32"],
            "float16_bytes": params["bytes"]["float16"],
            **({"float16_export_bytes": float16_export_bytes(train_dir)} if artifact_bytes else {}),
            "compression": params["dense_total"] / params["total"],
            "best_val_gap": max(r["val_gap"] for r in validations), "final_val_gap": last["val_gap"],
            "val_map": last["val_map"], "val_hit_at_1": last["val_hit_at_1"], "val_perr": last["val_perr"],
            "train_videos_per_sec": statistics.median(speeds) if speeds else None,
            "inference_ms_per_video": inference_ms_per_video(train_dir, eval_pattern),
            "curve": [[round(x, 4), y] for x, y in validation_curve(records)],
        })
    return {"experiment": experiment.name, "profile": profile, "runs": runs}


def results_table(results: dict) -> str:
    """results.json as a Markdown table."""
    lines = ["| Run | Parameters | MB (float32) | MB (float16 export) | Compression | Best val GAP | Final val GAP "
             "| mAP | Hit@1 | PERR | Train videos/s | Inference ms/video |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        speed = f"{r['train_videos_per_sec']:.0f}" if r["train_videos_per_sec"] else "-"
        lines.append(f"| {r['label']} | {r['parameters']:,} | {r['bytes'] / 1e6:.1f} "
                     f"| {r['float16_export_bytes'] / 1e6:.1f} | {r['compression']:.2f}x "
                     f"| {r['best_val_gap']:.4f} | {r['final_val_gap']:.4f} | {r['val_map']:.4f} "
                     f"| {r['val_hit_at_1']:.4f} | {r['val_perr']:.4f} | {speed} "
                     f"| {r['inference_ms_per_video']:.2f} |")
    return "\n".join(lines) + "\n"


def write_results(results: dict, experiment: Experiment, output_dir: str) -> str:
    """Write results.json, results.md and the figure; return the figure's path."""
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    header = f"# {experiment.name} ({results['profile']} profile)\n\n"
    if experiment.note:
        header += experiment.note + "\n\n"
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(header + results_table(results))
    figure = os.path.join(output_dir, f"{experiment.name}.png")
    curves = [Curve(r["label"], [tuple(p) for p in r["curve"]], run.color)
              for r, run in zip(results["runs"], experiment.runs)]
    plot_panels([(experiment.title, curves)], figure)
    return figure
