"""What `--data` can name: prepared token shards, a text file, or a dataset `prepare` knows.

A text file is prepared into `<out>/data`, a named dataset into the cache (`prepared/<name>-<tokenizer>`),
both with the data engineer's `prepare`, and reused on the next run (and on --resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tinylm.data.download import cache_dir
from tinylm.data.prepare import DATASETS, prepare
from tinylm.data.shards import MANIFEST, Manifest, TokenShards
from tinylm.errors import TinyLMError
from tinylm.tokenizer import PRETRAINED, TRAINABLE, Tokenizer, load_tokenizer, tokenizer_hash

if TYPE_CHECKING:  # the torch trainer's; imported by shard_data, so `tinylm train --engine numpy` needs no torch
    from tinylm.train.trainer import TrainData


def check_data(spec: str | None) -> None:
    """Refuse a missing --data, or one that is no file, folder or dataset name, in one line (a run checks
    before it takes its folder, so that a mistyped path leaves nothing behind)."""
    if spec is None:
        raise TinyLMError("--data is required: a text file, a `tinylm prepare` directory or a dataset name")
    if not (spec in DATASETS or Path(spec).is_file() or Path(spec).is_dir()):
        raise TinyLMError(
            f"--data {spec}: no such file or directory, and not a dataset name ({', '.join(DATASETS)}); "
            "give a text file, a `tinylm prepare` output directory or a dataset name"
        )


def prepared_dir(spec: str, out_dir: str | Path, tokenizer: str, vocab_size: int) -> tuple[Path, bool]:
    """Where the shards for `spec` are (or will be), and whether they still have to be prepared."""
    check_data(spec)
    path = Path(spec)
    if path.is_dir():
        return path, False
    saved = _saved_tokenizer(tokenizer)
    if spec in DATASETS:
        size = vocab_size if tokenizer in ("bpe", "sentencepiece") else ""
        name = f"tok{tokenizer_hash(saved)[:12]}" if saved else f"{tokenizer}{size}"
        where = cache_dir() / "prepared" / f"{spec}-{name}"
    else:
        where = Path(out_dir) / "data"
    if (where / MANIFEST).is_file():
        manifest = Manifest.load(where)
        m = manifest.raw
        kind = {"llama2": "sentencepiece", "gpt2": "tiktoken"}.get(tokenizer, tokenizer)
        same_tokenizer = m.get("tokenizer_kind") == kind and (
            tokenizer not in ("bpe", "sentencepiece") or m.get("vocab_size") == vocab_size
        )
        if saved is not None:  # a saved tokenizer (e.g. a teacher's): the same one, file for file
            there = manifest.tokenizer_dir
            same_tokenizer = there.is_dir() and tokenizer_hash(load_tokenizer(there)) == tokenizer_hash(saved)
        if m.get("sources") in ([spec], [str(path)]) and same_tokenizer:
            return where, False
    return where, True


def _saved_tokenizer(spec: str) -> Tokenizer | None:
    """The tokenizer `spec` names when it is a path to a saved one (not a kind to train or fetch)."""
    if spec in TRAINABLE or spec in PRETRAINED or not Path(spec).exists():
        return None
    return load_tokenizer(spec)


def prepare_data(spec: str, where: Path, tokenizer: str, vocab_size: int, progress: bool = True) -> None:
    print(f"preparing {spec} into {where} ({tokenizer} tokenizer) ...")
    if spec in DATASETS:
        prepare(out=where, dataset=spec, tokenizer=tokenizer, vocab_size=vocab_size, progress=progress)
    else:
        prepare([spec], out=where, tokenizer=tokenizer, vocab_size=vocab_size, progress=progress)


def shard_data(directory: Path, context: int, name: str = "") -> TrainData:
    """Train and val splits of a prepared directory as windows of `context` tokens."""
    from tinylm.train.batches import TokenWindows
    from tinylm.train.trainer import TrainData

    train, val = TokenShards(directory, "train"), TokenShards(directory, "val")
    tok = train.tokenizer if train.manifest is not None else None
    return TrainData(
        TokenWindows(train, context, f"{directory} (train split)"),
        TokenWindows(val, context, f"{directory} (validation split; prepare with a larger --val-fraction)"),
        tok,
        name or directory.name,
    )
