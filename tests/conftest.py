"""Shared fixtures. Parity tests need the PyTorch references (the ``test`` extra); they skip without them."""

from __future__ import annotations

import os

# torch's OpenMP workers spin while XLA computes in the same process and starve it (bench/README.md): be passive.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
os.environ.setdefault("TQDM_DISABLE", "1")


def max_rel_err(ours, ref) -> float:
    """max |ours − ref| / max |ref| (the parity metric of ARCHITECTURE.md)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-30))


@pytest.fixture
def rel_err():
    return max_rel_err
