"""Quantization: weights rounded to 8 or 4 bits, stored packed, multiplied without expanding them.

Schemes (one module each, NumPy only so the torch-free runtime can use them):
  int8  symmetric, one scale per output channel          8 + 32/in bits per weight
  q8_0  GGUF Q8_0: symmetric groups of 32, fp16 scale    8.5 bits
  q4_0  GGUF Q4_0: symmetric groups of 32, fp16 scale    4.5 bits
  int4  asymmetric groups of 32/64/128 (fp16 scale+min)  4.25 bits at 128
  nf4   QLoRA NormalFloat, blocks of 64, double-quantized absmax   ~4.13 bits
`kernels` multiplies activations with them in C (compiled on first use) or NumPy; `linear` holds them
in torch modules with nn.Linear's call signature; `transform` declares them in a checkpoint.
"""

from tinylm.quantize import w8a8
from tinylm.quantize.schemes import SCHEMES, get_scheme
from tinylm.quantize.transform import register

register()  # the "quantization" checkpoint transform: tinylm.transforms imports this package to find it
w8a8.register()  # its "w8a8" kind (SmoothQuant's int8 weights x int8 activations)

__all__ = ["SCHEMES", "get_scheme"]
