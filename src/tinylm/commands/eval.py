"""`tinylm eval`: perplexity, bits per byte and KL divergence of checkpoints on the same text, one table."""

from __future__ import annotations

import argparse

from tinylm.threads import add_threads_argument

NAME = "eval"
ORDER = 55
HELP = "Score checkpoints on held-out text: perplexity, bits per byte, KL divergence from a reference."
EXAMPLES = """
  tinylm eval runs/stories15M --data tinystories
  tinylm eval runs/a runs/b --data data/ts                       # a prepared folder's val split
  tinylm eval runs/a runs/a-q8 --data notes/ --reference runs/a   # KL and top-1 agreement vs runs/a
  tinylm eval runs/a --data val.txt --protocol sliding --stride 64 --max-tokens 0
  tinylm eval runs/a runs/gpt2-bpe --data val.txt --protocol documents --markdown results.md
  tinylm eval runs/a --data val.txt --engine numpy --json -

protocols (see tinylm/eval/protocols.py):
  windows    non-overlapping windows of the context length over the document stream
  sliding    windows every --stride tokens; each token scored once, with more context
  documents  each document on its own (never across a boundary); compares different tokenizers
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", help="checkpoint directories to score (one table row each)")
    p.add_argument("--data", required=True,
                   help="text/JSONL file, folder or glob; a dataset name (tinystories, shakespeare, pystdlib, "
                        "...); or a folder from `tinylm prepare` (its validation split)")  # fmt: skip
    p.add_argument("--protocol", default="windows", help="windows (default), sliding or documents")
    p.add_argument("--context", type=int, default=None, help="window length in tokens (default: each model's context)")
    p.add_argument("--stride", type=int, default=None,
                   help="sliding/documents: tokens between window starts (default: the window length)")  # fmt: skip
    p.add_argument("--reference", default=None, help="checkpoint to compare against: KL(ref || model) and top-1 agreement")
    p.add_argument("--max-tokens", type=int, default=100_000,
                   help="score at most this many tokens per model (default 100000; 0: all of the data)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--engine", default="torch", help="torch (default) or numpy (the NumPy runtime)")
    p.add_argument("--device", default="cpu", help="torch engine device: cpu or cuda (default cpu)")
    add_threads_argument(p)
    p.add_argument("--separator", default="auto",
                   help="how text files split into documents, as `tinylm prepare` (default auto)")  # fmt: skip
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--split", default="val", help="split of a prepared folder to score (default val)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH (-: print instead of the table)")
    p.add_argument("--markdown", metavar="PATH", help="also write a Markdown table to PATH (-: print instead)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tinylm.threads import use_threads

    use_threads(args.threads)  # before torch or NumPy start their thread pools
    from tinylm.errors import TinyLMError
    from tinylm.eval import Protocol, evaluate_models, load_documents
    from tinylm.eval.report import markdown, table, to_json
    from tinylm.fileio import write_text

    protocol = Protocol(args.protocol, args.context, args.stride)
    docs = load_documents(args.data, args.separator, args.text_field, args.split)
    results = evaluate_models(
        args.checkpoints, docs, protocol=protocol, reference=args.reference, engine=args.engine,
        device=args.device, batch_size=args.batch_size, max_tokens=args.max_tokens or None, progress=not args.quiet,
    )  # fmt: skip
    outputs = {args.json: to_json(results, str(args.data)), args.markdown: markdown(results, str(args.data))}
    if "-" not in outputs:
        print(table(results, str(args.data)))
    for path, text in outputs.items():
        if path == "-":
            print(text)
        elif path is not None:
            try:
                write_text(path, text + "\n")
            except OSError as e:
                raise TinyLMError(f"cannot write {path}: {e.strerror}; choose another path") from None
    return 0
