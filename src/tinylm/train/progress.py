"""A run's folder, counters and saved state: the torch-free part, shared by both trainers
(tinylm.train.trainer and tinylm.nptrain.trainer), so either resumes the other's run.

In a checkpoint directory beside the weights (tinylm.train.state writes and restores the torch parts):
  train_state.json       TrainConfig, counters, optimizer hyper-parameters, GradScaler, Python/NumPy RNG
  optimizer.safetensors  AdamW moments and step counts, named "<param index>.<state name>"
  rng.safetensors        generator states as uint8 tensors ("batches": the data position)
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tinylm.errors import TinyLMError
from tinylm.fields import from_json
from tinylm.fileio import recover_dir
from tinylm.train.config import TrainConfig
from tinylm.train.metrics import METRICS_FILE

LAST, BEST, PLOT_FILE = "last", "best", "loss.png"  # in the run folder (--out)
STATE_FILE = "train_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"


@dataclass
class Progress:
    """The counters of a run."""

    step: int = 0  # optimizer steps taken
    max_steps: int = 0  # planned length (fitted to the clock when TrainConfig.minutes is set)
    tokens: int = 0  # training tokens seen, all processes
    seconds: float = 0.0  # training wall time, all sessions
    best_val_loss: float | None = None
    bad_steps: int = 0  # NaN/inf losses in a row
    data_size: int = 0  # examples in the training set (a resumed run must see the same data)

    def advance(self, tokens: int, seconds: float) -> None:
        """Count one optimizer step of `tokens` tokens; `seconds` is the run's training time so far."""
        self.step += 1
        self.tokens += tokens
        self.seconds = seconds

    def record(self, loss: float, lr: float, grad_norm: float, tok_s: float) -> dict:
        """The metrics-log line of a training step (both trainers write the same fields)."""
        return {"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": self.tokens,
                "tok_s": tok_s, "time": round(self.seconds, 2)}  # fmt: skip


@dataclass
class Saved:
    """A run's saved state, read back from a checkpoint directory (either trainer's); each trainer's
    subclass restores its optimizer and data order from it."""

    path: Path
    cfg: TrainConfig
    progress: Progress
    raw: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> Saved:
        f = recover_dir(path) / STATE_FILE  # a save interrupted by a crash is finished first
        if not f.is_file():
            raise TinyLMError(f"{path}: no {STATE_FILE}, so no run to resume here; check --out "
                              "(or start a new run with --overwrite)")  # fmt: skip
        try:
            raw = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TinyLMError(f"{f}: unreadable training state ({e}); restore it or start a new run") from None
        if not isinstance(raw, dict) or not {"train_config", "progress"} <= raw.keys():
            raise TinyLMError(f"{f}: not a training state (no train_config/progress); restore it or start a new run")
        cfg = TrainConfig.from_dict(raw["train_config"], source=f"{f}: train_config")
        progress = from_json(Progress, raw["progress"], f"{f}: progress")
        negative = [k for k, v in dataclasses.asdict(progress).items() if isinstance(v, int | float) and v < 0]
        if negative:
            raise TinyLMError(f"{f}: progress {', '.join(negative)} negative; the file is damaged")
        return cls(path, cfg, progress, raw)


def bad_step(p: Progress, max_bad_steps: int, loss: float, gnorm: float, fixes: str, announce: bool = True) -> None:
    """Count an update skipped for a NaN/inf loss or gradient norm: warn, or stop the run after
    `max_bad_steps` in a row (its last checkpoint stays good). fixes: what to try, for the message."""
    p.bad_steps += 1
    what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {gnorm}"
    if p.bad_steps >= max_bad_steps:
        raise TinyLMError(f"{what} at step {p.step + 1}: {p.bad_steps} non-finite steps in a row, stopping (the last "
                          f"checkpoint is kept); {fixes}")  # fmt: skip
    if announce:
        tqdm.write(f"warning: {what} at step {p.step + 1}; skipped the update ({p.bad_steps} in a row)", file=sys.stderr)


def host_rng() -> dict[str, Any]:
    """Python's and NumPy's global RNG states, as JSON."""
    py, npy = random.getstate(), np.random.get_state()
    return {"python": [py[0], list(py[1]), py[2]], "numpy": [npy[0], npy[1].tolist(), *npy[2:]]}


def restore_host_rng(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def check_new_run(out: Path, resume: bool, overwrite: bool) -> None:
    """Finish a checkpoint swap a crash interrupted, then refuse to start over an existing run unasked."""
    for name in (LAST, BEST):
        recover_dir(out / name)
    if not resume and not overwrite and any((out / n).exists() for n in (LAST, BEST, METRICS_FILE)):
        raise TinyLMError(f"{out} already holds a run; continue it with --resume, replace it with --overwrite, "
                          "or choose another --out")  # fmt: skip


def check_writable(out: Path) -> None:
    """Fail at the start, not at the first checkpoint, when --out cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".tinylm_write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise TinyLMError(f"cannot write to output directory {out} ({e.strerror}); choose another --out") from None
