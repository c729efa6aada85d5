"""`tinylm prepare`: text files or a named dataset -> cleaned, deduplicated token shards + tokenizer."""

from __future__ import annotations

import argparse

NAME = "prepare"
ORDER = 20
HELP = "turn text into deduplicated token shards (and train or load a tokenizer)"
EXAMPLES = """
tinylm prepare --dataset pystdlib --out data/pystdlib            # offline: this Python's stdlib, BPE 4096
tinylm prepare --dataset tinystories --tokenizer sentencepiece --vocab-size 4096 --out data/ts
tinylm prepare --dataset shakespeare --tokenizer char --no-dedup --out data/shakespeare_char
tinylm prepare notes/*.txt books/ --separator blank --tokenizer gpt2 --out data/mine
tinylm prepare corpus.jsonl.gz --text-field content --tokenizer path/to/tokenizer.model --out data/c
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", help="text/JSONL files (.gz too), directories or glob patterns")
    p.add_argument(
        "--dataset",
        help="a named corpus instead of files: tinystories, tinystories-train, shakespeare, pystdlib, pydocs (Python's help text)",
    )
    p.add_argument("--out", required=True, help="output directory (replaced as a whole when done)")
    p.add_argument(
        "--tokenizer",
        default="bpe",
        help="bpe | sentencepiece | char (trained here), llama2 | gpt2 (published), or a path to a saved "
        "tokenizer directory, tokenizer.model or tokenizer.bin (default: bpe)",
    )
    p.add_argument(
        "--vocab-size", type=int, default=4096, help="vocabulary size for a trained tokenizer (default 4096)"
    )
    p.add_argument(
        "--bos", action="store_true", help="give a trained BPE tokenizer a BOS token, prepended to documents"
    )
    p.add_argument(
        "--separator",
        default="auto",
        help="how text files split into documents: auto (<|endoftext|> if present, else blank lines), blank, "
        "line, eot, file (whole file), or any literal string",
    )
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--no-dedup", action="store_true", help="keep exact and near duplicates")
    p.add_argument("--no-near-dedup", action="store_true", help="remove exact duplicates only")
    p.add_argument(
        "--dedup-threshold", type=float, default=0.8, help="Jaccard similarity of a near duplicate (0.8)"
    )
    p.add_argument("--dedup-perms", type=int, default=128, help="MinHash permutations (128)")
    p.add_argument(
        "--dedup-bands", type=int, default=None, help="LSH bands (default: chosen from the threshold)"
    )
    p.add_argument("--dedup-ngram", type=int, default=2, help="words per shingle (2)")
    p.add_argument(
        "--dedup-verify",
        default="exact",
        choices=["exact", "estimate"],
        help="confirm LSH candidates by exact Jaccard (default) or the MinHash estimate (less memory on huge corpora)",
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.05, help="share of documents for validation (0.05)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    p.add_argument("--max-mb", type=float, default=None, help="read at most this many MB of text")
    p.add_argument(
        "--dtype", default="auto", choices=["auto", "uint16", "uint32"], help="token dtype in shards"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="tokenising processes (default: by tokenizer kind)"
    )


def run(args: argparse.Namespace) -> int:
    from tinylm.data.minhash import MinHashConfig
    from tinylm.data.prepare import prepare, summary_table
    from tinylm.errors import TinyLMError

    if not 0 < args.dedup_threshold <= 1:
        raise TinyLMError(f"--dedup-threshold must be in (0, 1], not {args.dedup_threshold}")
    if args.dedup_bands is not None and not 0 < args.dedup_bands <= args.dedup_perms:
        raise TinyLMError(f"--dedup-bands must be between 1 and --dedup-perms ({args.dedup_perms})")
    if args.dedup_perms < 1 or args.dedup_ngram < 1:
        raise TinyLMError("--dedup-perms and --dedup-ngram must be at least 1")
    manifest = prepare(
        args.inputs,
        args.out,
        dataset=args.dataset,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        bos=args.bos,
        separator=args.separator,
        text_field=args.text_field,
        dedup=not args.no_dedup,
        near_dedup=not args.no_near_dedup,
        minhash=MinHashConfig(
            threshold=args.dedup_threshold,
            num_perm=args.dedup_perms,
            bands=args.dedup_bands,
            ngram=args.dedup_ngram,
            verify=args.dedup_verify,
        ),
        val_fraction=args.val_fraction,
        seed=args.seed,
        max_mb=args.max_mb,
        dtype=args.dtype,
        workers=args.workers,
    )
    print(summary_table(manifest))
    print(f"wrote {manifest.directory}")
    return 0
