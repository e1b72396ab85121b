"""Parameter report of a model: trainable parameters per component, dense equivalents, sizes in bytes.

Counts follow the original: trainable parameters only (batch norm = scale + shift; running statistics
and the fixed +-1 diagonals are buffers, reported separately as ``buffers``). The dense equivalent of a
component is its count with every structured layer (circulant, low-rank, Monarch) replaced by a dense
``in x out`` matrix (plus its bias). What stays dense is listed too: every trainable matrix outside a
structured layer, largest first (the "fully compact" flag sets leave none above 1 M parameters).
`compactvid params` prints this report; training writes it to ``params.json``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import nn

from compactvid.layers.structured import StructuredLinear
from compactvid.models.args import ModelArgs

__all__ = ["Component", "parameter_report", "count_parameters", "dense_equivalent", "dense_matrices", "structure"]


class Component(NamedTuple):
    """A named group of a model's parameters.

    name: dotted path such as ``video.dbof.fc``; kind: ``input_bn``, ``embedding``, ``fc``,
    ``classifier`` or ``gating``; modality: ``video``, ``audio`` or ``shared``; module: its parameters.
    """

    name: str
    kind: str
    modality: str
    module: nn.Module


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def dense_equivalent(module: nn.Module) -> int:
    """Trainable parameters of ``module`` if every structured layer in it were dense."""
    total = 0
    for sub in module.modules():
        if isinstance(sub, StructuredLinear):
            total += sub.dense_parameters()
        else:  # a structured layer has no submodules, so its own parameters are only counted above
            total += sum(p.numel() for p in sub.parameters(recurse=False) if p.requires_grad)
    return total


def dense_matrices(model: nn.Module) -> list[dict[str, Any]]:
    """Every trainable parameter of two or more dimensions outside a structured layer, largest first:
    ``[{"name": dotted name, "shape": [...], "params": n}]``."""
    matrices = []
    for module_name, module in model.named_modules():
        if isinstance(module, StructuredLinear):
            continue
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and p.dim() >= 2:
                matrices.append({"name": f"{module_name}.{name}" if module_name else name,
                                 "shape": list(p.shape), "params": p.numel()})
    return sorted(matrices, key=lambda m: -m["params"])


def structure(module: nn.Module) -> str:
    """The kinds of structured layers in ``module`` (``"circulant"``, ``"lowrank"``, ``"monarch"``,
    joined by ``+``), ``""`` if none."""
    return "+".join(sorted({sub.kind for sub in module.modules() if isinstance(sub, StructuredLinear)}))


def parameter_report(model: nn.Module, args: ModelArgs) -> dict[str, Any]:
    """The parameters of ``model`` (built from ``args``) per component and in total, as a JSON-ready dict.

    Keys: ``model``, ``classifier``, ``components`` (list of {name, kind, modality, params,
    dense_params, structure}: see `structure`), ``by_kind`` and ``by_modality`` ({group: {params, dense_params}}),
    ``total`` (trainable parameters), ``dense_total``, ``compression`` (dense_total / total),
    ``buffers`` (non-trainable values: batch-norm statistics, fixed diagonals), ``bytes``
    ({"float32", "float16"}: size of the trainable parameters) and ``dense_matrices`` (`dense_matrices`).
    """
    components = model.components()
    rows = []
    for part in components:
        rows.append({"name": part.name, "kind": part.kind, "modality": part.modality,
                     "params": count_parameters(part.module), "dense_params": dense_equivalent(part.module),
                     "structure": structure(part.module)})
    total = count_parameters(model)
    covered = sum(row["params"] for row in rows)
    if covered != total:
        raise AssertionError(f"{type(model).__name__}.components() cover {covered} of {total} parameters")

    def group_by(key: str) -> dict[str, dict[str, int]]:
        groups: dict[str, dict[str, int]] = {}
        for row in rows:
            group = groups.setdefault(row[key], {"params": 0, "dense_params": 0})
            group["params"] += row["params"]
            group["dense_params"] += row["dense_params"]
        return groups

    dense_total = sum(row["dense_params"] for row in rows)
    return {
        "model": args.model,
        "classifier": args.video_level_classifier_model if args.frame_features else args.model,
        "components": rows,
        "by_kind": group_by("kind"),
        "by_modality": group_by("modality"),
        "total": total,
        "dense_total": dense_total,
        "compression": dense_total / total if total else 1.0,
        "buffers": sum(b.numel() for b in model.buffers() if b.is_floating_point()),
        "bytes": {"float32": 4 * total, "float16": 2 * total},
        "dense_matrices": dense_matrices(model),
    }
