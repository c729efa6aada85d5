"""The chat template: our ids equal transformers' apply_chat_template on our HF export and the GGUF
export's template renders the same, the loss mask covers exactly each assistant reply and its EOS, and a
conversation starts once, as every pretraining document did (BOS, or <|endoftext|> without one)."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_llama
from tests.formats.conftest import save
from tinylm.chat import check_messages, render, render_for_training
from tinylm.data.prepare import encode_framed
from tinylm.errors import TinyLMError
from tinylm.formats import export_model
from tinylm.formats.hf_folder import write_tokenizer
from tinylm.tokenizer import CharTokenizer, SentencePieceTokenizer, train_tokenizer

transformers = pytest.importorskip("transformers")

CONVERSATIONS = [
    [{"role": "user", "content": "Write a story that uses the words dog, ball and happy."},
     {"role": "assistant", "content": "Once upon a time, a happy dog found a red ball."}],
    [{"role": "system", "content": "  You tell short stories.\n"},
     {"role": "user", "content": "Who is Lily?"},
     {"role": "assistant", "content": "Lily is a girl who likes to play."},
     {"role": "user", "content": "What does she play?\n\n"},
     {"role": "assistant", "content": " She plays with her cat. "}],
    [{"role": "user", "content": "Say nothing."}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "中文 and emoji 😀, tabs\tand  spaces"},
     {"role": "assistant", "content": "OK: 中文 😀"}],
]  # fmt: skip


@pytest.fixture(scope="module")
def stories(shared_data) -> list[str]:
    text = (shared_data / "tinystories_v2_head.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()][:300]


@pytest.fixture(scope="module", params=["llama2", "sentencepiece", "bpe", "bpe-bos"])
def tok(request, shared_data, stories):
    if request.param == "llama2":
        return SentencePieceTokenizer.from_file(shared_data / "llama2_tokenizer" / "tokenizer.model")
    if request.param == "sentencepiece":
        pytest.importorskip("sentencepiece")
        return train_tokenizer("sentencepiece", stories, vocab_size=400)
    return train_tokenizer("bpe", stories, vocab_size=400, bos=request.param == "bpe-bos")


def test_ids_equal_transformers_apply_chat_template(tmp_path, tok):
    write_tokenizer(tok, tmp_path, context_length=256)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    for conv in CONVERSATIONS:
        assert hf.apply_chat_template(conv, tokenize=True, return_dict=False) == render(tok, conv)
        prompt = conv[:-1]
        theirs = hf.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
        assert theirs == render(tok, prompt, add_generation_prompt=True)
    if tok.bos_id is not None:
        assert render(tok, CONVERSATIONS[0]).count(tok.bos_id) == 1  # BOS once: the tokenizer adds no second


def test_a_conversation_starts_as_every_pretraining_document(tok):
    """Shards hold [BOS] text EOS per document, so the token before a document's text is BOS, or the
    previous document's EOS where there is no BOS (GPT-2's <|endoftext|>): a chat starts with that token,
    in training and in generation alike."""
    second = "The cat sat."
    flat, _ = encode_framed(tok, ["A dog ran.", second])
    start = int(flat[-len(tok.encode(second)) - 2])  # before the second document's text (and its EOS)
    for conv in CONVERSATIONS:
        ids, _ = render_for_training(tok, conv)
        prompt = render(tok, conv[:-1], add_generation_prompt=True)
        assert ids[0] == prompt[0] == start and ids[: len(prompt)] == prompt  # generation renders training's prefix
        assert ids[1] != start  # once


def test_template_text_is_what_the_ids_say(tok):
    text = tok.decode(render(tok, CONVERSATIONS[0], add_generation_prompt=False))
    assert text == ("User: Write a story that uses the words dog, ball and happy.\n\n"
                    "Assistant: Once upon a time, a happy dog found a red ball.")  # specials decode to nothing


def test_mask_covers_exactly_the_replies_and_their_eos(tok):
    """Render growing prefixes of a conversation: each reply's tokens are what its turn added after the
    generation prompt, and they are exactly the masked ones."""
    conv = CONVERSATIONS[1]
    ids, mask = render_for_training(tok, conv)
    expected = [False] * len(ids)
    for k, m in enumerate(conv):
        if m["role"] == "assistant":
            start = len(render(tok, conv[:k], add_generation_prompt=True))
            end = len(render(tok, conv[: k + 1]))
            assert ids[end - 1] == tok.eos_id
            assert tok.decode(ids[start:end]).strip() == m["content"].strip()
            expected[start:end] = [True] * (end - start)
    assert mask == expected
    assert sum(mask) > 0 and not any(mask[: len(render(tok, conv[:2], add_generation_prompt=True))])


def test_gguf_template_renders_the_same_ids(tmp_path, tok):
    """llama.cpp renders tokenizer.chat_template with the GGUF's own BOS/EOS token texts; rendered that way
    (Jinja as transformers and llama.cpp's minja set it up) and tokenized with specials parsed, it gives our ids."""
    gguf = pytest.importorskip("gguf")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    save(tmp_path / "ckpt", tiny_llama(vocab_size=tok.vocab_size), tok)
    export_model(tmp_path / "ckpt", "gguf", tmp_path / "m.gguf")
    fields = {name: f.contents() for name, f in gguf.GGUFReader(tmp_path / "m.gguf").fields.items()}
    pieces = fields["tokenizer.ggml.tokens"]
    bos, eos = pieces[fields["tokenizer.ggml.bos_token_id"]], pieces[fields["tokenizer.ggml.eos_token_id"]]
    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        fields["tokenizer.chat_template"])  # fmt: skip
    write_tokenizer(tok, tmp_path / "hf", context_length=256)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    for conv in CONVERSATIONS:
        for gen in (False, True):
            messages = conv[:-1] if gen else conv
            text = template.render(messages=messages, add_generation_prompt=gen, bos_token=bos, eos_token=eos)
            assert hf(text, add_special_tokens=False)["input_ids"] == render(tok, messages, add_generation_prompt=gen)


def test_bad_conversations_are_one_line():
    for bad, words in [([], "non-empty"), ([{"role": "robot", "content": "x"}], "message 1"),
                       ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "may only come first")]:  # fmt: skip
        with pytest.raises(TinyLMError, match=words):
            check_messages(bad)
    no_eos = CharTokenizer(list("ab"))
    no_eos.eos_id = None
    with pytest.raises(TinyLMError, match="without an EOS"):
        render(no_eos, [{"role": "user", "content": "ab"}])
