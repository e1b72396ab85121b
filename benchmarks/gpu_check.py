"""GPU readiness in one command: everything that needs a CUDA GPU, run and recorded in one JSON.

On a machine with a CUDA GPU and a CUDA build of PyTorch it runs, each step in its own process:
1. the tests marked ``cuda`` (``pytest -m cuda``; skipped everywhere else);
2. `compactvid make-data`, then one epoch of `compactvid train` on the generated data (with 2 or more
   GPUs: ``--num_gpu=2``, two DDP processes over NCCL), `compactvid eval` and `compactvid inference` of
   that run on the GPU;
3. training and inference speed and peak memory of the paper profile's models, dense and compact, in
   float32 and under bfloat16 autocast (``bench_train.py --profile paper --device cuda --precision ...``);
4. CirculantLinear against nn.Linear on the GPU (``bench_layers.py --device cuda``).
Each step's command, exit status, seconds, the end of its output and the JSON it wrote go into --json,
with the GPUs (name, memory), their count and the versions of torch and CUDA; the exit status is 0 when
every step passed. Without a CUDA GPU it stops at once: one line, exit status 2, no JSON.

    python benchmarks/gpu_check.py --json gpu_check.json             # about half an hour on one GPU
    python benchmarks/gpu_check.py --quick --json gpu_check.json     # fewer timed repeats: minutes

Steps write into --workdir (default: a new temporary directory, kept and named in the JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_TAIL = 4000  # characters of each step's output kept in the JSON

# A small DBoF model on 20 synthetic classes: the point is every code path on the GPU, not accuracy.
TRAIN_FLAGS = ["--num_classes=20", "--add_dbof", "--dbof_cluster_size=256", "--fc_hidden_size=64", "--iterations=10",
               "--batch_size=32", "--num_epochs=1", "--num_readers=2", "--device=cuda", "--start_new_model"]


@dataclasses.dataclass(frozen=True)
class Step:
    """One command of the check; `result` is the JSON file it writes, if any."""

    name: str
    argv: list[str]
    result: Path | None = None


def compactvid(*args: str) -> list[str]:
    return [sys.executable, "-m", "compactvid.cli", *args]


def plan(workdir: Path, gpus: int, quick: bool) -> list[Step]:
    """The steps on a machine with `gpus` CUDA devices (module docstring), writing into `workdir`."""
    data, run = workdir / "data", workdir / "run"
    processes = min(gpus, 2)
    steps = [
        Step("cuda_tests", [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                            str(ROOT / "tests")]),
        Step("make_data", compactvid("make-data", f"--output_dir={data}", "--num_videos=400", "--num_classes=20",
                                     "--seed=0", "--overwrite")),
        Step(f"train_{processes}_gpu", compactvid("train", f"--train_dir={run}",
                                                  f"--train_data_pattern={data}/train*.tfrecord",
                                                  f"--eval_data_pattern={data}/validate*.tfrecord",
                                                  f"--num_gpu={processes}", *TRAIN_FLAGS)),
        Step("eval", compactvid("eval", f"--train_dir={run}", f"--eval_data_pattern={data}/validate*.tfrecord",
                                "--run_once", "--device=cuda", f"--json={workdir / 'eval.json'}"),
             workdir / "eval.json"),
        Step("inference", compactvid("inference", f"--train_dir={run}", f"--input_data_pattern={data}/test*.tfrecord",
                                     f"--output_file={workdir / 'predictions.csv'}", "--device=cuda")),
    ]
    repeats = ["--steps=3", "--inference_runs=10"] if quick else []
    for precision in ("float32", "bfloat16"):
        result = workdir / f"bench_train_{precision}.json"
        steps.append(Step(f"bench_train_paper_{precision}",
                          [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--profile=paper",
                           "--device=cuda", f"--precision={precision}", *repeats, f"--json={result}"], result))
    result = workdir / "bench_layers.json"
    steps.append(Step("bench_layers", [sys.executable, str(ROOT / "benchmarks" / "bench_layers.py"), "--device=cuda",
                                       *(["--repeats=3"] if quick else []), f"--json={result}"], result))
    return steps


def run_step(step: Step, timeout: float) -> dict:
    """Run one step; its record for the JSON."""
    start = time.perf_counter()
    try:
        done = subprocess.run(step.argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        returncode, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        returncode = None
        output = f"{expired.stdout or ''}{expired.stderr or ''}\n(stopped after {timeout:.0f} s)"
    record = {"name": step.name, "command": step.argv, "returncode": returncode,
              "seconds": round(time.perf_counter() - start, 1), "output_tail": output[-OUTPUT_TAIL:]}
    if step.result is not None and step.result.exists():
        record["result"] = json.loads(step.result.read_text())
    return record


def machine() -> dict:
    import torch

    gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    return {"gpus": [{"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)} for p in gpus],
            "gpu_count": len(gpus), "torch": torch.__version__, "cuda": torch.version.cuda,
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.distributed.is_nccl_available() else None,
            "platform": platform.platform(), "python": platform.python_version()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="write the record of every step here")
    parser.add_argument("--workdir", default=None, help="where the steps write (default: a new temporary directory)")
    parser.add_argument("--quick", action="store_true", help="fewer timed repeats in the benchmarks")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one step may take (default 3600)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU here (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}): "
              f"run it on a machine with an NVIDIA GPU and a CUDA build of PyTorch", file=sys.stderr)
        return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="compactvid-gpu-check-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "workdir": str(workdir), "quick": args.quick, "steps": []}
    for step in plan(workdir, torch.cuda.device_count(), args.quick):
        print(f"gpu_check: {step.name} ...", end=" ", flush=True)
        record = run_step(step, args.timeout)
        report["steps"].append(record)
        print(f"{'ok' if record['returncode'] == 0 else 'FAILED'} ({record['seconds']:.0f} s)", flush=True)
        Path(args.json).write_text(json.dumps(report, indent=2))  # after each step: a crash keeps the rest
    failed = [r["name"] for r in report["steps"] if r["returncode"] != 0]
    report["passed"] = not failed
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"gpu_check: {'every step passed' if not failed else 'failed: ' + ', '.join(failed)}; {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
