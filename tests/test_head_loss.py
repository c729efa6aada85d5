"""tinylm.head_loss (the output head and cross-entropy fused, chunked) against float64 F.cross_entropy on the
whole logits, and the model's loss path (targets=) that uses it."""

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm import head_loss as hl
from tinylm.model import Model


def reference(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Loss and its gradients with respect to x and w, unfused, in float64."""
    x64, w64 = (t.detach().double().requires_grad_() for t in (x, w))
    loss = F.cross_entropy((x64 @ w64.t()).flatten(0, 1), y.flatten(), ignore_index=-1)
    loss.backward()
    return loss.detach(), x64.grad, w64.grad


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])  # one row per chunk, a ragged last chunk, one chunk
def test_loss_and_gradients_match_float64_over_any_chunking(monkeypatch: pytest.MonkeyPatch, chunk_rows: int) -> None:
    V, C = 53, 12
    monkeypatch.setattr(hl, "CHUNK_FLOATS", chunk_rows * V)
    head = torch.nn.Linear(C, V, bias=False)
    x = torch.randn(3, 11, C, requires_grad=True)
    y = torch.randint(0, V, (3, 11))
    y[0, :4] = -1  # not scored: no loss, no gradient
    loss = hl.head_loss(head, x, y)
    loss.backward()
    want_loss, want_dx, want_dw = reference(x, head.weight, y)
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), want_dx, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(head.weight.grad.double(), want_dw, rtol=1e-5, atol=1e-7)
    assert torch.all(x.grad[0, :4] == 0)


def test_the_incoming_gradient_scales_both_gradients() -> None:
    head = torch.nn.Linear(8, 20, bias=False)
    x = torch.randn(2, 5, 8, requires_grad=True)
    y = torch.randint(0, 20, (2, 5))
    (3.0 * hl.head_loss(head, x, y)).backward()
    _, want_dx, want_dw = reference(x, head.weight, y)
    torch.testing.assert_close(x.grad.double(), 3.0 * want_dx, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(head.weight.grad.double(), 3.0 * want_dw, rtol=1e-5, atol=1e-7)


def test_without_grad_the_same_loss_and_no_gradient_work(monkeypatch: pytest.MonkeyPatch) -> None:
    head = torch.nn.Linear(8, 20, bias=False)
    x, y = torch.randn(2, 5, 8), torch.randint(0, 20, (2, 5))
    products = []
    mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda *a, **k: products.append(1) or mm(*a, **k))
    with torch.no_grad():
        loss = hl.head_loss(head, x, y)
    torch.testing.assert_close(loss.double(), reference(x, head.weight, y)[0], rtol=1e-6, atol=1e-6)
    assert len(products) == 1  # the logits only: no dx product (and dW uses addmm_, not called either)


@pytest.mark.filterwarnings("ignore:Input #. requires gradient and is not a double")
def test_custom_op_registration() -> None:
    x, w = torch.randn(6, 4, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    y = torch.tensor([0, 3, -1, 8, 2, 2])
    torch.library.opcheck(torch.ops.tinylm.head_loss.default, (x, w, y, True))


def model_loss_and_grads(model: Model, forward, idx: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    model.zero_grad()
    loss = forward(idx, targets=y)
    loss.backward()
    return [loss.detach()] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("cfg", [tiny_gpt2(), tiny_llama(tie_embeddings=False)], ids=["gpt2-tied", "llama-untied"])
def test_model_targets_equal_the_loss_of_its_logits(cfg) -> None:  # type: ignore[no-untyped-def]
    model = Model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    y = torch.roll(idx, -1, 1)
    y[:, -1] = -1
    fused = model_loss_and_grads(model, model, idx, y)

    def plain(idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return hl.cross_entropy(model(idx), targets)

    want = model_loss_and_grads(model, plain, idx, y)
    torch.testing.assert_close(fused, want, rtol=1e-5, atol=1e-6)


def test_autocast_takes_the_plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hl, "_fused", None)  # would fail if called
    model = Model(tiny_gpt2())
    idx = torch.randint(0, 67, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(idx, targets=idx)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_compiled_model_loss_is_one_graph_and_matches_eager() -> None:
    model = Model(tiny_gpt2())
    idx = torch.randint(0, 67, (2, 29))
    eager = model_loss_and_grads(model, model, idx, idx)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # a graph break raises
    torch.testing.assert_close(model_loss_and_grads(model, compiled, idx, idx), eager, rtol=1e-5, atol=1e-6)
