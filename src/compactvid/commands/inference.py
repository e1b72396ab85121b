"""Write the top-k predictions of a trained model as a Kaggle CSV (VideoId,LabelConfidencePairs).

The model and its data flags come from --train_dir (config.json and the newest checkpoint). Works on
test files without labels; rows are streamed to --output_file (any fsspec path).
"""

from __future__ import annotations

import argparse
import logging

from compactvid.commands.trained_run import add_trained_run_arguments

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_trained_run_arguments(parser)
    parser.add_argument("--input_data_pattern", required=True,
                        help="Files to predict: a glob, or several separated by commas (any fsspec path).")
    parser.add_argument("--output_file", required=True, help="The CSV to write (any fsspec path).")
    parser.add_argument("--top_k", type=int, default=20, help="Label/score pairs per video.")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import fsspec
    import torch

    from compactvid.data.loader import make_loader
    from compactvid.errors import ConfigError
    from compactvid.evaluate import load_trained_model
    from compactvid.inference import write_predictions

    if args.top_k < 1:
        raise ConfigError(f"--top_k={args.top_k}: must be a positive integer")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device=cuda but PyTorch sees no CUDA GPU; use --device=cpu or auto")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    config, model, state = load_trained_model(args.train_dir, device=device)
    if args.num_readers is not None:
        config = dataclasses.replace(config, num_readers=args.num_readers)
    loader = make_loader(args.input_data_pattern, config, training=False, batch_size=args.batch_size,
                         dequantize=False)
    with fsspec.open(args.output_file, "w") as out:
        videos = write_predictions(model, loader, out, args.top_k, device, config.mixed_precision)
    log.info("wrote the top %d predictions of %d videos to %s (checkpoint of step %d)", args.top_k, videos,
             args.output_file, state["position"]["step"])
    return 0
