"""Hugging Face folders: ours load in transformers (same logits, same token ids), and folders written by
transformers itself (sharded safetensors, pytorch_model.bin) import and export back unchanged."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tests.formats.conftest import logits, save
from tinylm.checkpoint import load_checkpoint
from tinylm.errors import TinyLMError
from tinylm.formats import export_model, import_model
from tinylm.formats.hf import to_hf_config
from tinylm.tokenizer import SentencePieceTokenizer

transformers = pytest.importorskip("transformers")


def load_hf(folder):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)


def test_llama_with_sentencepiece_loads_in_transformers(tmp_path, shared_data, stories):
    tok = SentencePieceTokenizer.from_file(shared_data / "llama2_tokenizer" / "tokenizer.model")
    cfg = tiny_llama(vocab_size=32000, dim=16, hidden_dim=32, n_heads=2, n_kv_heads=1)
    model = save(tmp_path / "ckpt", cfg, tok)
    export_model(tmp_path / "ckpt", "hf", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["architectures"], config["bos_token_id"], config["eos_token_id"]) == (
        ["LlamaForCausalLM"],
        1,
        2,
    )
    theirs, hf_tok = load_hf(tmp_path / "hf")
    assert (logits(theirs, 32000) - logits(model, 32000)).abs().max().item() <= 1e-4
    for text in [*stories[:40], " lead  and\ttab\r\nrun   of spaces 中文 😀 <0x41> </s> trail "]:
        ids = tok.encode(text)
        assert hf_tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] == ids
        assert hf_tok.decode(ids) == tok.decode(ids)
    assert hf_tok("Hello")["input_ids"] == tok.encode_document("Hello", eos=False)  # Llama adds BOS
    assert (theirs.generation_config.bos_token_id, theirs.generation_config.eos_token_id) == (1, 2)


def test_gpt2_with_bpe_loads_in_transformers(tmp_path, bpe_tok, stories):
    cfg = tiny_gpt2(vocab_size=bpe_tok.vocab_size, tie_embeddings=False)
    model = save(tmp_path / "ckpt", cfg, bpe_tok)
    export_model(tmp_path / "ckpt", "hf", tmp_path / "hf", dtype="float32")
    theirs, hf_tok = load_hf(tmp_path / "hf")
    assert type(theirs).__name__ == "GPT2LMHeadModel"
    assert (logits(theirs, cfg.vocab_size) - logits(model, cfg.vocab_size)).abs().max().item() <= 1e-4
    for text in stories[:40]:
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == bpe_tok.encode(text)
    assert (hf_tok.eos_token_id, hf_tok.bos_token_id) == (bpe_tok.eos_id, bpe_tok.bos_id)
    imported = import_model(tmp_path / "hf", tmp_path / "back")
    assert torch.equal(logits(imported.model, cfg.vocab_size), logits(model, cfg.vocab_size))
    assert [imported.tokenizer.encode(t) for t in stories[:5]] == [bpe_tok.encode(t) for t in stories[:5]]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_transformers_sharded_folder_round_trip(tmp_path, family):
    cfg = tiny_llama(tie_embeddings=False) if family == "llama" else tiny_gpt2()
    torch.manual_seed(0)
    original = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(**to_hf_config(cfg))
    ).eval()
    original.save_pretrained(tmp_path / "src", max_shard_size="20KB")
    assert (tmp_path / "src" / "model.safetensors.index.json").is_file()
    imported = import_model(tmp_path / "src", tmp_path / "ckpt")
    assert (logits(imported.model, 67) - logits(original, 67)).abs().max().item() <= 1e-5
    export_model(tmp_path / "ckpt", "hf", tmp_path / "again")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "again", local_files_only=True)
    want, got = original.state_dict(), again.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)  # q/k permutation undone and redone exactly


def test_pytorch_model_bin_is_loaded_weights_only(tmp_path):
    cfg = tiny_gpt2()
    model = save(tmp_path / "ckpt", cfg)
    export_model(tmp_path / "ckpt", "hf", tmp_path / "hf")
    folder = tmp_path / "hf"
    sd = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(sd, folder / "pytorch_model.bin")
    assert torch.equal(logits(import_model(folder, tmp_path / "one").model, 67), logits(model, 67))
    # sharded the old way: pytorch_model-0000k-of-00002.bin listed by pytorch_model.bin.index.json
    (folder / "pytorch_model.bin").unlink()
    names = sorted(sd)
    weight_map = {}
    for k, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :]), start=1):
        torch.save({n: sd[n] for n in part}, folder / f"pytorch_model-0000{k}-of-00002.bin")
        weight_map |= {n: f"pytorch_model-0000{k}-of-00002.bin" for n in part}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert torch.equal(logits(import_model(folder, tmp_path / "two").model, 67), logits(model, 67))
    torch.save({"weights": argparse.Namespace(evil=True)}, folder / "pytorch_model-00001-of-00002.bin")
    with pytest.raises(TinyLMError, match="not a plain PyTorch weights file"):  # weights_only refuses objects
        import_model(folder, tmp_path / "evil")


def test_bad_folders_are_one_clear_error(tmp_path):
    cfg = tiny_llama()
    save(tmp_path / "ckpt", cfg)
    export_model(tmp_path / "ckpt", "hf", tmp_path / "hf")
    folder = tmp_path / "hf"
    transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).save_pretrained(
        tmp_path / "sharded", max_shard_size="10KB"
    )
    next((tmp_path / "sharded").glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(
        TinyLMError,
        match=r"shard model-00002-of-\d+\.safetensors listed in model\.safetensors\.index\.json is missing",
    ):
        import_model(tmp_path / "sharded", tmp_path / "out")
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:-100])
    with pytest.raises(TinyLMError, match="truncated or corrupt safetensors"):
        import_model(folder, tmp_path / "out")
    (folder / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(TinyLMError, match="model_type 'mamba' is not supported"):
        import_model(folder, tmp_path / "out")
    with pytest.raises(TinyLMError, match="already a tinylm checkpoint"):
        import_model(tmp_path / "ckpt", tmp_path / "out")
    with pytest.raises(TinyLMError, match="exists and is not a Hugging Face model folder"):
        export_model(tmp_path / "ckpt", "hf", tmp_path)  # would replace the whole test directory
    assert not (tmp_path / "out").exists() and load_checkpoint(tmp_path / "ckpt")
