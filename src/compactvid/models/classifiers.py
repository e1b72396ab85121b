"""Video-level classifiers: ``[batch, input_size] -> class probabilities [batch, num_classes]``.

As the original's ``video_level_models``:
- `LogisticModel`: one sigmoid layer; L2 penalty 1e-8 on its weights.
- `MoeModel`: per class, a softmax over ``num_mixtures + 1`` gates (the extra one is a dummy expert that
  always says "no") mixing ``num_mixtures`` sigmoid experts. Three projections, by registry name:
  ``MoeModel`` (dense gates without bias and experts with bias, Xavier-uniform as slim's
  ``fully_connected``; output context gating ``--MoE_gating`` with batch norm ``--moe_add_batch_norm``;
  L2 penalty ``--moe_l2`` on gate and expert weights), ``Circulant_MoeModel`` (plain circulant
  projections, no gating, no penalty) and ``CirculantWithFactor_MoeModel`` (diagonal-circulant with
  ``--k_factor`` factors, no gating, no penalty); with ``--compact_layer=lowrank|monarch`` the two
  compact mixtures have projections of that structure instead.

Trained alone on video-level features, ``MoeModel``'s context gating has a bias, not batch norm, as in
the original: its ``train.py`` calls the model without ``add_batch_norm`` (only the frame-level network
passes ``--moe_add_batch_norm``).

Every classifier exposes ``regularization_loss()``: ``l2 * sum(w**2) / 2`` over its penalized weights
(slim's ``l2_regularizer``, i.e. ``l2 * tf.nn.l2_loss(w)``), and ``components()`` for the parameter report.
`CLASSIFIERS` maps the names of ``--video_level_classifier_model`` to builders.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from compactvid.layers.batch_norm import SLIM_DECAY
from compactvid.layers.gating import ContextGating
from compactvid.layers.initializers import LinearFactory
from compactvid.models.args import ModelArgs
from compactvid.models.compact import compact_layer
from compactvid.models.report import Component

__all__ = ["LogisticModel", "MoeModel", "CLASSIFIERS", "MIXTURES", "create_classifier", "l2_loss"]


def l2_loss(weights: list[Tensor], scale: float) -> Tensor:
    """``scale * sum(w**2) / 2`` summed over ``weights`` (TensorFlow's ``l2_loss`` times the scale)."""
    return scale * sum(w.square().sum() for w in weights) / 2.0


def _slim_fully_connected(in_features: int, out_features: int, bias: bool) -> nn.Linear:
    """A dense layer initialized as ``slim.fully_connected``: Xavier-uniform weights, zero bias."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class LogisticModel(nn.Module):
    """``[batch, input_size] -> sigmoid(W x + b) [batch, num_classes]``, L2 penalty ``l2_penalty`` on W."""

    def __init__(self, input_size: int, num_classes: int, l2_penalty: float = 1e-8) -> None:
        super().__init__()
        self.l2_penalty = l2_penalty
        self.linear = _slim_fully_connected(input_size, num_classes, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """``x [batch, input_size] -> probabilities [batch, num_classes]``."""
        return torch.sigmoid(self.linear(x))

    def regularization_loss(self) -> Tensor:
        return l2_loss([self.linear.weight], self.l2_penalty)

    def components(self) -> list[Component]:
        return [Component("classifier", "classifier", "shared", self)]


class MoeModel(nn.Module):
    """Mixture of logistic experts: ``[batch, input_size] -> probabilities [batch, num_classes]``.

    Args:
        input_size: input width.
        num_classes: number of classes.
        num_mixtures: experts per class (plus the dummy expert).
        compact: ``None`` for dense projections (slim-initialized), else the factory of structured ones
            (`compactvid.models.compact.compact_layer`), with that layer's own initialization and
            expert bias (circulant: constant ``1/sqrt(num_classes*num_mixtures)``).
        output_gating: context gating on the class probabilities.
        gating_batch_norm: batch norm inside that gating.
        gating_compact: ``None`` (dense gating) or the factory of its structured projection (``--gating_circulant``).
        l2_penalty: L2 penalty on the gate and expert weights.
        batch_norm_decay: decay of the gating's batch-norm moving averages.

    Gate and expert logits are laid out class-major (``[class, mixture]``), as the original reshapes them.
    """

    def __init__(self, input_size: int, num_classes: int, num_mixtures: int = 2, *,
                 compact: Optional[LinearFactory] = None, output_gating: bool = True, gating_batch_norm: bool = True,
                 gating_compact: Optional[LinearFactory] = None, l2_penalty: float = 1e-8,
                 batch_norm_decay: float = SLIM_DECAY) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_mixtures = num_mixtures
        self.l2_penalty = l2_penalty
        gate_size, expert_size = num_classes * (num_mixtures + 1), num_classes * num_mixtures
        if compact is None:
            self.gates: nn.Module = _slim_fully_connected(input_size, gate_size, bias=False)
            self.experts: nn.Module = _slim_fully_connected(input_size, expert_size, bias=True)
        else:
            self.gates = compact(input_size, gate_size, False)
            self.experts = compact(input_size, expert_size, True)
        self.gating = (ContextGating(num_classes, gating_batch_norm, gating_compact, batch_norm_decay)
                       if output_gating else None)

    def forward(self, x: Tensor) -> Tensor:
        """``x [batch, input_size] -> probabilities [batch, num_classes]``."""
        batch = x.shape[0]
        gates = torch.softmax(self.gates(x).reshape(batch, self.num_classes, self.num_mixtures + 1), dim=-1)
        experts = torch.sigmoid(self.experts(x).reshape(batch, self.num_classes, self.num_mixtures))
        probabilities = (gates[..., :self.num_mixtures] * experts).sum(dim=-1)
        if self.gating is not None:
            probabilities = self.gating(probabilities)
        return probabilities

    def regularization_loss(self) -> Tensor:
        if self.l2_penalty == 0:
            return self.experts.bias.new_zeros(())
        return l2_loss([self.gates.weight, self.experts.weight], self.l2_penalty)

    def components(self) -> list[Component]:
        parts = [Component("classifier", "classifier", "shared", nn.ModuleList([self.gates, self.experts]))]
        if self.gating is not None:
            parts.append(Component("classifier.gating", "gating", "shared", self.gating))
        return parts


# A classifier builder: (model arguments, input width, alone on video-level features?) -> the classifier.
Builder = Callable[[ModelArgs, int, bool], nn.Module]


def _moe(projection: str) -> Builder:
    def build(args: ModelArgs, input_size: int, alone: bool) -> nn.Module:
        dense = projection == "dense"
        # The original's plain circulant mixture has one factor whatever --k_factor says.
        diag, k_factor = ("none", 1) if projection == "circulant" else ("learned", None)
        return MoeModel(input_size, args.num_classes, args.moe_num_mixtures,
                        compact=compact_layer(args, not dense, diag, k_factor),
                        output_gating=dense and args.MoE_gating,
                        gating_batch_norm=args.moe_add_batch_norm and not alone,
                        gating_compact=compact_layer(args, args.gating_circulant),
                        l2_penalty=args.moe_l2 if dense else 0.0, batch_norm_decay=args.batch_norm_decay)
    return build


# The mixtures of experts by name (``--video_level_classifier_model``) -> their projection.
MIXTURES: dict[str, str] = {
    "MoeModel": "dense",
    "Circulant_MoeModel": "circulant",
    "CirculantWithFactor_MoeModel": "diagonal_circulant",
}

CLASSIFIERS: dict[str, Builder] = {
    "LogisticModel": lambda args, input_size, alone: LogisticModel(input_size, args.num_classes,
                                                                   args.l2_penalty),
    **{name: _moe(projection) for name, projection in MIXTURES.items()},
}


def create_classifier(name: str, args: ModelArgs, input_size: int, *, alone: bool = False) -> nn.Module:
    """Build the classifier registered as ``name`` from ``args`` on inputs ``[batch, input_size]``;
    ``alone``: the whole model, on video-level features (else the head of a frame-level network)."""
    return CLASSIFIERS[name](args, input_size, alone)
