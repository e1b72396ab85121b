"""Benchmark: one circulant layer exported to ONNX, against the same layer in eager PyTorch and against
the dense layer of its shape in ONNX Runtime, in the same run.

For each shape of the seed's compact layers (rows = frames or videos through the layer in one call at
batch 1, in -> out, the diagonal the model builds): the median ms per call over
interleaved rounds (each round times every runtime once, so the machine's load falls on all alike) of
the circulant layer in eager PyTorch (``torch.inference_mode``), its ONNX file in ONNX Runtime, and the
ONNX file of ``nn.Linear(in, out)`` in ONNX Runtime; for a layer in the folded form, also its other
grouping (every block in each product for a layer of at most ``PER_BLOCK_MAX`` blocks, which runs
block by block; block by block for the others): the choice `circulant_export` makes by the number of
blocks. Files are float32, written by `export_model`.

    python benchmarks/bench_circulant_export.py --threads 1 --output bench_circulant_export.json

Prints a Markdown table and writes JSON (with the load average before and after).
"""

from __future__ import annotations

import argparse
import os
from unittest import mock

import torch
from bench_export import run_each, time_rounds  # this folder is on sys.path when the script runs
from torch import nn

from compactvid.export import export_model, load_artifact
from compactvid.layers import CirculantLinear, circulant_export

# name: (rows per call at batch 1, in_features, out_features, diag)
SHAPES = {
    "dbof-projection": (15, 1024, 8192, "learned"),  # --dbof_circulant: 15 frames per call, one call per bag
    "dbof-projection-150": (150, 1024, 8192, "learned"),  # the same on the 10 bags at once
    "dbof-fc": (1, 8192, 512, "learned"),  # --fc_dbof_circulant
    "netvlad-fc": (1, 65536, 512, "learned"),  # --fc_netvlad_circulant, video: 64 clusters x 1024
    "moe-gates": (1, 512, 19310, "none"),  # Circulant_MoeModel's gates after a 512-wide FC, 3862 x 5
}


def bench_shape(name: str, directory: str, rounds: int, threads: int) -> dict:
    rows, n, out, diag = SHAPES[name]
    torch.manual_seed(0)
    layers = {"circulant": CirculantLinear(n, out, bias=False, diag=diag).eval(),
              "dense": nn.Linear(n, out, bias=False).eval()}
    sessions = {}
    for kind, layer in layers.items():
        path = os.path.join(directory, f"{name}-{kind}.onnx")
        export_model(layer, path, (rows, n))
        sessions[kind] = load_artifact(path, threads=threads).predict
    blocks = layers["circulant"].blocks
    # The folded form's other grouping, which its choice by the number of blocks is measured against.
    other = None
    if circulant_export.takes_folded_form(*layers["circulant"].weight.shape):
        other = "all blocks at once" if blocks <= circulant_export.PER_BLOCK_MAX else "block by block"
        path = os.path.join(directory, f"{name}-other.onnx")
        with mock.patch.object(circulant_export, "PER_BLOCK_MAX", 0 if blocks <= circulant_export.PER_BLOCK_MAX
                               else blocks):
            export_model(layers["circulant"], path, (rows, n))
        sessions[other] = load_artifact(path, threads=threads).predict

    def eager(x: torch.Tensor) -> None:
        with torch.inference_mode():
            layers["circulant"](x)

    x = torch.randn(1, rows, n)
    with torch.inference_mode():
        error = float((torch.from_numpy(sessions["circulant"](x)) - layers["circulant"](x)).abs().max())
    runners = {"eager": eager, "onnxruntime": sessions["circulant"], "dense onnxruntime": sessions["dense"]}
    if other:
        runners[f"onnxruntime, {other}"] = sessions[other]
    ms = time_rounds(runners, x, rounds)
    for path in os.listdir(directory):
        os.remove(os.path.join(directory, path))
    print(f"  {name}: {ms}, max |onnx - eager| {error:.1e}", flush=True)
    return {"shape": name, "rows": rows, "in": n, "out": out, "ms": ms, "max_abs_error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated names of SHAPES")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--output", default="bench_circulant_export.json")
    args = parser.parse_args()
    report = run_each(args.shapes.split(","), bench_shape, args.rounds, args.threads, args.output)
    print("| layer | rows, in -> out | eager ms | ONNX Runtime ms | dense ONNX Runtime ms | folded form's other "
          "grouping ms |\n|---|---|---:|---:|---:|---|")
    for r in report["results"]:
        ms = r["ms"]
        other = [f"{key.split(', ')[1]}: {value:.2f}" for key, value in ms.items() if key.startswith("onnxruntime, ")]
        print(f"| {r['shape']} | {r['rows']}, {r['in']} -> {r['out']} | {ms['eager']:.2f} | {ms['onnxruntime']:.2f} "
              f"| {ms['dense onnxruntime']:.2f} | {''.join(other)} |")
    print(f"load average before {report['load_average_before']}, after {report['load_average_after']}")


if __name__ == "__main__":
    main()
