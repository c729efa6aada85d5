"""Which device to train on and in which precision.

Precision "auto": bf16 autocast on CUDA GPUs that support it and on CPUs with native bf16 (AVX512-BF16 or
AMX); fp16 autocast with a GradScaler on older GPUs; fp32 elsewhere (MPS, CPUs without bf16). Weights and
optimizer state stay fp32 in every case: autocast only lowers the precision of the matmuls.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from tinylm.errors import TinyLMError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto": CUDA (this process's GPU under torchrun), else MPS, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TinyLMError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TinyLMError("--device cuda was asked for but this PyTorch sees no CUDA GPU; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TinyLMError("--device mps was asked for but MPS is not available here; use --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls (elsewhere bf16 is emulated, slower than fp32)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def pick_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_has_bf16():
            return "bf16"
        return "fp32"
    if name == "fp16" and device.type != "cuda":
        raise TinyLMError(f"--precision fp16 (with loss scaling) is for CUDA GPUs; use bf16 or fp32 on {device.type}")
    return name


@dataclass
class Precision:
    """Autocast for the forward pass, and a GradScaler for fp16 (a disabled one otherwise)."""

    name: str
    device: torch.device

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.name == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.name])
