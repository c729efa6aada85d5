"""Decode speed of quantized weights: tinylm's engines at fp32 and every scheme, beside the
memory-bandwidth bound of each (measured in the same run), and llama.cpp on our GGUF exports of the
same random weights when llama-cpp-python is installed (it is not a tinylm dependency).

Batch 1, greedy, 256 new tokens, 2 threads, random weights of the stories15M and stories110M shapes; the
`activations` column says what each row multiplied its quantized matrices with (the NumPy runtime: int8
blocks of 32 by default, TINYLM_ACTIVATIONS=float32 for the exact path; the torch engine: float32):

Each shape and scheme is measured for tinylm and then at once for llama.cpp (where it has the type), so
that the two see about the same load on a shared machine; the last lines give their ratio. With
--llama2c DIR (a checkout of github.com/karpathy/llama2.c; not a dependency, nothing of it is in this
repository), the fp32 rows are also run by its run.c, compiled here (benchmarks/reference_programs.py),
on our llama2.c export of the same weights: its own "achieved tok/s" (greedy, -t 0), which counts every
token after the first.

python benchmarks/bench_quantize.py
python benchmarks/bench_quantize.py --schemes fp32,q8_0,q4_0 --engines numpy --llama2c ../llama2.c
python benchmarks/bench_quantize.py --shapes stories15M --schemes fp32,q8_0,q4_0 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from reference_programs import compile_program

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


def run_c_rows(checkout: Path, shapes: list[str], tokens: int, threads: int, repeats: int) -> list[tuple[str, str, float, int]]:
    """(shape, "f32", best decode tok/s, file bytes) of llama2.c's run.c on our llama2.c exports."""
    from tinylm.formats import llama2c

    source = checkout / "run.c"
    if not source.is_file():
        raise SystemExit(f"--llama2c {checkout}: no run.c there; give a checkout of https://github.com/karpathy/llama2.c")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        compile_program(source, folder / "run")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        for shape in shapes:
            model, tok = random_model(shape, "f32")
            llama2c.write_model(model, folder / "model.bin", 0)
            (folder / "tokenizer.bin").write_bytes(llama2c.tokenizer_bin(tok))
            best = 0.0
            for _ in range(repeats):
                run = subprocess.run(["./run", "model.bin", "-t", "0", "-n", str(tokens + 1)], cwd=folder, env=env,
                                     capture_output=True, text=True)  # fmt: skip
                found = re.search(r"achieved tok/s: ([\d.]+)", run.stderr)
                if run.returncode != 0 or found is None:
                    raise SystemExit(f"run.c failed ({run.returncode}): {run.stderr[-500:]}")
                best = max(best, float(found[1]))
            rows.append((shape, "f32", best, (folder / "model.bin").stat().st_size))
    return rows


def export_gguf(shape: str, kind: str, folder: Path) -> Path:
    """Random weights of `shape` as GGUF: f32, or quantized by tinylm and written as its blocks."""
    from tinylm.formats import gguf_format

    model, tok = random_model(shape, kind)
    path = folder / f"{shape}-{kind}.gguf"
    gguf_format.write_model(model, tok, path)
    return path


def random_model(shape: str, kind: str) -> tuple[Any, Any]:
    """The benchmark's random weights of `shape` (f32, or quantized by tinylm) and a made-up
    SentencePiece-style vocabulary of its size, as llama.cpp and run.c need one."""
    import torch

    from tinylm.checkpoint import build_model
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
    return model, llama2c_tokenizer(SpVocab(pieces, [0.0] * len(pieces), types, 1, 2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="stories15M,stories110M")
    p.add_argument("--engines", default="numpy,torch")
    p.add_argument("--schemes", default=",".join([bench.FLOAT, *SCHEMES]))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--llama2c", metavar="DIR", help="a checkout of github.com/karpathy/llama2.c: adds run.c's fp32 "
                   "rows (default: not run)")  # fmt: skip
    args = p.parse_args()
    results, rows, run_c, bandwidth = [], [], [], {}
    for shape in args.shapes.split(","):
        for scheme in args.schemes.split(","):
            got, bandwidth = bench.run([shape], args.engines.split(","), [args.threads], args.tokens, 16,
                                       args.repeats, schemes=[scheme])  # fmt: skip
            results += got
            if scheme in GGUF_TYPES:
                rows += llama_cpp_rows([shape], args.tokens, args.threads, args.repeats, [GGUF_TYPES[scheme]])
            if scheme == bench.FLOAT and args.llama2c:
                run_c += run_c_rows(Path(args.llama2c).expanduser(), [shape], args.tokens, args.threads, args.repeats)
    print(bench.format_table(results, bandwidth))
    ours = {(r.shape, GGUF_TYPES.get(r.scheme)): r.decode_tok_s for r in results if r.engine == "numpy"}
    for name, found in (("llama.cpp", rows), ("run.c", run_c)):
        for shape, kind, tok_s, size in found:
            bound = bandwidth[args.threads] * 1e9 / size
            ratio = f"; tinylm NumPy runtime / {name} {ours[shape, kind] / tok_s:.2f}x" if (shape, kind) in ours else ""
            print(f"{name} {shape} {kind}: {tok_s:,.1f} tok/s ({100 * tok_s / bound:.0f}% of the bound for its "
                  f"{size / 1e6:,.0f} MB file){ratio}")  # fmt: skip


if __name__ == "__main__":
    main()
