"""The numbers: bits per byte by hand, KL against itself and perturbed copies, protocols against each
other, both engines, and the per-document protocol's boundaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import tiny_gpt2
from tests.eval.conftest import random_checkpoint
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.eval import Protocol, evaluate_models
from tinylm.model import Model
from tinylm.tokenizer import CharTokenizer


def uniform_model(vocab_size: int) -> Model:
    """All weights zero: every position predicts the uniform distribution, a loss of ln(vocab) per token."""
    model = Model(tiny_gpt2(vocab_size=vocab_size))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def test_bits_per_byte_by_hand():
    tok = CharTokenizer.train(["héllo wörld"])  # 9 characters + end of text: V = 10
    model = uniform_model(tok.vocab_size)
    # documents: [eos] + 11 characters; all 11 scored; "héllo wörld" is 13 UTF-8 bytes (é and ö take 2)
    [r] = evaluate_models([(model, tok)], ["héllo wörld"], protocol=Protocol("documents"), progress=False)
    assert (r.tokens, r.bytes) == (11, 13)
    assert r.loss == pytest.approx(math.log(10), rel=1e-6)
    assert r.bits_per_byte == pytest.approx(11 * math.log(10) / (math.log(2) * 13), rel=1e-6)
    assert r.perplexity == pytest.approx(10, rel=1e-5) and r.perplexity_se == pytest.approx(0, abs=1e-5)
    # windows: the stream "héllo wörld" eos "héllo wörld" eos (24 tokens); the first is context only, so
    # 23 tokens are scored and they spell 25 bytes (the eos ids spell none)
    [r] = evaluate_models([(model, tok)], ["héllo wörld"] * 2, protocol=Protocol("windows"), progress=False)
    assert (r.tokens, r.bytes) == (23, 25)
    assert r.bits_per_byte == pytest.approx(23 * math.log(10) / (math.log(2) * 25), rel=1e-6)


def test_kl_is_zero_against_itself_and_grows_with_perturbation(tmp_path, speeches, char_tok):
    ref = random_checkpoint(tmp_path / "ref", "llama", char_tok)
    paths = [tmp_path / "ref"]
    for noise in (0.01, 0.03, 0.1):
        torch.manual_seed(1)
        model = load_checkpoint(tmp_path / "ref").model
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * noise)
        paths.append(save_checkpoint(tmp_path / f"noise{noise}", model, char_tok))
    results = evaluate_models(paths, speeches, reference=tmp_path / "ref", max_tokens=2000, progress=False)
    assert ref is not None and results[0].kl == 0 and results[0].top1 == 1.0
    kls = [r.kl for r in results]
    assert 0 < kls[1] < kls[2] < kls[3]
    assert results[3].top1 < 1.0
    assert results[0].tokens == results[3].tokens == 2000


def test_sliding_with_stride_equal_to_context_is_the_windows_protocol(tmp_path, speeches, char_tok):
    random_checkpoint(tmp_path / "m", "gpt2", char_tok)
    a, b = (evaluate_models([tmp_path / "m"], speeches, protocol=p, max_tokens=1500, progress=False)[0]
            for p in (Protocol("windows"), Protocol("sliding", stride=32)))  # fmt: skip
    assert a.scores.windows == b.scores.windows
    assert np.array_equal(a.scores.losses, b.scores.losses) and (a.bytes, a.tokens) == (b.bytes, b.tokens)


@pytest.mark.slow
def test_smaller_stride_gives_lower_perplexity_on_a_trained_model(trained, speeches):
    held_out = speeches[-60:]  # the trained fixture saw the first 90% of the token stream
    # windows of 4 characters: a briefly trained model gains most from the first few characters of
    # context, which non-overlapping windows of 4 often lack and sliding ones always give
    protocols = [Protocol("windows", 4), Protocol("sliding", 4, stride=2), Protocol("sliding", 4, stride=1)]
    results = [evaluate_models([trained], held_out, protocol=p, max_tokens=3000, batch_size=256, progress=False)[0]
               for p in protocols]  # fmt: skip
    ppl = [r.perplexity for r in results]
    assert ppl[0] < 20  # it learned something (a uniform guess over ~60 characters is ~60)
    assert ppl[1] <= ppl[0] and ppl[2] <= ppl[0]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("protocol", [Protocol("windows"), Protocol("documents", stride=16)])
def test_torch_and_numpy_engines_give_the_same_numbers(tmp_path, speeches, char_tok, family, protocol):
    random_checkpoint(tmp_path / "m", family, char_tok)
    random_checkpoint(tmp_path / "ref", family, char_tok, seed=1)
    t, n = (evaluate_models([tmp_path / "m"], speeches, protocol=protocol, reference=tmp_path / "ref", engine=e,
                            batch_size=3, max_tokens=1200, progress=False)[0] for e in ("torch", "numpy"))  # fmt: skip
    assert (t.tokens, t.bytes) == (n.tokens, n.bytes) == (1200, t.bytes)
    np.testing.assert_allclose(n.scores.losses, t.scores.losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(n.scores.kl, t.scores.kl, rtol=1e-3, atol=1e-6)
    assert n.loss == pytest.approx(t.loss, rel=1e-5) and n.kl == pytest.approx(t.kl, rel=1e-4)


def test_documents_protocol_never_crosses_a_boundary(tmp_path, speeches, char_tok):
    random_checkpoint(tmp_path / "m", "llama", char_tok)
    docs = speeches[:6]
    proto = Protocol("documents", stride=16)
    alone = evaluate_models([tmp_path / "m"], docs[3:4], protocol=proto, progress=False)[0]
    together = evaluate_models([tmp_path / "m"], docs, protocol=proto, progress=False)[0]
    # every character of every document is scored, with the end-of-text id before each as context
    assert together.tokens == sum(len(d) for d in docs)
    assert together.bytes == sum(len(d.encode("utf-8")) for d in docs)
    start = sum(len(d) for d in docs[:3])
    np.testing.assert_allclose(together.scores.losses[start : start + len(docs[3])], alone.scores.losses, rtol=1e-5)
