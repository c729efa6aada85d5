import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm.config import PRESETS, ModelConfig, get_preset
from tinylm.errors import TinyLMError
from tinylm.model import KVCache, Model
from tinylm.train.objectives import cross_entropy

FAMILIES = {
    "llama-gqa": tiny_llama(),
    "llama-mqa": tiny_llama(n_kv_heads=1),
    "llama-untied-bias": tiny_llama(n_kv_heads=4, tie_embeddings=False, bias=True),
    "gpt2": tiny_gpt2(),
    "gpt2-nobias-untied": tiny_gpt2(bias=False, tie_embeddings=False),
    "rmsnorm-gelu-learned": tiny_gpt2(norm="rmsnorm", hidden_dim=40),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_shapes_and_loss(name: str) -> None:
    cfg = FAMILIES[name]
    model = Model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.context_length))
    logits = model(idx)
    loss = cross_entropy(logits, torch.randint(0, cfg.vocab_size, idx.shape))
    assert logits.shape == (3, cfg.context_length, cfg.vocab_size)
    # a fresh model predicts roughly uniformly: loss near ln(vocab)
    assert abs(loss.item() - torch.log(torch.tensor(cfg.vocab_size)).item()) < 0.5
    assert model.num_params() == cfg.num_params()


@pytest.mark.parametrize("preset", ["stories260K", "gpt-nano"])
def test_preset_families_build_scaled_down(preset: str) -> None:
    cfg = get_preset(preset).replace(vocab_size=50, context_length=16)
    logits = Model(cfg)(torch.randint(0, 50, (2, 16)))
    assert logits.shape == (2, 16, 50)


@pytest.mark.parametrize("name", FAMILIES)
def test_causal_masking(name: str) -> None:
    cfg = FAMILIES[name]
    model = Model(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (1, 20))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % cfg.vocab_size
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_gqa_with_all_heads_equals_plain_mha() -> None:
    """n_kv_heads == n_heads must be exactly multi-head attention: compare against attention written out by hand."""
    cfg = tiny_llama(n_kv_heads=4)
    model = Model(cfg).eval()
    attn = model.layers[0].attn
    x = torch.randn(2, 10, cfg.dim)
    rope = (model.rope_cos[:10], model.rope_sin[:10])
    got = attn(x, rope)

    from tinylm.model import apply_rope

    q, k, v = attn.wqkv(x).split(cfg.dim, dim=-1)
    q, k, v = (t.view(2, 10, 4, 8) for t in (q, k, v))
    q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    att = (q @ k.transpose(-2, -1)) / 8**0.5
    att = att.masked_fill(torch.triu(torch.ones(10, 10, dtype=torch.bool), 1), float("-inf")).softmax(-1)
    want = attn.wo((att @ v).transpose(1, 2).reshape(2, 10, cfg.dim))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_grouped_query_equals_mha_with_repeated_kv_heads() -> None:
    """GQA with 2 kv heads == MHA whose k/v heads are each repeated for their group of query heads."""
    gqa_cfg = tiny_llama(n_kv_heads=2)
    gqa = Model(gqa_cfg).eval()
    mha = Model(gqa_cfg.replace(n_kv_heads=4)).eval()
    sd = gqa.state_dict()
    hs = gqa_cfg.head_dim
    for i in range(gqa_cfg.n_layers):
        w = sd[f"layers.{i}.attn.wqkv.weight"]
        q, k, v = w.split([4 * hs, 2 * hs, 2 * hs])
        rep = lambda t: t.view(2, hs, -1).repeat_interleave(2, dim=0).reshape(4 * hs, -1)  # noqa: E731
        sd[f"layers.{i}.attn.wqkv.weight"] = torch.cat([q, rep(k), rep(v)])
    mha.load_state_dict(sd)
    idx = torch.randint(0, gqa_cfg.vocab_size, (2, 16))
    torch.testing.assert_close(gqa(idx), mha(idx), atol=1e-5, rtol=1e-5)


def test_loss_ignores_minus_one_targets() -> None:
    cfg = tiny_gpt2()
    model = Model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 8))
    targets = idx.clone()
    targets[:, :4] = -1
    logits = model(idx)
    loss = cross_entropy(logits, targets)
    want = torch.nn.functional.cross_entropy(logits[:, 4:].reshape(-1, cfg.vocab_size), idx[:, 4:].reshape(-1))
    torch.testing.assert_close(loss, want)


def test_residual_projections_get_scaled_init() -> None:
    cfg = tiny_gpt2(n_layers=8, dim=256, n_heads=4)
    model = Model(cfg)
    std_wo = model.layers[0].attn.wo.weight.std().item()
    std_qkv = model.layers[0].attn.wqkv.weight.std().item()
    assert abs(std_qkv - 0.02) < 0.002
    assert abs(std_wo - 0.02 / (2 * 8) ** 0.5) < 0.001


def test_tied_embeddings_share_one_tensor() -> None:
    model = Model(tiny_gpt2())
    assert model.lm_head.weight is model.tok_emb.weight
    assert Model(tiny_gpt2(tie_embeddings=False)).lm_head.weight is not Model(tiny_gpt2()).tok_emb.weight


def test_presets_have_the_published_sizes() -> None:
    # llama2.c's model cards: stories15M 15.2M, stories42M 41.7M, stories110M 110M; GPT-2 small 124.4M
    assert round(PRESETS["stories15M"].num_params() / 1e6, 1) == 15.2
    assert round(PRESETS["stories42M"].num_params() / 1e6, 1) == 41.7
    assert round(PRESETS["stories110M"].num_params() / 1e6) == 110
    assert PRESETS["gpt2"].num_params() == 124_439_808
    assert PRESETS["stories260K"].ffn_dim == 172  # llama2.c's hidden_dim rule with multiple_of=4
    assert PRESETS["stories42M"].ffn_dim == 1376


def test_bad_config_is_one_clear_error() -> None:
    with pytest.raises(TinyLMError, match="not divisible by n_heads"):
        ModelConfig(dim=30, n_heads=4)
    with pytest.raises(TinyLMError, match="unknown preset 'gpt5'"):
        get_preset("gpt5")
    with pytest.raises(TinyLMError, match="unknown config field"):
        ModelConfig.from_dict({"dim": 32, "flux_capacitor": 1})


@pytest.mark.parametrize("name", FAMILIES)
def test_cached_prefill_and_decode_equal_the_plain_forward(name: str) -> None:
    """Prefill a prompt into chosen cache rows, then decode one token at a time: every logit equals
    the plain forward over the whole sequence, and rows other than the batch's are left untouched."""
    cfg = FAMILIES[name]
    model = Model(cfg).eval()
    seq = torch.randint(0, cfg.vocab_size, (2, 14))
    with torch.no_grad():
        want = model(seq)  # (2, 14, vocab)
        cache = KVCache(cfg, rows=4)
        cache.rows, cache.keys = torch.tensor([3, 1]), None
        pos = torch.arange(10).expand(2, 10)
        got = model(seq[:, :10], pos=pos, cache=cache, logits_at=torch.tensor([9, 9]))
        torch.testing.assert_close(got, want[:, 9], atol=1e-5, rtol=1e-5)
        assert all(k[[0, 2]].abs().sum() == 0 for k in cache.k)
        for t in range(10, 14):
            cache.rows, cache.keys = torch.tensor([3, 1]), torch.arange(t + 1)
            step = model(seq[:, t : t + 1], pos=torch.full((2, 1), t), cache=cache)  # (2, 1, vocab)
            torch.testing.assert_close(step[:, 0], want[:, t], atol=1e-5, rtol=1e-5)


def test_positions_without_a_cache_shift_the_sequence() -> None:
    """Per-row positions: a row placed at positions 5.. equals the same tokens after 5 others, with
    RoPE (relative) exactly the attention pattern and with learned positions their embeddings."""
    for cfg in (tiny_llama(), tiny_gpt2()):
        model = Model(cfg).eval()
        idx = torch.randint(0, cfg.vocab_size, (1, 8))
        with torch.no_grad():
            plain, shifted = model(idx), model(idx, pos=torch.arange(5, 13)[None])
        assert plain.shape == shifted.shape
        if cfg.positions == "rope":  # relative positions only: a uniform shift changes nothing
            torch.testing.assert_close(plain, shifted, atol=1e-4, rtol=1e-4)
        else:
            assert not torch.allclose(plain, shifted)


def test_compiled_tanh_gelu_is_the_same_function() -> None:
    from tinylm.model import gelu

    x = torch.linspace(-12, 12, 2001, requires_grad=True)
    compiled = torch.compile(lambda t: gelu(t, tanh=True), fullgraph=True, backend="aot_eager")
    y = compiled(x)  # the sigmoid form
    y.sum().backward()
    x64 = x.detach().double().requires_grad_()
    want = torch.nn.functional.gelu(x64, approximate="tanh")
    want.sum().backward()
    torch.testing.assert_close(y.double(), want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-6)
