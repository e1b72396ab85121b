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

The weight spectra are computed in the graph from the first rows, so an artifact stores the same n
values per factor as the checkpoint (ONNX Runtime folds those products into constants when it loads
the model). Forward only: `CirculantLinear` uses it while `torch.export` traces it (which
`torch.onnx.export` does).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["circulant_product", "DFT_MATRIX_MAX"]

DFT_MATRIX_MAX = 64  # longest transform done as one matrix product (see the module doc)


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
    ``weight``, ``diag``, ``sign`` ``[blocks, k, n]``; ``diag``/``sign`` None when absent)."""
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
