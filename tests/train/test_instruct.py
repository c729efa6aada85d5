"""Instruction data: JSONL parsing with line-numbered errors (stop or skip), over-long conversations
dropped or truncated, targets -1 everywhere but the replies."""

from __future__ import annotations

import json

import pytest
import torch

from tinylm.chat import render_for_training
from tinylm.errors import TinyLMError
from tinylm.tokenizer import train_tokenizer
from tinylm.train.instruct import encode, read_jsonl, split


@pytest.fixture(scope="module")
def stories(shared_data) -> list[str]:
    text = (shared_data / "tinystories_v2_head.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()][:200]


@pytest.fixture(scope="module")
def tok(stories):
    return train_tokenizer("bpe", stories, vocab_size=400, bos=True)


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = [json.dumps({"prompt": "Say hi.", "completion": "Hi there."}),
        json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name?"},
                                 {"role": "assistant", "content": "Tom."}]})]  # fmt: skip


def test_malformed_lines_are_named_by_number(tmp_path, capsys):
    bad = ["{not json", json.dumps({"messages": [{"role": "robot", "content": "x"}]}), json.dumps([1, 2]),
           json.dumps({"messages": [{"role": "user", "content": "only a question"}]})]  # fmt: skip
    path = write_lines(tmp_path / "d.jsonl", [GOOD[0], "", *bad, GOOD[1]])
    with pytest.raises(TinyLMError, match=r"d\.jsonl:3: not valid JSON .*--on-error skip"):
        read_jsonl(path)
    records = read_jsonl(path, on_error="skip")
    assert [r.line for r in records] == [1, 7]
    err = capsys.readouterr().err
    assert "skipped 4 malformed line(s): 3 (not valid JSON" in err
    assert "4 (messages: message 1 must be" in err and "5 (expected a JSON object)" in err
    assert "6 (no assistant message" in err
    with pytest.raises(TinyLMError, match="no usable conversation"):
        read_jsonl(write_lines(tmp_path / "e.jsonl", bad), on_error="skip", quiet=True)
    with pytest.raises(TinyLMError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_rows_score_only_the_replies(tmp_path, tok):
    records = read_jsonl(write_lines(tmp_path / "d.jsonl", GOOD))
    data = encode(records, tok, context=64)
    for r, x, y in zip(records, data.x, data.y, strict=True):
        ids, _ = render_for_training(tok, r.messages)
        n = len(ids) - 1
        assert x[:n].tolist() == ids[:-1] and (y[n:] == -1).all()
        scored = [t for t in y[:n].tolist() if t != -1]
        reply = r.messages[-1]["content"]
        assert tok.decode(scored) == " " + reply and scored[-1] == tok.eos_id  # the reply and its EOS, no more


def test_too_long_conversations_are_dropped_or_truncated(tmp_path, tok, capsys):
    long = json.dumps({"prompt": "Tell it.", "completion": "word " * 200})
    records = read_jsonl(write_lines(tmp_path / "d.jsonl", [GOOD[0], long]))
    dropped = encode(records, tok, context=32)
    assert len(dropped) == 1 and "1 of 2 conversation(s) are longer than the context of 32 tokens (line 2): dropped" \
        in capsys.readouterr().err  # fmt: skip
    kept = encode(records, tok, context=32, too_long="truncate")
    assert kept.x.shape == (2, 32) and (kept.y[1] != -1).sum() > 0
    with pytest.raises(TinyLMError, match="every conversation is longer"):
        encode(records[1:], tok, context=16, quiet=True)


def test_split_holds_out_a_fixed_share(tmp_path):
    records = read_jsonl(write_lines(tmp_path / "d.jsonl", GOOD * 20))
    train, val = split(records, val_frac=0.1)
    assert (len(train), len(val)) == (36, 4) and not {r.line for r in train} & {r.line for r in val}
    assert [r.line for r in split(records, val_frac=0.1)[1]] == [r.line for r in val]


def test_masked_objective_ignores_prompt_positions(tok, tmp_path):
    """Changing what the model predicts at prompt positions leaves the loss alone."""
    from tinylm.train.objectives import cross_entropy, next_token

    records = read_jsonl(write_lines(tmp_path / "d.jsonl", GOOD))
    data = encode(records, tok, context=64)
    logits = torch.randn(*data.x.shape, tok.vocab_size)

    class Fixed(torch.nn.Module):
        def __init__(self, out):
            super().__init__()
            self.out = out

        def forward(self, x, targets=None):  # as Model: the loss of its logits given targets
            return self.out if targets is None else cross_entropy(self.out, targets)

    before = next_token(Fixed(logits), data.x, data.y)
    logits[data.y == -1] = torch.randn_like(logits[data.y == -1])
    assert torch.equal(next_token(Fixed(logits), data.x, data.y), before)


def test_a_batch_is_cut_after_its_last_scored_position(tok, tmp_path):
    """Short conversations batched alone lose the padding after their replies, and a causal model's loss on
    them is what it is on the full-width rows."""
    from tinylm.config import ModelConfig
    from tinylm.model import Model
    from tinylm.train.objectives import next_token

    long = json.dumps({"prompt": "Tell it.", "completion": "Once upon a time there was a dog. " * 3})
    data = encode(read_jsonl(write_lines(tmp_path / "d.jsonl", [*GOOD, long])), tok, context=64)
    short = torch.tensor([0, 1])
    x, y = data.get(short)
    width = max(int((row != -1).nonzero()[-1]) + 1 for row in data.y[short])
    assert x.shape == y.shape == (2, width) and width < data.x.shape[1]
    assert x.is_contiguous() and y.is_contiguous()  # else a compiled step recompiles on the stride change
    assert data.get(torch.tensor([0, 2]))[0].shape == (2, data.x.shape[1])  # the long one keeps every column
    torch.manual_seed(0)
    model = Model(ModelConfig(family="llama", vocab_size=tok.vocab_size, n_layers=1, dim=32, n_heads=2,
                              context_length=64)).eval()  # fmt: skip
    torch.testing.assert_close(next_token(model, x, y), next_token(model, data.x[short], data.y[short]))
