"""NetFV's Fisher-vector Function against its plain-ops formulation (values, gradients, gradcheck)."""

import pytest
import torch

from compactvid.models.aggregation import NetFV
from compactvid.models.fisher_vector import _FisherVectorFunction, fisher_vector, fisher_vector_traced

B, T, D, K = 3, 7, 6, 5

pytestmark = pytest.mark.usefixtures("one_thread")


def inputs(mass_on_one_cluster: bool = False):
    """Frames, assignment, centers, variance (float64, requiring gradients). With
    ``mass_on_one_cluster`` every frame is assigned to cluster 0: the other clusters' first-order
    statistics are zero, below the normalization's floor."""
    torch.manual_seed(0)
    frames = torch.randn(B, T, D, dtype=torch.float64)
    if mass_on_one_cluster:
        assignment = torch.zeros(B, T, K, dtype=torch.float64)
        assignment[..., 0] = 1.0
    else:
        assignment = torch.softmax(torch.randn(B, T, K, dtype=torch.float64), dim=-1)
    centers = torch.randn(D, K, dtype=torch.float64)
    variance = torch.rand(D, K, dtype=torch.float64) + 0.5
    return [t.requires_grad_() for t in (frames, assignment, centers, variance)]


@pytest.mark.parametrize("mass_on_one_cluster", [False, True])
def test_function_equals_the_plain_formulation_and_its_gradients(mass_on_one_cluster):
    args = inputs(mass_on_one_cluster)
    out = _FisherVectorFunction.apply(*args)
    expected = fisher_vector_traced(*args)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)
    grad = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, args, grad), torch.autograd.grad(expected, args, grad)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * want.abs().max().item())


def test_function_gradcheck():
    assert torch.autograd.gradcheck(_FisherVectorFunction.apply, inputs())


def test_netfv_output_and_gradients_are_those_of_the_plain_formulation():
    torch.manual_seed(1)
    fv = NetFV(D, K).double()
    frames = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    variance = fv.covariance.square() + 1e-6
    expected = fisher_vector_traced(frames, fv.assignment.assign(frames), fv.assignment.centers(), variance)
    out = fv(frames)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)
    grad = torch.randn_like(out)
    params = [frames, *fv.parameters()]
    for got, want in zip(torch.autograd.grad(out, params, grad), torch.autograd.grad(expected, params, grad)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_computes_in_the_common_type_without_autocast():
    frames, assignment, centers, variance = (t.detach().float() for t in inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fisher_vector(frames, assignment.double(), centers, variance)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, fisher_vector_traced(frames.double(), assignment.double(), centers.double(),
                                                         variance.double()))
