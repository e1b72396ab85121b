"""Benchmark: how three parts of the frame-level models are written for export, each in ONNX Runtime
against the plain way of writing it, and against eager PyTorch, in the same run.

At the README's sizes, batch 1 in eval mode (the ten bags of a video in one call), one thread:
- ``bag-mean``: the average of NetFV's ten bag vectors ``[1, 10, 131072]``, as `average_over_bags`
  writes it (a product with a ``1 / n`` row) against ``Tensor.mean`` (ONNX ``ReduceMean``);
- ``fisher-vector``: NetFV's soft assignment and Fisher vector on ``[10, 15, 1024]`` frames, 64 clusters,
  as `fisher_vector_traced` writes it against the formulas of `fisher_vector`'s module doc written out
  with ``F.normalize`` (as it was written before); eager PyTorch runs `fisher_vector`'s Function;
- ``l2-normalize``: `l2_normalize` of NetVLAD's ``[10, 65536]`` vectors against ``F.normalize``, whose
  expand of the norm to the input's shape becomes a copy in ONNX Runtime.
Each: median ms per call over interleaved rounds (each round times every runtime once, so the
machine's load falls on all alike) after one warm-up call each; files written by `export_model`.

    python benchmarks/bench_export_ops.py --output bench_export_ops.json

Prints a Markdown table and writes JSON (with the load average before and after).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from bench_export import run_each, time_rounds  # this folder is on sys.path when the script runs
from torch import nn

from compactvid.export import export_model, load_artifact
from compactvid.models.fisher_vector import fisher_vector, fisher_vector_traced
from compactvid.models.network import bag_mean
from compactvid.models.normalize import EPSILON, l2_normalize


def fisher_vector_as_written(frames: torch.Tensor, assignment: torch.Tensor, centers: torch.Tensor,
                             variance: torch.Tensor) -> torch.Tensor:
    """The baseline: the formulas of `fisher_vector`'s module doc, one op each, ``F.normalize``."""
    mass = assignment.sum(dim=1, keepdim=True)
    first_order = frames.transpose(1, 2) @ assignment
    second_order = frames.square().transpose(1, 2) @ assignment
    fv2 = (mass * centers.square() + second_order - 2.0 * first_order * centers) / variance.square() - mass
    fv2 = F.normalize(fv2.flatten(1), dim=1, eps=EPSILON)
    fv1 = F.normalize((first_order - mass * centers) / variance, dim=1, eps=EPSILON)
    fv1 = F.normalize(fv1.flatten(1), dim=1, eps=EPSILON)
    return torch.cat([fv1, fv2], dim=1)


class BagMean(nn.Module):
    def __init__(self, mean):
        super().__init__()
        self.mean = mean

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mean(pooled)


class FisherVector(nn.Module):
    """NetFV's assignment (a softmax of a projection) and Fisher vector, with random parameters."""

    def __init__(self, written, features: int = 1024, clusters: int = 64):
        super().__init__()
        self.written = written
        generator = torch.Generator().manual_seed(0)
        self.projection = nn.Parameter(torch.randn(features, clusters, generator=generator) * 0.05)
        self.centers = nn.Parameter(torch.randn(features, clusters, generator=generator) * 0.05)
        self.variance = nn.Parameter(torch.rand(features, clusters, generator=generator) + 0.5)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        assignment = torch.softmax(frames @ self.projection, dim=-1)
        return self.written(frames, assignment, self.centers, self.variance)


class Normalize(nn.Module):
    def __init__(self, normalize):
        super().__init__()
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x, dim=1)


# name: (as the models write it for export, the baseline, as eager PyTorch runs it, one example's shape,
# the batch).
CASES = {
    "bag-mean": (BagMean(bag_mean), BagMean(lambda pooled: pooled.mean(dim=1)), BagMean(bag_mean),
                 (10, 131072), 1),
    "fisher-vector": (FisherVector(fisher_vector_traced), FisherVector(fisher_vector_as_written),
                      FisherVector(fisher_vector), (15, 1024), 10),
    "l2-normalize": (Normalize(l2_normalize), Normalize(lambda x, dim: F.normalize(x, dim=dim, eps=EPSILON)),
                     Normalize(l2_normalize), (65536,), 10),
}


def bench_case(name: str, directory: str, rounds: int, threads: int) -> dict:
    ours, baseline, in_eager, shape, batch = CASES[name]
    sessions = {}
    for kind, module in (("ours", ours), ("baseline", baseline)):
        path = os.path.join(directory, f"{name}-{kind}.onnx")
        export_model(module.eval(), path, shape)
        sessions[kind] = load_artifact(path, threads=threads).predict
    x = F.normalize(torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1)), dim=-1)
    with torch.inference_mode():
        expected = baseline(x)
    error = max(float((torch.from_numpy(run(x)) - expected).abs().max()) for run in sessions.values())

    def eager(frames: torch.Tensor) -> None:
        with torch.inference_mode():
            in_eager(frames)

    ms = time_rounds({"eager": eager, "onnxruntime": sessions["ours"], "onnxruntime, baseline": sessions["baseline"]},
                     x, rounds)
    print(f"  {name}: {ms}, max |onnx - baseline eager| {error:.1e}", flush=True)
    return {"case": name, "shape": [batch, *shape], "ms": ms, "max_abs_error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated names of CASES")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--output", default="bench_export_ops.json")
    args = parser.parse_args()
    report = run_each(args.cases.split(","), bench_case, args.rounds, args.threads, args.output)
    print("| part | input | eager ms | ONNX Runtime ms | ONNX Runtime, baseline ms |\n|---|---|---:|---:|---:|")
    for r in report["results"]:
        ms = r["ms"]
        print(f"| {r['case']} | {r['shape']} | {ms['eager']:.2f} | {ms['onnxruntime']:.2f} "
              f"| {ms['onnxruntime, baseline']:.2f} |")
    print(f"load average before {report['load_average_before']}, after {report['load_average_after']}")


if __name__ == "__main__":
    main()
