"""Run one of the seed README's experiments: every run trained, then results.json, results.md and the figure.

Experiments (the README's command lines, one sub-directory of --output_dir per run):
  exp1          compact FC after DBoF: learned diagonal ("DC") vs fixed +-1 diagonal ("CD")
  exp2-dbof     dense vs compact FC after DBoF
  exp2-netvlad  dense vs compact FC after NetVLAD
  exp2-netfv    dense vs compact FC after NetFV (--fc_fisher_circulant, which the README meant)
  exp3          dense, compact DBoF, compact FC, compact MoE (no audio)
  segments      dense and compact DBoF models, video level then fine-tuned on rated 5-frame segments
                (2019 release): segment mAP@N before and after (synthetic data: generated with ratings)
  frontier      DBoF, NetVLAD, NeXtVLAD: dense, circulant as the paper, fully compact, low-rank and Monarch
                at 1x/4x/16x the circulant layers' parameters; validation GAP against the bytes of the
                float16 weights with the Pareto front (--families picks some of the three)

--profile paper keeps the README's PARAMS (GPUs, the real dataset) and trains in float32 as the paper
(--mixed_precision=False); --profile small changes a few flags
(listed in the output) so that an experiment finishes on a 2-core CPU in minutes. Without --data_dir a
synthetic dataset is generated once in OUTPUT_DIR/data. Finished runs are not redone: rerunning the same
command resumes an interrupted experiment.

example:
  compactvid experiment exp1 --profile small --output_dir runs/exp1
  compactvid experiment exp3 --profile paper --data_dir /data/yt8m/frame/ --output_dir runs/exp3
  compactvid experiment frontier --profile small --families DBoF,NeXtVLAD
"""

import argparse

from compactvid.errors import ConfigError
from compactvid.experiments import EXPERIMENTS, PROFILES, run_experiment, results_table
from compactvid.frontier import FRONTIER_FAMILIES, NAME as FRONTIER, frontier_table, parse_families, run_frontier
from compactvid.segment_experiment import NAME as SEGMENTS, run_segment_experiment, segment_results_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(EXPERIMENTS) + [SEGMENTS, FRONTIER], help="the experiment to run")
    parser.add_argument("--profile", choices=PROFILES, default="small",
                        help="paper: the README's sizes, in float32; small: a 2-core CPU in minutes "
                        "(default: small)")
    parser.add_argument("--output_dir", default=None, help="where runs and results go (default: ./runs/NAME)")
    parser.add_argument("--data_dir", default=None,
                        help="YouTube-8M frame-level files (train*.tfrecord, validate*.tfrecord); "
                             "default: a synthetic dataset generated in OUTPUT_DIR/data")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="vocabulary size of --data_dir (default 3862, the 2018 release)")
    parser.add_argument("--families", default=None,
                        help=f"frontier only: the families to train (default {','.join(FRONTIER_FAMILIES)})")


def run(args: argparse.Namespace) -> int:
    output_dir = args.output_dir or f"runs/{args.name}"
    if args.families is not None and args.name != FRONTIER:
        raise ConfigError(f"--families={args.families}: only the frontier experiment reads it; leave it out")
    if args.name == SEGMENTS:
        results = run_segment_experiment(args.profile, output_dir, args.data_dir, args.num_classes)
        print(segment_results_table(results))
    elif args.name == FRONTIER:
        results = run_frontier(args.profile, output_dir, args.data_dir, args.num_classes, 
                               parse_families(args.families or ",".join(FRONTIER_FAMILIES)))
        print(frontier_table(results))
    else:
        results = run_experiment(args.name, args.profile, output_dir, args.data_dir, args.num_classes)
        print(results_table(results))
    print(f"results: {output_dir}/results.json, {output_dir}/results.md; figure: {output_dir}/{args.name}.png")
    return 0
