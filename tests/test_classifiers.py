"""Video-level classifiers: mixture formula, context gating, L2 penalties, circulant variants."""

import math

import pytest
import torch

from compactvid.layers import CirculantLinear, LowRankLinear, MonarchLinear, make_compact_linear
from compactvid.models.args import ModelArgs
from compactvid.models.classifiers import CLASSIFIERS, LogisticModel, MoeModel, create_classifier
from compactvid.models.registry import create_model

IN, C, M = 12, 5, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(4, IN)


def test_moe_is_a_softmax_mixture_of_sigmoid_experts_with_a_dummy_expert(x):
    moe = MoeModel(IN, C, M, output_gating=False)
    gate_logits = x @ moe.gates.weight.T
    expert_logits = x @ moe.experts.weight.T + moe.experts.bias
    expected = torch.zeros(4, C)
    for c in range(C):  # class-major layout: logits of class c are [c*(M+1), (c+1)*(M+1))
        gates = torch.softmax(gate_logits[:, c * (M + 1):(c + 1) * (M + 1)], dim=1)
        experts = torch.sigmoid(expert_logits[:, c * M:(c + 1) * M])
        expected[:, c] = (gates[:, :M] * experts).sum(1)
    torch.testing.assert_close(moe(x), expected)
    assert moe.gates.bias is None
    assert n_params(moe) == IN * C * (M + 1) + IN * C * M + C * M


def test_moe_output_context_gating(x):
    moe = MoeModel(IN, C, M, gating_batch_norm=True).eval()
    ungated = MoeModel(IN, C, M, output_gating=False)
    ungated.load_state_dict({k: v for k, v in moe.state_dict().items() if not k.startswith("gating.")})
    torch.testing.assert_close(moe(x), moe.gating(ungated(x)))
    assert n_params(moe) == n_params(ungated) + C * C + 2 * C
    no_bn = MoeModel(IN, C, M, gating_batch_norm=False)
    assert n_params(no_bn) == n_params(ungated) + C * C + C


def test_moe_l2_penalty_is_half_sum_of_squares_of_gate_and_expert_weights():
    moe = MoeModel(IN, C, M, l2_penalty=1e-3)
    expected = 1e-3 * (moe.gates.weight.square().sum() + moe.experts.weight.square().sum()) / 2
    torch.testing.assert_close(moe.regularization_loss(), expected)
    moe.regularization_loss().backward()
    assert moe.experts.bias.grad is None and moe.gating.projection.weight.grad is None


@pytest.mark.parametrize("projection,diag", [("circulant", "none"), ("diagonal_circulant", "learned")])
@pytest.mark.parametrize("k_factor", [1, 2])
def test_circulant_moe_layers_and_counts(x, projection, diag, k_factor):
    def compact(i, o, bias):
        return make_compact_linear("circulant", i, o, bias, diag=diag, k_factor=k_factor)

    moe = MoeModel(IN, C, M, compact=compact, output_gating=False, l2_penalty=0.0)
    assert isinstance(moe.gates, CirculantLinear) and moe.gates.diag_variant == diag
    assert moe.gates.bias is None and moe.experts.bias is not None
    per_block = IN * (2 if diag == "learned" else 1) * k_factor
    expected = (math.ceil(C * (M + 1) / IN) + math.ceil(C * M / IN)) * per_block + C * M
    assert n_params(moe) == expected
    probabilities = moe(x)
    assert probabilities.shape == (4, C) and (probabilities >= 0).all() and (probabilities <= 1).all()
    assert moe.regularization_loss().item() == 0.0


def test_registered_circulant_mixtures_follow_the_original():
    config = ModelArgs(num_classes=C, moe_num_mixtures=M, k_factor=2, moe_l2=0.5)
    plain = create_classifier("Circulant_MoeModel", config, IN)
    factored = create_classifier("CirculantWithFactor_MoeModel", config, IN)
    dense = create_classifier("MoeModel", config, IN)
    assert plain.gating is None and factored.gating is None and dense.gating is not None
    assert plain.gates.k_factor == 1 and factored.gates.k_factor == 2  # the plain one has no factors
    assert plain.l2_penalty == factored.l2_penalty == 0.0 and dense.l2_penalty == 0.5
    assert set(CLASSIFIERS) == {"LogisticModel", "MoeModel", "Circulant_MoeModel", "CirculantWithFactor_MoeModel"}


@pytest.mark.parametrize("kind,layer", [("lowrank", LowRankLinear), ("monarch", MonarchLinear)])
def test_compact_mixtures_take_the_compact_layer(x, kind, layer):
    # The circulant mixtures with --compact_layer: the same mixture, projections of that structure at
    # the plain (one factor, no diagonal) or diagonal-circulant layer's budget.
    for name, budget_layer in (("Circulant_MoeModel", "none"), ("CirculantWithFactor_MoeModel", "learned")):
        args = ModelArgs(num_classes=C, moe_num_mixtures=M, k_factor=2, compact_layer=kind, compact_budget=3)
        moe = create_classifier(name, args, IN)
        assert isinstance(moe.gates, layer) and isinstance(moe.experts, layer) and moe.gating is None
        reference = make_compact_linear(kind, IN, C * M, True, diag=budget_layer, k_factor=2 if budget_layer ==
                                        "learned" else 1, budget=3)
        assert moe.experts.num_compact_parameters() == reference.num_compact_parameters()
        probabilities = moe(x)
        assert probabilities.shape == (4, C) and moe.regularization_loss().item() == 0.0


def test_moe_gating_flags():
    config = ModelArgs(num_classes=C, MoE_gating=False)
    assert create_classifier("MoeModel", config, IN).gating is None
    config = ModelArgs(num_classes=C, moe_add_batch_norm=False)
    assert isinstance(create_classifier("MoeModel", config, IN).gating.norm, torch.nn.Identity)


def test_moe_model_alone_gates_with_a_bias_as_the_original():
    """The original's train.py builds MoeModel without add_batch_norm: its context gating has a bias."""
    args = ModelArgs(model="MoeModel", frame_features=False, feature_sizes=(IN,), num_classes=C)
    gating = create_model(args).gating
    assert isinstance(gating.norm, torch.nn.Identity) and gating.projection.bias is not None
    head = create_classifier("MoeModel", args, IN)  # the frame-level network's head keeps batch norm
    assert isinstance(head.gating.norm, torch.nn.BatchNorm1d) and head.gating.projection.bias is None


def test_logistic_model(x):
    model = LogisticModel(IN, C)
    torch.testing.assert_close(model(x), torch.sigmoid(x @ model.linear.weight.T + model.linear.bias))
    torch.testing.assert_close(model.regularization_loss(), 1e-8 * model.linear.weight.square().sum() / 2)
    assert n_params(model) == IN * C + C
