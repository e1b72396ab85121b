"""Evaluate the checkpoints of a training run: GAP@k, mAP, Hit@1, PERR and loss.

The model is rebuilt from --train_dir/config.json, so model flags need not be repeated. With
--run_once, the newest checkpoint is evaluated once; without it, every new checkpoint is evaluated as
it appears (as the original's eval.py), until interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from compactvid.commands.trained_run import add_trained_run_arguments
from compactvid.flags import parse_bool

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_trained_run_arguments(parser)
    parser.add_argument("--eval_data_pattern", required=True,
                        help="Files to evaluate on: a glob, or several separated by commas (any fsspec path).")
    parser.add_argument("--run_once", nargs="?", const=True, default=False, type=parse_bool, metavar="BOOL",
                        help="Evaluate the newest checkpoint once and exit (default: watch for new ones).")
    parser.add_argument("--norun_once", dest="run_once", action="store_false", help=argparse.SUPPRESS)
    parser.add_argument("--top_k", type=int, default=20, help="Predictions per video that count (GAP@k).")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="Also write the results as JSON (keys gap, map, hit_at_1, perr, loss, step) to "
                             "PATH; without PATH, to stdout.")
    parser.add_argument("--poll_seconds", type=float, default=30.0,
                        help="Without --run_once: seconds between looks for a new checkpoint.")


def run(args: argparse.Namespace) -> int:
    import torch

    from compactvid import checkpoint as ckpt
    from compactvid.errors import CheckpointError
    from compactvid.evaluate import evaluate_checkpoint

    if args.device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("--device=cuda but PyTorch sees no CUDA GPU; use --device=cpu or auto")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    last_step = None
    while True:
        checkpoints = ckpt.list_checkpoints(args.train_dir)
        if args.run_once and not checkpoints:
            raise CheckpointError(f"{ckpt.checkpoint_dir(args.train_dir)}: no checkpoint to evaluate; has "
                                  f"`compactvid train --train_dir={args.train_dir}` written one yet?")
        if checkpoints and checkpoints[-1][0] != last_step:
            step, path = checkpoints[-1]
            try:
                results = evaluate_checkpoint(args.train_dir, args.eval_data_pattern, path,
                                              batch_size=args.batch_size, top_k=args.top_k, device=device,
                                              num_readers=args.num_readers)
            except CheckpointError:
                if args.run_once:
                    raise
                results = None  # deleted by the trainer's rotation meanwhile: take the next one
            if results is not None:
                last_step = step
                _report(results, args.json)
        if args.run_once:
            return 0
        time.sleep(args.poll_seconds)


def _report(results: dict, json_path: str | None) -> None:
    print(f"step {results['step']}: GAP@k {results['gap']:.6f}  mAP {results['map']:.6f}  "
          f"Hit@1 {results['hit_at_1']:.6f}  PERR {results['perr']:.6f}  loss {results['loss']:.6f}", flush=True)
    if json_path is None:
        return
    text = json.dumps(results, indent=2) + "\n"
    if json_path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from compactvid.checkpoint import write_text_atomically

        write_text_atomically(json_path, text)
