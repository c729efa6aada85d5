"""llama2.c model files (v0, v1, v2) and tokenizer.bin: byte-exact round trips, an independent writer and
forward pass following run.c, and one clear error for each kind of bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tests.formats.conftest import logits, make_model, save
from tinylm.checkpoint import build_model, load_checkpoint, save_checkpoint
from tinylm.errors import TinyLMError
from tinylm.formats import detect, export_model, import_model
from tinylm.formats.llama2c import MAGIC, read_model
from tinylm.quantize import q8_0
from tinylm.quantize.blocks import Form
from tinylm.tokenizer.llama2c import Llama2cTokenizer
from tinylm.tokenizer.sentencepiece import SentencePieceTokenizer


@pytest.mark.parametrize("version", [0, 1, 2])
@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_is_byte_exact(tmp_path, version, tied):
    cfg = tiny_llama(tie_embeddings=tied, dim=64, hidden_dim=96)  # GQA: 4 heads, 2 kv heads
    model = save(tmp_path / "ckpt", cfg)
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    export_model(tmp_path / "ckpt", "llama2c", first, version=version)
    assert detect(first) == "llama2c"
    import_model(first, tmp_path / "back")
    export_model(tmp_path / "back", "llama2c", second, version=version)
    assert first.read_bytes() == second.read_bytes()
    back = load_checkpoint(tmp_path / "back").model
    assert back.config == cfg.replace(norm_eps=1e-5, rope_theta=10000.0)
    diff = (logits(back, cfg.vocab_size) - logits(model, cfg.vocab_size)).abs().max().item()
    assert diff == 0.0 if version < 2 else 0 < diff < 0.05  # v2 holds int8 weights


def test_headers(tmp_path):
    cfg = tiny_llama(tie_embeddings=False, dim=64, hidden_dim=96)
    save(tmp_path / "ckpt", cfg)
    for v in (0, 1, 2):
        export_model(tmp_path / "ckpt", "llama2c", tmp_path / f"v{v}.bin", version=v)
    dims = (64, 96, 2, 4, 2)
    assert struct.unpack_from("<7i", (tmp_path / "v0.bin").read_bytes()) == (
        *dims,
        -67,
        32,
    )  # negative: unshared
    for v in (1, 2):
        raw = (tmp_path / f"v{v}.bin").read_bytes()
        assert struct.unpack_from("<Ii7iB", raw) == (MAGIC, v, *dims, 67, 32, 0)
        assert raw[41 if v == 2 else 37 : 256] == bytes(256 - (41 if v == 2 else 37))
    assert struct.unpack_from("<i", (tmp_path / "v2.bin").read_bytes(), 37) == (32,)  # 64 does not divide 96


def test_q80_round_trip_is_stable():
    w = np.random.default_rng(0).normal(0, 0.02, (64, 128)).astype(np.float32)
    w[3, :64] = 0.0  # an all-zero group gets scale 0, not NaN
    q, s = q8_0.symmetric_groups(w, 64)
    back = Form(8, 64, q, s).dequantize()
    assert np.abs(back - w).max() <= s.max() / 2 + 1e-9 and s[3, 0] == 0 and not np.isnan(back).any()
    q2, s2 = q8_0.symmetric_groups(back, 64)
    assert np.array_equal(q, q2) and np.array_equal(s, s2)


def _rmsnorm(x, w):
    return w * x / np.sqrt(np.mean(x * x) + 1e-5)


def _run_c_forward(w: dict, dims: tuple, tokens: list[int]) -> np.ndarray:
    """llama2.c's run.c forward pass, token by token with a KV cache, in float64."""
    dim, _, n_layers, n_heads, n_kv, _, seq_len = dims
    hs, kv_dim = dim // n_heads, dim * n_kv // n_heads
    kcache = np.zeros((n_layers, seq_len, kv_dim))
    vcache = np.zeros((n_layers, seq_len, kv_dim))
    out = []
    for pos, tok in enumerate(tokens):
        x = w["emb"][tok].copy()
        for layer in range(n_layers):
            xb = _rmsnorm(x, w["att_norm"][layer])
            q, k, v = w["wq"][layer] @ xb, w["wk"][layer] @ xb, w["wv"][layer] @ xb
            for i in range(0, dim, 2):  # RoPE on interleaved pairs, per head
                angle = pos / 10000.0 ** ((i % hs) / hs)
                c, s = np.cos(angle), np.sin(angle)
                for vec in (q, k) if i < kv_dim else (q,):
                    vec[i], vec[i + 1] = vec[i] * c - vec[i + 1] * s, vec[i] * s + vec[i + 1] * c
            kcache[layer, pos], vcache[layer, pos] = k, v
            att_out = np.zeros(dim)
            for h in range(n_heads):
                kvh = h // (n_heads // n_kv)
                qh = q[h * hs : (h + 1) * hs]
                keys = kcache[layer, : pos + 1, kvh * hs : (kvh + 1) * hs]
                scores = keys @ qh / np.sqrt(hs)
                p = np.exp(scores - scores.max())
                att_out[h * hs : (h + 1) * hs] = (p / p.sum()) @ vcache[
                    layer, : pos + 1, kvh * hs : (kvh + 1) * hs
                ]
            x = x + w["wo"][layer] @ att_out
            xb = _rmsnorm(x, w["ffn_norm"][layer])
            g = w["w1"][layer] @ xb
            x = x + w["w2"][layer] @ (g / (1 + np.exp(-g)) * (w["w3"][layer] @ xb))
        out.append(w["cls"] @ _rmsnorm(x, w["final_norm"]))
    return np.stack(out)


def test_independent_v0_file_imports_with_run_c_logits(tmp_path):
    """A v0 file written here from the published layout (not by tinylm) gives run.c's logits."""
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = dims = (32, 48, 2, 4, 2, 41, 16)
    hs, kv_dim = dim // n_heads, dim * n_kv // n_heads
    rng = np.random.default_rng(0)

    def rand(*shape, mean=0.0):
        return (mean + rng.normal(0, 0.3, shape)).astype(np.float32)

    w = {"emb": rand(vocab, dim), "att_norm": rand(n_layers, dim, mean=1), "wq": rand(n_layers, dim, dim),
         "wk": rand(n_layers, kv_dim, dim), "wv": rand(n_layers, kv_dim, dim), "wo": rand(n_layers, dim, dim),
         "ffn_norm": rand(n_layers, dim, mean=1), "w1": rand(n_layers, hidden, dim), "w2": rand(n_layers, dim, hidden),
         "w3": rand(n_layers, hidden, dim), "final_norm": rand(dim, mean=1), "cls": rand(vocab, dim)}  # fmt: skip
    with open(tmp_path / "model.bin", "wb") as f:
        f.write(
            struct.pack("<7i", dim, hidden, n_layers, n_heads, n_kv, -vocab, seq_len)
        )  # negative: own classifier
        for key in ("emb", "att_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3", "final_norm"):
            f.write(w[key].tobytes())
        f.write(
            rng.normal(size=(2, seq_len, hs // 2)).astype(np.float32).tobytes()
        )  # freq_cis real/imag: skipped
        f.write(w["cls"].tobytes())
    assert detect(tmp_path / "model.bin") == "llama2c"
    model = read_model(tmp_path / "model.bin")
    tokens = [3, 17, 40, 0, 9, 22, 5]
    with torch.no_grad():
        ours = model(torch.tensor([tokens]))[0].double().numpy()
    want = _run_c_forward({k: v.astype(np.float64) for k, v in w.items()}, dims, tokens)
    assert np.abs(ours - want).max() <= 1e-4
    # and exactly what a tinylm model assembled by hand from the same arrays computes
    sd = {"tok_emb.weight": w["emb"], "norm.weight": w["final_norm"], "lm_head.weight": w["cls"]}
    for i in range(n_layers):
        sd |= {f"layers.{i}.attn.wqkv.weight": np.concatenate([w["wq"][i], w["wk"][i], w["wv"][i]]),
               f"layers.{i}.attn.wo.weight": w["wo"][i], f"layers.{i}.mlp.w1.weight": w["w1"][i],
               f"layers.{i}.mlp.w2.weight": w["w2"][i], f"layers.{i}.mlp.w3.weight": w["w3"][i],
               f"layers.{i}.attn_norm.weight": w["att_norm"][i], f"layers.{i}.mlp_norm.weight": w["ffn_norm"][i]}  # fmt: skip
    by_hand = build_model(model.config, {k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    assert torch.equal(logits(by_hand, vocab), logits(model, vocab))


def test_tokenizer_bin_round_trip_is_byte_exact(shared_data, tmp_path):
    real = shared_data / "llama2_tokenizer" / "tokenizer.bin"
    cfg = tiny_llama(vocab_size=32000, dim=8, hidden_dim=16, n_heads=2, n_kv_heads=1)
    save(tmp_path / "ckpt", cfg, Llama2cTokenizer.from_file(real))
    result = export_model(tmp_path / "ckpt", "llama2c", tmp_path / "out" / "model.bin")
    assert [f.name for f in result.files] == ["model.bin", "tokenizer.bin"]
    assert (tmp_path / "out" / "tokenizer.bin").read_bytes() == real.read_bytes()
    imported = import_model(tmp_path / "out" / "model.bin", tmp_path / "back")
    assert imported.tokenizer is not None and imported.tokenizer.kind == "llama2c"
    export_model(tmp_path / "back", "llama2c", tmp_path / "again.bin", tokenizer_out=tmp_path / "again.tok")
    assert (tmp_path / "again.tok").read_bytes() == real.read_bytes()
    # the SentencePiece tokenizer.model is written as the same tokenizer.bin
    save(
        tmp_path / "sp",
        cfg,
        SentencePieceTokenizer.from_file(shared_data / "llama2_tokenizer" / "tokenizer.model"),
    )
    export_model(tmp_path / "sp", "llama2c", tmp_path / "sp.bin", tokenizer_out=tmp_path / "sp.tok")
    assert (tmp_path / "sp.tok").read_bytes() == real.read_bytes()


def test_exported_tokenizer_never_overwrites_a_different_one(tmp_path, sp_tok):
    save(tmp_path / "ckpt", tiny_llama(vocab_size=sp_tok.vocab_size), sp_tok)
    (tmp_path / "tokenizer.bin").write_bytes(b"someone else's")
    with pytest.raises(TinyLMError, match="exists with a different vocabulary"):
        export_model(tmp_path / "ckpt", "llama2c", tmp_path / "model.bin")
    assert not (tmp_path / "model.bin").exists()


def test_what_llama2c_cannot_hold(tmp_path):
    for cfg, message in [(tiny_gpt2(), "not a Llama-family model"), (tiny_llama(bias=True), "has biases"),
                         (tiny_llama(rope_theta=500.0), "RoPE theta")]:  # fmt: skip
        save_checkpoint(tmp_path / "c", make_model(cfg))
        with pytest.raises(TinyLMError, match=message):
            export_model(tmp_path / "c", "llama2c", tmp_path / "m.bin")


def _v1(dims: tuple[int, ...], payload: int = 0) -> bytes:
    return struct.pack("<Ii7iB", MAGIC, 1, *dims, 1).ljust(256, b"\0") + bytes(payload)


def test_bad_files_are_one_clear_error(tmp_path):
    save(tmp_path / "ckpt", tiny_llama())
    export_model(tmp_path / "ckpt", "llama2c", tmp_path / "v1.bin", version=1)
    export_model(tmp_path / "ckpt", "llama2c", tmp_path / "v0.bin", version=0)
    good = (tmp_path / "v1.bin").read_bytes()
    cases = {
        "truncated.bin": (good[:-10], "truncated"),
        "heads.bin": (_v1((30, 48, 2, 4, 2, 67, 32), 4096), "dim 30 is not divisible by n_heads 4"),
        "negative.bin": (_v1((32, -48, 2, 4, 2, 67, 32)), "hidden_dim = -48 is impossible"),
        "huge.bin": (_v1((1 << 30, 48, 2, 4, 2, 67, 32)), "dim = 1073741824 is impossible"),
        "layers.bin": (
            _v1((32, 48, 9000, 4, 2, 67, 32), 4096),
            "truncated: its llama2.c v1 header implies 278,792,960 bytes but the file has 4,352",
        ),
        "version.bin": (struct.pack("<Ii", MAGIC, 7) + good[8:], "version 7 is not supported"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(TinyLMError, match=message):
            import_model(tmp_path / name, tmp_path / "out")
    # a v0 file has no magic: cut short, it is no longer recognisable, and says so; read as llama2.c it is truncated
    (tmp_path / "short.bin").write_bytes((tmp_path / "v0.bin").read_bytes()[:-4])
    with pytest.raises(TinyLMError, match="size disagrees with its header"):
        detect(tmp_path / "short.bin")
    with pytest.raises(TinyLMError, match="truncated"):
        import_model(tmp_path / "short.bin", tmp_path / "out", fmt="llama2c")
    assert not (tmp_path / "out").exists()
