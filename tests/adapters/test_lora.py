"""LoRA modules: step 0 is the base, adapted = merged, unmerge restores the base, targets mean what they
say (q,v adapts only q and v rows of the fused wqkv), only adapter parameters learn."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm.adapters.lora import LoRALinear, apply_lora, merge_lora, unmerge_lora
from tinylm.adapters.spec import LoraSpec, adapter_layout, parse_targets
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.train.objectives import next_token

CONFIGS = {"llama": tiny_llama(tie_embeddings=False), "gpt2": tiny_gpt2()}


def adapted(cfg, targets="all", rank=4, seed=0) -> tuple[Model, Model]:
    """(base, base + adapter with random B), both in eval mode."""
    torch.manual_seed(seed)
    base = Model(cfg).eval()
    model = Model(cfg).eval()
    model.load_state_dict(base.state_dict())
    apply_lora(model, LoraSpec(rank=rank, alpha=2 * rank, targets=parse_targets(targets, cfg)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0.0, 0.05)
    return base, model


def ids(cfg, n=2, t=12):
    return torch.randint(0, cfg.vocab_size, (n, t), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", CONFIGS)
def test_step0_equals_base(family):
    cfg = CONFIGS[family]
    torch.manual_seed(0)
    base = Model(cfg).eval()
    x = ids(cfg)
    want = base(x)
    apply_lora(base, LoraSpec(targets=parse_targets("all", cfg)))
    assert torch.equal(base(x), want)  # B = 0: exactly the base
    assert all(m.lora_A[t].abs().sum() > 0 for m in base.modules() if isinstance(m, LoRALinear) for t in m.slices)


@pytest.mark.parametrize("family", CONFIGS)
def test_merge_equals_adapted_and_unmerge_restores(family):
    cfg = CONFIGS[family]
    base, model = adapted(cfg)
    x = ids(cfg)
    with torch.no_grad():
        plain, lora = base(x), model(x)
        assert (lora - plain).abs().max() > 1e-3  # the adapter changes the model
        before = {k: v.clone() for k, v in model.state_dict().items()}
        assert merge_lora(model, unwrap=False) == 0.0  # a float base stores the merge exactly (no quantization)
        assert (model(x) - lora).abs().max() <= 1e-5
        w = model.layers[0].attn.wqkv.base.weight.clone()
        merge_lora(model, unwrap=False)  # a second merge is a no-op
        assert torch.equal(model.layers[0].attn.wqkv.base.weight, w)
        unmerge_lora(model)
        after = model.state_dict()
        assert max((after[k] - v).abs().max().item() for k, v in before.items()) <= 1e-6
        merge_lora(model)  # and unwrapped: a plain Model again
        assert not any(isinstance(m, LoRALinear) for m in model.modules())
        assert set(model.state_dict()) == set(base.state_dict())
        assert (model(x) - lora).abs().max() <= 1e-5


def test_targets_touch_only_their_rows():
    cfg = CONFIGS["llama"]
    base, model = adapted(cfg, targets="q,v")
    merge_lora(model)
    H, KV, hs = cfg.n_heads, cfg.kv_heads, cfg.head_dim
    for i in range(cfg.n_layers):
        w0, w1 = base.layers[i].attn.wqkv.weight, model.layers[i].attn.wqkv.weight
        q, k, v = (w1 - w0).split([H * hs, KV * hs, KV * hs])
        assert torch.equal(k, torch.zeros_like(k)) and v.abs().max() > 0 and q.abs().max() > 0
        assert torch.equal(base.layers[i].attn.wo.weight, model.layers[i].attn.wo.weight)
        assert torch.equal(base.layers[i].mlp.w1.weight, model.layers[i].mlp.w1.weight)


def test_target_names_and_presets():
    llama, gpt2 = CONFIGS["llama"], CONFIGS["gpt2"]
    assert parse_targets("all", llama) == ("q", "k", "v", "o", "gate", "up", "down", "head")
    assert parse_targets("all", tiny_llama()) == ("q", "k", "v", "o", "gate", "up", "down")  # tied head: skipped
    assert parse_targets("mlp", gpt2) == ("up", "down")  # GPT-2: fc is up, proj is down, no gate
    assert parse_targets("attn,q", llama) == ("q", "k", "v", "o")
    names = set(adapter_layout(gpt2, LoraSpec(targets=("up",))))
    assert names == {f"layers.{i}.mlp.w1.lora_{m}.up" for i in range(2) for m in "AB"}
    for bad, words in [("gate", "no gate"), ("head", "shares the token embedding"), ("qq", "unknown")]:
        with pytest.raises(TinyLMError, match=words):
            parse_targets(bad, gpt2)


@pytest.mark.parametrize("family", CONFIGS)
def test_only_adapter_parameters_learn(family):
    cfg = CONFIGS[family]
    _, model = adapted(cfg, targets="attn")
    model.train()
    frozen = {k: v.clone() for k, v in model.state_dict().items() if ".lora_" not in k}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = ids(cfg, 4, 13)
    losses = []
    for _ in range(5):
        loss = next_token(model, x[:, :-1], x[:, 1:])
        loss.backward()
        for name, p in model.named_parameters():
            assert (p.grad is not None) == (".lora_" in name), name
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for k, v in model.state_dict().items():
        if ".lora_" not in k:
            assert torch.equal(v, frozen[k]), k  # the base is byte-identical
    n_adapter = sum(v.numel() for k, v in model.state_dict().items() if ".lora_" in k)
    assert n_adapter == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_adapter_state_loads_into_a_fresh_adapted_model():
    cfg = CONFIGS["llama"]
    base, model = adapted(cfg)
    x = ids(cfg)
    fresh = Model(cfg).eval()
    fresh.load_state_dict(base.state_dict())
    apply_lora(fresh, LoraSpec(rank=4, alpha=8, targets=parse_targets("all", cfg)))
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if ".lora_" in k}, strict=False)
    assert torch.equal(fresh(x), model(x))
    with pytest.raises(TinyLMError, match="already has a LoRA adapter"):
        apply_lora(fresh, LoraSpec(targets=("q",)))
