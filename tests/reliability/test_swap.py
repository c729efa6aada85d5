"""A crash at every step of a checkpoint save: the newest complete checkpoint is always found, never deleted,
and what the crash left behind is cleaned up by the next save."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_llama
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.fileio import recover_dir
from tinylm.model import Model

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child mid-save")
WATCHED = {"fsync": os, "replace": os, "rmtree": shutil}  # every durable step of a save


def model(seed: int) -> Model:
    torch.manual_seed(seed)
    return Model(tiny_llama())


def same(a: Model, b: Model) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def save_in_child(path: Path, m: Model, die_at: int | None, log: Path) -> int:
    """Save `m` in a forked child that dies (os._exit, like kill -9) just before its `die_at`-th durable
    step; the steps it took are written to `log`. Returns the child's exit code."""
    pid = os.fork()
    if pid == 0:  # child: never returns
        steps = []

        def watch(name: str, real):
            def step(*args, **kw):
                steps.append(f"{name} {' '.join(Path(str(a)).name for a in args[:2] if isinstance(a, str | Path))}")
                log.write_text("\n".join(steps[:-1]))
                if len(steps) == die_at:
                    os._exit(9)
                return real(*args, **kw)

            return step

        for name, mod in WATCHED.items():
            setattr(mod, name, watch(name, getattr(mod, name)))
        try:
            save_checkpoint(path, m)
            log.write_text("\n".join(steps))
            os._exit(0)
        except BaseException:
            os._exit(3)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_kill_at_every_step_of_a_save_loses_nothing(tmp_path):
    old, new, later = model(1), model(2), model(3)
    ckpt, log = tmp_path / "run" / "last", tmp_path / "steps.log"
    n_steps = None
    die_at = 1
    while n_steps is None or die_at <= n_steps:
        shutil.rmtree(ckpt.parent, ignore_errors=True)
        save_checkpoint(ckpt, old)
        code = save_in_child(ckpt, new, die_at, log)
        if code == 0:  # the save finished: every step was tried
            n_steps = len(log.read_text().splitlines())
            assert n_steps >= 5, log.read_text()
        else:
            assert code == 9, f"child failed at step {die_at}"
        done = log.read_text().splitlines()
        # new from the moment it is complete under its ".new" name (or in place)
        expect = new if any(s.startswith("replace") and s.endswith((".last.new", " last")) for s in done) else old
        assert any(same(load_checkpoint(ckpt).model, m) for m in (old, new))  # a reader finds one of them
        recover_dir(ckpt)  # what the next save, or `train --resume` under the run's lock, does first
        assert same(load_checkpoint(ckpt).model, expect), f"killed before step {die_at}: {done[-1:]}"
        save_checkpoint(ckpt, later)  # the next save cleans up whatever the crash left
        assert same(load_checkpoint(ckpt).model, later)
        assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last"], f"left behind at step {die_at}"
        die_at += 1


@pytest.mark.parametrize("state", ["old only", "new and old", "new and last", "last and a partial old",
                                   "temporary only"])  # fmt: skip
def test_every_state_a_crash_can_leave_is_recovered(tmp_path, state):
    run = tmp_path / "run"
    older, newer = model(1), model(2)
    save_checkpoint(run / "a", older)
    save_checkpoint(run / "b", newer)
    last, new, old = run / "last", run / ".last.new", run / ".last.old"
    stale = run / ".last.4194305.abc.tmp"  # above Linux's pid_max: a process that is gone
    if state == "old only":
        os.rename(run / "a", old)
        expect = older
    elif state == "new and old":
        os.rename(run / "a", old)
        os.rename(run / "b", new)
        expect = newer
    elif state == "new and last":
        os.rename(run / "a", last)
        os.rename(run / "b", new)
        expect = newer
    elif state == "last and a partial old":
        os.rename(run / "b", last)
        os.rename(run / "a", old)
        (old / "model.safetensors").unlink()
        expect = newer
    else:
        os.rename(run / "a", last)
        os.rename(run / "b", stale)
        expect = older
    if state != "temporary only":
        stale.mkdir()
    if state in ("old only", "new and old"):  # `last` missing: any reader recovers it
        assert same(load_checkpoint(last).model, expect)
    save_checkpoint(run / "other", older)  # an unrelated save in the same folder touches nothing of last
    save_checkpoint(last, model(3))
    assert same(load_checkpoint(last).model, model(3))
    assert sorted(p.name for p in run.iterdir() if "last" in p.name) == ["last"]
