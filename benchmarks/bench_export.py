"""Benchmark: exported artifacts of the seed's configurations, dense against compact.

For each model (experiment 2's DBoF / NetVLAD / NetFV networks, dense and compact, and experiment 3's
dense and compact-MoE networks, at the seed README's sizes: 3862 classes, frames [batch, 10, 15, 1152]):
- bytes on disk of the ONNX file in float32, float16 and int8 (dense linear layers) and of the .pt2 file
  in float32 and float16;
- latency at batch 1 and batch 80 on the CPU with one thread and with all cores: eager PyTorch, ONNX
  Runtime (float32 file) and the .pt2 program (float32), measured in interleaved rounds (each round
  times every runtime once, so the machine's load falls on all alike); the median over rounds.
Weights are random (speed and bytes do not depend on training); batch-norm statistics are set.

    python benchmarks/bench_export.py --output benchmarks/bench_export.json            # every model
    python benchmarks/bench_export.py --models dbof-dense,dbof-compact --artifacts onnx-float16 \\
        --batches 1 --rounds 5                                                         # a subset

Prints a Markdown table and writes JSON (with the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

from compactvid.export import export_model, input_shape, load_artifact
from compactvid.models.args import ModelArgs
from compactvid.models.registry import create_model

# The seed README's PARAMS that shape the model (experiments.SEED_PARAMS).
SEED = dict(num_classes=3862, feature_sizes=(1024, 128), iterations=15, n_bagging=10, moe_num_mixtures=4,
            moe_add_batch_norm=True, dbof_cluster_size=8192, fc_hidden_size=512, fv_cluster_size=64,
            netvlad_cluster_size=64)
MODELS: dict[str, dict] = {
    "dbof-dense": dict(add_dbof=True),
    "dbof-compact": dict(add_dbof=True, fc_dbof_circulant=True),
    "netvlad-dense": dict(add_netvlad=True),
    "netvlad-compact": dict(add_netvlad=True, fc_netvlad_circulant=True),
    "netfv-dense": dict(add_fisher_vector=True),
    "netfv-compact": dict(add_fisher_vector=True, fc_fisher_circulant=True),
    "exp3-dense": dict(add_dbof=True, no_audio=True),
    "exp3-compact-moe": dict(add_dbof=True, no_audio=True, video_level_classifier_model="Circulant_MoeModel"),
}
ARTIFACTS = {"onnx-float32": ("onnx", "float32", None), "onnx-float16": ("onnx", "float16", None),
             "onnx-int8": ("onnx", "float32", "int8"), "pt2-float32": ("pt2", "float32", None),
             "pt2-float16": ("pt2", "float16", None)}


def build(flags: dict) -> tuple[torch.nn.Module, tuple[int, ...]]:
    args = ModelArgs(**SEED, **flags)
    model = create_model(args)
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model.eval(), input_shape(args)


def time_rounds(runners: dict, frames: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median ms per call of each runner over interleaved rounds (after one warm-up call each)."""
    for run in runners.values():
        run(frames)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run(frames)
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def bench_model(name: str, directory: str, artifacts: list[str], rounds: int, batches: list[int],
                threads: list[int]) -> dict:
    """Bytes of each of `artifacts` (ARTIFACTS keys; onnx-float32 is always written, for the timings) and
    the ms of eager, ONNX Runtime and (with pt2-float32) the .pt2 program."""
    model, shape = build(MODELS[name])
    result: dict = {"model": name, "parameters": sum(p.numel() for p in model.parameters()), "bytes": {}}
    paths = {}
    for key in dict.fromkeys(["onnx-float32", *artifacts]):
        format, dtype, quantize = ARTIFACTS[key]
        paths[key] = os.path.join(directory, f"{name}-{key}.{format}")
        started = time.perf_counter()
        result["bytes"][key] = export_model(model, paths[key], shape, format=format, dtype=dtype, quantize=quantize)
        print(f"  {name}: {key} {result['bytes'][key] / 1e6:.1f} MB ({time.perf_counter() - started:.0f} s "
              f"to export)", flush=True)
    onnx_file = load_artifact(paths["onnx-float32"])

    def eager(frames: torch.Tensor) -> None:
        with torch.inference_mode():
            model(frames)

    runners = {"eager": eager, "onnxruntime": onnx_file.predict}
    if "pt2-float32" in paths:
        runners["pt2"] = load_artifact(paths["pt2-float32"]).predict
    result["ms"] = {}
    generator = torch.Generator().manual_seed(1)
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        # ONNX Runtime's thread count is a session option: one session per setting.
        onnx_file = load_artifact(onnx_file.path, threads=n_threads)
        runners["onnxruntime"] = onnx_file.predict
        for batch in batches:
            frames = torch.nn.functional.normalize(torch.randn(batch, *shape, generator=generator), dim=-1)
            reps = rounds if batch == 1 else max(2, rounds // 5)
            result["ms"][f"b{batch}-t{n_threads}"] = time_rounds(runners, frames, reps)
            print(f"  {name}: batch {batch}, {n_threads} thread(s): {result['ms'][f'b{batch}-t{n_threads}']}",
                  flush=True)
    for path in os.listdir(directory):
        os.remove(os.path.join(directory, path))
    return result


def table(results: list[dict], artifacts: list[str], threads: list[int], batches: list[int]) -> str:
    """One row per model: MB per artifact, then ms per (threads, batch) as eager / ONNX Runtime [/ .pt2]."""
    runtimes = " / ".join(results[0]["ms"][f"b{batches[0]}-t{threads[0]}"])
    lines = ["| model | params | " + " | ".join(f"{key} MB" for key in artifacts) + " | "
             + " | ".join(f"batch {b}, {t} thread(s): {runtimes} ms" for t in threads for b in batches) + " |",
             "|---|---:|" + "---:|" * (len(artifacts) + len(threads) * len(batches))]
    for r in results:
        sizes = " | ".join(f"{r['bytes'][key] / 1e6:.1f}" for key in artifacts)
        times = " | ".join(" / ".join(f"{ms:.1f}" for ms in r["ms"][f"b{b}-t{t}"].values())
                           for t in threads for b in batches)
        lines.append(f"| {r['model']} | {r['parameters']:,} | {sizes} | {times} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names of MODELS")
    parser.add_argument("--artifacts", default=",".join(ARTIFACTS), help="comma-separated names of ARTIFACTS")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds at batch 1 (a fifth at batch 80)")
    parser.add_argument("--batches", default="1,80")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}")
    parser.add_argument("--output", default="bench_export.json")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    artifacts = args.artifacts.split(",")
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as directory:
        for name in args.models.split(","):
            results.append(bench_model(name, directory, artifacts, args.rounds, batches, threads))
            report = {"results": results, "load_average_before": load_before, "load_average_after": os.getloadavg(),
                      "cpu_count": os.cpu_count(), "torch": torch.__version__, "command": " ".join(sys.argv)}
            with open(args.output, "w") as f:  # after each model, so that a long run can be read midway
                json.dump(report, f, indent=2)
    print(table(results, ["onnx-float32", *[a for a in artifacts if a != "onnx-float32"]], threads, batches))
    print(f"load average before {load_before}, after {report['load_average_after']}")


if __name__ == "__main__":
    main()
