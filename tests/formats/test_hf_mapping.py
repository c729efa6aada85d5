"""Logits parity with Hugging Face transformers for random-weight models of several shapes."""

import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm.checkpoint import model_state_dict
from tinylm.errors import TinyLMError
from tinylm.formats.hf import (
    from_hf_config,
    from_hf_state_dict,
    half_to_interleaved,
    interleaved_to_half,
    to_hf_config,
    to_hf_state_dict,
)
from tinylm.model import Model

transformers = pytest.importorskip("transformers")

SHAPES = {
    "llama-gqa": tiny_llama(),
    "llama-mqa-untied": tiny_llama(n_kv_heads=1, tie_embeddings=False),
    "llama-mha-theta": tiny_llama(n_kv_heads=4, rope_theta=500.0, n_layers=3),
    "llama-bias": tiny_llama(bias=True),
    "gpt2": tiny_gpt2(),
    "gpt2-untied-wide": tiny_gpt2(tie_embeddings=False, hidden_dim=80, n_heads=2),
    "gpt2-exact-gelu": tiny_gpt2(gelu="exact"),
}


def hf_model(cfg_dict: dict) -> torch.nn.Module:
    config = transformers.AutoConfig.for_model(**cfg_dict)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


@pytest.mark.parametrize("name", SHAPES)
def test_logits_match_hugging_face(name: str) -> None:
    cfg = SHAPES[name]
    ours = Model(cfg).eval()
    with torch.no_grad():  # random-ish norm weights and biases so a mapping slip cannot hide behind ones/zeros
        for n, p in ours.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.normal_(1.0 if n.endswith("weight") else 0.0, 0.1)
    theirs = hf_model(to_hf_config(cfg))
    missing, unexpected = theirs.load_state_dict(to_hf_state_dict(cfg, model_state_dict(ours)), strict=False)
    assert not unexpected
    assert all(k.endswith("attn.bias") or k.endswith("masked_bias") for k in missing)  # GPT-2's mask buffers
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.context_length))
    with torch.no_grad():
        want = theirs(idx).logits
        got = ours(idx)
    assert (got - want).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", SHAPES)
def test_hf_mapping_round_trip(name: str) -> None:
    cfg = SHAPES[name]
    sd = model_state_dict(Model(cfg))
    hf_cfg = to_hf_config(cfg)
    back_cfg = from_hf_config(hf_cfg)
    assert back_cfg == cfg.replace(hidden_dim=cfg.ffn_dim)
    back = from_hf_state_dict(back_cfg, to_hf_state_dict(cfg, sd))
    assert back.keys() == sd.keys()
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def test_rope_permutations_are_inverse_and_not_identity() -> None:
    w = torch.arange(4 * 8 * 3, dtype=torch.float32).view(32, 3)
    half = interleaved_to_half(w, n_heads=4)
    assert not torch.equal(half, w)
    assert torch.equal(half_to_interleaved(half, n_heads=4), w)
    # within a head of size 8: interleaved rows (0,1),(2,3).. become halves [0,2,4,6 | 1,3,5,7]
    assert half[:8, 0].tolist() == [0, 6, 12, 18, 3, 9, 15, 21]


def test_mixed_architectures_have_no_hf_equivalent() -> None:
    with pytest.raises(TinyLMError, match="mixes GPT-2 and Llama parts"):
        to_hf_config(tiny_gpt2(norm="rmsnorm"))


def test_missing_hf_tensor_is_named() -> None:
    cfg = tiny_llama()
    hf = to_hf_state_dict(cfg, model_state_dict(Model(cfg)))
    del hf["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(TinyLMError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        from_hf_state_dict(cfg, hf)
