"""Diagonal-circulant linear layer: a drop-in for ``nn.Linear`` with O(n) parameters.

A circulant matrix C(w) of size n is fixed by one vector w. We follow the seed's convention
(``utils_layer.CirculantLayerWithFactor``: reverse w, FFT product, roll by one): w is the FIRST ROW,
``C(w)[i, j] = w[(j - i) mod n]``, so ``(C(w) x)[i] = sum_m w[m] x[(i + m) mod n]`` is the circular
cross-correlation of x with w. In the Fourier domain that is ``rfft(C(w) x) = rfft(x) * conj(rfft(w))``,
which is how the layer computes it, in O(n log n) per row.

One factor is, by variant:
- ``diag="learned"``: ``C(w) D`` with D a learned diagonal applied to the input first (the paper's "DC").
- ``diag="sign"``: ``D C(w)`` with D a fixed random +-1 diagonal (a buffer), applied after the
  circulant (Cheng et al.'s "CD").
- ``diag="none"``: ``C(w)`` (the seed's circulant mixture of experts).

A block is the product of ``k_factor`` factors (factor 0 is applied to the input first). With
n = in_features, ``ceil(out_features / n)`` independent blocks are stacked vertically and the output is
truncated to out_features.

Gradients come from a custom ``autograd.Function`` that uses the FFT identities directly (the gradient
w.r.t. the input is a circular convolution, w.r.t. w a correlation summed over rows in the Fourier
domain); this avoids autograd's generic FFT backward, which runs full-length complex transforms. On
CPU, rows go through in cache-sized chunks, and the input spectra are either kept from the forward
pass (small batches) or recomputed per chunk (large ones), whichever measured faster.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from compactvid.layers.circulant_export import circulant_product
from compactvid.layers.structured import StructuredLinear

__all__ = ["CirculantLinear", "DIAG_VARIANTS"]

DIAG_VARIANTS = ("learned", "sign", "none")


# On CPU, rows are processed in chunks so that every intermediate (products, spectra, partial
# gradients) stays in cache and its memory is reused from one chunk to the next: a fresh multi-MB
# allocation costs more in page faults than the FFT that fills it. MKL has no plan cache, so each FFT
# call pays a setup proportional to n: a chunk holds at least CPU_MIN_TRANSFORMS rows x blocks.
CPU_CHUNK_ELEMENTS = 1 << 18
CPU_MIN_TRANSFORMS = 64


def _chunk_rows(x: Tensor, blocks: int) -> int:
    """Rows per chunk (all rows off CPU): a chunk's ``[rows, blocks, n]`` holds about
    ``max(CPU_CHUNK_ELEMENTS, CPU_MIN_TRANSFORMS * n)`` elements; the chunks are of equal size."""
    rows, n = x.shape
    if x.device.type != "cpu" or rows == 0:
        return max(1, rows)
    transforms = max(CPU_MIN_TRANSFORMS, CPU_CHUNK_ELEMENTS // n)
    target = max(1, -(-transforms // blocks))
    chunks = -(-rows // target)
    return -(-rows // chunks)


# The backward pass needs, per factor, the spectrum of the factor's input (and, with a learned
# diagonal, the input itself). The forward pass keeps them when they hold at most this many real
# elements (32 MB in float32); beyond that, writing, page-faulting in and re-reading a batch-sized
# buffer costs more than recomputing each chunk's spectra in the backward pass (measured on CPU:
# keeping is 15% faster for the FC shapes, 17% slower for the 1200 x 1024 -> 8192 projection).
SAVE_MAX_ELEMENTS = 1 << 23


class _Saved:
    """Per-factor spectra ``[R, 1 or blocks, n//2+1]`` of the factors' inputs (after the learned
    diagonal) and, with a learned diagonal, the inputs ``[R, blocks, n]`` of factors 1..k-1, for a
    whole batch; filled chunk by chunk by the forward pass. Without a learned diagonal the first
    factor's input is shared by every block, hence one spectrum per row."""

    def __init__(self, rows: int, n: int, blocks: int, k: int, learned: bool, like: Tensor) -> None:
        complex_dtype = like.dtype.to_complex()
        self.spectra = [
            like.new_empty(rows, b, n // 2 + 1, dtype=complex_dtype) for b in self.widths(blocks, k, learned)
        ]
        # The first factor's input is the layer input, which autograd keeps anyway.
        self.inputs = [like.new_empty(rows, blocks, n) if learned and f > 0 else None for f in range(k)]

    def store(self, f: int, rows: slice, h: Tensor, spectrum: Tensor) -> None:
        self.spectra[f][rows] = spectrum
        if self.inputs[f] is not None:
            self.inputs[f][rows] = h

    def load(self, rows: slice, x: Tensor) -> list[tuple[Tensor | None, Tensor]]:
        """Per factor, (input or None where the backward pass does not use it, spectrum) for the
        given rows; ``x`` holds those rows of the layer input."""
        inputs = [x.unsqueeze(1)] + [t[rows] if t is not None else None for t in self.inputs[1:]]
        return [(h, spectrum[rows]) for h, spectrum in zip(inputs, self.spectra)]

    @staticmethod
    def widths(blocks: int, k: int, learned: bool) -> list[int]:
        return [blocks if learned or f > 0 else 1 for f in range(k)]

    @staticmethod
    def elements(rows: int, n: int, blocks: int, k: int, learned: bool) -> int:
        """Real elements held (a complex value counts two)."""
        spectra = sum(rows * b * (n // 2 + 1) * 2 for b in _Saved.widths(blocks, k, learned))
        return spectra + (rows * blocks * n * (k - 1) if learned else 0)


def _chain_forward(
    x: Tensor, w_conj: Tensor, diag: Tensor | None, sign: Tensor | None,
    saved: _Saved | None = None, rows: slice | None = None,
) -> Tensor:
    """Apply the k factors of every block to rows ``x [c, n]`` -> ``[c, blocks, n]``; copy what the
    backward pass needs into ``saved[rows]`` when given.

    ``w_conj [blocks, k, n//2+1]`` is the conjugated spectrum of the first rows.
    """
    n = x.shape[-1]
    h = x.unsqueeze(1)  # [c, 1, n]: the first factor's input is shared by every block
    for f in range(w_conj.shape[1]):
        spectrum = torch.fft.rfft(h * diag[:, f] if diag is not None else h, dim=-1)
        if saved is not None:
            saved.store(f, rows, h, spectrum)
        # In place unless the spectrum is the shared [c, 1, n//2+1] one that broadcasts over blocks.
        if spectrum.shape[1] == w_conj.shape[0]:
            product = spectrum.mul_(w_conj[:, f])
        else:
            product = spectrum * w_conj[:, f]
        h = torch.fft.irfft(product, n=n, dim=-1)
        if sign is not None:
            h.mul_(sign[:, f])
    return h


def _chain_inputs(
    x: Tensor, w_conj: Tensor, diag: Tensor | None, sign: Tensor | None
) -> list[tuple[Tensor, Tensor]]:
    """Recompute, for rows ``x [c, n]``, what the backward pass needs: per factor, its input
    ``[c, 1 or blocks, n]`` and the spectrum of that input after the learned diagonal."""
    n = x.shape[-1]
    k = w_conj.shape[1]
    h = x.unsqueeze(1)
    kept = []
    for f in range(k):
        spectrum = torch.fft.rfft(h * diag[:, f] if diag is not None else h, dim=-1)
        kept.append((h, spectrum))
        if f + 1 < k:  # the last factor's output is not needed
            h = torch.fft.irfft(spectrum * w_conj[:, f], n=n, dim=-1)
            if sign is not None:
                h.mul_(sign[:, f])
    return kept


class _CirculantFunction(torch.autograd.Function):
    """``x [R, n] -> y [R, out_features]`` for stacked diagonal-circulant blocks (see module doc)."""

    @staticmethod
    def forward(
        ctx, x: Tensor, weight: Tensor, diag: Tensor | None, sign: Tensor | None, out_features: int,
        needs_backward: bool,
    ) -> Tensor:
        blocks, k, n = weight.shape
        rows = x.shape[0]
        w_conj = torch.fft.rfft(weight, dim=-1).conj_physical()
        y = x.new_empty(rows, out_features)
        saved = None
        layout = (rows, n, blocks, k, diag is not None)
        # Off CPU (one chunk, no page faults, fast memory), keeping the spectra always pays.
        if needs_backward and (x.device.type != "cpu" or _Saved.elements(*layout) <= SAVE_MAX_ELEMENTS):
            saved = _Saved(*layout, like=x)
        step = _chunk_rows(x, blocks)
        for start in range(0, rows, step):
            chunk = slice(start, start + step)
            h = _chain_forward(x[chunk], w_conj, diag, sign, saved, chunk)
            y[chunk] = h.reshape(h.shape[0], blocks * n)[:, :out_features]
        ctx.saved = saved
        ctx.save_for_backward(x, weight, diag, sign, w_conj)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, weight, diag, sign, w_conj = ctx.saved_tensors
        saved: _Saved | None = ctx.saved
        ctx.saved = None
        blocks, k, n = weight.shape
        out_features = grad_y.shape[1]
        need_x = ctx.needs_input_grad[0]
        # Sum over rows of conj(G) * U per block and factor: the spectrum of the weight gradient.
        corr = torch.zeros_like(w_conj) if ctx.needs_input_grad[1] else None
        grad_diag = torch.zeros_like(diag) if diag is not None and ctx.needs_input_grad[2] else None
        grad_x = torch.empty_like(x) if need_x else None
        w = w_conj.conj()
        step = _chunk_rows(x, blocks)
        padded = None
        for start in range(0, x.shape[0], step):
            chunk = slice(start, start + step)
            xc = x[chunk]
            kept = _chain_inputs(xc, w_conj, diag, sign) if saved is None else saved.load(chunk, xc)
            gc = grad_y[chunk]
            if out_features < blocks * n:
                # Truncated outputs get zero gradient.
                if padded is None or padded.shape[0] != gc.shape[0]:
                    padded = gc.new_zeros(gc.shape[0], blocks * n)
                padded[:, :out_features] = gc
                gc = padded
            g = gc.reshape(gc.shape[0], blocks, n)
            for f in reversed(range(k)):
                h, spectrum_u = kept[f]
                if sign is not None:
                    g = g * sign[:, f]
                spectrum_g = torch.fft.rfft(g, dim=-1)
                if corr is not None:
                    # d/dw_m of sum_i g_i sum_m' w_m' u_(i+m') = sum_i g_i u_(i+m): a correlation of g, u.
                    corr[:, f] += torch.linalg.vecdot(spectrum_g, spectrum_u.expand_as(spectrum_g), dim=0)
                if f == 0 and not need_x and grad_diag is None:
                    break
                # The adjoint of a correlation with w is a convolution with w.
                product = spectrum_g * w[:, f]
                if f == 0 and diag is None:
                    summed = product.sum(1) if blocks > 1 else product[:, 0]
                    grad_x[chunk] = torch.fft.irfft(summed, n=n, dim=-1)
                    break
                g = torch.fft.irfft(product, n=n, dim=-1)
                if diag is not None:
                    if grad_diag is not None:
                        grad_diag[:, f] += (g * h).sum(0)
                    g = g * diag[:, f]
                if f == 0 and need_x:
                    grad_x[chunk] = g.sum(1) if blocks > 1 else g[:, 0]
        grad_weight = torch.fft.irfft(corr, n=n, dim=-1) if corr is not None else None
        return grad_x, grad_weight, grad_diag, None, None, None


class CirculantLinear(StructuredLinear):
    """Linear map ``[*, in_features] -> [*, out_features]`` built from diagonal-circulant blocks.

    Compatible with ``torch.nn.Linear`` (same positional arguments, any leading batch dims, CPU and
    CUDA, float32 and float64). Under autocast the FFTs run in float32 and the output is float32.

    Args:
        in_features: size n of each input row; every circulant is n x n.
        out_features: output size; ``blocks = ceil(out_features / n)`` blocks are stacked and the
            result truncated.
        bias: add a learned bias ``[out_features]`` (default True, as ``nn.Linear``).
        diag: ``"learned"`` (factor C(w) D, D trained), ``"sign"`` (factor D C(w), D a fixed random
            +-1 buffer) or ``"none"`` (factor C(w)).
        k_factor: number of factors multiplied in each block (>= 1).
        device, dtype: where and in which floating type to create the parameters, as for nn.Linear.

    Parameters:
        weight: ``[blocks, k_factor, n]`` first rows of the circulant matrices.
        diag: ``[blocks, k_factor, n]`` learned diagonals (``diag="learned"`` only).
        sign: buffer ``[blocks, k_factor, n]`` of +-1 (``diag="sign"`` only), saved in the state_dict.
        bias: ``[out_features]`` when ``bias=True``.

    Initialization follows the seed (``CirculantLayerWithFactor`` and the circulant MoE): w and the
    learned diagonal are drawn from N(0, 1/sqrt(out_features)) (the seed uses one initializer for both),
    the sign diagonal uniformly from {-1, +1}, the bias is the constant 1/sqrt(out_features).

    ``weight`` and ``diag`` carry ``_is_structured = True`` (as in torch_butterfly) so that an optimizer
    setup can exclude them from weight decay.
    """

    structured_names = ("weight", "diag")
    kind = "circulant"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        diag: str = "learned",
        k_factor: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features)
        if diag not in DIAG_VARIANTS:
            raise ValueError(f"CirculantLinear diag must be one of {DIAG_VARIANTS}, got {diag!r}")
        if k_factor < 1:
            raise ValueError(f"CirculantLinear k_factor must be >= 1, got {k_factor}")
        factory = {"device": device, "dtype": dtype}
        self.diag_variant = diag
        self.k_factor = k_factor
        self.blocks = math.ceil(out_features / in_features)
        shape = (self.blocks, k_factor, in_features)
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        if diag == "learned":
            self.diag = nn.Parameter(torch.empty(shape, **factory))
        else:
            self.register_parameter("diag", None)
        if diag == "sign":
            self.register_buffer("sign", torch.empty(shape, **factory))
        else:
            self.register_buffer("sign", None)
        self._add_bias(bias, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Seed initialization: w and the learned diagonal ~ N(0, 1/sqrt(out_features)); the sign
        diagonal uniform over {-1, +1}; the bias constant 1/sqrt(out_features) (the seed's circulant MoE)."""
        std = 1.0 / math.sqrt(self.out_features)
        with torch.no_grad():
            self.weight.normal_(0.0, std)
            if self.diag is not None:
                self.diag.normal_(0.0, std)
            if self.sign is not None:
                self.sign.copy_(torch.randint_like(self.sign, 0, 2) * 2 - 1)
            if self.bias is not None:
                self.bias.fill_(std)

    def forward(self, x: Tensor) -> Tensor:
        """``x [*, in_features] -> [*, out_features]``."""
        self._check_input(x)
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            # FFTs in reduced precision are inaccurate (and half FFTs need power-of-two sizes on CUDA).
            with torch.autocast(device_type, enabled=False):
                return self._transform(x.float(), torch.float32)
        return self._transform(x, None)

    def _transform(self, x: Tensor, dtype: torch.dtype | None) -> Tensor:
        def cast(t: Tensor | None) -> Tensor | None:
            return t if t is None or dtype is None else t.to(dtype)

        weight, diag, sign, bias = cast(self.weight), cast(self.diag), cast(self.sign), cast(self.bias)
        if x.dtype != weight.dtype:
            raise RuntimeError(
                f"CirculantLinear got a {x.dtype} input for {weight.dtype} parameters; convert one of them "
                f"(e.g. layer.to({x.dtype}) or x.to({weight.dtype}))"
            )
        lead = x.shape[:-1]
        needs_backward = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, weight, diag)
        )
        rows = x.reshape(-1, self.in_features)
        if torch.compiler.is_exporting():
            # The autograd Function's complex spectra have no ONNX counterpart; see circulant_export.
            y = circulant_product(rows, weight, diag, sign, self.out_features)
        else:
            y = _CirculantFunction.apply(rows, weight, diag, sign, self.out_features, needs_backward)
        if bias is not None:
            y = y + bias
        return y.reshape(*lead, self.out_features)

    def factor_matrices(self) -> Tensor:
        """Dense factors ``[blocks, k_factor, n, n]`` (factor f of block b is ``M[b, f]``)."""
        n = self.in_features
        i = torch.arange(n, device=self.weight.device)
        idx = (i[None, :] - i[:, None]) % n
        mats = self.weight[..., idx]  # C(w)[i, j] = w[(j - i) mod n]
        if self.diag is not None:
            mats = mats * self.diag[..., None, :]
        if self.sign is not None:
            mats = self.sign[..., :, None] * mats
        return mats

    def to_dense(self) -> Tensor:
        """The equivalent ``[out_features, in_features]`` matrix (``n^2`` memory per block: for tests and
        inspection, not for large n). Differentiable w.r.t. the parameters."""
        mats = self.factor_matrices()
        block = mats[:, 0]
        for f in range(1, self.k_factor):
            block = mats[:, f] @ block
        return block.reshape(self.blocks * self.in_features, self.in_features)[: self.out_features]

    def structure_repr(self) -> str:
        return f"diag={self.diag_variant}, k_factor={self.k_factor}, blocks={self.blocks}"
