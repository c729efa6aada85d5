"""Exports start a text prompt the way tinylm does: the document-start token (BOS, or GPT-2's <|endoftext|>
when there is no BOS) is declared in GGUF and HF folders, so transformers continues a prompt exactly as
tinylm's Generator does."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_gpt2, tiny_llama
from tests.formats.conftest import save
from tinylm.formats import export_model, import_model
from tinylm.generate.generator import Generator
from tinylm.tokenizer import train_tokenizer

PROMPT = "Once upon a time, the cat"


@pytest.fixture(scope="module")
def eot_bpe(stories):
    """A byte-level BPE without BOS: documents are separated by <|endoftext|> alone, as GPT-2's."""
    tok = train_tokenizer("bpe", stories[:300], vocab_size=400)
    assert tok.bos_id is None and tok.eos_id is not None
    return tok


def test_gguf_declares_the_document_start(tmp_path, eot_bpe):
    gguf = pytest.importorskip("gguf")
    save(tmp_path / "ckpt", tiny_gpt2(vocab_size=eot_bpe.vocab_size), eot_bpe)
    export_model(tmp_path / "ckpt", "gguf", tmp_path / "m.gguf")
    fields = {name: f.contents() for name, f in gguf.GGUFReader(tmp_path / "m.gguf").fields.items()}
    assert fields["tokenizer.ggml.bos_token_id"] == eot_bpe.eos_id
    assert fields["tokenizer.ggml.add_bos_token"] is True
    back = import_model(tmp_path / "m.gguf", tmp_path / "back").tokenizer
    assert (back.bos_id, back.eos_id) == (None, eot_bpe.eos_id)  # read back as the same convention


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_transformers_greedy_continuation_equals_tinylms(tmp_path, family, eot_bpe, sp_tok):
    transformers = pytest.importorskip("transformers")
    tok, cfg = (eot_bpe, tiny_gpt2) if family == "gpt2" else (sp_tok, tiny_llama)
    save(tmp_path / "ckpt", cfg(vocab_size=tok.vocab_size, context_length=64), tok)
    export_model(tmp_path / "ckpt", "hf", tmp_path / "hf", dtype="float32")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    start = tok.bos_id if tok.bos_id is not None else tok.eos_id
    assert theirs.config.bos_token_id == theirs.generation_config.bos_token_id == start

    ours = Generator.load(tmp_path / "ckpt").generate(PROMPT, 20, temperature=0.0)  # stops at EOS, as theirs
    enc = hf_tok(PROMPT, return_tensors="pt")  # transformers' defaults: special tokens added
    assert enc["input_ids"][0].tolist() == ours.prompt_ids
    out = theirs.generate(**enc, max_new_tokens=20, do_sample=False, pad_token_id=tok.eos_id)
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    assert new[: len(ours.ids) + 1] == ours.ids + ([tok.eos_id] if ours.finish_reason == "stop" else [])
