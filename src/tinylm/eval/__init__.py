"""Evaluation: perplexity, bits per byte and KL divergence of many models on the same text.

    from tinylm.eval import Protocol, evaluate_models
    results = evaluate_models(["runs/a", "runs/b"], "data/val.txt", protocol=Protocol("sliding", stride=128),
                              reference="runs/a")
    print(results[1].perplexity, results[1].bits_per_byte, results[1].kl, results[1].top1)

Protocols (how text becomes windows, and which bytes count) are documented in `protocols.py`,
the statistics in `evaluate.py`.
"""

from tinylm.eval.data import Documents, load_documents
from tinylm.eval.evaluate import EvalResult, evaluate_models, summarize
from tinylm.eval.models import Scored, load_model
from tinylm.eval.protocols import PROTOCOLS, Protocol, Window, cut
from tinylm.eval.scoring import Scores, score

__all__ = [
    "PROTOCOLS",
    "Documents",
    "EvalResult",
    "Protocol",
    "Scored",
    "Scores",
    "Window",
    "cut",
    "evaluate_models",
    "load_documents",
    "load_model",
    "score",
    "summarize",
]
