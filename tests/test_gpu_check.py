"""benchmarks/gpu_check.py where no GPU is: its one-line refusal, and a plan whose every command parses."""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compactvid.cli import build_subcommand_parser

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@functools.cache
def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_stops_with_one_line_and_writes_nothing(tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), f"--json={tmp_path / 'out.json'}"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gpu_check: no CUDA GPU here")
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("gpus,processes", [(1, 1), (2, 2), (8, 2)])
@pytest.mark.parametrize("quick", [False, True])
def test_every_command_of_the_plan_parses(tmp_path, gpus, processes, quick):
    gpu_check = _module("gpu_check")
    parsers = {"bench_train.py": _module("bench_train").build_parser(),
               "bench_layers.py": _module("bench_layers").build_parser()}
    steps = gpu_check.plan(tmp_path, gpus, quick)
    for step in steps:
        if step.argv[1:3] == ["-m", "compactvid.cli"]:
            build_subcommand_parser(step.argv[3])[1].parse_args(step.argv[4:])  # exits on an unknown flag
        elif step.argv[1:3] == ["-m", "pytest"]:
            assert step.argv[3:5] == ["-m", "cuda"]
        else:
            args = parsers[Path(step.argv[1]).name].parse_args(step.argv[2:])
            assert args.device == "cuda" and Path(args.json) == step.result
    names = [step.name for step in steps]
    assert f"train_{processes}_gpu" in names
    assert {"bench_train_paper_float32", "bench_train_paper_bfloat16", "bench_layers"} <= set(names)
    train = next(step for step in steps if step.name.startswith("train_"))
    assert f"--num_gpu={processes}" in train.argv


def test_cuda_tests_exist_for_it_to_run():
    result = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "--collect-only", "-q", "-p",
                             "no:cacheprovider", str(Path(__file__).parent / "test_circulant.py")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "test_cuda_matches_cpu" in result.stdout
