"""Train a model on YouTube-8M-format TFRecord files (the seed's train.py, same flags).

Writes run.json (the marker of a compactvid run), config.json, params.json, checkpoints/ (the newest 3),
metrics.jsonl and TensorBoard events into --train_dir, which must be new, empty or a compactvid run, and
which one training at a time holds (run.lock). Resumes from the newest checkpoint unless
--start_new_model is given (which removes only the files the previous run wrote). SIGINT/SIGTERM write a
checkpoint, then stop. Every flag of the seed's README works.

  CPU or one GPU:  compactvid train --train_dir=runs/dbof --train_data_pattern='data/train*.tfrecord'
                   --eval_data_pattern='data/validate*.tfrecord' --add_dbof --batch_size=80 ...
  4 GPUs (DDP):    compactvid train --num_gpu=4 ...
  2 machines:      torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d
                   --rdzv_endpoint=HOST:29500 $(which compactvid) train ...   (on each machine)
  TensorBoard:     tensorboard --logdir runs/
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
