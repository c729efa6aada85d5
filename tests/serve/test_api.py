"""The OpenAI routes, driven by the official `openai` client against a real server on loopback."""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from tests.serve.conftest import MODEL, TOK, backend, serving
from tinylm.checkpoint import load_checkpoint
from tinylm.generate import Generator
from tinylm.serve.app import MAX_BODY
from tinylm.serve.chat_template import CHAT_STOP, render_chat

PROMPTS = ["Once upon a time", "the cat sat", "Hello, World!", "q"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there, how are you?"}]


@pytest.fixture(scope="module")
def gen(ckpt: Path) -> Generator:
    return Generator.load(ckpt)


def post(url: str, path: str, body: bytes | dict, headers: dict | None = None) -> tuple[int, dict]:
    """Status and JSON of a raw POST (for bodies the openai client would never send)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_models_lists_the_checkpoint_with_its_context(client, url: str) -> None:
    cards = client.models.list().data
    assert [c.id for c in cards] == [MODEL] and cards[0].context_length == 96
    assert json.load(urllib.request.urlopen(url + "/health")) == {"status": "ok"}


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_completion_equals_generator_and_counts_usage(client, gen: Generator, prompt: str) -> None:
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=30, temperature=0)
    want = gen.generate(prompt, 30, temperature=0)
    assert r.choices[0].text == want.text and r.choices[0].finish_reason == want.finish_reason
    assert r.usage.prompt_tokens == len(gen.encode(prompt))
    assert r.usage.completion_tokens == len(want.ids) and r.usage.total_tokens == len(gen.encode(prompt)) + len(want.ids)


def test_streamed_completion_has_one_id_a_finish_and_a_usage_chunk(client, gen: Generator) -> None:
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=25, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("cmpl-")
    *body, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == 25
    assert all(c.usage is None for c in body)
    assert [c.choices[0].finish_reason for c in body][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in body[:-1])
    assert "".join(c.choices[0].text for c in body) == gen.generate(PROMPTS[0], 25, temperature=0).text


def test_chat_greedy_equals_generator_on_the_template(client, gen: Generator) -> None:
    want = gen.generate(render_chat(CHAT, TOK), 30, temperature=0, stop=CHAT_STOP)
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=30, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want.text
    assert r.usage.prompt_tokens == len(render_chat(CHAT, TOK)) and r.usage.completion_tokens == len(want.ids)

    chunks = list(client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=30,
                                                 temperature=0, stream=True))  # fmt: skip
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].choices[0].delta.content
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want.text
    assert chunks[-1].choices[0].finish_reason == want.finish_reason


def test_stop_string_ends_the_text_and_never_leaks(client, gen: Generator) -> None:
    full = gen.generate(PROMPTS[1], 40, temperature=0).text
    stop = full[12:15]  # spans several (character) tokens, so it is only seen whole after the last one
    want = full[: full.find(stop)]
    r = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=40, temperature=0, stop=[stop, "zzzz"])
    assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
    pieces = [c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt=PROMPTS[1], max_tokens=40, temperature=0, stop=stop, stream=True)]  # fmt: skip
    assert "".join(pieces) == want and stop not in "".join(pieces)


def test_seed_repeats_a_sampled_completion(client, gen: Generator) -> None:
    def sample(seed: int, n: int = 1) -> list[str]:
        r = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=40, temperature=1.5, seed=seed, n=n)
        return [c.text for c in sorted(r.choices, key=lambda c: c.index)]

    first = sample(7, n=3)
    assert sample(7, n=3) == first and sample(7) == first[:1]
    assert first[0] == gen.generate(PROMPTS[0], 40, temperature=1.5, seed=7).text  # as `tinylm sample --seed 7`
    assert len(set(first)) > 1  # the n choices draw from different streams
    assert sample(8) != first[:1]


def test_logprobs_are_the_models_log_softmax(client, ckpt: Path) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPTS[2], max_tokens=20, temperature=1.0, seed=1, logprobs=5)
    lp = r.choices[0].logprobs
    ids = [TOK.encode(t)[0] if t else TOK.eos_id for t in lp.tokens]
    model = load_checkpoint(ckpt).model
    prompt = [TOK.eos_id, *TOK.encode(PROMPTS[2])]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ids]))[0, len(prompt) - 1 : -1]  # (T, vocab): predicts each new id
    logp = torch.log_softmax(logits.double(), -1)
    assert lp.token_logprobs == pytest.approx(logp[torch.arange(len(ids)), torch.tensor(ids)].tolist(), abs=1e-3)
    for t, (token, chosen, top) in enumerate(zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True)):
        assert sorted(top.values(), reverse=True) == pytest.approx(logp[t].topk(5).values.tolist(), abs=1e-3)
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-6
        if token in top:
            assert top[token] == pytest.approx(chosen)
    assert lp.text_offset == list(range(len(ids)))  # one character per token


def test_chat_logprobs_of_greedy_tokens_are_the_top_ones(client) -> None:
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=10, temperature=0, logprobs=True,
                                       top_logprobs=3)  # fmt: skip
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob) and t.bytes == list(t.token.encode())


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"prompt": "hi", "max_tokens": ', 400, "not valid JSON"),
        ({"prompt": "hi", "temperature": "hot"}, 400, "temperature"),
        ({"prompt": "hi", "max_tokens": "10"}, 400, "max_tokens"),
        ({"prompt": "hi", "n": 0}, 400, "n:"),
        ({"max_tokens": 5}, 400, "prompt"),
        ({"prompt": "a" * 200}, 400, "context holds 96"),
        ({"prompt": "hi", "max_tokens": 95}, 400, "at most 93"),
        ({"prompt": "hi", "presence_penalty": 0.5}, 400, "presence_penalty is not supported"),
        ({"prompt": "hi", "echo": True}, 400, "echo"),
        ({"prompt": "hi €"}, 400, "not in this character-level vocabulary"),
        ({"prompt": "hi", "model": "gpt-4"}, 404, "does not exist"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(url: str, body, status: int, says: str) -> None:
    code, answer = post(url, "/v1/completions", body)
    assert code == status and says in answer["error"]["message"]
    assert set(answer["error"]) == {"message", "type", "param", "code"}


def test_a_body_past_the_limit_is_refused(url: str) -> None:
    """413 whether the size is announced (refused before reading) or only seen while reading."""
    host, port = url.removeprefix("http://").split(":")
    for headers, body in [({"Content-Length": str(2 << 20)}, b"{}"), ({"Transfer-Encoding": "chunked"}, None)]:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        if body is None:  # a chunked body one chunk over the limit, all sent before the answer is read
            chunk = b'{"prompt": "' + b"a" * MAX_BODY + b'"}'
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
        conn.putrequest("POST", "/v1/completions")
        for k, v in {"Content-Type": "application/json", **headers}.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        assert resp.status == 413 and "larger than" in json.load(resp)["error"]["message"]
        conn.close()


def test_chat_errors(url: str) -> None:
    assert post(url, "/v1/chat/completions", {"messages": []})[0] == 400
    code, answer = post(url, "/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]})
    assert code == 400 and "messages.0.role" in answer["error"]["message"]
    code, answer = post(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi " * 40}]})
    assert code == 400 and answer["error"]["code"] == "context_length_exceeded"
    code, answer = post(url, "/v1/nothing", {})
    assert code == 404 and "error" in answer


def test_numpy_engine_serves_the_same_greedy_text(ckpt: Path, gen: Generator) -> None:
    with serving(backend(ckpt, engine="numpy")) as url:
        code, answer = post(url, "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 30, "temperature": 0})
    assert code == 200 and answer["choices"][0]["text"] == gen.generate(PROMPTS[0], 30, temperature=0).text
