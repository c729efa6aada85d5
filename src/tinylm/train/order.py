"""The order the training data is drawn in, for both trainers: torch.Generator's draws
(`torch.randint(size, (n,), generator=g)`), computed with NumPy alone, so runs saved with the torch
generator's state continue with the same batches, on either trainer.

A CPU torch.Generator is a Mersenne Twister (MT19937): each index is the next 32-bit output modulo
`size` (for `size` of 2^28 or more torch combines two outputs into a 64-bit number first). NumPy's
MT19937 bit generator is the same twister, so it reproduces those draws when given the same 624-word
state. The state is saved as torch saves a generator's: its 5056-byte CPUGeneratorImplState, laid out
as below.
"""
from __future__ import annotations

import numpy as np

from tinylm.errors import TinyLMError

STATE_BYTES = 5056
# byte offsets in torch's CPUGeneratorImplState: uint64 seed, int32 left, int32 seeded, uint64 next,
# uint64 state[624], three doubles and an int of the old normal sampler, a float and a bool of the new one
SEED, LEFT, SEEDED, NEXT, WORDS = 0, 8, 12, 16, 24
N_WORDS = 624
WIDE_DRAWS = 1 << 28  # from this range on, torch draws 64 bits per index


class Sampler:
    """Uniformly random example indices (with replacement) for each optimizer step. Every process draws
    the same indices for the whole global batch and takes its own slice: 2 processes x batch B see
    exactly what 1 process x batch 2B sees, and so does 1 process x B with 2 steps of accumulation."""

    def __init__(self, size: int, batch_size: int, accum: int, rank: int = 0, world: int = 1, seed: int = 0):
        self.size, self.batch_size, self.accum, self.rank, self.world = size, batch_size, accum, rank, world
        self.bits = np.random.MT19937()
        key = np.random.RandomState(seed & 0xFFFFFFFF).get_state()[1]  # the twister's standard seeding
        state = np.zeros(STATE_BYTES, np.uint8)  # as torch.Generator().manual_seed(seed) holds it
        state[SEED : SEED + 8] = np.frombuffer(np.uint64(seed & (2**64 - 1)).tobytes(), np.uint8)
        state[LEFT], state[SEEDED] = 1, 1
        state[WORDS : WORDS + 8 * N_WORDS] = np.frombuffer(key.astype(np.uint64).tobytes(), np.uint8)
        self.set_state(state)

    def step(self) -> list[np.ndarray]:
        """This process's rows for each micro-batch of the next optimizer step."""
        B, W, r = self.batch_size, self.world, self.rank
        n = self.accum * W * B
        if self.size < WIDE_DRAWS:
            rows = self.bits.random_raw(n) % np.uint64(self.size)
        else:
            hi, lo = self.bits.random_raw(2 * n).reshape(n, 2).T
            rows = ((hi << np.uint64(32)) | lo) % np.uint64(self.size)
        rows = rows.astype(np.int64)
        self._drawn = True
        return [rows[(m * W + r) * B : (m * W + r + 1) * B] for m in range(self.accum)]

    def get_state(self) -> np.ndarray:
        """The generator state in torch.Generator.get_state()'s format (uint8, 5056 bytes)."""
        out = self._template.copy()
        if not self._drawn:
            return out  # exactly as set (torch marks "twist first" in two ways; keep the one given)
        s = self.bits.state["state"]
        pos = int(s["pos"])
        # torch counts down `left` to the next twist and reads word `next`; NumPy reads word `pos`
        out[LEFT : LEFT + 4] = np.frombuffer(np.int32(N_WORDS + 1 - pos).tobytes(), np.uint8)
        out[NEXT : NEXT + 8] = np.frombuffer(np.uint64(pos).tobytes(), np.uint8)
        out[WORDS : WORDS + 8 * N_WORDS] = np.frombuffer(s["key"].astype(np.uint64).tobytes(), np.uint8)
        return out

    def set_state(self, state: np.ndarray) -> None:
        if state.dtype != np.uint8 or state.size != STATE_BYTES:
            raise TinyLMError(f"damaged RNG state: the data order's is {state.size} {state.dtype} values, not torch's "
                              f"{STATE_BYTES}-byte generator state; restore the checkpoint or start a new run")  # fmt: skip
        raw = np.ascontiguousarray(state)
        left = int(raw[LEFT : LEFT + 4].view(np.int32)[0])
        nxt = int(raw[NEXT : NEXT + 8].view(np.uint64)[0])
        key = raw[WORDS : WORDS + 8 * N_WORDS].view(np.uint64).astype(np.uint32)
        # left == 1: the next draw twists first (a fresh seed, or all 624 words used)
        self.bits.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": N_WORDS if left == 1 else nxt}}
        self._template, self._drawn = raw.copy(), False


def eval_rows(size: int, batch_size: int, batches: int) -> list[np.ndarray]:
    """The evenly spread validation examples of tinylm.train.batches.eval_rows: torch.linspace in
    float32, rounded. (torch's vectorised linspace may round a few rows of validation sets over a
    million examples one apart from this.)"""
    n = batches * batch_size
    i = np.arange(n)
    end = np.float32(size - 1)
    step = end / np.float32(max(n - 1, 1))
    # torch fills the first half forwards from 0 and the second half backwards from the end
    values = np.where(i < max(n // 2, 1), step * i.astype(np.float32), end - step * (n - i - 1).astype(np.float32))
    rows = np.round(values.astype(np.float32)).astype(np.int64)
    return [rows[b * batch_size : (b + 1) * batch_size] for b in range(batches)]
