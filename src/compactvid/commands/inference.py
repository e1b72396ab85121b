"""Write the top-k predictions of a trained model as a Kaggle CSV (VideoId,LabelConfidencePairs).

The model and its data flags come from --train_dir (config.json and the newest checkpoint), or from an
artifact of `compactvid export` (--model=PATH.onnx or PATH.pt2, which carries the run's data flags; an
ONNX file runs in ONNX Runtime). Works on test files without labels; rows are streamed to
--output_file (any fsspec path).

--segment_labels writes the 2019 segment challenge's submission instead: every 5-frame segment of every
video is scored, and each class of --segment_label_ids_file gets one line `Class,Segments` of its
--segment_max_pred best segments (`<video id>:<start>`), best first.

  compactvid inference --train_dir=runs/segments --input_data_pattern='test*.tfrecord' --segment_labels \
      --segment_label_ids_file=segment_label_ids.csv --output_file=submission.csv
"""

from __future__ import annotations

import argparse
import logging

from compactvid.commands.trained_run import add_trained_run_arguments
from compactvid.flags import parse_bool
from compactvid.segment_submission import MAX_PREDICTIONS

OFFICIAL_VOCABULARY = "https://raw.githubusercontent.com/google/youtube-8m/master/segment_label_ids.csv"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_trained_run_arguments(parser)
    parser.add_argument("--model", default=None, metavar="PATH",
                        help="An exported artifact (.onnx or .pt2) to serve instead of --train_dir's checkpoint.")
    parser.add_argument("--input_data_pattern", required=True,
                        help="Files to predict: a glob, or several separated by commas (any fsspec path).")
    parser.add_argument("--output_file", required=True, help="The CSV to write (any fsspec path).")
    parser.add_argument("--top_k", type=int, default=20, help="Label/score pairs per video.")
    segments = parser.add_argument_group("segment level (2019 challenge)")
    segments.add_argument("--segment_labels", nargs="?", const=True, default=False, type=parse_bool, metavar="BOOL",
                          help="Write the segment submission (Class,Segments) instead of video predictions.")
    segments.add_argument("--segment_label_ids_file", default=None,
                          help="The segment vocabulary: segment_label_ids.csv of the 2019 release "
                               f"({OFFICIAL_VOCABULARY}) or of `compactvid make-data --segments`.")
    segments.add_argument("--segment_max_pred", type=int, default=MAX_PREDICTIONS,
                          help="Segments per class in the submission (default: the challenge's 100000).")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import fsspec

    from compactvid.device import resolve_device
    from compactvid.errors import ConfigError
    from compactvid.evaluate import load_trained_model
    from compactvid.inference import write_predictions

    if args.top_k < 1:
        raise ConfigError(f"--top_k={args.top_k}: must be a positive integer")
    if args.segment_labels and not args.segment_label_ids_file:
        raise ConfigError(f"--segment_labels needs --segment_label_ids_file, the classes to rank segments for: "
                          f"the 2019 release's {OFFICIAL_VOCABULARY}, or DATA/segment_label_ids.csv of "
                          f"`compactvid make-data --segments`")
    if args.segment_max_pred < 1:
        raise ConfigError(f"--segment_max_pred={args.segment_max_pred}: must be a positive integer")
    device = resolve_device(args.device)
    if args.model is not None:
        if args.segment_labels:
            raise ConfigError("--segment_labels ranks segments with a --train_dir's checkpoint; leave out --model")
        return run_artifact(args)
    config, model, state = load_trained_model(args.train_dir, device=device)
    if args.num_readers is not None:
        config = dataclasses.replace(config, num_readers=args.num_readers)
    if args.segment_labels:
        return _write_segment_submission(args, config, model, device, state["position"]["step"])
    with fsspec.open(args.output_file, "w") as out:
        videos = write_predictions(model, predictions_loader(args, config), out, args.top_k, device,
                                   config.mixed_precision)
    log.info("wrote the top %d predictions of %d videos to %s (checkpoint of step %d)", args.top_k, videos,
             args.output_file, state["position"]["step"])
    return 0


def _write_segment_submission(args: argparse.Namespace, config, model, device, step: int) -> int:
    """Rank every segment of --input_data_pattern for each class of the segment vocabulary; write the CSV."""
    import fsspec

    from compactvid.data.loader import make_loader
    from compactvid.data.segments import read_segment_vocabulary
    from compactvid.errors import DataError
    from compactvid.inference import rank_segments
    from compactvid.segment_submission import write_submission

    classes = read_segment_vocabulary(args.segment_label_ids_file, config.num_classes)
    loader = make_loader(args.input_data_pattern, config, training=False, batch_size=args.batch_size,
                         dequantize=False, segments="all")
    ranking = rank_segments(model, loader, classes, args.segment_max_pred, device, config.mixed_precision)
    if not ranking.names:
        raise DataError(f"{args.input_data_pattern}: no frame in any video, so no segment to rank; nothing written")
    with fsspec.open(args.output_file, "w") as out:
        write_submission(out, ranking.ranked())
    log.info("wrote the best %d of %d segments for each of %d classes to %s (checkpoint of step %d)",
             min(args.segment_max_pred, len(ranking.names)), len(ranking.names), len(classes), args.output_file, step)
    return 0


def predictions_loader(args: argparse.Namespace, config):
    """The loader of --input_data_pattern with `config`'s data flags (uint8 frames, in file order)."""
    from compactvid.data.loader import make_loader

    return make_loader(args.input_data_pattern, config, training=False, batch_size=args.batch_size,
                       dequantize=False)


def run_artifact(args: argparse.Namespace) -> int:
    """`run` for --model: the data flags come from the artifact's metadata."""
    import dataclasses

    import fsspec

    from compactvid.config import Config
    from compactvid.data.loader import prepare_frames
    from compactvid.errors import ConfigError
    from compactvid.export import load_artifact
    from compactvid.inference import write_rows

    artifact = load_artifact(args.model)
    if "config" not in artifact.metadata:
        raise ConfigError(f"--model={args.model}: carries no run config (exported by `export_model` without "
                          f"one); export it with `compactvid export --train_dir=...`")
    config = Config.from_dict(artifact.metadata["config"], source=args.model)
    if args.num_readers is not None:
        config = dataclasses.replace(config, num_readers=args.num_readers)
    with fsspec.open(args.output_file, "w") as out:
        videos = write_rows(lambda frames, num_frames: artifact.predict(prepare_frames(frames, num_frames)),
                            predictions_loader(args, config), out, args.top_k)
    log.info("wrote the top %d predictions of %d videos to %s (%s)", args.top_k, videos, args.output_file,
             args.model)
    return 0
