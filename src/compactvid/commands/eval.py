"""Evaluate the checkpoints of a training run: GAP@k, mAP, Hit@1, PERR and loss.

The model is rebuilt from --train_dir/config.json, so model flags need not be repeated. With
--run_once, the newest checkpoint is evaluated once; without it, every new checkpoint is evaluated as
it appears (as the original's eval.py), until interrupted.

--segment_labels scores segments instead (2019 challenge): the mAP@N of the run's ranking of every
5-frame segment of --eval_data_pattern against its rated segments; with --submission_file, of an existing
`Class,Segments` submission (no model needed), as the official segment_eval_inference.py does.

  compactvid eval --segment_labels --submission_file=submission.csv --eval_data_pattern='validate*.tfrecord'
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time

from compactvid.commands.json_output import add_json_flag, write_json
from compactvid.commands.trained_run import add_trained_run_arguments
from compactvid.errors import ConfigError
from compactvid.flags import add_bool_flag
from compactvid.segment_submission import MAX_PREDICTIONS

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_trained_run_arguments(parser)
    parser.add_argument("--eval_data_pattern", required=True,
                        help="Files to evaluate on: a glob, or several separated by commas (any fsspec path).")
    add_bool_flag(parser, "run_once", False,
                  "Evaluate the newest checkpoint once and exit (default: watch for new ones).")
    parser.add_argument("--top_k", type=int, default=20, help="Predictions per video that count (GAP@k).")
    add_json_flag(parser, "the results (keys gap, map, hit_at_1, perr, loss, step; one line per checkpoint "
                          "evaluated)")
    parser.add_argument("--poll_seconds", type=float, default=30.0,
                        help="Without --run_once: seconds between looks for a new checkpoint.")
    segments = parser.add_argument_group("segment level (2019 challenge)")
    add_bool_flag(segments, "segment_labels", False,
                  "Score segments: the challenge's mAP@N against the rated segments of --eval_data_pattern (JSON "
                  "keys map_at_n, num_classes, rated_segments).")
    segments.add_argument("--submission_file", default=None,
                          help="With --segment_labels: score this Class,Segments CSV (any fsspec path) instead "
                               "of a run's checkpoint.")
    segments.add_argument("--top_n", type=int, default=0,
                          help="With --segment_labels: segments per class that count (0: all; mAP@N).")
    segments.add_argument("--segment_max_pred", type=int, default=MAX_PREDICTIONS,
                          help="With --segment_labels and a run: segments ranked per class, as in a submission.")


def run(args: argparse.Namespace) -> int:
    from compactvid import checkpoint as ckpt
    from compactvid.device import resolve_device
    from compactvid.errors import CheckpointError

    if args.segment_labels:
        _check_segment_flags(args)
        if args.submission_file:
            from compactvid.segment_evaluation import score_submission

            score = score_submission(args.submission_file, args.eval_data_pattern, args.top_n)
            _report_segments(dataclasses.asdict(score), args.json)
            return 0
    elif args.submission_file or args.top_n:
        raise ConfigError("--submission_file and --top_n score segments: add --segment_labels")
    device = resolve_device(args.device)
    last_step, refused, waiting = None, set(), False
    while True:
        found = _newest_loadable(args.train_dir, last_step, refused)
        if found is None and args.run_once:
            raise CheckpointError(f"{ckpt.checkpoint_dir(args.train_dir)}: no checkpoint to evaluate; has "
                                  f"`compactvid train --train_dir={args.train_dir}` written one yet?")
        if found is None and last_step is None and not waiting:
            log.info("waiting for a checkpoint in %s (looking every %g s; Ctrl-C stops)",
                     ckpt.checkpoint_dir(args.train_dir), args.poll_seconds)
            waiting = True
        if found is not None:
            step, path, state = found
            results = _evaluate(args, path, state, device)
            last_step = step
            (_report_segments if args.segment_labels else _report)(results, args.json)
        if args.run_once:
            return 0
        time.sleep(args.poll_seconds)


def _newest_loadable(train_dir: str, after: int | None, refused: set[str]) -> tuple[int, str, dict] | None:
    """(step, path, state) of the newest checkpoint of `train_dir` newer than step `after` that loads, or None.

    An unreadable file is reported once, added to `refused` and passed over for the next older one, as
    `inference` and `train` do; a file the trainer's rotation removed meanwhile is passed over silently.
    """
    from compactvid import checkpoint as ckpt
    from compactvid.errors import CheckpointError

    for step, path in reversed(ckpt.list_checkpoints(train_dir)):
        if after is not None and step <= after:
            return None
        if path in refused:
            continue
        try:
            return step, path, ckpt.load_checkpoint(path)
        except CheckpointError as error:
            if os.path.exists(path):
                refused.add(path)
                log.warning("skipping %s; evaluating the next older checkpoint instead", error)
    return None


def _check_segment_flags(args: argparse.Namespace) -> None:
    if args.top_n < 0:
        raise ConfigError(f"--top_n={args.top_n}: use 0 (every segment counts) or a positive number")
    if args.segment_max_pred < 1:
        raise ConfigError(f"--segment_max_pred={args.segment_max_pred}: must be a positive integer")


def _evaluate(args: argparse.Namespace, checkpoint_path: str, state: dict, device) -> dict:
    """The video-level or (--segment_labels) segment-level metrics of one checkpoint (loaded: `state`)."""
    if args.segment_labels:
        from compactvid.segment_evaluation import evaluate_segments_checkpoint

        return evaluate_segments_checkpoint(args.train_dir, args.eval_data_pattern, checkpoint_path,
                                            batch_size=args.batch_size, top_n=args.top_n,
                                            max_pred=args.segment_max_pred, device=device,
                                            num_readers=args.num_readers, state=state)
    from compactvid.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(args.train_dir, args.eval_data_pattern, checkpoint_path, batch_size=args.batch_size,
                               top_k=args.top_k, device=device, num_readers=args.num_readers, state=state)


def _report_segments(results: dict, json_path: str | None) -> None:
    step = f"step {results['step']}: " if "step" in results else ""
    print(f"{step}mAP@N {results['map_at_n']:.6f} over {results['num_classes']} classes, "
          f"{results['rated_segments']} rated (segment, class) pairs", flush=True)
    if json_path is not None:
        write_json(results, json_path)


def _report(results: dict, json_path: str | None) -> None:
    print(f"step {results['step']}: GAP@k {results['gap']:.6f}  mAP {results['map']:.6f}  "
          f"Hit@1 {results['hit_at_1']:.6f}  PERR {results['perr']:.6f}  loss {results['loss']:.6f}", flush=True)
    if json_path is not None:
        write_json(results, json_path)
