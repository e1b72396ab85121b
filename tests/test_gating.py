"""Context gating: formula, parameters with and without batch norm."""

import torch

from compactvid.layers.gating import ContextGating


def test_gating_without_batch_norm_is_x_times_sigmoid_of_affine():
    torch.manual_seed(0)
    gating = ContextGating(5, add_batch_norm=False)
    x = torch.randn(4, 5)
    expected = x * torch.sigmoid(x @ gating.projection.weight.T + gating.projection.bias)
    torch.testing.assert_close(gating(x), expected)
    assert sum(p.numel() for p in gating.parameters()) == 5 * 5 + 5


def test_gating_with_batch_norm_has_no_bias_and_normalizes_the_gate():
    torch.manual_seed(0)
    gating = ContextGating(5).train()
    x = torch.randn(8, 5)
    gates = x @ gating.projection.weight.T
    normalized = (gates - gates.mean(0)) / torch.sqrt(gates.var(0, unbiased=False) + 1e-3)
    torch.testing.assert_close(gating(x), x * torch.sigmoid(normalized))
    assert gating.projection.bias is None
    assert sum(p.numel() for p in gating.parameters()) == 5 * 5 + 2 * 5
