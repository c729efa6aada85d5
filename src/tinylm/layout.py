"""The tensors of a checkpoint: name -> (shape, dtype), written once and read by every loader.

The torch loader (`tinylm.checkpoint`) validates files against it, the NumPy runtime reads its weights
by it, format importers check what they built against it, and a declared transform
(`tinylm.transforms`) rewrites it (a quantized Linear stores int8 weights and float scales instead of
a float weight). Torch-free, so the NumPy runtime can share it.

A dtype is a torch dtype's name ("int8", "uint8", "float32", ...) or FLOAT: a plain model's weights may
be saved in any of float32, bfloat16 and float16 and are converted on load.
"""

from __future__ import annotations

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError

FLOAT = "float"  # float32, bfloat16 or float16
FLOAT_DTYPES = ("float32", "bfloat16", "float16")

Shape = tuple[int, ...]
Layout = dict[str, tuple[Shape, str]]


def tensor_layout(cfg: ModelConfig) -> Layout:
    """Every tensor a plain checkpoint of `cfg` holds (a tied output head is stored once, as tok_emb.weight)."""
    C = cfg.dim
    norm_bias = cfg.norm == "layernorm" and cfg.bias
    shapes: dict[str, Shape] = {"tok_emb.weight": (cfg.vocab_size, C)}
    if cfg.positions == "learned":
        shapes["pos_emb.weight"] = (cfg.context_length, C)
    for i in range(cfg.n_layers):
        for norm in ("attn_norm", "mlp_norm"):
            shapes[f"layers.{i}.{norm}.weight"] = (C,)
            if norm_bias:
                shapes[f"layers.{i}.{norm}.bias"] = (C,)
        for name, (n_out, n_in) in linear_shapes(cfg).items():
            shapes[f"layers.{i}.{name}.weight"] = (n_out, n_in)
            if cfg.bias:
                shapes[f"layers.{i}.{name}.bias"] = (n_out,)
    shapes["norm.weight"] = (C,)
    if norm_bias:
        shapes["norm.bias"] = (C,)
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, C)
    return {k: (s, FLOAT) for k, s in shapes.items()}


def linear_shapes(cfg: ModelConfig) -> dict[str, Shape]:
    """(out, in) of each Linear in a block, by its name inside the block."""
    C, F = cfg.dim, cfg.ffn_dim
    shapes = {"attn.wqkv": ((cfg.n_heads + 2 * cfg.kv_heads) * cfg.head_dim, C), "attn.wo": (C, C),
              "mlp.w1": (F, C), "mlp.w2": (C, F)}  # fmt: skip
    if cfg.mlp == "swiglu":
        shapes["mlp.w3"] = (F, C)
    return shapes


def tensor_shapes(layout: Layout) -> dict[str, Shape]:
    """Just the shapes of a layout."""
    return {k: shape for k, (shape, _) in layout.items()}


def dtype_fits(want: str, got: str) -> bool:
    """Whether a tensor of dtype `got` may fill a layout entry of dtype `want`."""
    return got in FLOAT_DTYPES if want == FLOAT else got == want


def check_tensors(layout: Layout, got: dict[str, tuple[Shape, str]], where: str, config_file: str) -> None:
    """One line naming the first disagreement between the tensors in a file (name -> (shape, dtype name))
    and the layout its config implies."""
    missing, extra = sorted(set(layout) - set(got)), sorted(set(got) - set(layout))
    if missing:
        raise TinyLMError(f"{where}: missing tensor(s) {_few(missing)}; weights and {config_file} disagree")
    if extra:
        raise TinyLMError(f"{where}: unexpected tensor(s) {_few(extra)}; weights and {config_file} disagree")
    for k, (shape, dtype) in layout.items():
        if tuple(got[k][0]) != shape:
            raise TinyLMError(f"{where}: tensor {k} has shape {tuple(got[k][0])} but {config_file} implies {shape}")
        if not dtype_fits(dtype, got[k][1]):
            expected = ", ".join(FLOAT_DTYPES) if dtype == FLOAT else dtype
            raise TinyLMError(f"{where}: tensor {k} has dtype {got[k][1]}; expected {expected}")


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
