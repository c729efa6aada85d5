"""The C programs the benchmarks measure tinylm against, built here from checkouts the user names:
llama2.c's `run.c` (bench_quantize.py --llama2c DIR) and llm.c's CPU trainer (bench_train_cpu.py --llmc DIR).
Neither is a dependency and none of either is in this repository (`git clone` them from
github.com/karpathy). Both are compiled as their Makefiles build them for speed: `cc -Ofast -march=native
-fopenmp`.

llm.c: for each measurement its `train_gpt2.c` is copied into a scratch folder, compiled (with -DOMP), and
run on the same GPT-2 shape, weights (written with tinylm's llm.c exporter) and batch size as the other
variants, with `OMP_NUM_THREADS` = the benchmark's threads. Its `main` trains B=4 x T=64 for 40 steps,
sampling text at step 20; three literal edits to that `main` (found or refused, never guessed) set the
batch, the sequence length and a step count below 20, so no sampling runs. What is counted is what
llm.c prints itself, "step N: train loss L (took X ms)": the data batch, forward, backward and AdamW
update of one step. Step 0 is its warm-up and is left out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

MAIN_EDITS = (  # (as llm.c's main has it, what we set), each must occur exactly once
    ("int B = 4;", "int B = {B};"),
    ("int T = 64;", "int T = {T};"),
    ("step <= 40;", "step <= {steps};"),
)
FLAGS = ("-Ofast", "-march=native", "-fopenmp")
MAX_STEPS = 19  # llm.c samples text at step 20, which needs its GPT-2 tokenizer file
STEP_LINE = re.compile(r"step (\d+): train loss ([-\d.naif]+) \(took ([\d.]+) ms\)")


def compile_program(source: Path, binary: Path, *extra: str) -> Path:
    """`source` built into `binary` with FLAGS (and `extra`); one clear line if it does not build."""
    done = subprocess.run(["cc", *FLAGS, *extra, str(source), "-lm", "-o", str(binary)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"compiling {source} failed:\n{done.stderr[-2000:]}")
    return binary


class LlmC:
    """A compiled train_gpt2.c in a scratch folder, ready to train a given model on given tokens."""

    def __init__(self, checkout: Path, model: Any, tokens: np.ndarray, B: int, T: int, threads: int):
        source = checkout / "train_gpt2.c"
        if not source.is_file() or not (checkout / "llmc").is_dir():
            raise SystemExit(f"--llmc {checkout}: no train_gpt2.c and llmc/ there; give a checkout of "
                             "https://github.com/karpathy/llm.c")  # fmt: skip
        from tinylm.data.shards import write_shard
        from tinylm.formats.llmc import write_model

        self.B, self.T, self.threads = B, T, threads
        self.dir = Path(tempfile.mkdtemp(prefix="llmc-"))
        shutil.copytree(checkout / "llmc", self.dir / "llmc")
        self.source = source.read_text()
        for old, _ in MAIN_EDITS:
            if self.source.count(old) != 1:
                raise SystemExit(f"{source}: expected `{old}` once in main (llm.c changed?); "
                                 "use the checkout the benchmark names or update MAIN_EDITS")  # fmt: skip
        write_model(model, self.dir / "gpt2_124M.bin")
        data = self.dir / "dev/data/tinyshakespeare"
        data.mkdir(parents=True)
        write_shard(data / "tiny_shakespeare_train.bin", tokens)
        write_shard(data / "tiny_shakespeare_val.bin", tokens[: 8 * B * T + 1])
        text = self.source
        for old, new in MAIN_EDITS:
            text = text.replace(old, new.format(B=B, T=T, steps=MAX_STEPS))
        (self.dir / "train_gpt2.c").write_text(text)
        self.binary = compile_program(self.dir / "train_gpt2.c", self.dir / "train_gpt2", "-DOMP", "-Wno-unused-result")

    def step_seconds(self) -> list[float]:
        """One run of the binary: the seconds of each step it timed, its warm-up step left out."""
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        done = subprocess.run([str(self.binary)], cwd=self.dir, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"llm.c's train_gpt2 failed ({done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
        steps = [(int(m[1]), float(m[3]) / 1000) for m in STEP_LINE.finditer(done.stdout)]
        return [s for n, s in steps if n > 0]

    def tokens_per_second(self, steps: int) -> float:
        """Tokens/s over at least `steps` timed steps (several runs of the binary where needed)."""
        seconds: list[float] = []
        while len(seconds) < steps:
            timed = self.step_seconds()
            if not timed:
                raise SystemExit("llm.c's train_gpt2 printed no step timings (its output changed?); see STEP_LINE")
            seconds += timed
        return len(seconds) * self.B * self.T / sum(seconds)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
