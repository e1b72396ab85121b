"""Training speed, peak memory and inference latency of the seed's models, dense against compact.

For each embedding of the paper (DBoF, NetVLAD, NetFV) two networks are measured in the same run: the
dense one (the baseline) and the compact one, with every layer of that embedding the flags can make
circulant (DBoF: --dbof_circulant --fc_dbof_circulant; NetVLAD: --fc_netvlad_circulant; NetFV:
--fc_fisher_circulant), MoE classifier in both.

- training: examples/s of the training step of `compactvid train` (forward, the original's loss and L2
  penalty, backward, per-tensor gradient clipping, Adam), on a fixed batch already in memory, so that
  the model is measured and not the data pipeline (see bench_data.py for that); median over steps.
- peak memory: on CPU, the peak resident memory of a fresh process that builds the model and trains,
  minus what the process held before building it (torch imported); on GPU, torch.cuda.max_memory_allocated.
- inference: milliseconds per video, batch of 1, one CPU thread (or the GPU), eval mode; median.

Profiles: ``cpu`` (default) is the experiments' small profile (--dbof_cluster_size=512
--fc_hidden_size=128 --netvlad_cluster_size=16 --fv_cluster_size=16 --n_bagging=2) with the README's
other sizes (--iterations=15 --batch_size=80 --moe_num_mixtures=4, 3862 classes, rgb+audio 1152
dims); ``paper`` is the README's sizes (for a GPU).

    python benchmarks/bench_train.py --json bench_train.json
    python benchmarks/bench_train.py --profile paper --device cuda --json bench_train_gpu.json
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

PROFILES = {
    "cpu": ["--iterations=15", "--batch_size=80", "--moe_num_mixtures=4", "--n_bagging=2",
            "--dbof_cluster_size=512", "--fc_hidden_size=128", "--netvlad_cluster_size=16",
            "--fv_cluster_size=16"],
    "paper": ["--iterations=15", "--batch_size=80", "--moe_num_mixtures=4", "--n_bagging=10",
              "--dbof_cluster_size=8192", "--fc_hidden_size=512", "--netvlad_cluster_size=64",
              "--fv_cluster_size=64"],
}
MODELS = {  # embedding -> (dense flags, compact flags)
    "DBoF": (["--add_dbof"], ["--add_dbof", "--dbof_circulant", "--fc_dbof_circulant"]),
    "NetVLAD": (["--add_netvlad"], ["--add_netvlad", "--fc_netvlad_circulant"]),
    "NetFV": (["--add_fisher_vector"], ["--add_fisher_vector", "--fc_fisher_circulant"]),
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def measure(flags: list[str], device_name: str, steps: int, inference_runs: int) -> dict:
    """Build the model of `flags`, time training steps and batch-1 inference. Run in a fresh process."""
    import logging

    import torch

    from compactvid.flags import parse_config
    from compactvid.losses import create_loss
    from compactvid.models import create_model, parameter_report
    from compactvid.train import clip_gradient_norms, create_optimizer, learning_rate

    logging.getLogger("compactvid").setLevel(logging.ERROR)  # the profile's notes on flags of other models
    config, _ = parse_config(flags)
    device = torch.device(device_name)
    torch.manual_seed(0)
    shape = (config.batch_size, config.n_bagging, config.iterations, sum(config.feature_size_list))
    frames = torch.nn.functional.normalize(torch.randn(shape), dim=-1).to(device)
    labels = (torch.rand(config.batch_size, config.num_classes) < 3 / config.num_classes).float().to(device)
    rss_before = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = create_model(config).to(device)
    optimizer = create_optimizer(config, model.parameters())
    loss_fn = create_loss(config.label_loss)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            predictions = model(frames)
        loss = loss_fn(predictions.float(), labels) + config.regularization_penalty * model.regularization_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradient_norms(model.parameters(), config.clip_gradient_norm)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, 0)
        optimizer.step()

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    model.train()
    step()  # warm-up: optimizer state, allocator
    train_seconds = statistics.median(timed(step) for _ in range(steps))
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mb() - rss_before)

    model.eval()
    if device.type == "cpu":
        torch.set_num_threads(1)
    one = frames[:1]
    with torch.inference_mode():
        model(one)
        infer_seconds = statistics.median(timed(lambda: model(one)) for _ in range(inference_runs))
    report = parameter_report(model, config)
    return {"parameters": report["total"], "train_examples_per_sec": config.batch_size / train_seconds,
            "train_step_ms": 1000 * train_seconds, "peak_memory_mb": peak,
            "inference_ms_per_video": 1000 * infer_seconds}


def _measure_in_fresh_process(args: tuple) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=5, help="Timed training steps per model (after one warm-up).")
    parser.add_argument("--inference_runs", type=int, default=30, help="Timed batch-1 forward passes per model.")
    parser.add_argument("--json", help="Write the results here.")
    args = parser.parse_args()

    rows = []
    for embedding, variants in MODELS.items():
        for variant, flags in zip(("dense", "compact"), variants):
            result = _measure_in_fresh_process((PROFILES[args.profile] + flags, args.device, args.steps,
                                                args.inference_runs))
            rows.append({"embedding": embedding, "variant": variant, "flags": " ".join(flags), **result})
            print(f"measured {embedding} {variant}", flush=True)

    memory = "peak GPU MB" if args.device == "cuda" else "peak RSS MB"
    print(f"\nprofile {args.profile} on {args.device}: {' '.join(PROFILES[args.profile])}")
    print(f"{'model':<9} {'variant':<8} {'params':>11} {'train ex/s':>11} {'step ms':>9} {memory:>12} "
          f"{'infer ms/video':>15}")
    for r in rows:
        print(f"{r['embedding']:<9} {r['variant']:<8} {r['parameters']:>11,} {r['train_examples_per_sec']:>11.1f} "
              f"{r['train_step_ms']:>9.1f} {r['peak_memory_mb']:>12.0f} {r['inference_ms_per_video']:>15.2f}")
    for embedding in MODELS:
        dense, compact = (r for r in rows if r["embedding"] == embedding)
        print(f"{embedding}: compact/dense parameters {compact['parameters'] / dense['parameters']:.3f}, "
              f"training speed x{compact['train_examples_per_sec'] / dense['train_examples_per_sec']:.2f}, "
              f"memory x{compact['peak_memory_mb'] / max(dense['peak_memory_mb'], 1e-9):.2f}, "
              f"inference time x{compact['inference_ms_per_video'] / dense['inference_ms_per_video']:.2f}")
    if args.json:
        import torch

        with open(args.json, "w") as f:
            json.dump({"profile": args.profile, "profile_flags": PROFILES[args.profile], "device": args.device,
                       "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                   "torch": torch.__version__,
                                   "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None},
                       "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
