"""Serving under load: `tinylm serve` on loopback, 1/4/16/64 concurrent streaming clients.

A stories15M-shaped checkpoint (random weights, the Llama 2 tokenizer from ../shared/data) is served by
a `tinylm serve` subprocess; for each concurrency, that many client threads each stream a greedy
completion of --tokens tokens at once. Per level: aggregate tokens/s (all tokens / wall time), time to
first token and inter-token latency (p50/p95 over all clients), failures. The baseline is `tinylm
sample` on the same checkpoint in the same run: 1 stream through HTTP vs the bare decode loop.

python benchmarks/bench_serve.py
python benchmarks/bench_serve.py --clients 1 4 16 --tokens 64 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT.parent / "shared" / "data" / "llama2_tokenizer" / "tokenizer.model"
PROMPTS = ["Once upon a time", "The little dog", "One day, a girl named Lily", "Tom and his mom went to the"]


@dataclass
class Stream:
    ttft: float = 0.0  # seconds from sending the request to the first text
    gaps: list[float] = field(default_factory=list)  # seconds between text chunks
    tokens: int = 0  # completion tokens (from the usage chunk)
    error: str | None = None


def make_checkpoint(directory: Path, tokenizer: Path) -> Path:
    import torch

    from tinylm.checkpoint import save_checkpoint
    from tinylm.config import get_preset
    from tinylm.model import Model
    from tinylm.tokenizer import SentencePieceTokenizer

    torch.manual_seed(0)
    return save_checkpoint(directory / "stories15M-random", Model(get_preset("stories15M")),
                           SentencePieceTokenizer.from_file(tokenizer))  # fmt: skip


def stream_one(port: int, prompt: str, tokens: int) -> Stream:
    """One streamed greedy completion over a raw HTTP connection (light on the client's CPU)."""
    out, body = Stream(), {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
                           "stream_options": {"include_usage": True}}  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = last = time.perf_counter()
    try:
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            out.error = f"{resp.status} {resp.read()[:200]!r}"
            return out
        for line in resp:
            if not line.startswith(b"data: {"):
                continue
            chunk, now = json.loads(line[6:]), time.perf_counter()
            if chunk.get("usage"):
                out.tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"][0]["text"]:
                if out.ttft:
                    out.gaps.append(now - last)
                else:
                    out.ttft = now - start
                last = now
    except OSError as e:
        out.error = str(e)
    finally:
        conn.close()
    return out


def load_level(port: int, clients: int, tokens: int) -> dict:
    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        streams = list(pool.map(lambda i: stream_one(port, PROMPTS[i % len(PROMPTS)], tokens), range(clients)))
        wall = time.perf_counter() - start
    ok = [s for s in streams if s.error is None]
    gaps = [g for s in ok for g in s.gaps]
    return {"tok_s": sum(s.tokens for s in ok) / wall, "failed": len(streams) - len(ok),
            "decode_tok_s": np.mean([len(s.gaps) / sum(s.gaps) for s in ok if s.gaps]) if gaps else np.nan,
            "ttft": np.percentile([s.ttft for s in ok], [50, 95]) * 1000 if ok else [np.nan] * 2,
            "itl": np.percentile(gaps, [50, 95]) * 1000 if gaps else [np.nan] * 2,
            "errors": [s.error for s in streams if s.error][:2]}  # fmt: skip


def sample_tok_s(ckpt: Path, tokens: int, threads: int) -> float:
    """`tinylm sample`'s own decode tokens/s (greedy, one prompt, the same length)."""
    out = subprocess.run([sys.executable, "-m", "tinylm", "sample", str(ckpt), PROMPTS[0], "-n", str(tokens),
                          "--temperature", "0", "--threads", str(threads)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return float(re.search(r"decode: \d+ tokens at ([\d,.]+) tok/s", out.stderr).group(1).replace(",", ""))


def serve(ckpt: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "tinylm", "serve", str(ckpt), "--port", str(port),
                             "--max-batch", str(args.max_batch), "--threads", str(args.threads)])  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not come up within 120 s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--tokens", type=int, default=64, help="tokens per stream (default 64)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each level (default 2): the table shows min-max")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the server and of `tinylm sample` (default 1: on a shared 2-core machine "
                        "a second thread fights other processes for the core)")  # fmt: skip
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--tokenizer", type=Path, default=TOKENIZER, help="a SentencePiece tokenizer.model (32,000 pieces)")
    args = p.parse_args()
    if not args.tokenizer.is_file():
        raise SystemExit(f"{args.tokenizer} not found; pass --tokenizer path/to/llama2/tokenizer.model")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp), args.tokenizer)
        base = [sample_tok_s(ckpt, args.tokens, args.threads) for _ in range(args.repeats)]
        proc = serve(ckpt, args.port, args)
        try:
            stream_one(args.port, PROMPTS[0], 8)  # warm-up
            rows = {c: [load_level(args.port, c, args.tokens) for _ in range(args.repeats)] for c in args.clients}
        finally:
            proc.terminate()
            proc.wait(30)
    print_table(rows, base, args)


def span(values, fmt: str = "{:,.0f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def print_table(rows: dict[int, list[dict]], base: list[float], args: argparse.Namespace) -> None:
    print(f"\nstories15M shape, random weights, {args.tokens} greedy tokens per stream, --max-batch {args.max_batch}, "
          f"--threads {args.threads}; min-max over {args.repeats} runs (a shared, loaded machine: read ranges)")  # fmt: skip
    print(f"{'clients':>7} | {'agg tok/s':>11} | {'x 1 stream':>10} | {'TTFT p50 ms':>11} | {'TTFT p95 ms':>11} | "
          f"{'ITL p50 ms':>10} | {'ITL p95 ms':>10} | failed")  # fmt: skip
    one = np.mean([r["tok_s"] for r in rows.get(1, rows[min(rows)])])
    for c, runs in rows.items():
        print(f"{c:>7} | {span([r['tok_s'] for r in runs]):>11} | {span([r['tok_s'] / one for r in runs], '{:.1f}'):>10} | "
              f"{span([r['ttft'][0] for r in runs]):>11} | {span([r['ttft'][1] for r in runs]):>11} | "
              f"{span([r['itl'][0] for r in runs], '{:.1f}'):>10} | {span([r['itl'][1] for r in runs], '{:.1f}'):>10} | "
              f"{sum(r['failed'] for r in runs)}")  # fmt: skip
        for e in {e for r in runs for e in r["errors"]}:
            print(f"        error: {e}")
    if 1 in rows:  # decode speed alone: tokens after the first over the time between them
        http = [r["decode_tok_s"] for r in rows[1]]
        print(f"\n1 stream decode: through HTTP {span(http)} tok/s vs `tinylm sample` {span(base)} tok/s "
              f"-> serving keeps {span([h / b for h in http for b in base], '{:.0%}')} of the bare loop")  # fmt: skip


if __name__ == "__main__":
    main()
