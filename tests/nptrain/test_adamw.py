"""AdamW over the flat parameter array: torch.optim.AdamW's numbers, whatever the thread count."""

from __future__ import annotations

import numpy as np
import torch

from tinylm.nptrain.adamw import AdamW
from tinylm.nptrain.ops import BLOCK_ELEMENTS


def test_adamw_equals_torch_and_threads_change_nothing():
    """Several blocks (the threads' shares), a decayed part that ends inside a block, float64."""
    rng = np.random.default_rng(0)
    size, n_decay = 2 * BLOCK_ELEMENTS + 1000, BLOCK_ELEMENTS + 17
    p0, grads = rng.standard_normal(size), [rng.standard_normal(size) for _ in range(4)]
    ref = [torch.tensor(p0[:n_decay], requires_grad=True), torch.tensor(p0[n_decay:], requires_grad=True)]
    opt = torch.optim.AdamW([{"params": ref[:1], "weight_decay": 0.1}, {"params": ref[1:], "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95), eps=1e-8)  # fmt: skip
    ours = {n: (p0.copy(), AdamW(size, n_decay, 1e-2, (0.9, 0.95), 1e-8, 0.1, np.float64, threads=n)) for n in (1, 3)}
    for g in grads:
        ref[0].grad, ref[1].grad = torch.tensor(g[:n_decay]), torch.tensor(g[n_decay:])
        opt.step()
        for p, adamw in ours.values():
            adamw.step(p, g)
    expected = torch.cat([t.detach() for t in ref]).numpy()
    np.testing.assert_allclose(ours[1][0], expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(ours[3][0], ours[1][0])
