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
domain) and reuses the input spectrum saved by the forward pass; this avoids autograd's generic FFT
backward, which runs full-length complex transforms.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["CirculantLinear", "DIAG_VARIANTS"]

DIAG_VARIANTS = ("learned", "sign", "none")


def _rfft(t: Tensor) -> Tensor:
    """rfft over the last dim; MKL rejects empty batches, which are valid layer inputs."""
    if t.numel() == 0:
        return torch.zeros(*t.shape[:-1], t.shape[-1] // 2 + 1, dtype=t.dtype.to_complex(), device=t.device)
    return torch.fft.rfft(t, dim=-1)


def _irfft(t: Tensor, n: int) -> Tensor:
    if t.numel() == 0:
        return torch.zeros(*t.shape[:-1], n, dtype=t.real.dtype, device=t.device)
    return torch.fft.irfft(t, n=n, dim=-1)


class _CirculantFactor(torch.autograd.Function):
    """One factor applied to every block: ``[R, n]`` (shared input) or ``[R, blocks, n]`` -> ``[R, blocks, n]``.

    ``weight`` is ``[blocks, n]``; ``diag`` (learned, applied before) and ``sign`` (fixed, applied after)
    are ``[blocks, n]`` or None.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, diag: Tensor | None, sign: Tensor | None) -> Tensor:
        n = weight.shape[-1]
        shared = x.dim() == 2
        xb = x.unsqueeze(-2) if shared else x
        u = xb * diag if diag is not None else xb
        spectrum_w = _rfft(weight)
        spectrum_u = _rfft(u)
        y = _irfft(spectrum_u * spectrum_w.conj(), n)
        if sign is not None:
            y = y * sign
        ctx.save_for_backward(x if diag is not None else None, spectrum_u, spectrum_w, diag, sign)
        ctx.shared = shared
        ctx.n = n
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, spectrum_u, spectrum_w, diag, sign = ctx.saved_tensors
        n = ctx.n
        g = grad_y * sign if sign is not None else grad_y
        spectrum_g = _rfft(g)
        grad_weight = grad_diag = grad_x = None
        if ctx.needs_input_grad[1]:
            # d/dw_m of sum_i g_i sum_m' w_m' u_{i+m'} = sum_i g_i u_{i+m}: a correlation, summed over rows.
            corr = (spectrum_g.conj() * spectrum_u).reshape(-1, *spectrum_w.shape).sum(0)
            grad_weight = _irfft(corr, n)
        need_u_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[2]
        if need_u_grad:
            # The adjoint of a correlation with w is a convolution with w.
            product = spectrum_g * spectrum_w
            if diag is None and ctx.shared:
                grad_x = _irfft(product.sum(-2), n)
            else:
                grad_u = _irfft(product, n)
                if diag is not None:
                    xb = x.unsqueeze(-2) if ctx.shared else x
                    if ctx.needs_input_grad[2]:
                        grad_diag = (grad_u * xb).reshape(-1, *diag.shape).sum(0)
                    grad_u = grad_u * diag
                grad_x = grad_u.sum(-2) if ctx.shared else grad_u
        if not ctx.needs_input_grad[0]:
            grad_x = None
        return grad_x, grad_weight, grad_diag, None


class CirculantLinear(nn.Module):
    """Linear map ``[*, in_features] -> [*, out_features]`` built from diagonal-circulant blocks.

    Compatible with ``torch.nn.Linear`` (same positional arguments, any leading batch dims, CPU and
    CUDA, float32 and float64). Under autocast the FFTs run in float32 and the output is float32.

    Args:
        in_features: size n of each input row; every circulant is n x n.
        out_features: output size; ``blocks = ceil(out_features / n)`` blocks are stacked and the
            result truncated.
        bias: add a learned bias ``[out_features]``.
        diag: ``"learned"`` (factor C(w) D, D trained), ``"sign"`` (factor D C(w), D a fixed random
            +-1 buffer) or ``"none"`` (factor C(w)).
        k_factor: number of factors multiplied in each block (>= 1).

    Parameters:
        weight: ``[blocks, k_factor, n]`` first rows of the circulant matrices.
        diag: ``[blocks, k_factor, n]`` learned diagonals (``diag="learned"`` only).
        sign: buffer ``[blocks, k_factor, n]`` of +-1 (``diag="sign"`` only), saved in the state_dict.
        bias: ``[out_features]`` when ``bias=True``.

    ``weight`` and ``diag`` carry ``_is_structured = True`` (as in torch_butterfly) so that an optimizer
    setup can exclude them from weight decay.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        diag: str = "learned",
        k_factor: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"CirculantLinear needs in_features >= 1 and out_features >= 1, got {in_features}, {out_features}"
            )
        if diag not in DIAG_VARIANTS:
            raise ValueError(f"CirculantLinear diag must be one of {DIAG_VARIANTS}, got {diag!r}")
        if k_factor < 1:
            raise ValueError(f"CirculantLinear k_factor must be >= 1, got {k_factor}")
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.diag_variant = diag
        self.k_factor = k_factor
        self.blocks = math.ceil(out_features / in_features)
        shape = (self.blocks, k_factor, in_features)
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        self.weight._is_structured = True
        if diag == "learned":
            self.diag = nn.Parameter(torch.empty(shape, **factory))
            self.diag._is_structured = True
        else:
            self.register_parameter("diag", None)
        if diag == "sign":
            self.register_buffer("sign", torch.empty(shape, **factory))
        else:
            self.register_buffer("sign", None)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
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
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"CirculantLinear expects inputs [..., {self.in_features}], got shape {tuple(x.shape)}"
            )
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
        lead = x.shape[:-1]
        h = x.reshape(-1, self.in_features)
        for f in range(self.k_factor):
            h = _CirculantFactor.apply(
                h,
                weight[:, f],
                None if diag is None else diag[:, f],
                None if sign is None else sign[:, f],
            )
        y = h.reshape(h.shape[0], self.blocks * self.in_features)
        if y.shape[1] != self.out_features:
            y = y[:, : self.out_features].contiguous()
        if bias is not None:
            y = y + bias
        return y.reshape(*lead, self.out_features)

    def factor_matrices(self) -> Tensor:
        """Dense factors ``[blocks, k_factor, n, n]`` (factor f of block b is ``M[b, f]``)."""
        n = self.in_features
        idx = (torch.arange(n, device=self.weight.device)[None, :] - torch.arange(n, device=self.weight.device)[:, None]) % n
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

    def num_compact_parameters(self) -> int:
        """Trainable parameters: ``blocks * k * (2n learned | n otherwise)`` (+ out_features with bias)."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        params = self.num_compact_parameters()
        dense = self.in_features * self.out_features + (self.out_features if self.bias is not None else 0)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"diag={self.diag_variant}, k_factor={self.k_factor}, blocks={self.blocks}, "
            f"params={params} (dense {dense}, {dense / params:.1f}x smaller)"
        )
