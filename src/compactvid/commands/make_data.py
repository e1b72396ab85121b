"""Write a synthetic dataset in the exact YouTube-8M TFRecord format, deterministic for a seed.

Files in OUTPUT_DIR: train0000.tfrecord.., validate0000.tfrecord.. and test0000.tfrecord.. (70% / 20% /
10% of the videos; test files have no labels), and vocabulary.csv (official columns; Vertical1 is the
class's topic, WikiDescription says whether its concepts are visual, audio or both). Frame level
(default): one SequenceExample per video with context `id`, `labels` and per-frame `rgb` (1024 bytes) and
`audio` (128 bytes), 1 frame per second. --video_level: one Example per video with `id`, `labels`,
`mean_rgb` (1024 floats) and `mean_audio` (128 floats), the means of the same videos' frames. --segments: the validate and test records
also carry rated 5-frame segments as the 2019 release's (whose frames show, or do not show, the class
rated), and segment_label_ids.csv lists the segment vocabulary.

The data is learnable but not trivial (Zipf class frequencies, about 3 co-occurring labels per video,
shots showing the labels' visual and audio concepts among noise, some classes audible only); the
generative model is described in `compactvid.data.synthetic`.

Example:
  compactvid make-data --output_dir data/synth --num_videos 800 --num_classes 20 --seed 0
  compactvid train --train_data_pattern='data/synth/train*.tfrecord' --num_classes=20 ...
"""

from __future__ import annotations

import argparse
import dataclasses

from compactvid.data.synthetic import GenerativeModel, write_dataset

_DEFAULTS = GenerativeModel()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_dir", required=True, help="directory to write to (any fsspec URL)")
    parser.add_argument("--num_videos", type=int, default=1000, help="videos in all (default: 1000)")
    parser.add_argument("--num_classes", type=int, default=20, help="vocabulary size (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    parser.add_argument("--video_level", action="store_true",
                        help="write video-level Examples (mean_rgb, mean_audio) instead of frame-level ones")
    parser.add_argument("--num_shards", type=int, default=4,
                        help="files per split (fewer when a split has fewer videos; default: 4)")
    parser.add_argument("--min_length", type=int, default=_DEFAULTS.min_length,
                        help=f"shortest video, in frames = seconds (default: {_DEFAULTS.min_length})")
    parser.add_argument("--max_length", type=int, default=_DEFAULTS.max_length,
                        help=f"longest video, in frames = seconds (default: {_DEFAULTS.max_length}; models "
                             f"read at most --max_frames=300)")
    parser.add_argument("--signal", type=float, default=1.0,
                        help="strength of the label signal relative to the calibrated default: above 1 is "
                             "easier, below 1 harder (default: 1.0)")
    parser.add_argument("--segments", action="store_true",
                        help="validate and test files carry segment ratings as the 2019 release's "
                             "(segment_start_times, segment_labels, segment_scores), and segment_label_ids.csv "
                             "lists the segment vocabulary (half of the classes)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the dataset files already in OUTPUT_DIR (other files are kept)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    model = dataclasses.replace(_DEFAULTS, min_length=args.min_length, max_length=args.max_length,
                                signal=_DEFAULTS.signal * args.signal,
                                audio_signal=_DEFAULTS.audio_signal * args.signal)
    summary = write_dataset(args.output_dir, args.num_videos, args.num_classes, args.seed,
                            video_level=args.video_level, num_shards=args.num_shards, model=model,
                            overwrite=args.overwrite, progress=not args.quiet, segments=args.segments)
    level = "video-level" if args.video_level else "frame-level"
    splits = list(summary.files)
    print(f"wrote {' / '.join(str(summary.videos[s]) for s in splits)} {' / '.join(splits)} {level} videos "
          f"in {' / '.join(str(len(summary.files[s])) for s in splits)} files ({summary.frames} frames, "
          f"{args.num_classes} classes) and vocabulary.csv to {args.output_dir} in {summary.seconds:.1f}s")
    if args.segments:
        print(f"validate and test videos carry {summary.rated_pairs} rated (segment, class) pairs; the segment "
              f"vocabulary is {args.output_dir.rstrip('/')}/segment_label_ids.csv")
    return 0
