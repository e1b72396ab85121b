"""The main job on a laptop: dense vs compact FC after DBoF (exp2-dbof, small profile) on synthetic data.

Generates a synthetic YouTube-8M-format dataset once, trains the dense and the compact model, then
prints parameters, megabytes, compression, best validation GAP, training videos/s and inference
ms/video side by side, and where the figure is. About 3 minutes on a 2-core CPU; rerunning resumes.
"""

import argparse

from compactvid.experiments import run_experiment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_dir", default="compactvid-demo",
                        help="where the data, the two runs and the results go (default: ./compactvid-demo)")


def run(args: argparse.Namespace) -> int:
    results = run_experiment("exp2-dbof", "small", args.output_dir)
    print()
    print(f"{'model':<10}{'parameters':>12}{'MB':>8}{'compression':>13}{'best GAP':>10}"
          f"{'train videos/s':>16}{'inference ms/video':>20}")
    for r in results["runs"]:
        print(f"{r['label']:<10}{r['parameters']:>12,}{r['bytes'] / 1e6:>8.2f}{r['compression']:>12.2f}x"
              f"{r['best_val_gap']:>10.4f}{r['train_videos_per_sec'] or 0:>16.0f}"
              f"{r['inference_ms_per_video']:>20.2f}")
    print(f"\nfigure: {args.output_dir}/exp2-dbof.png   table: {args.output_dir}/results.md")
    return 0
