"""PEFT interop: our adapter, exported with `--to peft`, loads with peft onto our Hugging Face export of
the base and gives the adapted model's logits (Llama: q/k B rows permuted to HF's RoPE layout; GPT-2:
the q/k/v slices fused into one block-diagonal update of c_attn)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm import transforms
from tinylm.adapters.spec import LoraSpec, parse_targets
from tinylm.formats import module
from tinylm.model import Model

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


@pytest.mark.parametrize(("cfg", "targets"), [(tiny_llama(tie_embeddings=False), "all"),
                                              (tiny_llama(), "q,k,o,up"),
                                              (tiny_gpt2(), "q,v,o,up,down")], ids=["llama-all", "llama-qk", "gpt2-qv"])  # fmt: skip
def test_peft_loads_our_adapter_with_the_same_logits(tmp_path, cfg, targets):
    torch.manual_seed(0)
    model = Model(cfg).eval()
    module("hf").export(model, None, tmp_path / "hf")  # the base, before the adapter goes on
    transforms.apply(model, "adapters", LoraSpec(rank=4, alpha=8, targets=parse_targets(targets, cfg)).to_dict())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0.0, 0.1)
    module("peft").export(model, None, tmp_path / "adapter", base_name="tmp/hf")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8

    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = hf(idx).logits
        theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()(idx).logits
        ours = model(idx)
    assert (ours - plain).abs().max() > 1e-2  # the adapter matters
    assert (theirs - ours).abs().max() <= 1e-4
