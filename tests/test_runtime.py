"""The NumPy runtime: imports and generates without torch, reads every checkpoint dtype, fails clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm.checkpoint import save_checkpoint
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.runtime import NumpyModel
from tinylm.tokenizer import CharTokenizer

TOK = CharTokenizer(list(" abcdefghijklmnopqrstuvwxyz.,"))


def test_runtime_imports_and_generates_without_torch(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c", Model(tiny_llama(vocab_size=TOK.vocab_size)), TOK)
    code = f"""
import sys
import tinylm.runtime, tinylm.tokenizer, tinylm.generate
assert "torch" not in sys.modules, "importing the runtime imported torch"
gen = tinylm.generate.Generator.load({str(path)!r}, engine="numpy")
text = gen.generate("a b", max_new_tokens=8, temperature=0, stop_ids=[]).text
pieces = list(gen.stream("a b", max_new_tokens=8, temperature=0, stop_ids=[]))
assert "torch" not in sys.modules, "generating imported torch"
print(repr(text), repr("".join(pieces)))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    text, streamed = r.stdout.split()
    assert text == streamed and len(eval(text)) == 8


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoints_load_as_float32(tmp_path: Path, dtype: torch.dtype) -> None:
    model = Model(tiny_gpt2()).to(dtype)
    path = save_checkpoint(tmp_path / "c", model)
    rt = NumpyModel.from_checkpoint(path)
    assert rt.tok_emb.dtype == np.float32
    np.testing.assert_array_equal(rt.tok_emb, model.tok_emb.weight.detach().float().numpy())
    idx = [1, 2, 3, 4]
    with torch.no_grad():
        want = model.float()(torch.tensor([idx]))[0, -1].numpy()
    np.testing.assert_allclose(rt.prefill([0], [idx])[0], want, rtol=1e-4, atol=1e-4)


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(TinyLMError, match="no checkpoint directory"):
        NumpyModel.from_checkpoint(tmp_path / "missing")
    path = save_checkpoint(tmp_path / "c", Model(tiny_llama()))
    (path / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(TinyLMError, match="corrupt"):
        NumpyModel.from_checkpoint(path)
    path = save_checkpoint(tmp_path / "c", Model(tiny_llama()))
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "dim": 64}))
    with pytest.raises(TinyLMError, match="shape"):
        NumpyModel.from_checkpoint(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(TinyLMError, match="not valid JSON"):
        NumpyModel.from_checkpoint(path)


@pytest.mark.parametrize(
    "cfg",
    [
        tiny_llama(),
        tiny_llama(bias=True, tie_embeddings=False),
        tiny_gpt2(),
        tiny_gpt2(bias=False),
        tiny_gpt2(norm="rmsnorm"),
    ],
)
def test_the_shared_layout_matches_the_torch_model(cfg) -> None:
    from tinylm.checkpoint import model_state_dict
    from tinylm.layout import FLOAT, tensor_layout

    want = {k: (tuple(v.shape), FLOAT) for k, v in model_state_dict(Model(cfg)).items()}
    assert tensor_layout(cfg) == want


def test_runtime_checks_weights_against_the_shared_layout(tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import load_file, save_file

    import tinylm.transforms

    path = save_checkpoint(tmp_path / "c", Model(tiny_gpt2()))
    calls = []
    real = tinylm.transforms.tensor_layout
    monkeypatch.setattr(tinylm.transforms, "tensor_layout", lambda cfg: calls.append(cfg) or real(cfg))
    NumpyModel.from_checkpoint(path)
    assert calls == [tiny_gpt2()]
    # an integer tensor where the layout wants a float weight is named, not silently widened
    sd = load_file(path / "model.safetensors")
    sd["norm.weight"] = sd["norm.weight"].to(torch.int8)
    save_file(sd, path / "model.safetensors")
    with pytest.raises(TinyLMError, match=r"tensor norm\.weight has dtype int8"):
        NumpyModel.from_checkpoint(path)
    cfg = json.loads((path / "config.json").read_text())
    spec = {"kind": "int8", "group_size": 0, "keep": []}  # declared, but the weights are float
    (path / "config.json").write_text(json.dumps({**cfg, "quantization": spec}))
    with pytest.raises(TinyLMError, match=r"missing tensor\(s\) layers\.0\.attn\.wo\.qweight"):
        NumpyModel.from_checkpoint(path)
    (path / "config.json").write_text(json.dumps({**cfg, "adapters": {"kind": "lora"}}))
    with pytest.raises(TinyLMError, match="runs plain and quantized checkpoints"):
        NumpyModel.from_checkpoint(path)


def test_exact_gelu_model_decodes_like_torch() -> None:
    from tests.generate.conftest import random_model
    from tinylm.checkpoint import model_state_dict
    from tinylm.generate import Sampler, SamplingParams, generate_ids

    model = random_model(tiny_gpt2(gelu="exact"))
    runtime = NumpyModel(model.config, {k: v.numpy() for k, v in model_state_dict(model).items()})
    prompt = [3, 1, 4, 1, 5]
    steps = generate_ids(runtime, [prompt], 25, Sampler(SamplingParams(temperature=0)))
    out = np.stack(list(steps))[:, 0].tolist()
    tanh_model = Model(model.config.replace(gelu="tanh"))
    tanh_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        want = model(torch.tensor([prompt + out[:-1]]))[0, len(prompt) - 1 :]
        tanh = tanh_model(torch.tensor([prompt]))[0, -1].numpy()
    assert len(set(out)) > 5, "degenerate model: greedy output barely varies"
    assert out == want.argmax(-1).tolist()
    # the logits follow the exact form, far closer than the tanh form's are
    got = runtime.prefill([0], [prompt])[0]
    err, tanh_err = np.abs(got - want[0].numpy()).max(), np.abs(got - tanh).max()
    assert err < 1e-4 and tanh_err > 20 * err


def test_rms_norm_of_one_row_and_of_many_equal_its_definition():
    """A decode step normalises one row (its own branch), prefill many: both x / rms(x) * w."""
    from tinylm.runtime import rms_norm

    rng = np.random.default_rng(0)
    x, w = rng.normal(0, 3, (4, 64)).astype(np.float32), rng.normal(1, 0.1, 64).astype(np.float32)
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(rms_norm(x, w, None, 1e-5), want, rtol=1e-5)
    np.testing.assert_allclose(rms_norm(x[:1], w, None, 1e-5), want[:1], rtol=1e-5)
