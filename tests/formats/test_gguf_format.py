"""GGUF export checked against the gguf package's own tables (what llama.cpp accepts), read back with
gguf.GGUFReader, and imported again."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tests.formats.conftest import logits, make_model, save
from tinylm.chat import jinja_template
from tinylm.checkpoint import model_state_dict, save_checkpoint
from tinylm.errors import TinyLMError
from tinylm.formats import detect, export_model, import_model
from tinylm.formats.hf import interleaved_to_half, to_hf_state_dict
from tinylm.formats.vocab import byte_bpe, sp_vocab

gguf = pytest.importorskip("gguf")
K = gguf.Keys


def read(path):
    reader = gguf.GGUFReader(path)
    fields = {name: f.contents() for name, f in reader.fields.items()}
    return fields, {t.name: t for t in reader.tensors}


def known_names(arch, n_layers):
    """Every tensor name llama.cpp knows for `arch`, per gguf.MODEL_TENSORS / TENSOR_NAMES."""
    tensors = gguf.MODEL_TENSORS[arch]
    return {gguf.TENSOR_NAMES[t].format(bid=i) for t in tensors for i in range(n_layers)}


def test_llama_names_shapes_metadata_and_tokenizer(tmp_path, sp_tok):
    cfg = tiny_llama(vocab_size=sp_tok.vocab_size, tie_embeddings=False)
    model = save(tmp_path / "ckpt", cfg, sp_tok)
    export_model(tmp_path / "ckpt", "gguf", tmp_path / "m.gguf")
    assert detect(tmp_path / "m.gguf") == "gguf"
    fields, tensors = read(tmp_path / "m.gguf")
    known = known_names(gguf.MODEL_ARCH.LLAMA, cfg.n_layers)
    assert all(name.rsplit(".", 1)[0] in known for name in tensors)
    assert len(tensors) == 2 + 1 + 9 * cfg.n_layers  # embedding, final norm, output; 9 per block
    hs = cfg.head_dim
    shapes = {"token_embd.weight": [32, 400], "output.weight": [32, 400], "output_norm.weight": [32],
              "blk.1.attn_q.weight": [32, 4 * hs], "blk.1.attn_k.weight": [32, 2 * hs], "blk.1.attn_v.weight": [32, 2 * hs],
              "blk.1.attn_output.weight": [32, 32], "blk.1.ffn_gate.weight": [32, 48], "blk.1.ffn_up.weight": [32, 48],
              "blk.1.ffn_down.weight": [48, 32], "blk.1.attn_norm.weight": [32], "blk.1.ffn_norm.weight": [32]}  # fmt: skip
    assert {n: tensors[n].shape.tolist() for n in shapes} == shapes  # GGUF lists dims innermost first
    arch = "llama"
    expect = {K.General.ARCHITECTURE: arch, K.LLM.CONTEXT_LENGTH.format(arch=arch): 32,
              K.LLM.EMBEDDING_LENGTH.format(arch=arch): 32, K.LLM.BLOCK_COUNT.format(arch=arch): 2,
              K.LLM.FEED_FORWARD_LENGTH.format(arch=arch): 48, K.Attention.HEAD_COUNT.format(arch=arch): 4,
              K.Attention.HEAD_COUNT_KV.format(arch=arch): 2, K.Rope.DIMENSION_COUNT.format(arch=arch): hs,
              K.Rope.FREQ_BASE.format(arch=arch): 10000.0, K.Tokenizer.MODEL: "llama",
              K.Tokenizer.BOS_ID: 1, K.Tokenizer.EOS_ID: 2, K.Tokenizer.UNK_ID: 0}  # fmt: skip
    assert {k: fields[k] for k in expect} == expect
    assert fields[K.Attention.LAYERNORM_RMS_EPS.format(arch=arch)] == pytest.approx(1e-5)
    v = sp_vocab(sp_tok)
    assert fields[K.Tokenizer.LIST] == v.pieces and fields[K.Tokenizer.TOKEN_TYPE] == v.types
    assert np.allclose(fields[K.Tokenizer.SCORES], v.scores)
    assert fields[K.Tokenizer.CHAT_TEMPLATE] == jinja_template(sp_tok)  # the one template, as llama.cpp reads it
    # q/k rows are ours (interleaved RoPE pairs); Hugging Face's are the rotate-half permutation of them,
    # which is what llama.cpp's converter undoes
    sd = model_state_dict(model)
    hf = to_hf_state_dict(cfg, sd)
    q = torch.from_numpy(np.array(tensors["blk.0.attn_q.weight"].data))
    assert torch.equal(q, sd["layers.0.attn.wqkv.weight"][: 4 * hs])
    assert torch.equal(interleaved_to_half(q, 4), hf["model.layers.0.self_attn.q_proj.weight"])


def test_gpt2_names_and_bpe_tokenizer(tmp_path, bpe_tok):
    cfg = tiny_gpt2(vocab_size=bpe_tok.vocab_size)
    save(tmp_path / "ckpt", cfg, bpe_tok)
    export_model(tmp_path / "ckpt", "gguf", tmp_path / "m.gguf")
    fields, tensors = read(tmp_path / "m.gguf")
    known = known_names(gguf.MODEL_ARCH.GPT2, cfg.n_layers)
    assert all(name.rsplit(".", 1)[0] in known for name in tensors)
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert tensors["blk.0.attn_qkv.weight"].shape.tolist() == [32, 96]
    assert tensors["position_embd.weight"].shape.tolist() == [32, 32]
    v = byte_bpe(bpe_tok)
    assert fields[K.General.ARCHITECTURE] == "gpt2" and fields[K.Tokenizer.MODEL] == "gpt2"
    assert fields[K.Tokenizer.LIST] == v.tokens and fields[K.Tokenizer.MERGES] == v.merges
    assert (fields[K.Tokenizer.BOS_ID], fields[K.Tokenizer.EOS_ID]) == (bpe_tok.bos_id, bpe_tok.eos_id)
    assert fields[K.Attention.LAYERNORM_EPS.format(arch="gpt2")] == pytest.approx(1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0"])
def test_import_back(tmp_path, family, quant, sp_tok, bpe_tok, stories):
    tok = sp_tok if family == "llama" else bpe_tok
    cfg = (tiny_llama if family == "llama" else tiny_gpt2)(vocab_size=tok.vocab_size, hidden_dim=64)
    model = save(tmp_path / "ckpt", cfg, tok)
    export_model(tmp_path / "ckpt", "gguf", tmp_path / "m.gguf", quant=quant)
    _, tensors = read(tmp_path / "m.gguf")
    Q = gguf.GGMLQuantizationType
    want = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}[quant]
    assert {t.tensor_type for n, t in tensors.items() if len(t.shape) == 2} == {want}
    assert {t.tensor_type for t in tensors.values() if len(t.shape) == 1} == {Q.F32}  # norms and biases
    imported = import_model(tmp_path / "m.gguf", tmp_path / "back")
    assert imported.model.config == cfg
    diff = (logits(imported.model, cfg.vocab_size) - logits(model, cfg.vocab_size)).abs().max().item()
    assert diff == 0.0 if quant == "f32" else diff < {"f16": 1e-3, "q8_0": 2e-2}[quant]
    back = imported.tokenizer
    assert back is not None and (back.bos_id, back.eos_id) == (tok.bos_id, tok.eos_id)
    for text in stories[300:320]:
        assert back.encode(text) == tok.encode(text)


def test_q8_0_falls_back_to_f16_for_short_rows(tmp_path):
    save(tmp_path / "ckpt", tiny_llama(hidden_dim=48))
    result = export_model(tmp_path / "ckpt", "gguf", tmp_path / "m.gguf", quant="q8_0")
    assert any("as f16" in n for n in result.notes)
    _, tensors = read(tmp_path / "m.gguf")
    assert tensors["blk.0.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F16  # rows of 48


def test_unsupported_gguf_and_models(tmp_path):
    w = gguf.GGUFWriter(tmp_path / "mamba.gguf", "mamba")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(TinyLMError, match="architecture 'mamba' is not supported"):
        import_model(tmp_path / "mamba.gguf", tmp_path / "out")
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + bytes(5))
    with pytest.raises(TinyLMError, match="not a readable GGUF file"):
        import_model(tmp_path / "junk.gguf", tmp_path / "out")
    save_checkpoint(tmp_path / "mixed", make_model(tiny_gpt2(norm="rmsnorm")))
    with pytest.raises(TinyLMError, match="mixes GPT-2 and Llama parts"):
        export_model(tmp_path / "mixed", "gguf", tmp_path / "m.gguf")
    save_checkpoint(tmp_path / "erf", make_model(tiny_gpt2(gelu="exact")))
    with pytest.raises(TinyLMError, match=r"exact \(erf\) GELU"):
        export_model(tmp_path / "erf", "gguf", tmp_path / "m.gguf")
