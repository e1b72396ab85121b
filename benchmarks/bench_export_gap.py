"""Benchmark: what low-precision artifacts cost in GAP@20, on generated data, against their checkpoint.

Trains (or reuses) experiment 2's DBoF runs at the small profile on the synthetic dataset
(`compactvid experiment exp2-dbof --profile small --output_dir WORK_DIR/exp2-dbof`: a dense and a
compact model, 20 classes, 1024 DBoF clusters, a 2-core CPU trains both in minutes), then writes each
run's artifacts of ARTIFACTS with `export_model` and scores each, as `compactvid export --validate`
does, on the experiment's validation files (the same sampled frames for the checkpoint and every
artifact): GAP@20 of the artifact, of the checkpoint, and the file's bytes at this trained size.

    python benchmarks/bench_export_gap.py --work_dir runs/export-gap --output bench_export_gap.json

Bytes at the README's sizes are `bench_export.py`'s. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import bench_export  # this directory's: python benchmarks/bench_export_gap.py
from compactvid.commands.export import validate
from compactvid.evaluate import load_trained_model
from compactvid.experiments import EVAL_PATTERN
from compactvid.export import export_model, input_shape, load_artifact

EXPERIMENT = "exp2-dbof"
# bench_export's artifacts, and bfloat16 storage: its 8-bit mantissa is where a GAP cost would show first.
ARTIFACTS = {**bench_export.ARTIFACTS, "onnx-bfloat16": ("onnx", "bfloat16", None)}


def trained_runs(work_dir: str) -> tuple[str, list[str]]:
    """The experiment's directory under `work_dir` (trained now unless already finished) and its runs."""
    directory = os.path.join(work_dir, EXPERIMENT)
    if not os.path.exists(os.path.join(directory, "results.json")):
        subprocess.run([sys.executable, "-m", "compactvid.cli", "experiment", EXPERIMENT, "--profile", "small",
                        "--output_dir", directory], check=True)
    with open(os.path.join(directory, "results.json")) as f:
        runs = [run["name"] for run in json.load(f)["runs"]]
    return directory, runs


def bench_run(train_dir: str, pattern: str, directory: str) -> dict:
    """Bytes and GAP@20 (artifact, checkpoint) of each of ARTIFACTS for the run in `train_dir`."""
    config, model, state = load_trained_model(train_dir)
    shape = input_shape(config.model_args())
    result = {"parameters": sum(p.numel() for p in model.parameters()), "step": state["position"]["step"]}
    for key, (format, dtype, quantize) in ARTIFACTS.items():
        path = os.path.join(directory, f"model-{key}.{format}")
        size = export_model(model, path, shape, format=format, dtype=dtype, quantize=quantize)
        result[key] = {"bytes": size, **validate(model, load_artifact(path), pattern, config, None)}
        os.remove(path)
        print(f"  {os.path.basename(train_dir)} {key}: {size:,} bytes, GAP@20 {result[key]['artifact_gap']:.4f} "
              f"(checkpoint {result[key]['checkpoint_gap']:.4f})", flush=True)
    return result


def table(results: dict[str, dict]) -> str:
    lines = ["| run | artifact | bytes | GAP@20 artifact | GAP@20 checkpoint | difference |", "|---|---|---:|---:|---:|---:|"]
    for run, result in results.items():
        for key in ARTIFACTS:
            r = result[key]
            lines.append(f"| {run} | {key} | {r['bytes']:,} | {r['artifact_gap']:.4f} | {r['checkpoint_gap']:.4f} | "
                         f"{r['artifact_gap'] - r['checkpoint_gap']:+.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", required=True, help="where the experiment is trained (or was, and is reused)")
    parser.add_argument("--output", default="bench_export_gap.json")
    args = parser.parse_args()
    experiment_dir, runs = trained_runs(args.work_dir)
    pattern = EVAL_PATTERN.format(data=os.path.join(experiment_dir, "data") + os.sep)
    with tempfile.TemporaryDirectory() as directory:
        results = {run: bench_run(os.path.join(experiment_dir, run), pattern, directory) for run in runs}
    with open(args.output, "w") as f:
        json.dump({"experiment": EXPERIMENT, "validation": pattern, "results": results,
                   "command": " ".join(sys.argv)}, f, indent=2)
    print(table(results))


if __name__ == "__main__":
    main()
