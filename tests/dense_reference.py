"""Structured layers against their dense equivalents (``to_dense()``): the reference forward, and the
comparison of outputs and of every gradient (input and parameters) with it."""

import torch


def dense_forward(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x @ to_dense().T (+ bias)``: what the structured layer must compute."""
    y = x @ layer.to_dense().T
    return y + layer.bias if layer.bias is not None else y


def assert_matches_dense(layer: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor, **tolerance) -> None:
    """The layer's output and its gradients w.r.t. ``x`` and every parameter (for the output gradient
    ``grad_out``) equal those of `dense_forward`; ``x`` must require grad."""
    y = layer(x)
    assert y.shape == grad_out.shape
    grads = torch.autograd.grad(y, (x, *layer.parameters()), grad_out)
    y_ref = dense_forward(layer, x)
    grads_ref = torch.autograd.grad(y_ref, (x, *layer.parameters()), grad_out)
    torch.testing.assert_close(y, y_ref, **tolerance)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, **tolerance)
