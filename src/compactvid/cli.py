"""The `compactvid` command: one subcommand per job.

Each subcommand lives in `compactvid.commands.<module>`, which defines ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so `--help` stays fast.
Errors the user can fix (`CompactVidError`) print one line and exit 1, without a traceback; a bad command
line prints one line and exits 2. With ``--json`` to stdout, stdout holds only the JSON
(`compactvid.commands.json_output`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType
from typing import Sequence

from compactvid import __version__
from compactvid.commands.json_output import reserve_stdout
from compactvid.errors import CompactVidError
from compactvid.flags import FlagParser

# name -> (module under compactvid.commands, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "make-data": ("make_data", "write a synthetic dataset in the exact YouTube-8M TFRecord format"),
    "inspect": ("inspect_data", "validate YouTube-8M TFRecord files and summarize them (records, frames, labels)"),
    "train": ("train", "train a model (the seed's train.py flags): CPU, GPU, --num_gpu=N GPUs, or torchrun"),
    "eval": ("eval", "evaluate a run's checkpoints: GAP@20, mAP, Hit@1, PERR, loss"),
    "inference": ("inference", "write a run's top-k predictions as a Kaggle CSV (VideoId,LabelConfidencePairs)"),
    "export": ("export", "export a trained model as ONNX or torch.export (.pt2), float16/bfloat16/int8 weights"),
    "params": ("params", "count a model's parameters per component, dense equivalents, and bytes"),
    "experiment": ("experiment", "run one of the paper's experiments (exp1, exp2-*, exp3): table and figure"),
    "demo": ("demo", "dense vs compact DBoF model on synthetic data, side by side, in minutes on a CPU"),
    "plot": ("plot", "draw validation GAP vs epochs for any train_dirs"),
}

DESCRIPTION = """\
Train compact video classifiers on YouTube-8M-format data: the networks of Araujo et al. (2018),
with dense or circulant (FFT-computed) layers, side by side.

Run `compactvid SUBCOMMAND --help` for the flags of a subcommand."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compactvid", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"compactvid {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, (_, summary) in COMMANDS.items():
        subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def build_subcommand_parser(name: str) -> tuple[ModuleType, FlagParser]:
    """The module of subcommand `name` (imported now) and the parser of its flags."""
    module = importlib.import_module(f"compactvid.commands.{COMMANDS[name][0]}")
    parser = FlagParser(prog=f"compactvid {name}", description=module.__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    module.add_arguments(parser)
    return module, parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help / version / a usage error and exits
        parser.print_help()
        return 2
    name = argv[0]
    module, sub = build_subcommand_parser(name)
    args = sub.parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with reserve_stdout(args):
            return int(module.run(args) or 0)
    except CompactVidError as error:
        print(f"compactvid {name}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"compactvid {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
