"""Decode speed of quantized weights: tinylm's engines at fp32 and every scheme, beside the
memory-bandwidth bound of each (measured in the same run), and llama.cpp on our GGUF exports of the
same random weights when llama-cpp-python is installed (it is not a tinylm dependency).

Batch 1, greedy, 256 new tokens, 2 threads, random weights of the stories15M and stories110M shapes; the
`activations` column says what each row multiplied its quantized matrices with (the NumPy runtime: int8
blocks of 32 by default, TINYLM_ACTIVATIONS=float32 for the exact path; the torch engine: float32):

Each shape and scheme is measured for tinylm and then at once for llama.cpp (where it has the type), so
that the two see about the same load on a shared machine; the last lines give their ratio.

python benchmarks/bench_quantize.py
python benchmarks/bench_quantize.py --shapes stories15M --schemes fp32,q8_0,q4_0 --repeats 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tinylm.config import get_preset
from tinylm.generate import bench
from tinylm.quantize import SCHEMES

GGUF_TYPES = {"fp32": "f32", "q8_0": "q8_0", "q4_0": "q4_0"}  # what we export for llama.cpp: float, or our own blocks


def llama_cpp_rows(shapes: list[str], tokens: int, threads: int, repeats: int,
                   kinds: Iterable[str] = GGUF_TYPES.values()) -> list[tuple[str, str, float, int]]:  # fmt: skip
    """(shape, GGUF type, best decode tok/s, file bytes) of llama.cpp on our exports; none without
    llama-cpp-python. A decode step reads every tensor of the file once (the tied head is the embedding)."""
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed: no llama.cpp rows (pip install llama-cpp-python)", file=sys.stderr)
        return []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            for kind in kinds:
                path = export_gguf(shape, kind, Path(tmp))
                llm = llama_cpp.Llama(model_path=str(path), n_threads=threads, n_ctx=tokens + 8, verbose=False)
                best = 0.0
                for _ in range(repeats):
                    llm.reset()
                    token = 1
                    start = time.perf_counter()
                    for _ in range(tokens):  # greedy, one token at a time, as our engines decode
                        llm.eval([token])
                        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                    best = max(best, tokens / (time.perf_counter() - start))
                rows.append((shape, kind, best, path.stat().st_size))
    return rows


def export_gguf(shape: str, kind: str, folder: Path) -> Path:
    """Random weights of `shape` as GGUF: f32, or quantized by tinylm and written as its blocks."""
    import torch

    from tinylm.checkpoint import build_model
    from tinylm.formats import gguf_format
    from tinylm.formats.vocab import BYTE, CONTROL, NORMAL, UNKNOWN, SpVocab, llama2c_tokenizer
    from tinylm.quantize.linear import quantize_model

    cfg = get_preset(shape)
    model = build_model(cfg, {k: torch.from_numpy(v) for k, v in bench.random_weights(cfg).items()})
    if kind != "f32":
        quantize_model(model, kind)
    # llama.cpp needs a vocabulary: unk, bos, eos, 256 bytes, then made-up pieces
    pieces = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    pieces += [f"\u2581t{i}" for i in range(cfg.vocab_size - len(pieces))]
    types = [UNKNOWN, CONTROL, CONTROL, *[BYTE] * 256] + [NORMAL] * (cfg.vocab_size - 259)
    tok = llama2c_tokenizer(SpVocab(pieces, [0.0] * len(pieces), types, 1, 2))
    path = folder / f"{shape}-{kind}.gguf"
    gguf_format.write_model(model, tok, path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="stories15M,stories110M")
    p.add_argument("--engines", default="numpy,torch")
    p.add_argument("--schemes", default=",".join([bench.FLOAT, *SCHEMES]))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    results, rows, bandwidth = [], [], {}
    for shape in args.shapes.split(","):
        for scheme in args.schemes.split(","):
            got, bandwidth = bench.run([shape], args.engines.split(","), [args.threads], args.tokens, 16,
                                       args.repeats, schemes=[scheme])  # fmt: skip
            results += got
            if scheme in GGUF_TYPES:
                rows += llama_cpp_rows([shape], args.tokens, args.threads, args.repeats, [GGUF_TYPES[scheme]])
    print(bench.format_table(results, bandwidth))
    ours = {(r.shape, GGUF_TYPES.get(r.scheme)): r.decode_tok_s for r in results if r.engine == "numpy"}
    for shape, kind, tok_s, size in rows:
        bound = bandwidth[args.threads] * 1e9 / size
        ratio = f"; tinylm NumPy runtime / llama.cpp {ours[shape, kind] / tok_s:.2f}x" if (shape, kind) in ours else ""
        print(f"llama.cpp {shape} {kind}: {tok_s:,.1f} tok/s ({100 * tok_s / bound:.0f}% of the bound for its "
              f"{size / 1e6:,.0f} MB file){ratio}")  # fmt: skip


if __name__ == "__main__":
    main()
