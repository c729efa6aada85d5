"""Many clients at once: continuous batching gives each its solo output; disconnects free rows; a full
queue answers 503; the API key guards every route but /health (and the static page)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.serve.conftest import MODEL, backend, serving
from tests.serve.test_api import post
from tinylm.generate import Generator

CLIENTS = 50
WORDS = ["cat", "dog", "Sun", "rain", "tree", "a", "Hello", "big", "blue sky", "once"]


def prompt(i: int) -> str:
    """Fifty different prompts the character tokenizer can encode."""
    return f"{WORDS[i % len(WORDS)]} {'abcdefghij'[i // len(WORDS)]}" + "!" * (i % 4)


def record_requests(b) -> list:
    """Every scheduler request the backend submits, in order (to see how each one ended)."""
    seen, submit = [], b.scheduler.submit

    def spy(*args, **kwargs):
        seen.append(submit(*args, **kwargs))
        return seen[-1]

    b.scheduler.submit = spy
    return seen


def test_fifty_streaming_clients_get_their_solo_greedy_output(ckpt: Path) -> None:
    gen = Generator.load(ckpt)
    want = {i: gen.generate(prompt(i), 12 + i % 9, temperature=0).text for i in range(CLIENTS)}
    with serving(backend(ckpt, max_batch=16)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)

        def stream(i: int) -> str | int:
            if i == 17:  # a malformed request among them: its own 400, nobody else affected
                return post(url, "/v1/completions", {"prompt": prompt(i), "max_tokens": "many"})[0]
            chunks = client.completions.create(model=MODEL, prompt=prompt(i), max_tokens=12 + i % 9,
                                               temperature=0, stream=True)  # fmt: skip
            return "".join(c.choices[0].text for c in chunks)

        with ThreadPoolExecutor(CLIENTS) as pool:
            got = dict(zip(range(CLIENTS), pool.map(stream, range(CLIENTS), timeout=240), strict=True))
    assert got.pop(17) == 400
    assert got == {i: w for i, w in want.items() if i != 17}


def test_clients_that_disconnect_free_their_rows(ckpt: Path) -> None:
    b = backend(ckpt, delay=0.02, max_batch=4)  # ~1.6 s per 80-token generation: long enough to leave mid-way
    requests = record_requests(b)
    with serving(b) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)

        def leave_early(i: int) -> None:
            if i % 2:  # a non-streamed request whose client gives up waiting
                with pytest.raises(openai.APITimeoutError):
                    client.with_options(timeout=0.5).completions.create(model=MODEL, prompt=prompt(i), max_tokens=80)
                return
            stream = client.completions.create(model=MODEL, prompt=prompt(i), max_tokens=80, temperature=0, stream=True)
            for n, _ in enumerate(stream):
                if n == 2:
                    break
            stream.close()  # drops the connection

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(leave_early, range(4), timeout=120))
        # four new requests need all four rows: had the old ones kept theirs, these would only run after
        # the old ones reached their 80 tokens
        with ThreadPoolExecutor(4) as pool:
            ends = list(pool.map(lambda i: client.completions.create(
                model=MODEL, prompt=prompt(i), max_tokens=10, temperature=0).choices[0].finish_reason, range(4)))  # fmt: skip
    assert set(ends) <= {"length", "stop"} and len(requests) == 8
    assert all(len(r.ids) < 80 for r in requests[:4])


def test_a_full_queue_answers_503_and_the_rest_complete(ckpt: Path) -> None:
    b = backend(ckpt, delay=0.05, max_batch=1, max_queue=1)  # one row, one place in the queue, ~4 s a request
    with serving(b) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        accepted, refused = [], None
        for i in range(3):  # while the first runs, at most one more can wait: the third is refused at the latest
            try:
                accepted.append(client.completions.create(model=MODEL, prompt=prompt(i), max_tokens=80, stream=True))
            except openai.APIStatusError as e:
                refused = e
                break
        texts = ["".join(c.choices[0].text for c in s) for s in accepted]
    assert refused is not None and refused.status_code == 503 and "busy" in refused.message
    assert 1 <= len(accepted) <= 2 and all(texts)


def test_api_key_guards_every_route_but_health(ckpt: Path) -> None:
    with serving(backend(ckpt), api_key="sesame") as url:
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="sesame", max_retries=0)
        bad = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
        assert good.models.list().data[0].id == MODEL
        assert good.completions.create(model=MODEL, prompt="hi", max_tokens=3).usage.completion_tokens >= 1
        for call in (bad.models.list, lambda: bad.completions.create(model=MODEL, prompt="hi"),
                     lambda: bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])):  # fmt: skip
            with pytest.raises(openai.AuthenticationError, match="API key"):
                call()
        code, answer = post(url, "/v1/completions", {"prompt": "hi"})  # no header at all
        assert code == 401 and answer["error"]["code"] == "invalid_api_key"
        assert post(url, "/v1/completions", {"prompt": "hi", "max_tokens": 2}, {"Authorization": "Bearer sesame"})[0] == 200
        import urllib.request

        assert urllib.request.urlopen(url + "/health").status == 200
