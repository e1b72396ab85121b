"""Count a model's parameters without training it: per component (embeddings, FC layers, classifier,
context gating; video and audio), their dense equivalents (every structured layer, circulant, low-rank or
Monarch, replaced by a dense matrix), the total, and the size in bytes at float32 and float16 (with
--export_bytes, also the bytes of the float16 ONNX file `compactvid export` writes).

Takes the same flags as `compactvid train` (a seed command line can be pasted as is); the model is
built on PyTorch's meta device, so even the largest configuration costs no memory. Example:

  compactvid params --model=CirulantDiagonalNetwork --add_dbof --no_audio --fc_hidden_size=512 \\
      --moe_num_mixtures=4 --fc_dbof_circulant
"""

from __future__ import annotations

import argparse
import logging

import torch

from compactvid.commands.json_output import STDOUT, add_json_flag, write_json
from compactvid.flags import add_config_flags, config_from_namespace
from compactvid.models.flag_effects import ineffective_flags
from compactvid.models.registry import create_model
from compactvid.models.report import parameter_report

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_json_flag(parser, "the report (the params.json format)")
    parser.add_argument("--export_bytes", action="store_true",
                        help="also export the model as a float16 ONNX file (to a temporary directory) and report "
                             "its bytes (bytes.float16_export); a minute at the README's sizes")
    add_config_flags(parser, ("data", "model", "train", "ignored"))


def format_report(report: dict) -> str:
    """The report as a table: one row per component, then totals, sizes and the largest dense matrices."""
    row_format = "{:<30} {:<11} {:<10} {:>14} {:>14} {:>8}"
    lines = [f"model: {report['model']}   classifier: {report['classifier']}", "",
             row_format.format("component", "kind", "layers", "params", "dense", "ratio")]
    for row in report["components"]:
        ratio = row["dense_params"] / row["params"] if row["params"] else 1.0
        layers = row["structure"] or ("dense" if row["params"] else "-")
        lines.append(row_format.format(row["name"], row["kind"], layers, f"{row['params']:,}",
                                       f"{row['dense_params']:,}", f"{ratio:.1f}x"))
    lines.append("")
    for title, key in (("kind", "by_kind"), ("modality", "by_modality")):
        for group, counts in report[key].items():
            ratio = counts["dense_params"] / counts["params"] if counts["params"] else 1.0
            lines.append(row_format.format(f"all {group}", title, "", f"{counts['params']:,}",
                                           f"{counts['dense_params']:,}", f"{ratio:.1f}x"))
    lines += ["", row_format.format("total (trainable)", "", "", f"{report['total']:,}",
                                    f"{report['dense_total']:,}", f"{report['compression']:.1f}x"),
              row_format.format("non-trainable buffers", "", "", f"{report['buffers']:,}", "", ""),
              f"size: {report['bytes']['float32']:,} bytes at float32, {report['bytes']['float16']:,} bytes at "
              f"float16 ({report['bytes']['float32'] / 2**20:,.1f} / {report['bytes']['float16'] / 2**20:,.1f} MiB)"]
    if "float16_export" in report["bytes"]:
        lines.append(f"float16 ONNX export: {report['bytes']['float16_export']:,} bytes "
                     f"({report['bytes']['float16_export'] / 2**20:,.1f} MiB)")
    matrices = report["dense_matrices"]
    lines += ["", f"largest dense matrices (of {len(matrices)}):" if matrices else "no dense matrix"]
    lines += [f"  {m['name']:<40} {'x'.join(map(str, m['shape'])):>14} {m['params']:>14,}" for m in matrices[:5]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config, _ = config_from_namespace(args)
    model_args = config.model_args()
    with torch.device("meta"):
        model = create_model(model_args)
    for message in ineffective_flags(model_args):
        log.warning(message)
    report = parameter_report(model, model_args)
    if args.export_bytes:
        from compactvid.export import export_bytes, input_shape

        # The file's size does not depend on the weights' values (zeros keep it reproducible).
        model = model.to_empty(device="cpu").eval()
        for tensor in model.state_dict().values():
            tensor.zero_()
        report["bytes"]["float16_export"] = export_bytes(model, input_shape(model_args))
    if args.json:
        write_json(report, args.json)
    if args.json != STDOUT:
        print(format_report(report))
    return 0
