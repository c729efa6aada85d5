"""llm.c GPT-2 model files (fp32 v3, bf16 v5) and gpt2_tokenizer.bin."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tests.formats.conftest import logits, make_model, save
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.errors import TinyLMError
from tinylm.formats import detect, export_model, import_model
from tinylm.formats.llmc import HEADER_BYTES, MAGIC
from tinylm.formats.tokenizer_files import TOKENIZER_MAGIC


def test_fp32_round_trip_is_byte_exact(tmp_path, bpe_tok):
    cfg = tiny_gpt2(vocab_size=bpe_tok.vocab_size)
    model = save(tmp_path / "ckpt", cfg, bpe_tok)
    out = tmp_path / "out" / "model.bin"
    result = export_model(tmp_path / "ckpt", "llmc", out)
    assert [f.name for f in result.files] == ["model.bin", "gpt2_tokenizer.bin"]
    assert detect(out) == "llmc"
    raw = out.read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], "<i4")
    assert header[:8].tolist() == [MAGIC, 3, 32, 400, 2, 4, 32, 512] and not header[8:].any()
    wte = np.frombuffer(raw[HEADER_BYTES : HEADER_BYTES + 512 * 32 * 4], "<f4").reshape(512, 32)
    assert np.array_equal(wte[:400], model.tok_emb.weight.detach().numpy()) and not wte[400:].any()
    imported = import_model(out, tmp_path / "back")
    export_model(tmp_path / "back", "llmc", tmp_path / "again.bin", tokenizer_out=tmp_path / "again_tok.bin")
    assert (tmp_path / "again.bin").read_bytes() == raw
    assert (tmp_path / "again_tok.bin").read_bytes() == (tmp_path / "out" / "gpt2_tokenizer.bin").read_bytes()
    assert torch.equal(logits(imported.model, 400), logits(model, 400))


def test_bf16_within_bf16_precision_and_stable(tmp_path):
    cfg = tiny_gpt2()
    model = save(tmp_path / "ckpt", cfg)
    export_model(tmp_path / "ckpt", "llmc", tmp_path / "bf16.bin", dtype="bfloat16")
    raw = (tmp_path / "bf16.bin").read_bytes()
    assert np.frombuffer(raw[:8], "<i4").tolist() == [MAGIC, 5]
    imported = import_model(tmp_path / "bf16.bin", tmp_path / "back").model
    assert next(imported.parameters()).dtype == torch.bfloat16
    for (name, ours), theirs in zip(model.state_dict().items(), imported.state_dict().values(), strict=True):
        assert torch.allclose(theirs.float(), ours, rtol=2**-8, atol=0), name  # bf16 keeps 8 significant bits
    export_model(tmp_path / "back", "llmc", tmp_path / "again.bin", dtype="bfloat16")
    assert (tmp_path / "again.bin").read_bytes() == raw


def test_tokenizer_file(tmp_path, bpe_tok, stories):
    save(tmp_path / "ckpt", tiny_gpt2(vocab_size=bpe_tok.vocab_size), bpe_tok)
    export_model(tmp_path / "ckpt", "llmc", tmp_path / "model.bin")
    raw = (tmp_path / "gpt2_tokenizer.bin").read_bytes()
    assert np.frombuffer(raw[:16], "<i4").tolist() == [TOKENIZER_MAGIC, 2, 400, bpe_tok.eos_id]
    assert (
        raw[HEADER_BYTES] == len("<|endoftext|>")
        and raw[HEADER_BYTES + 1 : HEADER_BYTES + 14] == b"<|endoftext|>"
    )
    import_model(tmp_path / "model.bin", tmp_path / "back")
    tok = load_checkpoint(tmp_path / "back").tokenizer
    assert tok is not None and (tok.bos_id, tok.eos_id) == (bpe_tok.bos_id, bpe_tok.eos_id)
    for text in stories[300:340]:  # the merges rebuilt from the token order encode as the original
        assert tok.encode(text) == bpe_tok.encode(text)


def test_what_llmc_cannot_hold(tmp_path):
    cases = [(tiny_llama(), "not a GPT-2-family model"), (tiny_gpt2(n_kv_heads=2), "grouped-query"),
             (tiny_gpt2(tie_embeddings=False), "not tied"), (tiny_gpt2(hidden_dim=100), "MLP width"),
             (tiny_gpt2(vocab_size=70000, dim=8, n_heads=2), "uint16"),
             (tiny_gpt2(gelu="exact"), "exact")]  # fmt: skip
    for cfg, message in cases:
        save_checkpoint(tmp_path / "c", make_model(cfg))
        with pytest.raises(TinyLMError, match=message):
            export_model(tmp_path / "c", "llmc", tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()


def test_bad_files_are_one_clear_error(tmp_path):
    save(tmp_path / "ckpt", tiny_gpt2())
    export_model(tmp_path / "ckpt", "llmc", tmp_path / "m.bin")
    good = (tmp_path / "m.bin").read_bytes()
    header = np.frombuffer(good[:HEADER_BYTES], "<i4").copy()
    bad_version, bad_padding = header.copy(), header.copy()
    bad_version[1], bad_padding[7] = 4, 64
    cases = {
        "short.bin": (good[:-3], "truncated"),
        "version.bin": (bad_version.tobytes() + good[HEADER_BYTES:], "version 4 is not supported"),
        "padding.bin": (
            bad_padding.tobytes() + good[HEADER_BYTES:],
            "padded vocab 64 is smaller than vocab 67",
        ),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(TinyLMError, match=message):
            import_model(tmp_path / name, tmp_path / "out")
    (tmp_path / "tok.bin").write_bytes(np.array([TOKENIZER_MAGIC, 2, 3, 0], "<i4").tobytes())
    with pytest.raises(TinyLMError, match="tokenizer file, not a model"):
        detect(tmp_path / "tok.bin")
