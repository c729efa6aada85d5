"""Training with NumPy alone (no PyTorch): llm.c's train_gpt2.c, for both tinylm model families.

  ops.py         every op's forward and hand-written backward, side by side, gradients derived
  model.py       the transformer: forward keeping activations, backward, flat parameter array
  adamw.py       AdamW (decay on matrices only) and gradient-norm clipping, as torch computes them
  checkpoint.py  the torch trainer's checkpoint files (weights, optimizer, data position)
  trainer.py     the loop behind `tinylm train --engine numpy`
  memory.py      freed activations kept for the next step (no page faults)
  parallel.py    worker processes that take parts of the batch (--threads), memory shared with them

The data order (tinylm.train.order), token windows (tinylm.train.windows), the run's file names,
counters and saved state (tinylm.train.progress) and the clean stop (tinylm.train.interrupt) are the
torch trainer's own, shared.

Checked against finite differences and torch autograd in tests/nptrain.
"""
