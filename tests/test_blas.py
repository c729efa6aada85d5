"""NumPy's OpenBLAS follows --threads even when NumPy was imported first (tinylm.blas)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tinylm.blas import _loaded_openblas
from tinylm.threads import ENV_VARS, use_threads

GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
           "openblas_get_num_threads")  # fmt: skip


def blas_threads() -> list[int]:
    """The thread count each loaded OpenBLAS reports itself."""
    counts = []
    for path in _loaded_openblas():
        lib = ctypes.CDLL(path)
        getter = next((getattr(lib, g) for g in GETTERS if hasattr(lib, g)), None)
        if getter is not None:
            counts.append(getter())
    return counts


def test_use_threads_reaches_an_already_loaded_openblas(monkeypatch):
    np.ones((2, 2)) @ np.ones((2, 2))  # NumPy and its BLAS are loaded
    before = blas_threads()
    if not before:
        pytest.skip("this NumPy is not built on OpenBLAS")
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)  # use_threads sets them; restored after the test
    try:
        use_threads(1)
        assert set(blas_threads()) == {1}
        use_threads(2)
        assert set(blas_threads()) == {2}
    finally:
        use_threads(before[0])
