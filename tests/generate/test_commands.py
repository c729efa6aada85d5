"""`tinylm sample` and `tinylm bench` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.generate.conftest import SHAPES
from tinylm.cli import main
from tinylm.tokenizer import CharTokenizer

TOK = CharTokenizer(list(" abcdefghijklmnopqrstuvwxyz.,!?"))
CFG = SHAPES["gpt2"].replace(vocab_size=TOK.vocab_size, context_length=48)


@pytest.fixture
def ckpt(save_random) -> Path:
    return save_random(CFG, TOK)


def test_sample_streams_the_prompt_and_completion_and_reports_speed(ckpt: Path, capsys) -> None:
    assert main(["sample", str(ckpt), "the cat", "-n", "20", "--seed", "1", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("the cat") and len(out) > len("the cat")
    assert "prompt: 8 tokens at" in err and "tok/s" in err and "decode:" in err


def test_sample_engines_agree_when_greedy(ckpt: Path, capsys) -> None:
    outs = []
    for engine in ("torch", "numpy"):
        assert main(["sample", str(ckpt), "abc", "-n", "30", "--temperature", "0", "--engine", engine]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]


def test_sample_batch_prints_every_prompt(ckpt: Path, capsys) -> None:
    assert main(["sample", str(ckpt), "a", "bb", "ccc", "-n", "5", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert "--- [0]\na" in out and "--- [1]\nbb" in out and "--- [2]\nccc" in out


def test_sample_ids_without_a_tokenizer(save_random, capsys) -> None:
    path = save_random(CFG)
    assert main(["sample", str(path), "--ids", "1, 2 3", "-n", "4", "--temperature", "0"]) == 0
    ids = capsys.readouterr().out.split()
    assert ids[:3] == ["1", "2", "3"] and len(ids) == 7
    assert main(["sample", str(path), "hello"]) == 1
    assert "--ids" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "tpu"], "unknown engine 'tpu'"),
        (["-n", "0"], "at least 1"),
        (["x" * 60], "--truncate"),
        (["--ids", "1 two"], "expected token ids"),
        (["--top-p", "0"], "top-p"),
    ],
)
def test_sample_bad_input_is_one_line(ckpt: Path, capsys, args: list[str], message: str) -> None:
    assert main(["sample", str(ckpt), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinylm sample: error:") and message in err and "\n" not in err


def test_sample_truncate_keeps_going(ckpt: Path, capsys) -> None:
    assert main(["sample", str(ckpt), "ab" * 40, "--truncate", "-n", "5", "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    # the last 44 of the 81 prompt tokens (48 - 5 + 1: room for 5 new ones without sliding), then those
    assert out.startswith("ab" * 22) and len(out.strip()) == 44 + 5
    assert "prompt: 44 tokens" in err


@pytest.mark.slow
def test_bench_prints_the_table(tmp_path: Path, capsys) -> None:
    args = ["bench", "--shapes", "stories260K", "--engines", "numpy,torch", "--threads", "1", "--tokens", "8",
            "--prompt-tokens", "8", "--repeats", "2", "--json", str(tmp_path / "b.json")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "stories260K  numpy" in out and "stories260K  torch" in out and "memory read bandwidth" in out
    results = json.loads((tmp_path / "b.json").read_text())["results"]
    assert {r["engine"] for r in results} == {"numpy", "torch"}
    # two repeats give a range: the slowest and the fastest of each, both measured
    assert all(0 < r["decode_min_tok_s"] <= r["decode_tok_s"] and 0 < r["prefill_min_tok_s"] <= r["prefill_tok_s"]
               for r in results)  # fmt: skip


def test_bench_speeds_print_as_ranges() -> None:
    from tinylm.generate.bench import span

    assert span(1.25, 2.5, ".1f") == "1.2-2.5"
    assert span(2.5, 2.5, ".1f") == "2.5"  # one repeat, or equal after rounding
    assert span(0.0, 2.5, ".1f") == "2.5"  # a result from a checkout that kept only the fastest


def test_bench_bad_input(capsys) -> None:
    assert main(["bench", "--engines", "jax"]) == 1
    assert "unknown engine 'jax'" in capsys.readouterr().err
    assert main(["bench", "--shapes", "nope"]) == 1
    assert "unknown preset" in capsys.readouterr().err


def test_engine_auto_picks_numpy_for_small_cpu_models(ckpt: Path, capsys, monkeypatch) -> None:
    from tinylm.generate import generator

    assert generator.pick_engine(ckpt) == "numpy"
    assert generator.pick_engine(ckpt, device="cuda") == "torch" and generator.pick_engine(ckpt, compile=True) == "torch"
    assert main(["sample", str(ckpt), "abc", "-n", "3"]) == 0  # auto is the default
    assert "(numpy engine)" in capsys.readouterr().err
    monkeypatch.setattr(generator, "NUMPY_MAX_PARAMS", CFG.num_params() - 1)  # a model over the limit
    assert generator.pick_engine(ckpt) == "torch"
    assert main(["sample", str(ckpt), "abc", "-n", "3"]) == 0
    assert "(torch engine)" in capsys.readouterr().err


def test_engine_auto_help_states_the_limit() -> None:
    from tinylm.generate.generator import NUMPY_MAX_PARAMS, NUMPY_MAX_PARAMS_QUANTIZED

    help_text = next(a.help for a in sample_parser()._actions if "--engine" in a.option_strings)
    assert f"at most {NUMPY_MAX_PARAMS // 10**6}M parameters ({NUMPY_MAX_PARAMS_QUANTIZED // 10**6}M quantized)" in help_text


def test_engine_auto_keeps_torch_for_what_numpy_does_not_run(ckpt: Path, monkeypatch) -> None:
    import tinylm.config
    from tinylm.generate import generator

    for transforms in ({"adapters": {"kind": "lora"}}, {"quantization": {"kind": "w8a8"}}):
        monkeypatch.setattr(tinylm.config, "read_config", lambda path, t=transforms: (CFG, t))
        assert generator.pick_engine(ckpt) == "torch"
    monkeypatch.setattr(tinylm.config, "read_config", lambda path: (CFG, {"quantization": {"kind": "q8_0"}}))
    assert generator.pick_engine(ckpt) == "numpy"
    monkeypatch.setattr(generator, "NUMPY_MAX_PARAMS_QUANTIZED", CFG.num_params() - 1)  # quantized: a lower limit
    assert generator.pick_engine(ckpt) == "torch"


def sample_parser():
    import argparse

    from tinylm.commands import sample

    p = argparse.ArgumentParser()
    sample.add_arguments(p)
    return p
