"""tinylm.small_attention (our C causal attention for small heads) against PyTorch's SDPA in float64, and how the
model routes attention to it."""

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_llama
from tinylm import small_attention as sa
from tinylm.model import Model
from tinylm.train.objectives import cross_entropy

pytestmark = pytest.mark.skipif(sa.library() is None, reason="no C compiler for the attention kernel")

SHAPES = {  # (B, T, H, KV, hs): T never a multiple of the kernel's 16 keys per vector
    "gqa": (3, 37, 4, 2, 8),
    "mha-odd-BH": (1, 21, 3, 3, 16),
    "mqa-hs32": (2, 70, 4, 1, 32),
    "hs5": (1, 17, 2, 2, 5),
}


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA's causal attention in float64, in the kernel's (B, T, heads, hs) layout."""
    q, k, v = (x.double().transpose(1, 2) for x in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2)


def qkv(B: int, T: int, H: int, KV: int, hs: int) -> tuple[torch.Tensor, ...]:
    return torch.randn(B, T, H, hs), torch.randn(B, T, KV, hs), torch.randn(B, T, KV, hs)


@pytest.mark.parametrize("name", SHAPES)
def test_forward_and_gradients_match_sdpa_in_float64(name: str) -> None:
    B, T, H, KV, hs = SHAPES[name]
    q, k, v = (x.requires_grad_() for x in qkv(B, T, H, KV, hs))
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    dy = torch.randn(B, T, H, hs)
    y = sa.small_attention(q, k, v)
    y.backward(dy)
    y64 = reference(q64, k64, v64)
    y64.backward(dy.double())
    torch.testing.assert_close(y.double(), y64, rtol=1e-4, atol=1e-5)
    for ours, ref in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=2e-5)


def test_reads_the_slices_of_one_projection_where_they_lie() -> None:
    B, T, H, KV, hs = 2, 23, 4, 2, 8
    qkv_rows = torch.randn(B, T, (H + 2 * KV) * hs, requires_grad=True)
    q, k, v = qkv_rows.split([H * hs, KV * hs, KV * hs], dim=-1)
    q, k, v = q.view(B, T, H, hs), k.view(B, T, KV, hs), v.view(B, T, KV, hs)  # strided views, no copies
    y = sa.small_attention(q, k, v)
    torch.testing.assert_close(y.double(), reference(q, k, v), rtol=1e-4, atol=1e-5)
    y.sum().backward()
    copies = [x.detach().contiguous().requires_grad_() for x in (q, k, v)]
    sa.small_attention(*copies).sum().backward()
    assert torch.equal(qkv_rows.grad, torch.cat([x.grad.flatten(2) for x in copies], dim=-1))


def test_results_do_not_depend_on_the_thread_count() -> None:
    q, k, v = (x.requires_grad_() for x in qkv(3, 40, 4, 2, 8))
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        q.grad = k.grad = v.grad = None
        y = sa.small_attention(q, k, v)
        y.pow(2).sum().backward()
        results.append([y.detach(), q.grad, k.grad, v.grad])
    torch.set_num_threads(1)  # as conftest leaves it
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


@pytest.mark.filterwarnings("ignore:Input #. requires gradient and is not a double")
def test_custom_op_registration_and_gradcheck() -> None:
    q, k, v = (x.requires_grad_() for x in qkv(1, 19, 2, 1, 4))
    torch.library.opcheck(torch.ops.tinylm.small_attention.default, (q, k, v))
    # float32 finite differences: a loose tolerance, but a wrong term in any gradient is far off
    assert torch.autograd.gradcheck(sa.small_attention, (q, k, v), eps=1e-2, atol=5e-3, rtol=5e-2)


def test_head_size_above_the_kernel_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="head sizes up to 32"):
        sa.small_attention(*qkv(1, 5, 2, 2, 40))


def loss_and_grads(model: Model, forward, idx: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:  # type: ignore[no-untyped-def]
    model.zero_grad()
    loss = cross_entropy(forward(idx), idx)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_compiled_model_is_one_graph_and_matches_eager() -> None:
    model = Model(tiny_llama())
    idx = torch.randint(0, 67, (2, 29))
    eager = loss_and_grads(model, model, idx)
    torch._dynamo.reset()
    compiled = loss_and_grads(model, torch.compile(model, fullgraph=True, backend="aot_eager"), idx)  # breaks raise
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # inductor builds C++ kernels: about a minute on a busy 2-core machine
def test_inductor_compiled_model_matches_eager() -> None:
    model = Model(tiny_llama())
    idx = torch.randint(0, 67, (2, 29))
    eager = loss_and_grads(model, model, idx)
    torch._dynamo.reset()
    compiled = loss_and_grads(model, torch.compile(model, fullgraph=True), idx)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_compiled_model_retraces_when_the_kernel_is_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    graphs = []

    def keep_graph(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(str(gm.graph))
        return gm.forward

    model = torch.compile(Model(tiny_llama()), backend=keep_graph)
    idx = torch.randint(0, 67, (2, 16))
    torch._dynamo.reset()
    model(idx)
    monkeypatch.setattr(sa, "enabled", False)
    model(idx)
    assert len(graphs) == 2
    assert "tinylm.small_attention" in graphs[0] and "scaled_dot_product_attention" not in graphs[0]
    assert "tinylm.small_attention" not in graphs[1] and "scaled_dot_product_attention" in graphs[1]


def test_model_attends_through_the_kernel_only_where_it_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    kernel = sa.small_attention
    monkeypatch.setattr(sa, "small_attention", lambda q, k, v: calls.append(q.shape[-1]) or kernel(q, k, v))
    idx = torch.randint(0, 67, (2, 16))
    small = Model(tiny_llama())  # head size 8
    sdpa = Model(tiny_llama(dim=4 * 2 * sa.MAX_HEAD_SIZE, n_heads=4, n_kv_heads=2))  # head size above the kernel's
    sdpa(idx)
    assert calls == []
    small(idx)
    assert calls == [8, 8]  # one call per layer
    monkeypatch.setattr(sa, "enabled", False)  # as TINYLM_ATTENTION=sdpa
    small(idx)
    assert calls == [8, 8]
    monkeypatch.setattr(sa, "enabled", True)
    with_dropout = Model(tiny_llama(dropout=0.1)).train()
    with_dropout(idx)
    assert calls == [8, 8]
    with_dropout.eval()(idx)
    assert calls == [8, 8, 8, 8]
    monkeypatch.setattr(sa, "library", lambda: None)  # no compiler: SDPA
    small(idx)
    assert calls == [8, 8, 8, 8]


def test_same_as_sdpa_inside_the_model() -> None:
    model = Model(tiny_llama())
    idx = torch.randint(0, 67, (3, 31))
    ours = loss_and_grads(model, model, idx)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sa, "enabled", False)
        theirs = loss_and_grads(model, model, idx)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
