"""GGUF and llama2.c exports of quantized checkpoints write the stored blocks as they are."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from tests.conftest import tiny_llama
from tinylm.formats import gguf_format, llama2c
from tinylm.formats.common import split_qkv
from tinylm.model import Model
from tinylm.quantize import q4_0, q8_0
from tinylm.quantize.linear import quantize_model, stored_parts

MODULES = {"q8_0": q8_0, "q4_0": q4_0}


def quantized(scheme: str) -> Model:
    model = Model(tiny_llama(dim=64, hidden_dim=128, tie_embeddings=False)).eval()
    quantize_model(model, scheme)
    return model


@pytest.mark.parametrize("scheme", ["q8_0", "q4_0"])
def test_gguf_export_writes_the_stored_blocks(scheme, tmp_path):
    model = quantized(scheme)
    gguf_format.write_model(model, None, tmp_path / "m.gguf")
    tensors = {t.name: t for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    mod, qtype = MODULES[scheme], gguf_format.BLOCK_SCHEMES[scheme]
    ours = split_qkv(model.config, {k: mod.to_gguf(p) for k, p in stored_parts(model, scheme).items()})
    names = gguf_format.tensor_names(model.config, "llama")
    assert len(ours) == 7 * model.config.n_layers
    for name, blocks in ours.items():
        t = tensors[names[name]]
        assert t.tensor_type == qtype and np.array_equal(np.asarray(t.data).reshape(blocks.shape), blocks)
    head = tensors["output.weight"]  # kept float
    assert head.tensor_type == gguf.GGMLQuantizationType.F32
    np.testing.assert_array_equal(np.asarray(head.data), model.lm_head.weight.detach().numpy())


def test_llama2c_v2_from_q8_0_writes_the_stored_groups(tmp_path):
    model = quantized("q8_0")
    llama2c.write_model(model, tmp_path / "m.bin", version=2)
    raw = (tmp_path / "m.bin").read_bytes()
    assert int.from_bytes(raw[37:41], "little") == 32  # the checkpoint's groups, not llama2.c's 64
    fp32, q80 = llama2c.layout(model.config, 2)
    offset = llama2c.HEADER_BYTES + 4 * sum(int(np.prod(s)) for _, s in fp32)
    stored = llama2c._stored_q8_0(model)
    checked = 0
    for name, shape in q80:
        n = int(np.prod(shape))
        q = np.frombuffer(raw, np.int8, n, offset).reshape(shape)
        scale = np.frombuffer(raw, "<f4", n // 32, offset + n)
        if name in stored:
            assert np.array_equal(q, stored[name][0]) and np.array_equal(scale, stored[name][1].ravel())
            checked += 1
        offset += n + 4 * (n // 32)
    assert checked == 7 * model.config.n_layers and offset == len(raw)
    back = llama2c.read_model(tmp_path / "m.bin")
    np.testing.assert_array_equal(back.layers[1].mlp.w2.weight.detach().numpy(), model.layers[1].mlp.w2.form().dequantize())
