"""Inputs: a prepared folder's validation split decodes back to its documents, a named dataset and a
folder read as `tinylm prepare` reads them, and CUDA scores as the CPU does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.eval.conftest import random_checkpoint
from tinylm.data.prepare import prepare
from tinylm.data.shards import TokenShards
from tinylm.eval import Protocol, evaluate_models, load_documents


def test_prepared_folder_scores_its_validation_split(tmp_path, speeches, char_tok):
    (tmp_path / "text.txt").write_text("\n\n".join(speeches[:200]), encoding="utf-8")
    prepare([tmp_path / "text.txt"], tmp_path / "prep", tokenizer=char_tok, dedup=False, val_fraction=0.2,
            progress=False)  # fmt: skip
    docs = list(load_documents(tmp_path / "prep"))
    val = TokenShards(tmp_path / "prep", "val").window(0, len(TokenShards(tmp_path / "prep", "val")))
    assert 10 < len(docs) < 100 and set(docs) <= set(speeches[:200])
    assert sum(len(d) + 1 for d in docs) == val.size  # each document's characters and its end-of-text id
    random_checkpoint(tmp_path / "m", "gpt2", char_tok)
    [r] = evaluate_models([tmp_path / "m"], tmp_path / "prep", progress=False)
    assert r.tokens == val.size - 1 - (val.size - 1) // 32  # the stream itself, each window's first token unscored


def test_named_dataset_and_folder(tmp_path, speeches):
    docs = load_documents("pystdlib")  # offline: this interpreter's standard library, one document per file
    first = next(iter(docs))
    assert first.strip() and first == next(iter(docs))  # read once, replayed
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("one\n\ntwo", encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text("three", encoding="utf-8")
    assert list(load_documents(tmp_path)) == ["one", "two", "three"]
    assert list(load_documents(tmp_path, separator="file")) == ["one\n\ntwo", "three"]


@pytest.mark.gpu
def test_cuda_gives_the_cpu_numbers(tmp_path, speeches, char_tok):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    random_checkpoint(tmp_path / "m", "llama", char_tok)
    cpu, gpu = (evaluate_models([tmp_path / "m"], speeches, protocol=Protocol("sliding", stride=8), device=d,
                                reference=tmp_path / "m", max_tokens=2000, progress=False)[0] for d in ("cpu", "cuda"))  # fmt: skip
    np.testing.assert_allclose(gpu.scores.losses, cpu.scores.losses, rtol=1e-3, atol=1e-4)
    assert gpu.top1 == 1.0 and abs(gpu.kl) < 1e-6
