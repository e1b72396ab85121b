"""CirculantLinear, LowRankLinear and MonarchLinear vs nn.Linear at the shapes of the paper's models,
in the same run.

For each shape (rows, in -> out): forward+backward and forward-only (no_grad) wall time, the speedup
over the dense layer, peak memory of one step, and the ratio of the circulant time to its FFT floor:
the transforms the layer cannot avoid (see transform_counts), run alone as bare torch.fft calls in
batches of the layer's chunk size, timed in the same interleaved loop. The low-rank and Monarch layers
(`--budgets`, default 1,4,16) are sized by `make_compact_linear` at that many times the circulant
layer's weights, and timed in the same loop (speedups over dense and over circulant).

    python benchmarks/bench_layers.py --threads 2 --json bench_layers.json

Dense, circulant and floor runs are interleaved (alternating order) and the median of --repeats runs is
reported, so that background load affects both sides alike. Peak memory on CPU is the growth of the
peak resident set size during one step in a fresh subprocess (the process's peak is reset first via
/proc/self/clear_refs); on CUDA it is torch.cuda.max_memory_allocated above the memory held before.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from compactvid.layers import CirculantLinear, make_compact_linear
from compactvid.layers import circulant as circulant_module

# The structured layers compared with the circulant one at multiples of its weights.
FAMILY = ("lowrank", "monarch")


@dataclass(frozen=True)
class Shape:
    name: str
    rows: int
    in_features: int
    out_features: int
    what: str


SHAPES = [
    Shape("dbof_projection", 1200, 1024, 8192, "DBoF projection over 80 videos x 15 frames"),
    Shape("fc_dbof", 80, 8192, 512, "FC after DBoF"),
    Shape("fc_4096", 80, 4096, 512, "FC after DBoF (4096 clusters)"),
    Shape("fc_netvlad", 80, 65536, 512, "FC after NetVLAD"),
    Shape("moe_gates", 80, 1024, 19310, "MoE gates (3862 classes x 5)"),
    Shape("latency_batch1", 1, 8192, 512, "one video through the FC: deployment latency"),
]


def build(kind: str, shape: Shape, diag: str, k_factor: int, device: str) -> nn.Module:
    """``dense``, ``circulant``, or ``KIND@BUDGET`` (a FAMILY layer at BUDGET x the circulant's weights)."""
    if kind == "dense":
        return nn.Linear(shape.in_features, shape.out_features, bias=False, device=device)
    structure, _, budget = kind.partition("@")
    return make_compact_linear(structure, shape.in_features, shape.out_features, False, diag=diag,
                               k_factor=k_factor, budget=float(budget or 1), device=device)


def family_kinds(budgets: list[float]) -> list[str]:
    return [f"{kind}@{budget:g}" for kind in FAMILY for budget in budgets]


def make_step(module: nn.Module, shape: Shape, mode: str, device: str) -> Callable[[], None]:
    """One forward+backward (``mode="fb"``) or no-grad forward (``mode="fo"``) on fixed random data."""
    x = torch.randn(shape.rows, shape.in_features, device=device, requires_grad=(mode == "fb"))
    grad_out = torch.randn(shape.rows, shape.out_features, device=device)
    if mode == "fb":

        def step() -> None:
            module(x).backward(grad_out)

    else:

        def step() -> None:
            with torch.no_grad():
                module(x)

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def time_interleaved(
    steps: dict[str, Callable[[], None]], repeats: int, warmup: int, device: str,
    probe: Callable[[], float] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call for each step, runs interleaved and alternating in order; with ``probe``,
    also its value after each round (under the key "probe")."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    if probe is not None:
        times["probe"] = []
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            sync(device)
            start = clock()
            steps[name]()
            sync(device)
            times[name].append(clock() - start)
        if probe is not None:
            times["probe"].append(probe())
    return times


def transform_counts(layer: CirculantLinear, rows: int) -> dict[str, dict[str, int]]:
    """Length-n real transforms the layer cannot avoid, forward and backward.

    Per factor: the spectrum of its input (one per row for a first factor without learned diagonal,
    whose input is shared by every block, else one per row and block) and the inverse transform of
    its output; backward, the spectrum of the output gradient and the inverse transform of the input
    gradient (again shared for a first factor without diagonal); plus the weights' own transforms.
    """
    blocks, k = layer.blocks, layer.k_factor
    shared_first = layer.diag is None
    forward = {"rfft": blocks * k, "irfft": 0}
    backward = {"rfft": 0, "irfft": blocks * k}
    for f in range(k):
        per_row_in = 1 if (f == 0 and shared_first) else blocks
        forward["rfft"] += rows * per_row_in
        forward["irfft"] += rows * blocks
        backward["rfft"] += rows * blocks
        backward["irfft"] += rows * per_row_in
    return {"fo": forward, "fb": {key: forward[key] + backward[key] for key in forward}}


def make_floor_step(counts: dict[str, int], n: int, device: str) -> Callable[[], None]:
    """Run just the given numbers of length-n rfft and irfft, in batches of the size the layer uses
    on CPU (one call each on CUDA), on data allocated once."""
    total = max(counts.values())
    if device == "cpu":
        batch = min(total, max(circulant_module.CPU_MIN_TRANSFORMS, circulant_module.CPU_CHUNK_ELEMENTS // n))
    else:
        batch = total
    signal = torch.randn(batch, n, device=device)
    spectrum = torch.fft.rfft(signal)

    def step() -> None:
        for kind, count in counts.items():
            for start in range(0, count, batch):
                rows = min(batch, count - start)
                if kind == "rfft":
                    torch.fft.rfft(signal[:rows])
                else:
                    torch.fft.irfft(spectrum[:rows], n=n)

    return step


def peak_memory_probe(args: argparse.Namespace) -> int:
    """Run one step in this (fresh) process and return the growth of peak memory, in bytes."""
    shape = next(s for s in SHAPES if s.name == args.probe_shape)
    module = build(args.probe_kind, shape, args.diag, args.k_factor, args.device)
    warm = build(args.probe_kind, Shape("warm", 4, 64, 64, ""), args.diag, args.k_factor, args.device)
    make_step(warm, Shape("warm", 4, 64, 64, ""), args.probe_mode, args.device)()  # load FFT/BLAS code
    step = make_step(module, shape, args.probe_mode, args.device)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size to the current one
    before = _proc_status_kib("VmRSS")
    step()
    return (_proc_status_kib("VmHWM") - before) * 1024


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def measure_peak_memory(args: argparse.Namespace, shape: Shape, kind: str, mode: str) -> int | None:
    command = [
        sys.executable, os.path.abspath(__file__), "--threads", str(args.threads), "--device", args.device,
        "--diag", args.diag, "--k-factor", str(args.k_factor),
        "--probe-shape", shape.name, "--probe-kind", kind, "--probe-mode", mode,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"memory probe failed for {shape.name} {kind} {mode}: {result.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return int(result.stdout.strip().splitlines()[-1])


def run_shape(args: argparse.Namespace, shape: Shape) -> dict:
    torch.manual_seed(0)
    kinds = ["dense", "circulant", *family_kinds(args.budgets)]
    modules = {kind: build(kind, shape, args.diag, args.k_factor, args.device) for kind in kinds}
    layer = modules["circulant"]
    counts = transform_counts(layer, shape.rows)
    result: dict = {**asdict(shape), "diag": args.diag, "k_factor": args.k_factor,
                    "params_dense": shape.in_features * shape.out_features,
                    "params_circulant": layer.num_compact_parameters(),
                    "family": {kind: {"params": modules[kind].num_compact_parameters(),
                                      "structure": modules[kind].structure_repr()} for kind in kinds[2:]}}
    check_stalls = args.device == "cpu" and args.threads > 1
    for mode in ("fb", "fo"):
        steps = {kind: make_step(module, shape, mode, args.device) for kind, module in modules.items()}
        steps["fft_floor"] = make_floor_step(counts[mode], shape.in_features, args.device)
        # On a busy machine, measure again (up to --attempts times) and keep the least disturbed run.
        attempts = []
        for _ in range(args.attempts if check_stalls else 1):
            times = time_interleaved(
                steps, args.repeats, args.warmup, args.device, probe=parallel_region_ms if check_stalls else None
            )
            attempts.append(times)
            if max(times.get("probe", [0.0])) <= STALL_MS:
                break
            print(f"{shape.name} {mode}: parallel ops stalled up to {max(times['probe']):.1f} ms, measuring again",
                  file=sys.stderr, flush=True)
        times = min(attempts, key=lambda t: max(t.get("probe", [0.0])))
        dense, circ = statistics.median(times["dense"]), statistics.median(times["circulant"])
        floor = statistics.median(times["fft_floor"])
        result[mode] = {
            "dense_ms": dense * 1e3,
            "circulant_ms": circ * 1e3,
            "speedup": dense / circ,
            "fft_floor_ms": floor * 1e3,
            "ratio_to_floor": circ / floor,
            "dense_samples_ms": [t * 1e3 for t in times["dense"]],
            "circulant_samples_ms": [t * 1e3 for t in times["circulant"]],
            "transforms": counts[mode],
            "attempts": len(attempts),
            "parallel_region_ms": times.get("probe"),
            "family": {
                kind: {
                    "ms": statistics.median(times[kind]) * 1e3,
                    "speedup": dense / statistics.median(times[kind]),
                    "vs_circulant": circ / statistics.median(times[kind]),
                }
                for kind in kinds[2:]
            },
        }
        if not args.no_memory:
            for kind in ("dense", "circulant"):
                peak = measure_peak_memory(args, shape, kind, mode)
                result[mode][f"{kind}_peak_mb"] = None if peak is None else peak / 2**20
    return result


def fmt_mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


STALL_MS = 1.0


def parallel_region_ms(repeats: int = 5) -> float:
    """Median time of a small multi-threaded elementwise op: ~0.02 ms on an idle machine. On an
    oversubscribed one, every OpenMP parallel region can stall for a scheduler tick or more (we saw
    12 ms), which penalizes code made of many short ops (FFT chunks) far more than a few big GEMMs."""
    a = torch.randn(256, 1024)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mul(a, a)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def print_table(results: list[dict]) -> None:
    print(
        f"{'shape':<16} {'rows':>5} {'in->out':>12} | {'fwd+bwd dense':>13} {'circ':>7} {'speedup':>7} {'/floor':>6} |"
        f" {'fwd dense':>9} {'circ':>7} {'speedup':>7} {'/floor':>6} | {'peak MB fb d/c':>15} {'fo d/c':>13}"
    )
    for r in results:
        fb, fo = r["fb"], r["fo"]
        print(
            f"{r['name']:<16} {r['rows']:>5} {str(r['in_features']) + '->' + str(r['out_features']):>12} |"
            f" {fb['dense_ms']:>11.2f}ms {fb['circulant_ms']:>7.2f} {fb['speedup']:>6.2f}x {fb['ratio_to_floor']:>6.2f} |"
            f" {fo['dense_ms']:>7.2f}ms {fo['circulant_ms']:>7.2f} {fo['speedup']:>6.2f}x {fo['ratio_to_floor']:>6.2f} |"
            f" {fmt_mb(fb.get('dense_peak_mb')):>7}/{fmt_mb(fb.get('circulant_peak_mb')):<7}"
            f" {fmt_mb(fo.get('dense_peak_mb')):>6}/{fmt_mb(fo.get('circulant_peak_mb')):<6}"
        )


def markdown_table(results: list[dict]) -> str:
    """The docs/benchmarks.md table: medians in ms, speedups over nn.Linear, ratio to the FFT floor."""
    lines = [
        "| shape | rows | in→out | fwd+bwd dense | circulant | speedup | ×floor | fwd dense | circulant | speedup"
        " | ×floor | peak MB fwd+bwd dense / circ | peak MB fwd dense / circ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        fb, fo = r["fb"], r["fo"]
        lines.append(
            f"| {r['name']} | {r['rows']} | {r['in_features']}→{r['out_features']} |"
            f" {fb['dense_ms']:.2f} | {fb['circulant_ms']:.2f} | **{fb['speedup']:.1f}×** | {fb['ratio_to_floor']:.1f} |"
            f" {fo['dense_ms']:.2f} | {fo['circulant_ms']:.2f} | **{fo['speedup']:.1f}×** | {fo['ratio_to_floor']:.1f} |"
            f" {fmt_mb(fb.get('dense_peak_mb'))} / {fmt_mb(fb.get('circulant_peak_mb'))} |"
            f" {fmt_mb(fo.get('dense_peak_mb'))} / {fmt_mb(fo.get('circulant_peak_mb'))} |"
        )
    return "\n".join(lines)


def family_markdown_table(results: list[dict]) -> str:
    """Low-rank and Monarch layers per shape: weights, forward+backward and forward times (ms) and their
    speedups over the dense layer and over the circulant one."""
    lines = [
        "| shape | layer | structure | weights | fwd+bwd ms | ×dense | ×circulant | fwd ms | ×dense | ×circulant |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | circulant | diag={r['diag']}, k={r['k_factor']} | {r['params_circulant']:,} |"
            f" {r['fb']['circulant_ms']:.2f} | {r['fb']['speedup']:.1f} | 1 |"
            f" {r['fo']['circulant_ms']:.2f} | {r['fo']['speedup']:.1f} | 1 |"
        )
        for kind, info in r["family"].items():
            fb, fo = r["fb"]["family"][kind], r["fo"]["family"][kind]
            lines.append(
                f"| | {kind.replace('@', ' ')}× | {info['structure']} | {info['params']:,} |"
                f" {fb['ms']:.2f} | {fb['speedup']:.1f} | {fb['vs_circulant']:.2f} |"
                f" {fo['ms']:.2f} | {fo['speedup']:.1f} | {fo['vs_circulant']:.2f} |"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per layer and mode (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--attempts", type=int, default=3,
        help="CPU: measure a shape again, up to this many times, while small parallel ops stall (busy machine)",
    )
    parser.add_argument("--diag", default="learned", choices=["learned", "sign", "none"])
    parser.add_argument("--k-factor", type=int, default=1)
    parser.add_argument(
        "--clock", default="wall", choices=sorted(CLOCKS),
        help="wall: elapsed time (the reported numbers); cpu: process CPU time, less sensitive to other load "
        "(meaningful with --threads 1)",
    )
    parser.add_argument(
        "--budgets", default="1,4,16", type=lambda text: [float(b) for b in text.split(",") if b],
        help="low-rank and Monarch layers at these multiples of the circulant layer's weights (empty: none)",
    )
    parser.add_argument("--shapes", default=",".join(s.name for s in SHAPES), help="comma-separated shape names")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    parser.add_argument("--probe-shape", help=argparse.SUPPRESS)
    parser.add_argument("--probe-kind", help=argparse.SUPPRESS)
    parser.add_argument("--probe-mode", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    if args.probe_shape:
        print(peak_memory_probe(args))
        return 0
    wanted = args.shapes.split(",")
    unknown = set(wanted) - {s.name for s in SHAPES}
    if unknown:
        parser.error(f"unknown --shapes {sorted(unknown)}; known: {[s.name for s in SHAPES]}")
    results = []
    for shape in SHAPES:
        if shape.name in wanted:
            results.append(run_shape(args, shape))
            print(f"done {shape.name}", file=sys.stderr, flush=True)
    print_table(results)
    if args.markdown:
        print(markdown_table(results))
    if args.budgets:
        print(family_markdown_table(results))
    disturbed = [
        f"{r['name']} {mode}" for r in results for mode in ("fb", "fo")
        if max(r[mode]["parallel_region_ms"] or [0.0]) > STALL_MS
    ]
    if disturbed:
        print(
            f"WARNING: small parallel ops stalled (> {STALL_MS} ms, idle: ~0.02 ms) during {', '.join(disturbed)}: "
            "the machine was oversubscribed and those timings are not representative; re-run when it is idle.",
            file=sys.stderr,
        )
    if args.json:
        meta = {
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "torch": torch.__version__,
            "threads": args.threads,
            "clock": args.clock,
            "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
            "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
            "load_average": os.getloadavg(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
