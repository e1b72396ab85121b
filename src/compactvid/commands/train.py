"""Train a model on YouTube-8M-format TFRecord files (the seed's train.py, same flags).

Runs on the CPU, one GPU, the GPUs of this machine (--num_gpu=N) or many machines (torchrun). Writes
config.json, params.json, checkpoints/, metrics.jsonl and TensorBoard events into --train_dir and
resumes from its newest checkpoint unless --start_new_model is given. Every flag of the seed's
README is accepted; see `python -c "import compactvid.train; help(compactvid.train)"` for examples.
"""

from __future__ import annotations

import argparse

from compactvid.flags import add_config_flags, config_from_namespace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, ("data", "model", "train", "ignored"))


def run(args: argparse.Namespace) -> int:
    from compactvid.train import train  # imports torch: only when the command runs

    config, _ = config_from_namespace(args)
    return train(config)
