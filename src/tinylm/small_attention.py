"""Causal attention for small heads on the CPU: our C kernel (small_attention.c), forward and backward, as the
PyTorch op `tinylm::small_attention` that autograd and torch.compile see as one node (no graph break).

PyTorch's CPU flash attention is built for head sizes of 64 and more; at the head sizes of tiny models (8 in
stories260K) its blocked matrix products mostly move memory, and attention was ~2/3 of a compiled training step.
The C file is compiled on first use as tinylm.quantize.kernels does (system `cc`, -O3 -march=native -fopenmp,
into the cache directory under a hash of source, flags and CPU) and loaded with ctypes. Its OpenMP threads are
torch's: torch's wheel ships libgomp.so.1, which the loader reuses for our library's libgomp.so.1.

`applies` says where the model uses it (Attention.forward); everywhere else, or with TINYLM_ATTENTION=sdpa
(`enabled`), it calls F.scaled_dot_product_attention.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path

import torch

from tinylm.quantize import kernels

SOURCE = Path(__file__).with_name("small_attention.c")
# Head sizes the kernel takes (MAX_HS in the C file), and the model attends through it at all of them: faster than
# SDPA there (forward + backward, this 2-core Xeon, one thread, CPU time: head size 8 2.3-2.6x, 16 1.4-1.5x, 32
# 1.1-1.3x; benchmarks/bench_small_attention.py --threads 1 --clock cpu).
MAX_HEAD_SIZE = 32


@cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None (no compiler, TINYLM_KERNELS=numpy, no source file, or a failed build)."""
    path = kernels.built("tinylm_attention", SOURCE)
    try:
        if path is None:
            return None
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    p, i64, i, f = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
    lib.attention_forward.argtypes = [p] * 5 + [i64] * 6 + [i] * 5 + [f, i]
    lib.attention_backward.argtypes = [p] * 9 + [i64] * 6 + [i] * 5 + [f, i]
    lib.attention_forward.restype = lib.attention_backward.restype = ctypes.c_int
    return lib


# Whether the model may use the kernel: off with TINYLM_ATTENTION=sdpa at import, or set at run time (to compare);
# torch.compile guards on it, so a compiled model retraces when it changes.
enabled = os.environ.get("TINYLM_ATTENTION") != "sdpa"


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the kernel is there (compiled and loaded); a constant to torch.compile."""
    return library() is not None


def applies(q: torch.Tensor, dropout: float) -> bool:
    """Whether the model attends through `small_attention`: CPU, float32, head size <= MAX_HEAD_SIZE, no dropout
    on the attention weights, the kernel built and `enabled`."""
    return (enabled and q.device.type == "cpu" and q.dtype == torch.float32 and q.shape[-1] <= MAX_HEAD_SIZE
            and dropout == 0.0 and available())  # fmt: skip


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x (B, T, heads, hs) as the kernel reads it: the last two dimensions contiguous (any batch and position
    strides: the q/k/v slices of one projection qualify), else a contiguous copy."""
    return x if x.stride(-1) == 1 and x.stride(-2) == x.shape[-1] else x.contiguous()


def _shape(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[int | float]:
    """The kernel's stride and shape arguments after the pointers."""
    B, T, H, hs = q.shape
    strides = [q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1)]
    return [*strides, B, T, H, k.shape[2], hs, hs**-0.5, torch.get_num_threads()]


@torch.library.custom_op("tinylm::small_attention", mutates_args=())
def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention of q (B, T, H, hs) over k, v (B, T, KV, hs) -> y (B, T, H, hs) and each row's
    logsumexp (B, H, T), which the backward pass needs."""
    q, k, v = _rows(q), _rows(k), _rows(v)
    B, T, H, hs = q.shape
    if hs > MAX_HEAD_SIZE or H % k.shape[2]:
        raise ValueError(f"small_attention takes head sizes up to {MAX_HEAD_SIZE} and a kv head count that divides "
                         f"the query heads, got head size {hs}, {H} query and {k.shape[2]} kv heads")  # fmt: skip
    y, lse = torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(B, H, T)
    lib = library()
    assert lib is not None, "small_attention called without its kernel; check applies() first"
    if lib.attention_forward(y.data_ptr(), lse.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(), *_shape(q, k, v)):
        raise MemoryError("small_attention: no memory for the kernel's scratch")
    return y, lse


@_forward.register_fake
def _(q, k, v):
    B, T, H, _ = q.shape
    return q.new_empty(q.shape), q.new_empty(B, H, T)


@torch.library.custom_op("tinylm::small_attention_backward", mutates_args=())
def _backward(dy: torch.Tensor, y: torch.Tensor, lse: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """dq, dk, dv (contiguous, shaped as q, k, v) from dy = dloss/dy."""
    q, k, v = _rows(q), _rows(k), _rows(v)
    dy = dy.contiguous()
    dq, dk, dv = (torch.empty(x.shape, dtype=x.dtype) for x in (q, k, v))
    lib = library()
    assert lib is not None, "small_attention called without its kernel; check applies() first"
    pointers = (t.data_ptr() for t in (dq, dk, dv, dy, y, lse, q, k, v))
    if lib.attention_backward(*pointers, *_shape(q, k, v)):
        raise MemoryError("small_attention: no memory for the kernel's scratch")
    return dq, dk, dv


@_backward.register_fake
def _(dy, y, lse, q, k, v):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    ctx.save_for_backward(*output, *inputs)
    ctx.mark_non_differentiable(output[1])  # lse is a by-product for the backward pass


def _grad(ctx, dy: torch.Tensor, _dlse: torch.Tensor | None) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
    return _backward(dy, *ctx.saved_tensors)


_forward.register_autograd(_grad, setup_context=_setup_context)


def small_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention, scale 1/sqrt(hs), of q (B, T, H, hs) over k, v (B, T, KV, hs), float32 on the CPU;
    query head h reads kv head h // (H // KV). Returns y (B, T, H, hs), contiguous. See `applies`."""
    return _forward(q, k, v)[0]
