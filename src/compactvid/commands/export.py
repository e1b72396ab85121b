"""Export a trained model as a file that serves without the training code: ONNX or torch.export (.pt2).

The model and its data flags come from --train_dir (config.json and the newest checkpoint, or
--checkpoint). The artifact's input is the float32 frames [batch, n_bagging, iterations, features]
(video-level models: [batch, features]), its output the class probabilities. Prints the file's bytes
and dtype; with --validate, the GAP@20 of the artifact next to the checkpoint's on the same frames.
Examples:

  compactvid export --train_dir=runs/dbof --format=onnx --output=dbof.onnx --dtype=float16
  compactvid export --train_dir=runs/dbof --format=pt2 --output=dbof.pt2 --quantize=int8 \\
      --validate="data/validate*.tfrecord"
  compactvid inference --model=dbof.onnx --input_data_pattern="data/test*.tfrecord" --output_file=p.csv
"""

from __future__ import annotations

import argparse
import logging

from compactvid.commands.json_output import add_json_flag, write_json
from compactvid.errors import ConfigError
from compactvid.export import DTYPES, FORMATS, QUANTIZATIONS

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train_dir", required=True, help="Directory of the training run.")
    parser.add_argument("--checkpoint", default=None, help="A checkpoint file (default: the run's newest).")
    parser.add_argument("--format", default="onnx", help=f"Artifact format: {' or '.join(FORMATS)}.")
    parser.add_argument("--output", required=True, help="The file to write (.onnx or .pt2).")
    parser.add_argument("--dtype", default="float32",
                        help=f"Weight storage: {', '.join(DTYPES)} (arithmetic stays float32).")
    parser.add_argument("--quantize", default=None,
                        help=f"{', '.join(QUANTIZATIONS)}: dynamic int8 for the dense linear layers.")
    parser.add_argument("--validate", default=None, metavar="PATTERN",
                        help="Files with labels: report the artifact's GAP@20 and the checkpoint's on them.")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="Videos per batch for --validate (default: the training run's --batch_size).")
    add_json_flag(parser, "the results (output, format, bytes, dtype, quantize, step; with --validate "
                          "artifact_gap and checkpoint_gap)")


def validate(model, artifact, pattern: str, config, batch_size: int | None) -> dict[str, float]:
    """GAP@20 of the eager model and of the artifact on the same sampled frames of `pattern`."""
    import dataclasses

    import torch

    from compactvid.data.loader import make_loader, prepare_frames
    from compactvid.metrics import EvaluationMetrics

    config = dataclasses.replace(config, num_readers=0)
    metrics = {"checkpoint": EvaluationMetrics(config.num_classes), "artifact": EvaluationMetrics(config.num_classes)}
    with torch.inference_mode():
        for batch in make_loader(pattern, config, training=False, batch_size=batch_size, dequantize=False):
            frames = prepare_frames(batch["frames"], batch["num_frames"])
            metrics["checkpoint"].accumulate(model(frames), batch["labels"], 0.0)
            metrics["artifact"].accumulate(artifact.predict(frames), batch["labels"], 0.0)
    return {f"{name}_gap": m.get()["gap"] for name, m in metrics.items()}


def run(args: argparse.Namespace) -> int:
    import os

    from compactvid.evaluate import load_trained_model
    from compactvid.export import check_choices, export_model, input_shape, load_artifact

    check_choices(args.format, args.dtype, args.quantize)
    if os.path.splitext(args.output)[1] != f".{args.format}":
        raise ConfigError(f"--output={args.output}: a --format={args.format} artifact needs the extension .{args.format}")
    if os.path.isdir(args.output):
        raise ConfigError(f"--output={args.output}: is a directory; give the artifact's file name")
    config, model, state = load_trained_model(args.train_dir, args.checkpoint)
    step = state["position"]["step"]
    size = export_model(model, args.output, input_shape(config.model_args()), format=args.format,
                        dtype=args.dtype, quantize=args.quantize, metadata={"config": config.to_dict(), "step": step})
    result = {"output": args.output, "format": args.format, "bytes": size, "dtype": args.dtype,
              "quantize": args.quantize, "step": step}
    if args.validate:
        result.update(validate(model, load_artifact(args.output), args.validate, config, args.batch_size))
    line = (f"wrote {args.output}: {size:,} bytes, {args.format}, weights {args.dtype}"
            f"{', int8 linear layers' if args.quantize else ''} (checkpoint of step {result['step']})")
    if args.validate:
        line += f"; GAP@20 {result['artifact_gap']:.4f} (checkpoint {result['checkpoint_gap']:.4f})"
    print(line)
    if args.json:
        write_json(result, args.json)
    return 0
