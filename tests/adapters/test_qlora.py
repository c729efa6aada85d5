"""QLoRA: LoRA over a base quantized to NF4. The base stays NF4 in memory while only the adapter trains,
the loss falls, the adapter checkpoint loads on the saved NF4 base, and merging re-quantizes and says
how much error that introduced."""

from __future__ import annotations

import json

import pytest
import torch

from tests.adapters.test_finetune import QUICK, ids
from tests.conftest import tiny_llama
from tinylm.adapters.lora import LoRALinear, merge_lora
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.cli import main
from tinylm.model import Model
from tinylm.quantize.linear import QuantLinear
from tinylm.tokenizer import train_tokenizer
from tinylm.train.finetune import QLORA_BASE, Options, run_finetune
from tinylm.train.metrics import METRICS_FILE
from tinylm.train.tasks.story_words import write_task


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("qlora")
    src = shared_data / "tinystories_v2_head.txt"
    stories = [s for s in src.read_text(encoding="utf-8").split("<|endoftext|>") if s.strip()][:200]
    short = root / "short.txt"
    short.write_text("<|endoftext|>".join(". ".join(s.split(". ")[:2]) for s in stories), encoding="utf-8")
    write_task(str(short), root / "sw", n_train=40, n_test=8)
    torch.manual_seed(0)
    cfg = tiny_llama(vocab_size=400, context_length=128, dim=64, hidden_dim=128, tie_embeddings=False)
    save_checkpoint(root / "base", Model(cfg), train_tokenizer("bpe", stories, vocab_size=400, bos=True))
    opts = Options(str(root / "base"), str(root / "sw" / "train.jsonl"), method="qlora", rank=4, targets="attn,mlp")
    return root, run_finetune(opts, {**QUICK, "out_dir": str(root / "run")}, quiet=True)


def test_base_stays_nf4_and_only_the_adapter_learns(run):
    root, result = run
    wqkv = result.model.layers[0].attn.wqkv
    assert isinstance(wqkv, LoRALinear) and isinstance(wqkv.base, QuantLinear)
    assert wqkv.base.scheme == "nf4" and wqkv.base.qweight.dtype == torch.uint8
    nf4 = load_checkpoint(root / "run" / QLORA_BASE).model
    for k, v in nf4.state_dict().items():  # the quantized base is exactly what was saved before training
        assert torch.equal(result.model.state_dict()[k], v), k
    losses = [json.loads(line)["loss"] for line in (root / "run" / METRICS_FILE).read_text().splitlines()
              if '"loss"' in line]  # fmt: skip
    assert losses[-1] < losses[0]


def test_adapter_loads_on_the_nf4_base(run):
    root, result = run
    config = json.loads((root / "run" / "last" / "config.json").read_text())
    assert config["quantization"]["kind"] == "nf4" and config["adapters"]["kind"] == "lora"
    loaded = load_checkpoint(root / "run" / "last").model
    with torch.no_grad():
        assert torch.equal(loaded(ids()), result.model(ids()))


def test_merge_requantizes_and_reports_the_error(run, tmp_path, capsys):
    root, _ = run
    model = load_checkpoint(root / "run" / "last").model
    with torch.no_grad():
        adapted = model(ids())
        error = merge_lora(model)
        merged = model(ids())
    assert 0 < error < 1  # re-quantizing the merged weight to NF4 is not exact
    assert isinstance(model.layers[0].attn.wqkv, QuantLinear)  # still NF4, adapter gone
    assert (merged - adapted).abs().max() < 1.0 and not torch.equal(merged, adapted)
    assert main(["merge", str(root / "run" / "last"), "--out", str(tmp_path / "m")]) == 0
    assert "re-quantized after merging: largest weight error" in capsys.readouterr().out
    assert json.loads((tmp_path / "m" / "config.json").read_text())["quantization"]["kind"] == "nf4"


@pytest.mark.parametrize("rows", [4, 40])  # the C kernel's small-batch product, and dequantize-then-multiply
def test_gradients_equal_those_through_the_dequantized_float_base(rows):
    """The packed base's backward (dequantize again, dL/dx = dL/dy · W) gives what autograd gives through a
    float Linear holding the same dequantized weight."""
    torch.manual_seed(0)
    quant = QuantLinear.from_linear(torch.nn.Linear(128, 96, bias=False), "nf4", 64)
    dense = torch.nn.Linear(128, 96, bias=False)
    dense.weight.data = quant.dequantized()
    slices = {"q": (0, 32, 128), "v": (64, 32, 128)}
    pair = [LoRALinear(base.requires_grad_(False), slices, rank=4, alpha=8) for base in (quant, dense)]
    with torch.no_grad():
        for t in slices:
            pair[0].lora_B[t].normal_()
            pair[1].lora_A[t].copy_(pair[0].lora_A[t])
            pair[1].lora_B[t].copy_(pair[0].lora_B[t])
    x = torch.randn(rows, 128)
    xs = [x.clone().requires_grad_() for _ in pair]
    for m, xi in zip(pair, xs, strict=True):
        m(xi).sin().sum().backward()  # a nonlinear loss: dL/dy differs per element
    assert torch.allclose(xs[0].grad, xs[1].grad, atol=1e-5)
    for t in slices:
        assert torch.allclose(pair[0].lora_A[t].grad, pair[1].lora_A[t].grad, atol=1e-5)
        assert torch.allclose(pair[0].lora_B[t].grad, pair[1].lora_B[t].grad, atol=1e-5)
    assert quant.qweight.grad is None and not any(p.requires_grad for p in quant.parameters())
