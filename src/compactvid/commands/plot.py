"""Draw validation GAP against epochs for any train_dirs, one curve each, labelled from their configs.

example:
  compactvid plot runs/exp2-dbof/dense runs/exp2-dbof/compact --output gap.png
"""

import argparse

from compactvid.plotting import plot_runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("train_dirs", nargs="+", metavar="RUN_DIR", help="--train_dir of `compactvid train`")
    parser.add_argument("--output", required=True, metavar="FILE.png", help="the figure to write")
    parser.add_argument("--title", default="Validation GAP", help="the figure's title")


def run(args: argparse.Namespace) -> int:
    plot_runs(args.train_dirs, args.output, args.title)
    print(f"wrote {args.output}")
    return 0
