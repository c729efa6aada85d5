"""The prompt-to-text API: encoding, context limits, stop rules, seeds, streaming, bad input."""

from __future__ import annotations

import pytest

from tests.generate.conftest import SHAPES, random_model
from tinylm.errors import TinyLMError
from tinylm.generate import Generator, generate
from tinylm.tokenizer import CharTokenizer

TOK = CharTokenizer(list(" abcdefghijklmnopqrstuvwxyz.,!?ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n-'\"éüö:;()"))
CFG = SHAPES["llama-gqa"].replace(vocab_size=TOK.vocab_size, context_length=64)


@pytest.fixture(scope="module")
def gen() -> Generator:
    return Generator.from_model(random_model(CFG), TOK)


def test_streaming_equals_the_completion_and_the_decoded_ids(gen: Generator) -> None:
    for opts in (dict(temperature=0), dict(seed=3, top_k=20)):
        pieces = list(gen.stream("The cat", 40, **opts))
        c = gen.generate("The cat", 40, **opts)
        assert "".join(pieces) == c.text == TOK.decode(c.ids)
        assert len(c.ids) == 40 and c.finish_reason == "length"


def test_same_seed_same_text_other_seed_other_text(gen: Generator) -> None:
    a = gen.generate("Once", 30, seed=11, temperature=1.0).text
    assert a == gen.generate("Once", 30, seed=11, temperature=1.0).text
    assert a != gen.generate("Once", 30, seed=12, temperature=1.0).text


def test_a_seeded_batch_row_is_independent_of_the_others(gen: Generator) -> None:
    alone = gen.generate("Once", 20, seed=5).ids
    batch = gen.generate(["Once", "Twice upon", "x"], 20, seed=5)
    assert batch[0].ids == alone and batch[1].ids != alone


def test_text_prompts_start_with_the_document_start_token(gen: Generator) -> None:
    assert gen.encode("ab") == [TOK.eos_id, *TOK.encode("ab")]  # no BOS: EOS separates documents
    assert gen.encode("") == gen.encode([]) == [TOK.eos_id]
    assert gen.encode([3, 4]) == [3, 4]


def test_stop_token_ends_a_row_and_is_left_out(gen: Generator) -> None:
    free = gen.generate("abc", 30, temperature=0, stop_ids=[])
    stop_at = free.ids[5]
    c = gen.generate("abc", 30, temperature=0, stop_ids=[stop_at])
    first = free.ids.index(stop_at)
    assert c.ids == free.ids[:first] and c.finish_reason == "stop"


def test_stop_string_cuts_the_text(gen: Generator) -> None:
    free = gen.generate("abc", 30, temperature=0).text
    stop = free[6:8]
    c = gen.generate("abc", 30, temperature=0, stop=[stop])
    assert c.text == free[: free.index(stop)] and c.finish_reason == "stop"


def test_max_new_tokens_defaults_to_filling_the_context(gen: Generator) -> None:
    c = gen.generate("abcd", temperature=0, stop_ids=[])
    # up to the last position: the last new token is never fed back, so it needs no position
    assert len(c.prompt_ids) + len(c.ids) == CFG.context_length + 1


def test_truncate_keeps_the_end_of_a_long_prompt(gen: Generator) -> None:
    long = "ab" * 40
    with pytest.raises(TinyLMError, match="--truncate"):
        gen.generate(long, 10)
    c = gen.generate(long, 10, truncate=True, temperature=0)
    assert c.prompt_ids == gen.encode(long)[-(CFG.context_length - 10 + 1) :]
    assert len(gen.generate(long, truncate=True, temperature=0).prompt_ids) == CFG.context_length // 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: g.generate("abc", 0), "at least 1"),
        (lambda g: g.generate([1, 999], 5), "outside the vocabulary"),
        (lambda g: g.generate("abc", 5, temperature=-1), "temperature"),
        (lambda g: g.generate([], 5), "no prompts"),
        (lambda g: g.generate("a" * 70, 5), "shorten"),
    ],
)
def test_bad_input_is_one_clear_line(gen: Generator, call, message: str) -> None:
    with pytest.raises(TinyLMError, match=message):
        call(gen)


def test_without_a_tokenizer_ids_work_and_text_is_refused() -> None:
    gen = Generator.from_model(random_model(CFG))
    c = gen.generate([1, 2, 3], 5, temperature=0)
    assert len(c.ids) == 5 and c.text is None
    with pytest.raises(TinyLMError, match="--ids"):
        gen.generate("hello", 5)
    with pytest.raises(TinyLMError, match="no BOS or EOS"):
        gen.generate([[]], 5)


def test_unknown_engine(tmp_path) -> None:
    with pytest.raises(TinyLMError, match="unknown engine"):
        Generator.load(tmp_path, engine="jax")


def test_checkpoint_round_trip_with_both_engines(save_random) -> None:
    path = save_random(CFG, TOK)
    texts = {
        e: generate(path, "The dog", 25, engine=e, temperature=0, stop_ids=[]) for e in ("torch", "numpy")
    }
    assert texts["torch"] == texts["numpy"] and len(texts["torch"]) > 10


def test_two_generations_interleaved_on_one_generator_equal_each_alone(gen: Generator) -> None:
    """Each generation owns its rows: stepping one advances the other without changing either."""
    alone = [gen.generate(p, 30, temperature=0, stop_ids=[]).ids for p in ("The cat", "Once upon")]
    a, b = gen.start("The cat", 30, temperature=0, stop_ids=[]), gen.start("Once upon", 30, temperature=0, stop_ids=[])
    ia, ib = iter(a), iter(b)
    for _ in range(5):
        next(ia)
    for _ in zip(ia, ib, strict=False):
        pass
    for _ in ib:
        pass
    for _ in ia:
        pass
    assert [a.completions[0].ids, b.completions[0].ids] == alone


def test_abandoned_stream_gives_its_row_back(gen: Generator) -> None:
    pieces = gen.stream("abc", 30, temperature=0)
    next(pieces)
    pieces.close()
    gen.scheduler.step()
    assert not gen.scheduler.active and not gen.scheduler.queue
