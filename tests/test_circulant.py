"""CirculantLinear against its dense equivalent (float64), gradients, structure, state and dtypes."""

import copy
import itertools
import math

import pytest
import torch
from torch.func import functional_call

from compactvid.layers import CirculantLinear, circulant
from dense_reference import assert_matches_dense, dense_forward

VARIANTS = ("learned", "sign", "none")
# (in, out): square, wide (out < in), tall (out a multiple of in), non-multiple tall, odd n.
SHAPES = [(8, 8), (16, 5), (8, 24), (6, 13), (7, 7), (7, 3)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _layer(i: int, o: int, **kw) -> CirculantLinear:
    return CirculantLinear(i, o, **kw).double()


@pytest.mark.parametrize("shape,diag,k", list(itertools.product(SHAPES, VARIANTS, (1, 2, 3))))
def test_forward_and_gradients_match_dense(shape, diag, k):
    bias = (SHAPES.index(shape) + k) % 2 == 0  # every shape and variant is tried with and without
    torch.manual_seed(0)
    layer = _layer(*shape, diag=diag, k_factor=k, bias=bias)
    x = torch.randn(5, shape[0], dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(5, shape[1], dtype=torch.float64)
    assert_matches_dense(layer, x, grad_out, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("diag", VARIANTS)
def test_gradcheck(diag):
    torch.manual_seed(1)
    layer = _layer(6, 13, diag=diag, k_factor=2, bias=True)
    names = [name for name, _ in layer.named_parameters()]
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)

    def f(x, *params):
        return functional_call(layer, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(f, (x, *layer.parameters()))


def test_parameter_gradients_without_input_gradient():
    torch.manual_seed(2)
    layer = _layer(8, 20, diag="learned", k_factor=2)
    x = torch.randn(3, 8, dtype=torch.float64)
    grads = torch.autograd.grad(layer(x).sum(), list(layer.parameters()))
    grads_ref = torch.autograd.grad(dense_forward(layer, x).sum(), list(layer.parameters()))
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("diag", VARIANTS)
def test_input_gradient_with_frozen_parameters(diag):
    torch.manual_seed(2)
    layer = _layer(8, 20, diag=diag, k_factor=2).requires_grad_(False)
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(x).sum(), x)
    (grad_ref,) = torch.autograd.grad(dense_forward(layer, x).sum(), x)
    torch.testing.assert_close(grad, grad_ref)


def test_backward_twice_with_retained_graph():
    layer = _layer(8, 20, diag="learned", k_factor=2)
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    y = layer(x).sum()
    first = torch.autograd.grad(y, (x, layer.weight), retain_graph=True)
    second = torch.autograd.grad(y, (x, layer.weight))
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


def test_first_row_convention():
    layer = _layer(5, 5, diag="none")
    m = layer.to_dense()
    w = layer.weight[0, 0]
    torch.testing.assert_close(m[0], w)
    torch.testing.assert_close(m[:, 0], torch.roll(w.flip(0), 1))


def test_learned_square_layer_is_circulant_times_diagonal():
    # M = C(w) D: M[i+1, j+1] / M[i, j] = d[j+1] / d[j], the same for every row i.
    layer = _layer(9, 9, diag="learned")
    m = layer.to_dense()
    ratio = torch.roll(m, shifts=(-1, -1), dims=(0, 1)) / m
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))
    assert ratio[0].std() > 0.1  # a real diagonal, not a constant one


@pytest.mark.parametrize("diag", ["sign", "none"])
def test_sign_and_plain_layers_have_circulant_magnitude(diag):
    layer = _layer(9, 9, diag=diag)
    m = layer.to_dense().abs()
    torch.testing.assert_close(torch.roll(m, shifts=(1, 1), dims=(0, 1)), m)
    if diag == "sign":
        assert set(layer.sign.unique().tolist()) == {-1.0, 1.0}
        assert not torch.equal(layer.to_dense(), m * torch.sign(layer.weight[0, 0])[0])


@pytest.mark.parametrize(
    "i,o,diag,k,bias",
    [(1024, 8192, "learned", 1, False), (8192, 512, "sign", 2, False), (1024, 19310, "none", 1, True),
     (6, 13, "learned", 3, True)],
)
def test_parameter_count(i, o, diag, k, bias):
    layer = CirculantLinear(i, o, bias=bias, diag=diag, k_factor=k)
    blocks = math.ceil(o / i)
    expected = blocks * k * (2 * i if diag == "learned" else i) + (o if bias else 0)
    assert sum(p.numel() for p in layer.parameters()) == expected
    assert layer.num_compact_parameters() == expected
    assert f"params={expected}" in repr(layer)
    assert f"diag={diag}" in repr(layer)


def test_structured_parameters_are_flagged_and_sign_is_a_buffer():
    layer = CirculantLinear(8, 8, bias=True, diag="sign")
    assert layer.weight._is_structured
    assert not getattr(layer.bias, "_is_structured", False)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert "sign" in layer.state_dict()
    learned = CirculantLinear(8, 8, diag="learned")
    assert learned.diag._is_structured and "sign" not in learned.state_dict()
    copied = copy.deepcopy(learned.double())
    assert copied.weight._is_structured and copied.diag._is_structured


def test_state_dict_round_trip_restores_sign_diagonal():
    torch.manual_seed(3)
    a = CirculantLinear(16, 40, diag="sign", k_factor=2)
    torch.manual_seed(4)
    b = CirculantLinear(16, 40, diag="sign", k_factor=2)
    assert not torch.equal(a.sign, b.sign)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.sign, b.sign)
    x = torch.randn(3, 16)
    assert torch.equal(a(x), b(x))


def test_deterministic_under_seed_and_initialization_scale():
    torch.manual_seed(5)
    a = CirculantLinear(256, 1000, bias=True)
    torch.manual_seed(5)
    b = CirculantLinear(256, 1000, bias=True)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    std = 1 / math.sqrt(1000)
    assert abs(a.weight.std().item() - std) < 0.1 * std
    assert abs(a.diag.std().item() - std) < 0.1 * std
    torch.testing.assert_close(a.bias, torch.full((1000,), std))
    before = a.weight.clone()
    a.reset_parameters()
    assert not torch.equal(before, a.weight)


@pytest.mark.parametrize("lead", [(), (1,), (4,), (2, 3, 5), (0,)])
def test_any_leading_batch_dims(lead):
    layer = _layer(6, 13, diag="learned", k_factor=2, bias=True)
    x = torch.randn(*lead, 6, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (*lead, 13)
    torch.testing.assert_close(y, dense_forward(layer, x))


def test_bias_defaults_to_true_as_nn_linear():
    assert CirculantLinear(8, 8).bias is not None and torch.nn.Linear(8, 8).bias is not None
    assert CirculantLinear(8, 8, False).bias is None  # nn.Linear's positional order


def test_wrong_input_size_and_bad_arguments_raise():
    layer = CirculantLinear(8, 8)
    with pytest.raises(ValueError, match=r"\[\.\.\., 8\]"):
        layer(torch.randn(2, 9))
    with pytest.raises(RuntimeError, match="float64 input"):
        layer(torch.randn(2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="diag"):
        CirculantLinear(8, 8, diag="random")
    with pytest.raises(ValueError, match="k_factor"):
        CirculantLinear(8, 8, k_factor=0)


def test_float32_large_layer_close_to_float64_dense():
    torch.manual_seed(6)
    layer = CirculantLinear(1024, 2500, diag="learned", k_factor=2)
    x = torch.randn(7, 1024)
    ref = dense_forward(layer.double(), x.double())
    y = layer.float()(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_ffts_in_float32(dtype):
    torch.manual_seed(7)
    layer = CirculantLinear(64, 100, diag="learned", bias=True)
    x = torch.randn(5, 64, requires_grad=True)
    expected = layer(x)
    with torch.autocast("cpu", dtype=dtype):
        y = layer(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)
    y.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.parametrize("diag", VARIANTS)
def test_cuda_matches_cpu(diag):
    torch.manual_seed(8)
    layer = _layer(32, 70, diag=diag, k_factor=2, bias=True)
    x = torch.randn(9, 32, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    layer_cuda = _layer(32, 70, diag=diag, k_factor=2, bias=True)
    layer_cuda.load_state_dict(layer.state_dict())
    layer_cuda.cuda()
    x_cuda = x.detach().cuda().requires_grad_()
    y_cuda = layer_cuda(x_cuda)
    y_cuda.sum().backward()
    torch.testing.assert_close(y_cuda.cpu(), y)
    torch.testing.assert_close(x_cuda.grad.cpu(), x.grad)
    torch.testing.assert_close(layer_cuda.weight.grad.cpu(), layer.weight.grad)
    with torch.autocast("cuda", dtype=torch.float16):
        assert layer_cuda.float()(x_cuda.float()).dtype == torch.float32


@pytest.mark.parametrize("saved", [True, False], ids=["saved-spectra", "recomputed-spectra"])
@pytest.mark.parametrize("diag", VARIANTS)
def test_chunked_rows_match_dense(monkeypatch, diag, saved):
    # Tiny chunks: 23 rows go through several chunks of 3 rows and a last partial one.
    monkeypatch.setattr(circulant, "CPU_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(circulant, "CPU_MIN_TRANSFORMS", 5)
    monkeypatch.setattr(circulant, "SAVE_MAX_ELEMENTS", 1 << 30 if saved else 0)
    torch.manual_seed(9)
    layer = _layer(6, 13, diag=diag, k_factor=2, bias=True)
    x = torch.randn(23, 6, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(23, 13, dtype=torch.float64)
    assert_matches_dense(layer, x, grad_out)
