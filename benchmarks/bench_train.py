"""Training speed, peak memory and inference latency of the seed's models and NeXtVLAD, dense against compact.

For each family (the paper's DBoF, NetVLAD, NetFV networks, MoE classifier; NeXtVLAD, LogisticModel as
its authors' script) three networks are measured in the same run: the dense one (the baseline), the
compact one as the paper makes it (DBoF: --dbof_circulant --fc_dbof_circulant; NetVLAD:
--fc_netvlad_circulant; NetFV: --fc_fisher_circulant; NeXtVLAD: --fc_nextvlad_circulant) and the fully
compact one (every matrix above 1 M parameters structured, the circulant MoE included; the flag sets
are `compactvid.fully_compact`'s).

- training: examples/s of the training step of `compactvid train` (forward, the original's loss and L2
  penalty, backward, per-tensor gradient clipping, Adam), on a fixed batch already in memory, so that
  the model is measured and not the data pipeline (see bench_data.py for that); median over steps.
- inference: milliseconds per video, batch of 1, one CPU thread (or the GPU), eval mode; median.
- precision (GPU): ``--precision bfloat16`` (default, `compactvid train`'s --mixed_precision) runs forward
  passes under bfloat16 autocast, ``--precision float32`` without it (the paper profile of the experiments).
  Also reported: the fastest step / pass, and the process's CPU time per step (less sensitive to other
  jobs on the machine than wall-clock time).
  Dense and compact steps alternate in one process, so a shared machine slows both alike.
- peak memory: on CPU, the peak resident memory of a fresh process that builds the model and trains two
  steps, minus what it held before (torch imported); on GPU, torch.cuda.max_memory_allocated.

Profiles: ``cpu`` (default) is the experiments' small profile (--dbof_cluster_size=512
--fc_hidden_size=128 --netvlad_cluster_size=16 --fv_cluster_size=16 --n_bagging=2; NeXtVLAD with 16
clusters and a hidden FC of 256) with the README's other sizes (--iterations=15 --batch_size=80
--moe_num_mixtures=4, 3862 classes, rgb+audio 1152 dims); ``paper`` is the README's sizes and
NeXtVLAD's local script's (128 clusters, hidden FC 2048), for a GPU.

    python benchmarks/bench_train.py --json bench_train.json
    python benchmarks/bench_train.py --profile paper --device cuda --json bench_train_gpu.json
    python benchmarks/bench_train.py --profile paper --device cuda --precision float32 --json bench_train_f32.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import time

from compactvid.fully_compact import FAMILIES, FULLY_COMPACT, PAPER_COMPACT

PROFILES = {
    "cpu": ["--iterations=15", "--batch_size=80", "--moe_num_mixtures=4", "--n_bagging=2",
            "--dbof_cluster_size=512", "--fc_hidden_size=128", "--netvlad_cluster_size=16",
            "--fv_cluster_size=16", "--nextvlad_cluster_size=16", "--nextvlad_hidden_size=256"],
    "paper": ["--iterations=15", "--batch_size=80", "--moe_num_mixtures=4", "--n_bagging=10",
              "--dbof_cluster_size=8192", "--fc_hidden_size=512", "--netvlad_cluster_size=64",
              "--fv_cluster_size=64", "--nextvlad_cluster_size=128", "--nextvlad_hidden_size=2048"],
}
VARIANTS = ("dense", "compact", "fully_compact")
MODELS = {  # family -> flags of each variant
    family: (flags, flags + PAPER_COMPACT[family], flags + FULLY_COMPACT[family])
    for family, flags in FAMILIES.items()}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


class _Run:
    """A model of `flags` with its optimizer, a fixed batch, and the training step of `compactvid train`."""

    def __init__(self, flags: list[str], device: "torch.device") -> None:
        import logging

        import torch

        from compactvid.flags import parse_config
        from compactvid.losses import create_loss
        from compactvid.models.registry import create_model
        from compactvid.models.report import parameter_report
        from compactvid.train import create_optimizer

        logging.getLogger("compactvid").setLevel(logging.ERROR)  # the profile's notes on flags of other models
        self.config, _ = parse_config(flags)
        self.device = device
        torch.manual_seed(0)
        c = self.config
        shape = (c.batch_size, c.n_bagging, c.iterations, sum(c.feature_size_list))
        self.frames = torch.nn.functional.normalize(torch.randn(shape), dim=-1).to(device)
        self.labels = (torch.rand(c.batch_size, c.num_classes) < 3 / c.num_classes).float().to(device)
        self.model = create_model(c.model_args()).to(device)
        self.parameters = parameter_report(self.model, c.model_args())["total"]
        self.optimizer = create_optimizer(c, self.model.parameters())
        self.loss_fn = create_loss(c.label_loss)

    def train_step(self) -> None:
        from compactvid.train import clip_gradient_norms, learning_rate

        c, model = self.config, self.model
        model.train()
        with self.autocast():
            predictions = model(self.frames)
        loss = self.loss_fn(predictions.float(), self.labels) + c.regularization_penalty * model.regularization_loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradient_norms(model.parameters(), c.clip_gradient_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(c, 0)
        self.optimizer.step()

    def infer_one(self) -> None:
        import torch

        self.model.eval()
        with torch.inference_mode(), self.autocast():
            self.model(self.frames[:1])

    def autocast(self):
        """The autocast of `compactvid train` (bfloat16 on GPU with --mixed_precision)."""
        from compactvid.device import autocast

        return autocast(self.device, self.config.mixed_precision)


def _timed(fn, device: "torch.device") -> tuple[float, float]:
    """(wall-clock seconds, this process's CPU seconds) of one call."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu


def measure_speed(variants: list[list[str]], device_name: str, steps: int, inference_runs: int) -> list[dict]:
    """Training step and batch-1 inference times of the models of ``variants`` (one flag list each),
    measured in alternation (so that a busy machine slows all alike); medians. Run in a fresh process."""
    import torch

    device = torch.device(device_name)
    runs = [_Run(flags, device) for flags in variants]
    for run in runs:
        run.train_step()  # warm-up: optimizer state, allocator, FFT plans
    train = [[] for _ in runs]
    for _ in range(steps):
        for i, run in enumerate(runs):
            train[i].append(_timed(run.train_step, device))
    if device.type == "cpu":
        torch.set_num_threads(1)
    for run in runs:
        run.infer_one()
    infer = [[] for _ in runs]
    for _ in range(inference_runs):
        for i, run in enumerate(runs):
            infer[i].append(_timed(run.infer_one, device))
    results = []
    for i, run in enumerate(runs):
        wall, cpu = (list(column) for column in zip(*train[i]))
        infer_wall = [t for t, _ in infer[i]]
        results.append({"parameters": run.parameters,
                        "train_examples_per_sec": run.config.batch_size / statistics.median(wall),
                        "train_step_ms": 1000 * statistics.median(wall), "train_step_min_ms": 1000 * min(wall),
                        "train_step_cpu_ms": 1000 * statistics.median(cpu),
                        "inference_ms_per_video": 1000 * statistics.median(infer_wall),
                        "inference_min_ms_per_video": 1000 * min(infer_wall)})
    return results


def measure_memory(flags: list[str], device_name: str) -> float:
    """Peak memory of building the model and training it for two steps, in MB. Run in a fresh process."""
    import torch

    device = torch.device(device_name)
    before = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = _Run(flags, device)
    run.train_step()
    run.train_step()
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mb() - before


def _in_fresh_process(fn, *args):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16",
                        help="on GPU: forward passes under bfloat16 autocast (--mixed_precision) or in float32")
    parser.add_argument("--steps", type=int, default=5, help="Timed training steps per model (after one warm-up).")
    parser.add_argument("--inference_runs", type=int, default=30, help="Timed batch-1 forward passes per model.")
    parser.add_argument("--families", default=",".join(MODELS),
                        help=f"Comma-separated families to measure (default: all of {','.join(MODELS)}).")
    parser.add_argument("--json", help="Write the results here.")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    rows = []
    load_before = os.getloadavg()
    families = [family for family in args.families.split(",") if family]
    unknown = sorted(set(families) - set(MODELS))
    if unknown:
        parser.error(f"--families: unknown {', '.join(unknown)}; choose among {', '.join(MODELS)}")
    for embedding in families:
        variants = MODELS[embedding]
        profile = PROFILES[args.profile] + [f"--mixed_precision={args.precision == 'bfloat16'}"]
        speeds = _in_fresh_process(measure_speed, [profile + flags for flags in variants], args.device,
                                   args.steps, args.inference_runs)
        for variant, flags, speed in zip(VARIANTS, variants, speeds):
            memory = _in_fresh_process(measure_memory, profile + flags, args.device)
            rows.append({"embedding": embedding, "variant": variant, "flags": " ".join(flags), **speed,
                         "peak_memory_mb": memory})
        print(f"measured {embedding}", flush=True)

    memory = "peak GPU MB" if args.device == "cuda" else "peak RSS MB"
    print(f"\nprofile {args.profile} on {args.device} ({args.precision if args.device == 'cuda' else 'float32'}): "
          f"{' '.join(PROFILES[args.profile])}")
    print(f"{'model':<9} {'variant':<13} {'params':>11} {'train ex/s':>11} {'step ms':>8} {'min':>7} "
          f"{'cpu ms':>8} {memory:>12} {'infer ms/video':>15} {'min':>6}")
    for r in rows:
        print(f"{r['embedding']:<9} {r['variant']:<13} {r['parameters']:>11,} {r['train_examples_per_sec']:>11.1f} "
              f"{r['train_step_ms']:>8.1f} {r['train_step_min_ms']:>7.1f} {r['train_step_cpu_ms']:>8.1f} "
              f"{r['peak_memory_mb']:>12.0f} {r['inference_ms_per_video']:>15.2f} "
              f"{r['inference_min_ms_per_video']:>6.2f}")
    for embedding in families:
        dense, *compacts = (r for r in rows if r["embedding"] == embedding)
        for compact in compacts:
            print(f"{embedding} {compact['variant']}/dense: parameters "
                  f"{compact['parameters'] / dense['parameters']:.3f}, training speed "
                  f"x{compact['train_examples_per_sec'] / dense['train_examples_per_sec']:.2f}, memory "
                  f"x{compact['peak_memory_mb'] / max(dense['peak_memory_mb'], 1e-9):.2f}, inference time "
                  f"x{compact['inference_ms_per_video'] / dense['inference_ms_per_video']:.2f}")
    if args.json:
        import torch

        with open(args.json, "w") as f:
            json.dump({"profile": args.profile, "profile_flags": PROFILES[args.profile], "device": args.device,
                       "load_average_1m": {"start": load_before[0], "end": os.getloadavg()[0]},
                       "precision": args.precision if args.device == "cuda" else "float32",
                       "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                   "torch": torch.__version__,
                                   "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None},
                       "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
