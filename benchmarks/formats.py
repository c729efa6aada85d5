"""Export and import speed of every format for a stories15M-sized Llama and a GPT-2 of similar size.
Both read one file and write another, so the baseline, measured in the same run, is copying a tinylm
checkpoint (load_checkpoint + save_checkpoint); "x copy" is the ratio to it.

    python benchmarks/formats.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.config import get_preset
from tinylm.formats import export_model, import_model
from tinylm.model import Model

CASES = {
    "llama (stories15M)": (get_preset("stories15M"), [("hf", {}), ("gguf", {"quant": "f32"}), ("gguf", {"quant": "q8_0"}),
                                                       ("llama2c", {"version": 0}), ("llama2c", {"version": 2})]),
    "gpt2 (6 x 288)": (get_preset("gpt-mini").replace(dim=288, n_heads=6, vocab_size=32000, context_length=256),
                       [("hf", {}), ("gguf", {"quant": "f32"}), ("llmc", {"dtype": "float32"}), ("llmc", {"dtype": "bfloat16"})]),
}  # fmt: skip


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    print(
        f"{'model':<20} {'format':<16} {'MB':>7} {'export s':>9} {'x copy':>7} {'import s':>9} {'x copy':>7}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for label, (cfg, targets) in CASES.items():
            save_checkpoint(d / "ckpt", Model(cfg))
            load_checkpoint(d / "ckpt")  # warm up (first use imports torch's compiler stack)
            copy_s = timed(lambda: save_checkpoint(d / "copy", load_checkpoint(d / "ckpt").model))
            mb = (d / "ckpt" / "model.safetensors").stat().st_size / 1e6
            print(f"{label:<20} {'tinylm copy':<16} {mb:7.1f} {copy_s:9.2f} {1:7.2f} {copy_s:9.2f} {1:7.2f}")
            for target, options in targets:
                name = f"{target} {' '.join(str(v) for v in options.values())}".strip()
                out = d / ("hf" if target == "hf" else "model.gguf" if target == "gguf" else "model.bin")
                ex = timed(lambda t=target, o=options, p=out: export_model(d / "ckpt", t, p, **o))
                size = sum(f.stat().st_size for f in out.rglob("*")) if out.is_dir() else out.stat().st_size
                im = timed(lambda p=out: import_model(p, d / "back"))
                print(
                    f"{'':<20} {name:<16} {size / 1e6:7.1f} {ex:9.2f} {ex / copy_s:7.2f} {im:9.2f} {im / copy_s:7.2f}"
                )


if __name__ == "__main__":
    main()
