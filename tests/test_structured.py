"""LowRankLinear and MonarchLinear as drop-ins for nn.Linear: against their dense equivalents (float64)
for every kind of shape, gradients, parameter counts, bias, dtype/device arguments, state, ONNX export."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from compactvid.layers import LowRankLinear, MonarchLinear
from dense_reference import assert_matches_dense, dense_forward

# (in, out): square, wide (out < in), tall, non-divisible both ways, odd and prime sizes.
SHAPES = [(8, 8), (16, 5), (8, 24), (6, 13), (7, 7), (13, 6), (12, 30), (9, 9)]
# A structure size that is not a divisor of most sizes (padding, truncation); 9 features in 6 blocks of 2
# leave the sixth block all padding.
LAYERS = {
    "lowrank": lambda i, o, bias, size=None: LowRankLinear(i, o, bias, rank=size or min(i, o, 3)),
    "monarch": lambda i, o, bias, size=None: MonarchLinear(i, o, bias, nblocks=size or (6 if i == 9 else min(i, o, 3))),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_gradients_match_dense(kind, shape):
    bias = SHAPES.index(shape) % 2 == 0  # every kind is tried with and without
    torch.manual_seed(0)
    layer = LAYERS[kind](*shape, bias).double()
    x = torch.randn(5, shape[0], dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(5, shape[1], dtype=torch.float64)
    assert_matches_dense(layer, x, grad_out, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_gradcheck(kind):
    torch.manual_seed(1)
    layer = LAYERS[kind](6, 13, True).double()
    names = [name for name, _ in layer.named_parameters()]
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)

    def f(x, *params):
        return functional_call(layer, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(f, (x, *layer.parameters()))


def test_monarch_permutation_by_hand():
    # 4 -> 4 in 2 blocks of 2: R maps inputs (0, 1) -> middle (0, 1) and (2, 3) -> (2, 3); P^T feeds
    # block 0 of L the middle entries 0, 2 and block 1 the entries 1, 3; block l of L writes outputs
    # 2 l, 2 l + 1. With one nonzero entry per factor, the dense matrix is known entry by entry.
    layer = MonarchLinear(4, 4, bias=False, nblocks=2).double()
    with torch.no_grad():
        layer.blocks1.zero_()
        layer.blocks2.zero_()
        layer.blocks1[1, 0, 1] = 2.0  # middle 2 <- input 3
        layer.blocks2[0, 1, 1] = 5.0  # output 1 <- input 1 of L's block 0 (= middle 2)
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[1, 3] = 10.0
    torch.testing.assert_close(layer.to_dense(), expected)
    torch.testing.assert_close(layer(torch.eye(4, dtype=torch.float64)).T, expected)


def test_monarch_square_layer_has_monarch_structure():
    # n = 16, 4 blocks of 4: output block l depends on input block i only through L's block l and R's
    # block i (one path per pair), so every 4 x 4 block (l, i) of the dense matrix is rank one and no
    # entry is structurally zero: the characterization of square Monarch matrices (Dao et al., 2022).
    torch.manual_seed(2)
    layer = MonarchLinear(16, 16, bias=False, nblocks=4).double()
    m = layer.to_dense()
    assert (m != 0).all()
    for l in range(4):
        for i in range(4):
            assert torch.linalg.matrix_rank(m[4 * l:4 * l + 4, 4 * i:4 * i + 4]) == 1


def test_lowrank_dense_matrix_has_the_rank():
    torch.manual_seed(3)
    layer = LowRankLinear(20, 30, rank=4).double()
    assert torch.linalg.matrix_rank(layer.to_dense()) == 4


@pytest.mark.parametrize(
    "layer,expected",
    [
        (LowRankLinear(8192, 512, rank=16, bias=False, device="meta"), 16 * (8192 + 512)),
        (LowRankLinear(6, 13, rank=3), 3 * 19 + 13),
        # k = 32 blocks of 256 inputs, 16 outputs; middle min(256, 16) = 16.
        (MonarchLinear(8192, 512, bias=False, nblocks=32, device="meta"), 32 * 16 * (256 + 16)),
        # sqrt(n) blocks of a square n: 2 n sqrt(n).
        (MonarchLinear(1024, 1024, bias=False, nblocks=32, device="meta"), 2 * 1024 * 32),
        # 1024 -> 19310 in 4 blocks: 256 inputs, ceil(19310 / 4) = 4828 outputs, middle 256.
        (MonarchLinear(1024, 19310, nblocks=4, device="meta"), 4 * 256 * (256 + 4828) + 19310),
        # 13 -> 6 in 3 blocks: 5 inputs (2 padded), 2 outputs, middle 2.
        (MonarchLinear(13, 6, nblocks=3), 3 * 2 * (5 + 2) + 6),
    ],
)
def test_parameter_count(layer, expected):
    assert sum(p.numel() for p in layer.parameters()) == expected
    assert layer.num_compact_parameters() == expected
    assert f"params={expected}" in repr(layer)
    bias = layer.out_features if layer.bias is not None else 0
    assert layer.dense_parameters() == layer.in_features * layer.out_features + bias


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_bias_and_structured_flags(kind):
    layer = LAYERS[kind](8, 8, True)
    names = [name for name, _ in layer.named_parameters()]
    assert names[-1] == "bias" and len(names) == 3
    assert all(getattr(p, "_is_structured", False) for n, p in layer.named_parameters() if n != "bias")
    assert not getattr(layer.bias, "_is_structured", False)
    copied = copy.deepcopy(layer.double())
    assert all(getattr(p, "_is_structured", False) for n, p in copied.named_parameters() if n != "bias")
    no_bias = LAYERS[kind](8, 8, False)
    assert no_bias.bias is None and "bias" not in no_bias.state_dict()
    assert "bias=False" in repr(no_bias)
    # nn.Linear's default is a bias.
    default = LowRankLinear(8, 8, rank=2) if kind == "lowrank" else MonarchLinear(8, 8)
    assert default.bias is not None


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_dtype_and_device_arguments(kind):
    cls, size = (LowRankLinear, {"rank": 2}) if kind == "lowrank" else (MonarchLinear, {"nblocks": 2})
    layer = cls(8, 6, device="meta", dtype=torch.float16, **size)
    assert all(p.device.type == "meta" and p.dtype == torch.float16 for p in layer.parameters())
    layer = cls(8, 6, dtype=torch.float64, **size)
    assert layer(torch.randn(3, 8, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(RuntimeError):
        layer(torch.randn(3, 8))  # float32 input for float64 parameters


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("lead", [(), (1,), (2, 3, 5), (0,)])
def test_any_leading_batch_dims(kind, lead):
    layer = LAYERS[kind](6, 13, True).double()
    x = torch.randn(*lead, 6, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (*lead, 13)
    torch.testing.assert_close(y, dense_forward(layer, x))


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_initialization_matches_nn_linear_output_variance(kind):
    # nn.Linear's default init gives outputs of variance in * 1/(3 in) = 1/3 for unit-variance inputs.
    torch.manual_seed(4)
    layer = LAYERS[kind](1024, 2048, False, 64 if kind == "lowrank" else 16)
    x = torch.randn(512, 1024)
    with torch.no_grad():
        variance = layer(x).var().item()
        dense = nn.Linear(1024, 2048, bias=False)(x).var().item()
    assert abs(variance - 1 / 3) < 0.03 and abs(dense - 1 / 3) < 0.03
    torch.manual_seed(5)
    a = LAYERS[kind](16, 8, True)
    torch.manual_seed(5)
    b = LAYERS[kind](16, 8, True)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))
    before = [p.clone() for p in a.parameters()]
    a.reset_parameters()
    assert not any(torch.equal(p, q) for p, q in zip(before, a.parameters()))


def test_bad_arguments_and_inputs_raise():
    with pytest.raises(ValueError, match="rank"):
        LowRankLinear(8, 8, rank=0)
    with pytest.raises(ValueError, match="nblocks"):
        MonarchLinear(8, 8, nblocks=0)
    with pytest.raises(ValueError, match="nblocks"):
        MonarchLinear(4, 64, nblocks=8)
    with pytest.raises(ValueError, match=r"\[\.\.\., 8\]"):
        MonarchLinear(8, 8)(torch.randn(2, 9))
    with pytest.raises(ValueError, match="in_features >= 1"):
        LowRankLinear(0, 8, rank=1)


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_autocast_as_nn_linear(dtype):
    torch.manual_seed(6)
    for layer in (LowRankLinear(64, 100, rank=8), MonarchLinear(64, 100, nblocks=4)):
        x = torch.randn(5, 64, requires_grad=True)
        with torch.autocast("cpu", dtype=dtype):
            y = layer(x)
        assert y.dtype == dtype
        torch.testing.assert_close(y.float(), layer(x), rtol=0.05, atol=0.05)
        y.float().sum().backward()
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters())


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime(tmp_path):
    # The export path (torch.export + ONNX Runtime) must hold every op these layers use.
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(7)
    for name, layer in (("lowrank", LowRankLinear(6, 13, rank=3)), ("monarch", MonarchLinear(13, 6, nblocks=3))):
        x = torch.randn(5, 2, layer.in_features)
        program = torch.onnx.export(layer.eval(), (x,), dynamo=True, verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
        path = tmp_path / f"{name}.onnx"
        program.save(str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = torch.randn(7, 2, layer.in_features)  # another batch size than the exported example
        (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(y), layer(x), rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_cuda_matches_cpu(kind):
    torch.manual_seed(8)
    layer = LAYERS[kind](32, 70, True).double()
    x = torch.randn(9, 32, dtype=torch.float64)
    cuda = copy.deepcopy(layer).cuda()
    torch.testing.assert_close(cuda(x.cuda()).cpu(), layer(x))
    torch.testing.assert_close(cuda.to_dense().cpu(), layer.to_dense())
    assert math.isclose(cuda.num_compact_parameters(), layer.num_compact_parameters())


def test_monarch_traced_product_matches_the_function():
    # torch.compile / torch.export trace the plain-op product; it must equal the hand-written one.
    from compactvid.layers.monarch import _monarch_traced, _MonarchFunction

    torch.manual_seed(9)
    layer = MonarchLinear(15, 13, nblocks=3).double()  # p = 5, s = 5 (two outputs cut), q = 5
    x = torch.randn(6, 15, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(6, 13, dtype=torch.float64)
    results = []
    for product in (_monarch_traced, _MonarchFunction.apply):
        y = product(x, layer.blocks1, layer.blocks2, 13)
        results.append((y, *torch.autograd.grad(y, (x, layer.blocks1, layer.blocks2), grad_out)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
