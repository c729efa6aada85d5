"""The output head and the next-token cross-entropy in one op for CPU training in float32: the logits are made,
turned into the loss and into their gradient a chunk of rows at a time, and never stored whole.

Why: at gpt-micro's shape (4,096 positions per batch, vocabulary 4,096) the logits and their gradient are two
64 MB tensors per step. Allocating one costs page faults every time (glibc maps blocks above 32 MB fresh from the
kernel), and each elementwise pass over it goes to memory; the head's three matrix products over them ran at
~30-45 GFLOP/s, a third of this CPU's fp32 peak (torch.profiler, one thread). Here a chunk of rows (4 MB of
logits, near L2's size) goes through its products, log-softmax and gradient in turn, in buffers reused from chunk to chunk.

The gradient is worked out in the forward pass: the loss is where backward starts, so d(loss)/d(logits) is
softmax minus the one-hot target over the scored rows, whatever follows; the backward pass only scales the saved
dh and dW by the incoming gradient. Without grad (evaluation) the two gradient products are skipped.

`cross_entropy` is the plain form (logits in, mean loss out) that every other path uses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Logits per chunk: 4 MB of float32, 2 MB per core at 2 threads (this Xeon's L2). Measured, head and loss alone at
# gpt-micro's shape, one thread: 1 / 4 / 8 MB chunks ~190 / ~172 / ~170 ms, compiled unfused ~270 ms; smaller chunks
# lose to the per-chunk calls, the more so at 2 threads on a busy machine.
CHUNK_FLOATS = 1 << 20


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of logits (B, T, vocab) over the positions whose target (B, T) is
    not -1, computed in float32 whatever the autocast dtype (bf16 log-softmax loses ~2 digits)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)


def head_loss(head: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """cross_entropy(head(x), targets) for hidden states x (B, T, C): fused (see the module docstring) where
    the head is a plain bias-free nn.Linear and x is float32 on the CPU outside autocast, else plainly."""
    fused = (type(head) is nn.Linear and head.bias is None and x.device.type == "cpu" and x.dtype == torch.float32
             and not torch.is_autocast_enabled("cpu"))  # fmt: skip
    if not fused:
        return cross_entropy(head(x), targets)
    w = head.weight
    grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
    return _fused(x.flatten(0, 1), w, targets.flatten(), grad)[0]


@torch.library.custom_op("tinylm::head_loss", mutates_args=())
def _fused(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, grad: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]:  # fmt: skip
    """(mean loss, dloss/dx, dloss/dw) of hidden states x (N, C) under the head w (V, C) with targets y (N,),
    -1 where not scored; the two gradients are empty (0-sized) when grad is False."""
    x, w = x.contiguous(), w.contiguous()
    N, V = x.shape[0], w.shape[0]
    scored = y >= 0
    count = int(scored.sum())
    scale = 1.0 / max(count, 1)
    rows = max(1, CHUNK_FLOATS // V)
    logits = x.new_empty(min(rows, N), V)
    losses = x.new_empty(N)
    dx = torch.empty_like(x) if grad else x.new_empty(0)
    dw = torch.zeros_like(w) if grad else w.new_empty(0)
    for i in range(0, N, rows):
        xc, yc, keep = x[i : i + rows], y[i : i + rows].clamp(min=0).unsqueeze(1), scored[i : i + rows]
        z = logits[: xc.shape[0]]
        torch.mm(xc, w.t(), out=z)
        target = z.gather(1, yc)
        top = z.amax(1, keepdim=True)
        z.sub_(top).exp_()  # exp(z - max): the softmax's numerators
        total = z.sum(1, keepdim=True)
        losses[i : i + rows] = torch.where(keep, (total.log() + top - target).squeeze(1), 0.0)
        if grad:  # dloss/dz = (softmax - onehot(y)) / count on scored rows, 0 elsewhere
            weight = keep.unsqueeze(1) * scale
            z.mul_(weight / total)
            z.scatter_add_(1, yc, -weight)
            torch.mm(z, w, out=dx[i : i + rows])
            dw.addmm_(z.t(), xc)
    return losses.sum() * scale, dx, dw


@_fused.register_fake
def _(x, w, y, grad):
    return x.new_empty(()), x.new_empty(x.shape if grad else (0,)), w.new_empty(w.shape if grad else (0,))


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    ctx.save_for_backward(output[1], output[2])
    ctx.mark_non_differentiable(output[1], output[2])


def _grad(ctx, g: torch.Tensor, _dx: torch.Tensor | None, _dw: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # type: ignore[no-untyped-def]
    dx, dw = ctx.saved_tensors
    return g * dx, g * dw, None, None


_fused.register_autograd(_grad, setup_context=_setup_context)
