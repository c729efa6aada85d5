"""Distillation on the trainer: alpha = 0 is plain training, a teacher equal to the student adds nothing,
the top-k cache reproduces the live teacher (exactly when k = vocab), padded vocabularies align, and
every way the inputs can disagree is one line."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from tests.distill.conftest import VOCAB, model_config, stream_data
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.distill import (
    Distill,
    DistillConfig,
    LiveTeacher,
    TeacherInfo,
    WithTeacher,
    check_context,
    common_vocab,
    open_cache,
    write_cache,
)
from tinylm.distill.cache import MANIFEST, identity
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.tokenizer import CharTokenizer
from tinylm.train import train
from tinylm.train.batches import Strided
from tinylm.train.objectives import cross_entropy, distill_term
from tinylm.train.trainer import TrainData

CONTEXT = 16


def live(teacher) -> LiveTeacher:
    return LiveTeacher.load(TeacherInfo.read(teacher), VOCAB)


def cache_for(tmp_path, teacher, ds, k: int):
    info = TeacherInfo.read(teacher)
    return write_cache(tmp_path / f"cache{k}", live(teacher), identity(info, ds, VOCAB), ds, k, batch_size=16,
                       device=torch.device("cpu"), autocast=torch.no_grad, progress=False)  # fmt: skip


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def logits_then_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Next-token loss from the whole logits, as Distill's CE term is computed. The default objective fuses the
    output head with the loss on the CPU in fp32 (tinylm.head_loss, equal to float rounding: tested there)."""
    return cross_entropy(model(x), y)


def test_alpha_zero_is_plain_training_bit_for_bit(cfg, tmp_path, teacher):
    data = stream_data()
    plain = train(cfg.replace(out_dir=str(tmp_path / "plain")), data, model_config(), objective=logits_then_loss,
                  quiet=True)  # fmt: skip
    objective = Distill(DistillConfig(alpha=0.0, temperature=2.0), VOCAB, live(teacher))
    distilled = train(cfg.replace(out_dir=str(tmp_path / "kd")), data, model_config(), objective=objective, quiet=True)
    a, b = weights(plain.model), weights(distilled.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert plain.val_loss == distilled.val_loss
    # and the teacher did take part: the soft term was computed, and is far from zero
    assert objective.terms()["train_kd"] > 0.01


def test_a_teacher_equal_to_the_student_adds_nothing_at_step_0(cfg, tmp_path, teacher):
    data, metrics = stream_data(), {}
    for name in ("same", "trained"):
        torch.manual_seed(cfg.seed)
        student = Model(model_config())
        source = LiveTeacher(copy.deepcopy(student), VOCAB) if name == "same" else live(teacher)
        objective = Distill(DistillConfig(alpha=0.5), VOCAB, source)
        r = train(cfg.replace(out_dir=str(tmp_path / name), max_steps=1, eval_interval=1), data, model=student,
                  objective=objective, on_eval=lambda m, o=objective: o.terms(), quiet=True)  # fmt: skip
        metrics[name] = r.metrics
    assert metrics["same"]["train_kd"] == 0.0  # the soft term of step 0, before any update
    assert metrics["trained"]["train_kd"] > 0.01 and metrics["same"]["train_ce"] > 1.0


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_a_cache_of_every_logit_reproduces_the_live_teacher_exactly(tmp_path, teacher, kind):
    ds = Strided(stream_data().train, CONTEXT)
    cache = cache_for(tmp_path, teacher, ds, k=VOCAB)
    student, rows = Model(model_config()), torch.tensor([3, 0, 50, 7])
    x, y = ds.get(rows)
    cfg = DistillConfig(alpha=0.7, temperature=1.5, divergence=kind)
    loss_live = Distill(cfg, VOCAB, live(teacher))(student, x, y)
    loss_cached = Distill(cfg, VOCAB)(student, x, y, *cache.get(rows))
    assert torch.equal(loss_live, loss_cached)


def test_a_top_k_cache_is_exact_for_the_teacher_it_declares_and_within_its_truncation(tmp_path, teacher):
    k = 3
    ds = Strided(stream_data().train, CONTEXT)
    cache = cache_for(tmp_path, teacher, ds, k=k)
    student, rows = Model(model_config()), torch.arange(12)
    x, y = ds.get(rows)
    with torch.no_grad():
        p = torch.log_softmax(live(teacher)(x).double(), -1)  # the live teacher's log-probs (B, T, V)
        q = torch.log_softmax(student(x).double(), -1)
    top = p.topk(k, -1)
    rest = 1 - top.values.exp().sum(-1, keepdim=True)  # the mass outside the top k, (B, T, 1)
    declared = torch.full_like(p, 0.0).add_(rest.log() - math.log(VOCAB - k)).scatter_(-1, top.indices, top.values)
    cfg = DistillConfig(alpha=1.0, temperature=1.0)
    cached = Distill(cfg, VOCAB)(student, x, y, *cache.get(rows)).double()
    assert cached.item() == pytest.approx(distill_term(q, declared, y, temperature=1.0).item(), rel=1e-5)
    # vs the live teacher: moving the mass `rest` within the tail changes KL by at most
    # rest * log(V - k) (its entropy there) + 2 * rest * max |log q| over the tail (its cross-entropy there)
    live_kl = distill_term(q, p, y, temperature=1.0).item()
    tail_q = q.scatter(-1, top.indices, 0.0).abs().amax(-1, keepdim=True)
    bound = (rest * math.log(VOCAB - k) + 2 * rest * tail_q).mean().item()
    assert 0 < abs(cached.item() - live_kl) <= bound
    with torch.no_grad():  # the manifest declares how much probability the top k hold, over all examples
        everything = torch.softmax(live(teacher)(ds.get(torch.arange(len(ds)))[0]).double(), -1)
    kept = everything.topk(k, -1).values.sum(-1)
    m = json.loads((tmp_path / "cache3" / MANIFEST).read_text())
    assert m["top_k"] == k and m["truncation"].startswith("the k kept log-probabilities are exact")
    assert m["kept_mass_mean"] == pytest.approx(kept.mean().item(), rel=1e-5)
    assert m["kept_mass_min"] == pytest.approx(kept.min().item(), rel=1e-5)


def test_the_trainer_feeds_the_cache_by_example_index(cfg, tmp_path, teacher):
    """A run on the cache (k = vocab) trains exactly as the same run with the teacher live: the cached rows
    reach the objective with the right examples, whatever order the sampler draws them in."""
    data = stream_data()
    tiled = TrainData(Strided(data.train, CONTEXT), data.val, data.tokenizer)
    cache = cache_for(tmp_path, teacher, tiled.train, k=VOCAB)
    with_cache = TrainData(WithTeacher(tiled.train, cache), data.val, data.tokenizer)
    dcfg = DistillConfig(alpha=0.5)
    a = train(cfg.replace(out_dir=str(tmp_path / "live")), tiled, model_config(),
              objective=Distill(dcfg, VOCAB, live(teacher)), quiet=True)  # fmt: skip
    b = train(cfg.replace(out_dir=str(tmp_path / "cached")), with_cache, model_config(), objective=Distill(dcfg, VOCAB),
              quiet=True)  # fmt: skip
    wa, wb = weights(a.model), weights(b.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_padding_rows_are_sliced_off(tmp_path):
    student = Model(model_config())
    padded = Model(model_config().replace(vocab_size=VOCAB + 8))  # the same model with 8 padding rows
    sd = student.state_dict()
    sd["tok_emb.weight"] = torch.cat([sd["tok_emb.weight"], torch.randn(8, sd["tok_emb.weight"].shape[1])])
    sd["lm_head.weight"] = sd["tok_emb.weight"]
    padded.load_state_dict(sd)
    tok = stream_data().tokenizer
    save_checkpoint(tmp_path / "t", padded, tok)
    info = TeacherInfo.read(tmp_path / "t")
    vocab = common_vocab(info, model_config(), tok)
    assert vocab == VOCAB
    x, y = stream_data().train.get(torch.arange(4))
    objective = Distill(DistillConfig(), vocab, LiveTeacher.load(info, vocab))
    objective(student, x, y)
    assert objective.terms()["train_kd"] == 0.0  # padding rows took no part


def test_tokenizers_that_differ_are_refused(tmp_path):
    save_checkpoint(tmp_path / "t", Model(model_config()), CharTokenizer(list("abcdefghijklmnopqrs")))
    other = CharTokenizer(list("abcdefghijklmnopqrz"))  # the same size, one token differs
    with pytest.raises(TinyLMError, match="different tokenizers") as e:
        common_vocab(TeacherInfo.read(tmp_path / "t"), model_config(), other)
    assert "\n" not in str(e.value) and "--tokenizer" in str(e.value)
    with pytest.raises(TinyLMError, match="has no tokenizer"):
        common_vocab(TeacherInfo.read(tmp_path / "t"), model_config(), None)


def test_a_cache_from_other_data_or_another_teacher_is_refused(tmp_path, teacher):
    ds = Strided(stream_data().train, CONTEXT)
    cache_for(tmp_path, teacher, ds, k=4)
    info = TeacherInfo.read(teacher)
    other_data = Strided(stream_data(seed=1).train, CONTEXT)
    with pytest.raises(TinyLMError, match="was made for other data") as e:
        open_cache(tmp_path / "cache4", identity(info, other_data, VOCAB))
    assert "\n" not in str(e.value)
    save_checkpoint(tmp_path / "t2", Model(model_config(n_layers=3)), stream_data().tokenizer)
    with pytest.raises(TinyLMError, match="another teacher"):
        open_cache(tmp_path / "cache4", identity(TeacherInfo.read(tmp_path / "t2"), ds, VOCAB))
    with pytest.raises(TinyLMError, match="keeps the top 4 logits, not 8"):
        open_cache(tmp_path / "cache4", identity(info, ds, VOCAB), top_k=8)
    assert len(open_cache(tmp_path / "cache4", identity(info, ds, VOCAB))) == len(ds)
    with pytest.raises(TinyLMError, match="not a tinylm teacher cache"):
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / MANIFEST).write_text("{}")
        open_cache(tmp_path / "junk", identity(info, ds, VOCAB))


def test_a_teacher_context_shorter_than_the_sequences_is_refused(teacher):
    info = TeacherInfo.read(teacher)
    check_context(info, CONTEXT)
    with pytest.raises(TinyLMError, match=f"reads at most {CONTEXT} tokens.*sequences of {CONTEXT + 1}") as e:
        check_context(info, CONTEXT + 1)
    assert "\n" not in str(e.value)


def test_bad_settings_are_one_line():
    with pytest.raises(TinyLMError, match="alpha must be in"):
        DistillConfig(alpha=1.5)
    with pytest.raises(TinyLMError, match="divergence must be one of"):
        DistillConfig(divergence="tvd")


def test_a_quantized_or_any_loadable_teacher_goes_through_load_checkpoint(teacher):
    """The teacher is loaded as tinylm loads any checkpoint: what it predicts is what load_checkpoint's
    model predicts."""
    x, _ = stream_data().val.get(torch.arange(2))
    with torch.no_grad():
        assert torch.equal(live(teacher)(x), load_checkpoint(teacher).model(x)[..., :VOCAB])
