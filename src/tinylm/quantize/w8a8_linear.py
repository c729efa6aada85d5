"""`W8A8Linear`: int8 weights (one scale per output channel, stored as the int8 scheme stores them)
times int8 activations (one scale per token, computed on the fly), summed exactly in int32:

    y[t, o] = (sum_i xq[t, i] * wq[o, i]) * sx[t] * sw[o] + b[o],   sx[t] = max_i |x[t, i]| / 127

Per-token activation scales are what SmoothQuant assumes: a few outlier channels would set every
token's scale and crush the rest to zero, which is why `smoothquant` first moves them into the
weights. On CPU the rounding, the integer product and the rescaling run in one call of our C kernel
(tinylm.quantize.int8_gemm.Matrix). On CUDA the integer product is torch._int_mm (cuBLASLt's int8 tensor-core
GEMM, int32 sums); elsewhere, and for shapes _int_mm refuses, it is a float64 product (exact: the sums stay
far below 2^53).
"""

from __future__ import annotations

import torch

from tinylm.quantize import int8_gemm
from tinylm.quantize.linear import QuantLinear


def int_products(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """xq (T, n) @ wq (m, n)^T summed exactly, as float64. torch._int_mm wants, on CUDA, more than 16 rows
    and n, m multiples of 8: rows are padded (decode has one), other shapes take the float64 route."""
    T, n = xq.shape
    if xq.device.type == "cuda" and n % 8 == 0 and wq.shape[0] % 8 == 0:
        rows = max(32, -(-T // 8) * 8)
        padded = torch.nn.functional.pad(xq, (0, 0, 0, rows - T))
        return torch._int_mm(padded, wq.T)[:T].double()  # wq.T: column-major, the layout cuBLASLt takes
    return xq.double() @ wq.double().T


def quantize_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (T, n) float -> (int8 values (T, n), float32 scales (T, 1)): symmetric, one scale per row."""
    scale = x.abs().amax(dim=-1, keepdim=True).float() / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a row of zeros stays zeros
    return torch.round(x / scale).clamp_(-127, 127).to(torch.int8), scale


class W8A8Linear(QuantLinear):
    """nn.Linear's call signature; the weight stored as scheme "int8" (qweight, scales)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, scheme: str = "int8", group: int = 0,
                 name: str = "", device: torch.device | str | None = None):  # fmt: skip
        super().__init__(in_features, out_features, bias, "int8", group, name, device)
        self._matrix: int8_gemm.Matrix | None = None

    def refresh(self) -> None:
        super().refresh()
        if self.qweight.is_meta or self.qweight.device.type != "cpu":
            return
        bias = None if self.bias is None else self.bias.detach().float().numpy()
        self._matrix = int8_gemm.Matrix(self.qweight.numpy(), self.scales.detach().float().numpy(), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        if self._matrix is not None and x2.device.type == "cpu" and x2.dtype == torch.float32:
            y = self._matrix.apply(x2.detach().numpy(), torch.get_num_threads())  # the C kernel, one call
            return torch.from_numpy(y).reshape(*x.shape[:-1], self.out_features)
        xq, sx = quantize_tokens(x2.detach())  # plain torch: CUDA, other dtypes
        y = int_products(xq, self.qweight).float() * sx * self.scales.float()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, w8a8 (per-token int8 activations)"

