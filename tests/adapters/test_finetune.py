"""`tinylm finetune` end to end on a tiny model: adapter-only checkpoints that load on their base with the
same logits, a base that stays byte-identical, merge to a plain checkpoint, exports (merged HF, PEFT),
and one-line errors for an adapter on the wrong base."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.tokenizer import train_tokenizer
from tinylm.train.finetune import Options, run_finetune
from tinylm.train.metrics import METRICS_FILE
from tinylm.train.tasks.story_words import write_task

QUICK = {"max_steps": 6, "batch_size": 4, "eval_interval": 3, "eval_batches": 2, "warmup_steps": 0, "log_interval": 1,
         "lr": 1e-2, "device": "cpu", "precision": "fp32"}  # fmt: skip


@pytest.fixture(scope="module")
def task(tmp_path_factory, shared_data):
    """(base checkpoint dir, story-words train.jsonl, test.jsonl) for a tiny Llama and its BPE tokenizer."""
    root = tmp_path_factory.mktemp("ft")
    src = shared_data / "tinystories_v2_head.txt"
    stories = [s for s in src.read_text(encoding="utf-8").split("<|endoftext|>") if s.strip()][:200]
    tok = train_tokenizer("bpe", stories, vocab_size=400, bos=True)
    short = root / "short.txt"  # the first sentences of each story: rows of ~60 tokens keep the test quick
    short.write_text("<|endoftext|>".join(". ".join(s.split(". ")[:2]) for s in stories), encoding="utf-8")
    write_task(str(short), root / "sw", n_train=40, n_test=8)
    torch.manual_seed(0)
    save_checkpoint(root / "base", Model(tiny_llama(vocab_size=400, context_length=128, tie_embeddings=False)), tok)
    return root / "base", root / "sw" / "train.jsonl", root / "sw" / "test.jsonl"


def finetune(task, out, **kw):
    base, data, _ = task
    opts = Options(str(base), str(data), **{"rank": 4, "targets": "all", **kw})
    return run_finetune(opts, {**QUICK, "out_dir": str(out)}, quiet=True)


def ids(n=2, t=20, vocab=400):
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(3))


def test_lora_checkpoint_is_the_adapter_only_and_loads_on_its_base(task, tmp_path):
    base_dir = task[0]
    base_bytes = (base_dir / "model.safetensors").read_bytes()
    result = finetune(task, tmp_path / "run")
    last = tmp_path / "run" / "last"
    config = json.loads((last / "config.json").read_text())
    assert config["adapters"] == {"kind": "lora", "rank": 4, "alpha": 16.0, "dropout": 0.0,
                                  "targets": ["q", "k", "v", "o", "gate", "up", "down", "head"]}  # fmt: skip
    from safetensors import safe_open

    with safe_open(last / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert names and all(".lora_" in n for n in names)  # nothing of the base
    assert (last / "model.safetensors").stat().st_size < (base_dir / "model.safetensors").stat().st_size / 2
    assert (base_dir / "model.safetensors").read_bytes() == base_bytes  # the base file is untouched
    loaded = load_checkpoint(last).model
    x = ids()
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))
        assert not torch.allclose(loaded(x), load_checkpoint(base_dir).model(x), atol=1e-4)
    base_sd = load_checkpoint(base_dir).model.state_dict()
    for k, v in loaded.state_dict().items():  # the base weights inside the trained model are byte-identical
        if ".lora_" not in k:
            assert torch.equal(v, base_sd[k]), k
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()
              if '"loss"' in line]  # fmt: skip
    assert losses[-1] < losses[0]
    assert main(["sample", str(last), "Once", "-n", "5", "--seed", "0"]) == 0  # generation goes through the adapter


def test_merge_writes_a_plain_checkpoint_with_the_same_logits(task, tmp_path):
    finetune(task, tmp_path / "run", targets="q,v,down")
    assert main(["merge", str(tmp_path / "run" / "last"), "--out", str(tmp_path / "merged")]) == 0
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "adapters" not in config and not (tmp_path / "merged" / "base.json").exists()
    x = ids()
    with torch.no_grad():
        want = load_checkpoint(tmp_path / "run" / "last").model(x)
        assert (load_checkpoint(tmp_path / "merged").model(x) - want).abs().max() <= 1e-5
    # `tinylm eval` loads the adapter on its base: the same scores as the merged model, and not the base's
    text = tmp_path / "text.txt"
    text.write_text("Once upon a time, a happy dog found a red ball in the park. " * 8, encoding="utf-8")
    runs = [str(tmp_path / "run" / "last"), str(tmp_path / "merged"), str(task[0])]
    assert main(["eval", *runs, "--data", str(text), "--quiet", "--json", str(tmp_path / "e.json")]) == 0
    adapter, merged, base = json.loads((tmp_path / "e.json").read_text())["results"]
    assert adapter["loss"] == pytest.approx(merged["loss"], abs=1e-4)
    assert abs(base["loss"] - adapter["loss"]) > 1e-3


def test_resume_continues_the_adapter_run(task, tmp_path):
    finetune(task, tmp_path / "run", targets="q,v")
    base, data, _ = task
    opts = Options(str(base), str(data), rank=4, targets="q,v")
    result = run_finetune(opts, {**QUICK, "out_dir": str(tmp_path / "run"), "max_steps": 9}, resume=True, quiet=True)
    assert result.progress.step == 9


def test_adapter_on_the_wrong_base_is_one_line(task, tmp_path):
    base = task[0]
    finetune(task, tmp_path / "run", targets="q,v")
    ref = json.loads((tmp_path / "run" / "last" / "base.json").read_text())
    # the base changed since the adapter was trained on it
    changed = load_checkpoint(base)
    with torch.no_grad():
        changed.model.tok_emb.weight.add_(0.01)
    save_checkpoint(tmp_path / "changed", changed.model, changed.tokenizer)
    (tmp_path / "run" / "last" / "base.json").write_text(json.dumps({**ref, "path": "../../changed"}))
    with pytest.raises(TinyLMError, match="hash differs"):
        load_checkpoint(tmp_path / "run" / "last")
    # a base of another shape
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "other", Model(tiny_llama(vocab_size=400, context_length=128, dim=64)), changed.tokenizer)
    (tmp_path / "run" / "last" / "base.json").write_text(json.dumps({**ref, "path": "../../other"}))
    with pytest.raises(TinyLMError, match="another shape"):
        load_checkpoint(tmp_path / "run" / "last")


def test_bad_finetune_input_is_one_line(task, tmp_path, capsys):
    base, _, _ = task
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{oops\n', encoding="utf-8")
    assert main(["finetune", str(base), "--data", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert capsys.readouterr().err.strip().endswith("bad.jsonl:2: not valid JSON (Expecting property name enclosed "
                                                     "in double quotes at column 2); fix the line or pass --on-error skip")  # fmt: skip
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "gpt2", Model(tiny_gpt2(vocab_size=400, context_length=128)),
                    load_checkpoint(base).tokenizer)  # fmt: skip
    assert main(["finetune", str(tmp_path / "gpt2"), "--data", str(task[1]), "--targets", "gate",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 1  # fmt: skip
    assert "--targets gate: this model's MLP (GELU: fc = up, proj = down) has no gate" in capsys.readouterr().err
    assert main(["merge", str(base), "--out", str(tmp_path / "m")]) == 1
    assert "has no adapter" in capsys.readouterr().err
    # a mistyped base or data path is refused before the run folder (and its lock) is made
    fresh = tmp_path / "fresh"
    assert main(["finetune", str(tmp_path / "nobase"), "--data", str(task[1]), "--out", str(fresh), "--quiet"]) == 1
    assert "nobase: no checkpoint directory here" in capsys.readouterr().err
    assert main(["finetune", str(base), "--data", str(tmp_path / "no.jsonl"), "--out", str(fresh), "--quiet"]) == 1
    assert "no.jsonl: no such file" in capsys.readouterr().err
    assert not fresh.exists()


def test_full_finetune_writes_whole_checkpoints(task, tmp_path):
    result = finetune(task, tmp_path / "run", method="full", words_test=str(task[2]), words_n=4)
    rates = [json.loads(line)["words_rate"] for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()
             if "words_rate" in line]  # fmt: skip
    assert len(rates) == 2 and all(0 <= r <= 1 for r in rates)  # scored at both evaluations
    last = tmp_path / "run" / "last"
    assert not (last / "base.json").exists() and "adapters" not in json.loads((last / "config.json").read_text())
    base = load_checkpoint(task[0]).model.state_dict()
    changed = [k for k, v in result.model.state_dict().items() if not torch.equal(v, base[k])]
    assert "layers.0.attn.wqkv.weight" in changed and "tok_emb.weight" in changed
