"""Per-window losses equal Hugging Face transformers' (labels = inputs) on the same windows, for a
checkpoint exported to a Hugging Face folder and loaded offline."""

from __future__ import annotations

import pytest
import torch

from tests.eval.conftest import random_checkpoint
from tinylm.eval import evaluate_models
from tinylm.formats import export_model

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_window_losses_equal_transformers(tmp_path, speeches, bpe_tok, family):
    random_checkpoint(tmp_path / "ckpt", family, bpe_tok)
    export_model(tmp_path / "ckpt", "hf", tmp_path / "hf", dtype="float32")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    [r] = evaluate_models([tmp_path / "ckpt"], speeches, max_tokens=500, batch_size=4, progress=False)
    # the stream as `tinylm prepare` frames it: [bos] + tokens + [eos] per document
    stream = [i for d in speeches for i in bpe_tok.encode_document(d)]
    offset = 0
    assert len(r.scores.windows) > 10
    for _, w in r.scores.windows:
        assert w.first == w.start + 1  # non-overlapping windows score all of their own predictions
        x = torch.tensor([stream[w.start : w.end]])
        with torch.no_grad():
            want = theirs(input_ids=x, labels=x).loss.item()
        got = r.scores.losses[offset : offset + w.end - w.first].mean()
        assert got == pytest.approx(want, rel=1e-4)
        offset += w.end - w.first
    assert offset == r.tokens == 500
