"""Benchmark: exported artifacts of the seed's configurations, dense against compact.

For each model (experiment 2's DBoF / NetVLAD / NetFV networks, dense and compact; experiment 3's dense
network and its compact-DBoF and compact-MoE variants; at the seed README's sizes: 3862 classes, frames
[batch, 10, 15, 1152]), in one run:
- bytes on disk of every artifact in ARTIFACTS (ONNX and .pt2; float32, float16, int8), each written by
  `export_model` as `compactvid export` writes it, and the seconds each export took (--export_workers
  processes, one thread each, export at once: one per core by default);
- latency at batch 1 and batch 80 on the CPU with one thread and with all cores, of eager PyTorch and of
  each artifact of --timed, served as `compactvid inference --model` serves it (ONNX Runtime; the .pt2
  program loaded with `torch.export.load`), in interleaved rounds: each round times every runtime of a
  dense model and of the compact models judged against it (BASELINE) once, so the machine's load falls
  on all alike and the ratios the targets speak of come from the same rounds; the median over rounds
  (one warm-up call each first).
Weights are random (speed and bytes do not depend on training; the GAP cost of low precision is
`bench_export_gap.py`'s); batch-norm statistics are set.

    python benchmarks/bench_export.py --output bench_export.json                      # the whole table
    python benchmarks/bench_export.py --models exp2-dbof-dense,exp2-dbof-compact \\
        --artifacts onnx-float32,onnx-float16 --timed onnx-float32 --batches 1 --rounds 3   # a subset

Prints a Markdown table and writes JSON (after each model, so that a long run can be read midway),
with the load average before and after.

Bytes do not depend on the machine's load, times do, and the exports are most of the run (tens of
seconds each): with --artifact_dir the artifacts are kept there, and a later run reuses each one that
the same committed source wrote (the git tree of src/, recorded in DIR/exports.json with its bytes and
export seconds), so that the timed run can be short:

    python benchmarks/bench_export.py --artifact_dir runs/artifacts --export_only   # any time
    python benchmarks/bench_export.py --artifact_dir runs/artifacts                 # on a quiet machine
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import json
import multiprocessing
import os
import statistics
import subprocess
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
# Each compact model follows the dense model it is judged against (BASELINE).
MODELS: dict[str, dict] = {
    "exp2-dbof-dense": dict(add_dbof=True),
    "exp2-dbof-compact": dict(add_dbof=True, fc_dbof_circulant=True),
    "exp2-netvlad-dense": dict(add_netvlad=True),
    "exp2-netvlad-compact": dict(add_netvlad=True, fc_netvlad_circulant=True),
    "exp2-netfv-dense": dict(add_fisher_vector=True),
    "exp2-netfv-compact": dict(add_fisher_vector=True, fc_fisher_circulant=True),
    "exp3-dense": dict(add_dbof=True, no_audio=True),
    "exp3-compact-dbof": dict(add_dbof=True, no_audio=True, dbof_circulant=True),
    "exp3-compact-moe": dict(add_dbof=True, no_audio=True, video_level_classifier_model="Circulant_MoeModel"),
}
BASELINE = {"exp2-dbof-compact": "exp2-dbof-dense", "exp2-netvlad-compact": "exp2-netvlad-dense",
            "exp2-netfv-compact": "exp2-netfv-dense", "exp3-compact-dbof": "exp3-dense",
            "exp3-compact-moe": "exp3-dense"}
ARTIFACTS = {"onnx-float32": ("onnx", "float32", None), "onnx-float16": ("onnx", "float16", None),
             "onnx-int8": ("onnx", "float32", "int8"), "pt2-float32": ("pt2", "float32", None),
             "pt2-float16": ("pt2", "float16", None), "pt2-int8": ("pt2", "float32", "int8")}
TIMED = ("onnx-float32", "onnx-int8", "pt2-float32", "pt2-int8")


def build(flags: dict) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The model of `flags` at the SEED sizes, the same weights in every process, in eval mode; its input shape."""
    args = ModelArgs(**SEED, **flags)
    torch.manual_seed(0)
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


def run_each(names: list[str], bench, rounds: int, threads: int, output: str) -> dict:
    """``bench(name, directory, rounds, threads)`` for each of `names`, torch on `threads` threads, in one
    temporary directory; the report (results, load average before and after, command) written to
    `output` as JSON and returned."""
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as directory:
        results = [bench(name, directory, rounds, threads) for name in names]
    report = {"results": results, "threads": threads, "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "torch": torch.__version__, "command": " ".join(sys.argv)}
    with open(output, "w") as f:
        json.dump(report, f, indent=2)
    return report


def source_tree() -> str | None:
    """The git tree of the committed src/ when it has no uncommitted change (else None: nothing reused)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        if subprocess.run(["git", "-C", root, "status", "--porcelain", "src"], capture_output=True, text=True,
                          check=True).stdout.strip():
            return None
        return subprocess.run(["git", "-C", root, "rev-parse", "HEAD:src"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


@functools.lru_cache(maxsize=1)
def _built(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    return build(MODELS[name])


def _export(name: str, key: str, path: str) -> tuple[int, float]:
    """Write model `name`'s artifact `key` at `path` (in a worker process): (bytes, seconds)."""
    torch.set_num_threads(1)
    model, shape = _built(name)
    format, dtype, quantize = ARTIFACTS[key]
    started = time.perf_counter()
    size = export_model(model, path, shape, format=format, dtype=dtype, quantize=quantize)
    return size, round(time.perf_counter() - started, 1)


def write_artifacts(names: list[str], keys: list[str], directory: str, source: str | None,
                    workers: int) -> dict[str, dict]:
    """Each model's artifacts `keys` in `directory`, written now by `workers` processes (one thread
    each) unless DIR/exports.json says that `source` wrote the file there: {model: {"paths", "bytes",
    "export_s"}}."""
    ledger_path = os.path.join(directory, "exports.json")
    ledger = {}
    if os.path.exists(ledger_path):
        with open(ledger_path) as f:
            ledger = json.load(f)
    files = {(name, key): f"{name}-{key}.{ARTIFACTS[key][0]}" for name in names for key in keys}

    def current(file: str) -> bool:
        entry, path = ledger.get(file), os.path.join(directory, file)
        return (source is not None and entry is not None and entry["source"] == source
                and os.path.exists(path) and os.path.getsize(path) == entry["bytes"])

    missing = [job for job, file in files.items() if not current(file)]
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_export, name, key, os.path.join(directory, files[name, key])): (name, key)
                   for name, key in missing}
        for future in concurrent.futures.as_completed(futures):
            name, key = futures[future]
            size, seconds = future.result()
            ledger[files[name, key]] = {"bytes": size, "export_s": seconds, "source": source,
                                        "load_average": os.getloadavg()}
            with open(ledger_path, "w") as f:
                json.dump(ledger, f, indent=2)
            print(f"  {name}: {key} {size / 1e6:.1f} MB ({seconds:.0f} s to export)", flush=True)
    return {name: {"paths": {key: os.path.join(directory, files[name, key]) for key in keys},
                   "bytes": {key: ledger[files[name, key]]["bytes"] for key in keys},
                   "export_s": {key: ledger[files[name, key]]["export_s"] for key in keys}} for name in names}


def groups(names: list[str]) -> list[list[str]]:
    """`names` grouped for timing: each dense baseline with the compact models judged against it, so that
    their ratios come from the same interleaved rounds (a model without its baseline in `names` alone)."""
    grouped: dict[str, list[str]] = {}
    for name in names:
        base = BASELINE.get(name, name)
        grouped.setdefault(base if base in names else name, []).append(name)
    return list(grouped.values())


def bench_group(models: dict[str, tuple[torch.nn.Module, tuple[int, ...]]], paths: dict[str, dict[str, str]],
                timed: list[str], rounds: dict[int, int], threads: list[int]) -> dict[str, dict[str, dict]]:
    """ms per call of each eager model of `models` (name: (model, input shape), one shape for all) and
    of its `timed` artifacts at `paths[name]`, all in the same interleaved rounds: {name:
    {``b{batch}-t{threads}``: {runtime: ms}}}, runtime ``eager`` or an ARTIFACTS key."""

    def eager(model: torch.nn.Module):
        def run(frames: torch.Tensor) -> None:
            with torch.inference_mode():
                model(frames)
        return run

    result: dict[str, dict[str, dict]] = {name: {} for name in models}
    shape = next(iter(models.values()))[1]
    # A .pt2 program runs on torch's threads; ONNX Runtime's are a session option: sessions per setting.
    programs = {(name, key): load_artifact(paths[name][key]).predict
                for name in models for key in timed if key.startswith("pt2")}
    generator = torch.Generator().manual_seed(1)
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        sessions = {(name, key): load_artifact(paths[name][key], threads=n_threads).predict
                    for name in models for key in timed if key.startswith("onnx")}
        runners = {}
        for name, (model, _) in models.items():
            runners[name, "eager"] = eager(model)
            runners.update({(name, key): sessions.get((name, key)) or programs[name, key] for key in timed})
        for batch, reps in rounds.items():
            frames = torch.nn.functional.normalize(torch.randn(batch, *shape, generator=generator), dim=-1)
            key = f"b{batch}-t{n_threads}"
            for (name, runtime), ms in time_rounds(runners, frames, reps).items():
                result[name].setdefault(key, {})[runtime] = ms
            for name in models:
                print(f"  {name}: batch {batch}, {n_threads} thread(s): "
                      + ", ".join(f"{k} {ms:.1f}" for k, ms in result[name][key].items()) + " ms", flush=True)
        del sessions, runners
    return result


def table(results: list[dict], threads: list[int], batches: list[int]) -> str:
    """Bytes (MB) per artifact, then ms per (batch, threads) as eager / each timed artifact."""
    artifacts = list(results[0]["bytes"])
    lines = ["| model | parameters | " + " | ".join(f"{key} MB" for key in artifacts) + " |",
             "|---|---:|" + "---:|" * len(artifacts)]
    for r in results:
        lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.1f} M | "
                     + " | ".join(f"{r['bytes'][key] / 1e6:.1f}" for key in artifacts) + " |")
    if not results[0]["ms"]:
        return "\n".join(lines)
    runtimes = list(results[0]["ms"][f"b{batches[0]}-t{threads[0]}"])
    lines += ["", "| model | batch, threads | " + " | ".join(f"{name} ms" for name in runtimes) + " |",
              "|---|---|" + "---:|" * len(runtimes)]
    for r in results:
        for b in batches:
            for t in threads:
                ms = r["ms"][f"b{b}-t{t}"]
                lines.append(f"| {r['model']} | {b}, {t} | " + " | ".join(f"{ms[name]:.1f}" for name in runtimes) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names of MODELS")
    parser.add_argument("--artifacts", default=",".join(ARTIFACTS), help="artifacts whose bytes are reported")
    parser.add_argument("--timed", default=",".join(TIMED), help="artifacts timed beside eager PyTorch")
    parser.add_argument("--batches", default="1,80")
    parser.add_argument("--rounds", default="5,2", help="interleaved rounds at each of --batches")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}")
    parser.add_argument("--artifact_dir", default=None,
                        help="keep the artifacts here and reuse those the same source wrote (default: a "
                             "temporary directory)")
    parser.add_argument("--export_only", action="store_true", help="write the artifacts and their bytes, time nothing")
    parser.add_argument("--export_workers", type=int, default=os.cpu_count(),
                        help="processes writing artifacts at once (one thread each)")
    parser.add_argument("--output", default="bench_export.json")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rounds = {} if args.export_only else dict(zip(batches, (int(r) for r in args.rounds.split(","))))
    threads = [int(t) for t in args.threads.split(",")]
    source = source_tree() if args.artifact_dir else None
    names, keys = args.models.split(","), list(dict.fromkeys([*args.artifacts.split(","), *args.timed.split(",")]))
    load_before, started = os.getloadavg(), time.time()
    results = []
    with contextlib.ExitStack() as stack:
        directory = args.artifact_dir or stack.enter_context(tempfile.TemporaryDirectory())
        os.makedirs(directory, exist_ok=True)
        artifacts = write_artifacts(names, keys, directory, source, args.export_workers)
        exported = time.time()
        for group in groups(names):
            models = {name: build(MODELS[name]) for name in group}
            ms = bench_group(models, {name: artifacts[name]["paths"] for name in group}, args.timed.split(","),
                             rounds, threads) if rounds else {}
            for name, (model, _) in models.items():
                results.append({"model": name, "parameters": sum(p.numel() for p in model.parameters()),
                                "bytes": artifacts[name]["bytes"], "export_s": artifacts[name]["export_s"],
                                "ms": ms.get(name, {})})
            del models
            report = {"results": results, "baseline": BASELINE, "load_average_before": load_before,
                      "load_average_after": os.getloadavg(), "export_minutes": round((exported - started) / 60, 1),
                      "minutes": round((time.time() - started) / 60, 1), "source_tree": source,
                      "cpu_count": os.cpu_count(), "torch": torch.__version__, "command": " ".join(sys.argv)}
            with open(args.output, "w") as f:
                json.dump(report, f, indent=2)
    print(table(results, threads, batches))
    print(f"load average before {load_before}, after {report['load_average_after']}; {report['minutes']} min")


if __name__ == "__main__":
    main()
