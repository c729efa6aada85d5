"""The torch engine: allocates a static KV cache, compiles the decode step and loops over the Model.

The model itself does the work (`Model.forward` with `pos`, `cache` and `logits_at`, see
tinylm.model); this module only decides which cache rows a call uses and keeps each row's next
position. A generation owns rows of the cache: `prefill(rows, prompts)` runs the prompts (right-padded
to the longest: a pad token's key lands at a position the row overwrites before it ever attends
there) from position 0 into those rows, and `decode(rows, tokens)` appends one token to each row.
Attention reads only the cache prefix some row has filled, like llama2.c's run.c. With
`compile=True` the decode step is one torch.compile graph per number of rows, symbolic in the
attention length, so it compiles once and never again as the sequence grows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tinylm.errors import TinyLMError
from tinylm.model import KVCache, Model


class TorchEngine:
    """Batched next-token logits from a `Model` with a static KV cache.

    `compile=True` compiles the decode step with torch.compile (slow to start, fast per token).
    `transpose_weights=True` stores every nn.Linear weight of the model transposed in place: same
    values and memory, and the model still works, but one token's `x @ W.T` then streams through a
    row-major (in, out) matrix, measured 6-7% faster per token; it is for a model the engine owns
    (loaded from a checkpoint), since the weights are no longer contiguous (`.view()` on them fails).
    """

    def __init__(self, model: Model, compile: bool = False, transpose_weights: bool = False):
        self.model = model  # through the cache it never drops out, so its train/eval mode does not matter
        if transpose_weights:
            for m in model.modules():
                if isinstance(m, torch.nn.Linear):  # a tied head transposes the embedding with it
                    m.weight.data = m.weight.data.t().contiguous().t()
        self.config = cfg = model.config
        self.device = model.tok_emb.weight.device
        self.dtype = model.tok_emb.weight.dtype
        self.cache = KVCache(cfg, 0, self.device, self.dtype)
        self.pos = np.zeros(0, dtype=np.int64)  # each cache row's next position (host-side: no sync)
        self._key_pos = torch.arange(cfg.context_length, device=self.device)
        self.compiled = compile
        self._decode = self._step
        if compile:  # on CPU a C++ wrapper around the generated kernels saves Python work per token
            options = {"cpp_wrapper": True} if self.device.type == "cpu" else {}
            self._decode = torch.compile(self._step, fullgraph=True, options=options)
        self._warm = (0, 0)  # (rows of the last decode steps, how many steps in a row had that many)

    def reserve(self, rows: int) -> None:
        """Make room for at least `rows` cache rows, keeping what the existing rows hold."""
        have = self.cache.num_rows
        if rows <= have:
            return
        old, self.cache = self.cache, KVCache(self.config, rows, self.device, self.dtype)
        for new, kept in zip(self.cache.k + self.cache.v, old.k + old.v, strict=True):
            new[:have] = kept
        self.pos = np.concatenate([self.pos, np.zeros(rows - have, dtype=np.int64)])

    @torch.inference_mode()
    def prefill(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> np.ndarray:
        """Run each prompt from position 0 into its cache row; logits (len(rows), vocab) after each
        prompt's last token."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise TinyLMError("every prompt needs at least one token")
        longest, ctx = max(map(len, prompts)), self.config.context_length
        if longest > ctx:
            raise TinyLMError(f"a prompt of {longest} tokens does not fit the context of {ctx}")
        self.reserve(max(rows) + 1)
        lens = torch.tensor([len(p) for p in prompts], device=self.device)
        idx = torch.tensor([list(p) + [0] * (longest - len(p)) for p in prompts], device=self.device)
        pos = self._key_pos[:longest].expand(len(prompts), longest)
        self.cache.rows, self.cache.keys = torch.tensor(list(rows), device=self.device), None
        logits = self._step(idx, pos, lens - 1)
        self.pos[list(rows)] = lens.cpu().numpy()
        self._warm = (0, 0)  # a new generation: let the compiled step check its guards again
        return _numpy(logits)

    @torch.inference_mode()
    def decode(self, rows: Sequence[int], tokens: np.ndarray) -> np.ndarray:
        """Append one token per row (len(rows),) at each row's next position; logits (len(rows), vocab).

        The step runs over cache rows 0..max(rows), a view of the cache rather than a gather of the
        rows asked for; rows not asked for get a stand-in token at their own next position, which
        their own next step overwrites before it attends there."""
        rows = np.asarray(rows, dtype=np.int64)
        if (self.pos[rows] >= self.config.context_length).any():
            raise TinyLMError(f"a row has used all {self.config.context_length} positions of the context")
        B = int(rows.max()) + 1
        pos = np.minimum(self.pos[:B], self.config.context_length - 1)
        idx = np.zeros(B, dtype=np.int64)
        idx[rows] = tokens
        keys = self._key_pos[: int(pos.max()) + 1]
        if self.compiled:  # one graph for every attention length
            torch._dynamo.maybe_mark_dynamic(keys, 0)
        self.cache.rows, self.cache.keys = None, keys
        idx_t, pos_t = (torch.from_numpy(a).to(self.device).view(B, 1) for a in (idx, pos))
        self._warm = (B, self._warm[1] + 1 if self._warm[0] == B else 1)
        if self.compiled and self._warm[1] > 2:
            # Past the first steps at this batch size (which compile if needed) the inputs keep their
            # shapes and identities, so checking dynamo's guards on every weight is wasted work.
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                logits = self._decode(idx_t, pos_t, None)
        else:
            logits = self._decode(idx_t, pos_t, None)
        self.pos[rows] += 1
        return _numpy(logits)[rows]

    def _step(self, idx: torch.Tensor, pos: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, vocab) of tokens idx at positions pos (both (B, T)) through the cache: at column
        `last` (B,) of each row, or at the only column when T == 1."""
        if last is None:
            return self.model(idx, pos=pos, cache=self.cache)[:, -1]
        return self.model(idx, pos=pos, cache=self.cache, logits_at=last)


def _numpy(logits: torch.Tensor) -> np.ndarray:
    """float32 NumPy logits for the shared sampler (a view, not a copy, of float32 CPU tensors)."""
    return logits.float().cpu().numpy()
