"""Frame aggregations (DBoF, NetVLAD, NetFV, moments) against direct per-cluster reference formulas."""

import math

import numpy as np
import pytest
import torch

from compactvid.layers.circulant import CirculantLinear
from compactvid.models.args import ModelArgs
from compactvid.models.compact import compact_layer
from compactvid.models.aggregation import DBoF, Moments, NetFV, NetVLAD, SoftAssignment, l2_normalize

B, T, D, K = 3, 7, 6, 5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def frames():
    torch.manual_seed(0)
    return torch.randn(B, T, D, dtype=torch.float64)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def normalized(v):
    """tf.nn.l2_normalize of a numpy vector."""
    return v / math.sqrt(max(float((v ** 2).sum()), 1e-12))


def assignment_of(module, frames):
    """The soft assignment computed by hand from the module's weights (no batch norm)."""
    w = module.projection.weight.detach().numpy()
    b = module.projection.bias.detach().numpy()
    logits = frames.numpy() @ w.T + b
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_l2_normalize_matches_tensorflow():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-8, 0.0]])
    out = l2_normalize(x, dim=1)
    torch.testing.assert_close(out[0], torch.tensor([0.6, 0.8]))
    assert out[1].tolist() == [0.0, 0.0]
    # TF divides by sqrt(max(sum x^2, 1e-12)) = 1e-6 here, so tiny vectors are not blown up to unit norm.
    torch.testing.assert_close(out[2], torch.tensor([1e-2, 0.0]))


@pytest.mark.parametrize("pooling", ["max", "average"])
def test_dbof_without_batch_norm_is_projection_relu6_pooling(frames, pooling):
    dbof = DBoF(D, K, pooling, add_batch_norm=False).double()
    w, b = dbof.projection.weight.detach(), dbof.projection.bias.detach()
    activation = torch.clamp(frames @ w.T + b, 0.0, 6.0)
    expected = activation.amax(1) if pooling == "max" else activation.mean(1)
    torch.testing.assert_close(dbof(frames), expected)
    assert n_params(dbof) == D * K + K


def test_dbof_batch_norm_uses_statistics_over_all_frames(frames):
    dbof = DBoF(D, K, "average").double().train()
    projected = frames @ dbof.projection.weight.detach().T
    flat = projected.reshape(-1, K)
    normalized_ = (flat - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + 1e-3)
    expected = torch.clamp(normalized_, 0, 6).reshape(B, T, K).mean(1)
    torch.testing.assert_close(dbof(frames), expected)
    assert dbof.projection.bias is None
    assert n_params(dbof) == D * K + 2 * K


@pytest.mark.parametrize("k_factor", [1, 2])
def test_circulant_dbof_projection(k_factor):
    dbof = DBoF(4, 10, compact=compact_layer(ModelArgs(k_factor=k_factor), True))
    assert isinstance(dbof.projection, CirculantLinear)
    assert dbof.projection.diag_variant == "learned" and dbof.projection.k_factor == k_factor
    blocks = math.ceil(10 / 4)
    assert n_params(dbof) == blocks * k_factor * 2 * 4 + 2 * 10
    assert dbof(torch.randn(2, 3, 4)).shape == (2, 10)


def test_dbof_rejects_unknown_pooling():
    with pytest.raises(ValueError, match="pooling"):
        DBoF(D, K, "median")


def test_netvlad_matches_per_cluster_formula(frames):
    vlad = NetVLAD(D, K, add_batch_norm=False).double()
    out = vlad(frames).detach().numpy()
    a = assignment_of(vlad.assignment, frames)
    c = vlad.assignment.centers().detach().numpy()
    x = frames.numpy()
    for i in range(B):
        per_cluster = np.zeros((D, K))
        for k in range(K):
            residual = sum(a[i, t, k] * (x[i, t] - c[:, k]) for t in range(T))
            per_cluster[:, k] = normalized(residual)
        np.testing.assert_allclose(out[i], normalized(per_cluster.reshape(-1)), rtol=1e-10, atol=1e-12)
    assert out.shape == (B, D * K) == (B, vlad.output_size)
    assert n_params(vlad) == D * K + K + D * K


def test_netvlad_with_batch_norm_parameter_count():
    assert n_params(NetVLAD(D, K)) == D * K + 2 * K + D * K


def test_netfv_matches_fisher_vector_formula(frames):
    fv = NetFV(D, K, add_batch_norm=False).double()
    out = fv(frames).detach().numpy()
    a = assignment_of(fv.assignment, frames)
    c = fv.assignment.centers().detach().numpy()
    s = fv.covariance.detach().numpy() ** 2 + 1e-6
    x = frames.numpy()
    for i in range(B):
        first = np.zeros((D, K))
        second = np.zeros((D, K))
        for k in range(K):
            first[:, k] = normalized(sum(a[i, t, k] * (x[i, t] - c[:, k]) for t in range(T)) / s[:, k])
            second[:, k] = (sum(a[i, t, k] * (x[i, t] - c[:, k]) ** 2 for t in range(T)) / s[:, k] ** 2
                            - a[i, :, k].sum())
        expected = np.concatenate([normalized(first.reshape(-1)), normalized(second.reshape(-1))])
        np.testing.assert_allclose(out[i], expected, rtol=1e-9, atol=1e-12)
    assert n_params(fv) == D * K + K + D * K + D * K
    assert fv.output_size == 2 * D * K


def test_netfv_coupled_centers_follow_the_assignment_weights(frames):
    fv = NetFV(D, K, couple_weights=True, coupling_factor=0.5).double()
    assert fv.assignment.learned_centers is None
    torch.testing.assert_close(fv.assignment.centers(), 0.5 * fv.assignment.projection.weight.T)
    assert n_params(fv) == D * K + 2 * K + D * K  # assignment + BN + covariances, no centers
    fv(frames).sum().backward()
    assert fv.assignment.projection.weight.grad is not None


def test_soft_assignment_outputs(frames):
    soft = SoftAssignment(D, K, add_batch_norm=False).double()
    assignment, mass, first_order = soft(frames)
    torch.testing.assert_close(assignment.sum(-1), torch.ones(B, T, dtype=torch.float64))
    torch.testing.assert_close(mass, assignment.sum(1, keepdim=True))
    torch.testing.assert_close(first_order, torch.einsum("btk,btd->bdk", assignment, frames))


def test_moments_are_mean_and_population_variance(frames):
    out = Moments(D)(frames).numpy()
    x = frames.numpy()
    np.testing.assert_allclose(out, np.concatenate([x.mean(1), x.var(1)], axis=1), rtol=1e-12)
    assert n_params(Moments(D)) == 0


@pytest.mark.parametrize("make", [lambda: DBoF(D, K), lambda: DBoF(D, 8, compact=compact_layer(ModelArgs(k_factor=2), True)),
                                  lambda: NetVLAD(D, K), lambda: NetFV(D, K),
                                  lambda: NetFV(D, K, couple_weights=True)])
def test_every_parameter_gets_a_gradient(make, frames):
    module = make().double()
    module(frames).square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
