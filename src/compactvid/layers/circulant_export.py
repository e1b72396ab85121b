"""The diagonal-circulant product in operations that exporters and ONNX can express, fast in ONNX Runtime.

`CirculantLinear` trains through a custom autograd Function whose spectra are complex tensors; ONNX has
no complex type, and its converter has no counterpart for the conjugation of the weight spectrum. This
is the same product over real/imaginary pairs, with the Fourier transforms themselves written as
matrix products: a transform of length n = n1 * n2 is split in the four-step way (n1 transforms of
length n2, a twiddle product, n2 transforms of length n1), recursively, down to lengths of at most
``DFT_MATRIX_MAX`` done as one product with the DFT matrix (cos and sin parts side by side).

Why not ONNX's DFT operator, which the exporter emits for ``torch.fft``: ONNX Runtime's CPU kernel
costs about 40 ns per point at 1024 points and over 200 ns at 65536 (one thread on this project's
machine), which made the compact layers slower than dense ones; the matrix products run in ONNX
Runtime's GEMM kernels on DFT matrices that stay in cache. Two savings follow from the structure: the
forward transform of a real input needs only the cos/sin products of the real part, and the inverse
transform computes only the real part of the outputs the layer keeps (out_features of n).

Layers of moderate length (the ``--dbof_circulant`` projection, 1024 -> 8192, runs on every frame) take
a folded form instead, whose matrices hold at most ``FOLDED_MAX_VALUES`` values. With the input index
j1 + n1 j2, the forward transform over j2 (half of it: the input is real), the twiddle, the transform
over j1, the product with the weight spectrum, and the inverse steps down to the inverse over j2 act on
each outer frequency k2 as one n1 x n1 complex matrix, computed from the weights; and the outer
transforms are shared by every block, row and factor. With rows on the last axis, a block and factor
is then three matrix products with no transpose between them (``[2h, n2] @ [n2, n1 R]``, a batch of
``[2 n1, 2 n1] @ [2 n1, R]``, ``[n2, 2h] @ [2h, n1 R]``; h = n2 / 2 + 1): about 2 n (n1 + n2)
multiply-adds per row and block (131 k at n = 1024, against 1 M for a dense block), and a transpose of
the input and of the output only. Measured (benchmarks/bench_circulant_export.py), it is 6x faster
than the transform form on the DBoF projection at batch 1 (150 frames in one call; 2.5x on 15) and as
fast or faster on the layers of the mixtures of experts. Its matrices are read on every call, whatever
the rows: at 8192 points on one row (the DBoF FC, 1.1 M values) it is no faster than the transform
form, which therefore stays for the long layers (34 M values for the 65,536-point NetVLAD FC, which
runs on one row per video). A layer of at most ``PER_BLOCK_MAX`` blocks runs its products block by
block, so that a block's intermediates stay in cache (the DBoF projection at batch 1 holds 4.9 MB per
step over its 8 blocks; block by block it took 10.4 ms instead of 11.5 in ONNX Runtime); with more
blocks (the one-row layers of the mixtures of experts: 31 and 38) the graph nodes of one chain per
block cost more than they save (0.88 ms against 0.49 for the gates; bench_circulant_export.py).

The weight spectra are computed in the graph from the first rows, so an artifact stores the same n
values per factor as the checkpoint (ONNX Runtime folds those products into constants when it loads
the model). Forward only: `CirculantLinear` uses it while `torch.export` traces it (which
`torch.onnx.export` does).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["DFT_MATRIX_MAX", "FOLDED_MAX_VALUES", "PER_BLOCK_MAX", "circulant_product", "takes_folded_form"]

DFT_MATRIX_MAX = 64  # longest transform done as one matrix product (see the module doc)
FOLDED_MAX_VALUES = 1 << 20  # largest folded form, in matrix values (4 MB in float32; see the module doc)
PER_BLOCK_MAX = 8  # most blocks whose folded products run block by block (see the module doc)


def _split(n: int) -> int:
    """The divisor of n closest to sqrt(n) from below (1 when n is prime)."""
    for n1 in range(math.isqrt(n), 0, -1):
        if n % n1 == 0:
            return n1
    return 1


def _phases(rows: int, cols: int, n: int, inverse: bool, like: Tensor) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` of ``±2 pi j k / n`` for j < rows, k < cols (+ when inverse), as ``like``'s dtype."""
    # j k reduced mod n in integers first: the angle is then below 2 pi, exact to like's precision.
    turns = torch.outer(torch.arange(rows), torch.arange(cols)) % n
    angle = turns.to(like.dtype) * (2 * math.pi / n)
    return torch.cos(angle), torch.sin(angle) if inverse else -torch.sin(angle)


def _dft(real: Tensor, imag: Tensor | None, inverse: bool, outputs: int,
         real_only: bool = False) -> tuple[Tensor, Tensor | None]:
    """The first ``outputs`` points of the DFT over the last axis of ``real + i imag`` ``[..., n]``
    (``imag`` None: a real input; inverse: unscaled, ``e^{+2 pi i jk/n}``). Returns (real, imag), imag
    None when ``real_only``."""
    n = real.shape[-1]
    n1 = _split(n)
    if n <= DFT_MATRIX_MAX or n1 == 1:
        cos, sin = _phases(n, outputs, n, inverse, real)
        # (a + ib)(c + is) = (ac - bs) + i(as + bc), one product for both parts.
        if imag is None:
            matrix = cos if real_only else torch.cat([cos, sin], dim=1)
            out = real @ matrix
        else:
            top = cos if real_only else torch.cat([cos, sin], dim=1)
            bottom = -sin if real_only else torch.cat([-sin, cos], dim=1)
            out = torch.cat([real, imag], dim=-1) @ torch.cat([top, bottom], dim=0)
        return (out, None) if real_only else (out[..., :outputs], out[..., outputs:])
    n2 = n // n1
    lead = real.shape[:-1]

    def columns(t: Tensor | None) -> Tensor | None:  # input index j1 + n1 * j2 -> [..., j1, j2]
        return None if t is None else t.reshape(*lead, n2, n1).transpose(-1, -2)

    a, b = _dft(columns(real), columns(imag), inverse, n2)  # [..., j1, k2]
    cos, sin = _phases(n1, n2, n, inverse, real)
    a, b = a * cos - b * sin, a * sin + b * cos
    keep = -(-outputs // n2)  # output index k2 + n2 * k1: the first outputs need k1 < keep
    c, d = _dft(a.transpose(-1, -2), b.transpose(-1, -2), inverse, keep, real_only)  # [..., k2, k1]

    def flatten(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.transpose(-1, -2).reshape(*lead, keep * n2)[..., :outputs]

    return flatten(c), flatten(d)


def circulant_product(x: Tensor, weight: Tensor, diag: Tensor | None, sign: Tensor | None,
                      out_features: int) -> Tensor:
    """``x [R, n] -> [R, out_features]``: the stacked blocks of `CirculantLinear` (same parameters:
    ``weight``, ``diag``, ``sign`` ``[blocks, k, n]``; ``diag``/``sign`` None when absent). The folded
    form when its matrices are small (see the module doc), else transforms of the whole length."""
    if takes_folded_form(*weight.shape):
        return _folded_product(x, weight, diag, sign, out_features)
    return _transform_product(x, weight, diag, sign, out_features)


def takes_folded_form(blocks: int, k: int, n: int) -> bool:
    """Whether `circulant_product` computes a layer of ``blocks`` x ``k`` factors of length ``n`` in the
    folded form (its matrices hold at most ``FOLDED_MAX_VALUES`` values)."""
    n1 = _split(n)
    return _folded_values(blocks * k, n1, n // n1) <= FOLDED_MAX_VALUES


def _transform_product(x: Tensor, weight: Tensor, diag: Tensor | None, sign: Tensor | None,
                       out_features: int) -> Tensor:
    """`circulant_product` with a forward and an inverse transform of length n per row, block and factor."""
    blocks, k, n = weight.shape
    w_real, w_imag = _dft(weight, None, inverse=False, outputs=n)
    h = x.unsqueeze(1)  # [R, 1, n]: the first factor's input is shared by every block
    for f in range(k):
        if diag is not None:
            h = h * diag[:, f]
        real, imag = _dft(h, None, inverse=False, outputs=n)
        c, d = w_real[:, f], w_imag[:, f]
        # spectrum(C(w) h) = spectrum(h) * conj(spectrum(w)): a cross-correlation (see circulant.py).
        last = f == k - 1 and sign is None
        keep = -(-out_features // blocks) if last and blocks == 1 else n
        h, _ = _dft(real * c + imag * d, imag * c - real * d, inverse=True, outputs=keep, real_only=True)
        h = h / n
        if sign is not None:
            h = h * sign[:, f]
    return h.reshape(x.shape[0], -1)[:, :out_features]


def _folded_values(factors: int, n1: int, n2: int) -> int:
    """Values of the folded form's matrices: ``[h, 2 n1, 2 n1]`` per block and factor, two stage matrices."""
    h = n2 // 2 + 1
    return factors * h * 4 * n1 * n1 + 4 * h * n2


def _stage_matrices(n2: int, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """The outer transforms over j2 of the folded form, as ``like``'s dtype: ``forward [2h, n2]`` (rows
    k2 = 0..h-1, each a cos row then a -sin row: the half spectrum of a real input) and ``inverse
    [n2, 2h]`` (the real part of the inverse over the Hermitian spectrum whose half it is, scaled by 1/n)."""
    h = n2 // 2 + 1
    cos, minus_sin = _phases(n2, h, n2, False, like)  # [n2, h]
    forward = torch.stack([cos.T, minus_sin.T], dim=1).reshape(2 * h, n2)
    k2 = torch.arange(h)
    # Frequencies k2 and n2 - k2 are conjugate: the kept half counts twice, except 0 and n2 / 2.
    twice = torch.where((k2 == 0) | (2 * k2 == n2), 1.0, 2.0).to(like.dtype) / n
    inverse = torch.stack([cos * twice, minus_sin * twice], dim=-1).reshape(n2, 2 * h)
    return forward, inverse


def _folded_matrices(w: Tensor, n1: int, n2: int) -> Tensor:
    """``w [B, n]`` first rows -> ``[B, h, 2 n1, 2 n1]``: for each frequency k2 < h of the outer
    transform, the complex map over j1 (real part then imaginary part, in and out) of twiddle, DFT,
    product with the conjugated weight spectrum, inverse DFT and inverse twiddle.

    That map is G[j1', j1] = sum_k1 conj(W[k2 + n2 k1]) e^{2 pi i (j1' - j1)(k2 + n2 k1) / n}
    = n1 sum_q w[(q n1 - j1' + j1) mod n] e^{2 pi i q k2 / n2}: a length-n2 DFT of w taken every n1-th
    value, Toeplitz in (j1', j1)."""
    n = n1 * n2
    h = n2 // 2 + 1
    q = torch.arange(n2)
    lag = torch.arange(1 - n1, n1)  # j1' - j1
    strided = w[:, (q[None, :] * n1 - lag[:, None]) % n]  # [B, 2 n1 - 1, n2]
    cos, sin = _phases(n2, h, n2, True, w)
    real, imag = (strided @ cos) * n1, (strided @ sin) * n1  # [B, 2 n1 - 1, h]
    j1 = torch.arange(n1)
    toeplitz = j1[:, None] - j1[None, :] + (n1 - 1)
    real, imag = real[:, toeplitz].permute(0, 3, 1, 2), imag[:, toeplitz].permute(0, 3, 1, 2)  # [B, h, n1, n1]
    return torch.cat([torch.cat([real, -imag], dim=-1), torch.cat([imag, real], dim=-1)], dim=-2)


def _folded_product(x: Tensor, weight: Tensor, diag: Tensor | None, sign: Tensor | None,
                    out_features: int) -> Tensor:
    """`circulant_product` as three matrix products per block and factor, rows on the last axis: block
    by block when there are at most ``PER_BLOCK_MAX`` blocks, else every block in each product (see the
    module doc)."""
    blocks, _, n = weight.shape
    rows = x.shape[0]
    n1 = _split(n)
    stages = _stage_matrices(n // n1, n, x)
    data = x.T.reshape(1, n, rows)  # [1, n, R]: the first factor's input is shared by every block
    groups = [slice(b, b + 1) for b in range(blocks)] if blocks <= PER_BLOCK_MAX else [slice(0, blocks)]
    out = torch.cat([_folded_blocks(data, weight[g], None if diag is None else diag[g],
                                    None if sign is None else sign[g], n1, stages) for g in groups])
    return out.reshape(blocks * n, rows)[:out_features].T


def _folded_blocks(data: Tensor, weight: Tensor, diag: Tensor | None, sign: Tensor | None, n1: int,
                   stages: tuple[Tensor, Tensor]) -> Tensor:
    """``data [1, n, R]`` through the blocks of ``weight`` (``diag``, ``sign``) ``[B, k, n]``:
    ``[B, n, R]``; ``stages``: `_stage_matrices`."""
    blocks, k, n = weight.shape
    rows = data.shape[2]
    n2 = n // n1
    h = n2 // 2 + 1
    forward, inverse = stages
    for f in range(k):
        if diag is not None:
            data = data * diag[:, f, :, None]
        # Index j1 + n1 j2 of a row as [j2, (j1, R)]: the transform over j2 is one product for all rows.
        spectrum = forward @ data.reshape(-1, n2, n1 * rows)  # [B, 2h, n1 R]
        spectrum = _folded_matrices(weight[:, f], n1, n2) @ spectrum.reshape(-1, h, 2 * n1, rows)
        data = (inverse @ spectrum.reshape(blocks, 2 * h, n1 * rows)).reshape(blocks, n, rows)
        if sign is not None:
            data = data * sign[:, f, :, None]
    return data
