"""Flags shared by the subcommands that use a trained run (`eval`, `inference`)."""

import argparse


def add_trained_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--train_dir, --batch_size, --num_readers and --device, as `eval` and `inference` take them."""
    parser.add_argument("--train_dir", default="/tmp/yt8m_model/", help="Directory of the training run.")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="Videos per batch (default: the training run's --batch_size).")
    parser.add_argument("--num_readers", type=int, default=None,
                        help="Data-loading workers (default: the training run's, capped at the CPU count).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="Where to run the model (auto: CUDA when present).")
