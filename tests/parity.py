"""The parity harness of the model tests (docs/architecture.md, "Testing").

A PyTorch reference (diffusers 0.42.1, transformers, ltx-core 1.0.0) is built with random weights (:func:`reference`,
:func:`perturb`), its state dict is written as safetensors (:func:`save_and_load`, which reads it back through
``converters.load``), both run on the same inputs (:func:`torch_call`, :func:`to_torch`, :func:`to_numpy` move
arrays across) and the outputs are compared in float32 with the suite's metric (:func:`check`, ``max_rel_err`` of
tests/conftest.py). A model's test states only its configurations, its inputs and the layouts it checks (an original
checkpoint's names, a native file). Without torch (the ``test`` extra) a test skips when it builds or runs a
reference, or when its module imports ``torch`` from here; :func:`check`, :func:`assert_same_tensors` and
:func:`run_jitted` (a jitted ``encode``/``decode``) need none.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import max_rel_err

#: max |ours − reference| / max |reference| allowed for every float32 parity check (measured ~1e-7 … 1e-6)
TOL = 1e-4


def _torch():
    """The torch module, or a skip of the calling test when it is not installed."""
    return pytest.importorskip("torch")


def __getattr__(name):
    """``from tests.parity import torch``: torch, or a skip of the importing test module."""
    if name == "torch":
        return _torch()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def one_dimensional(name: str, p) -> bool:
    """Norm weights (initialised to one), biases (zero) and scalars: the parameters :func:`perturb` moves by default."""
    return p.ndim <= 1


def perturb(module, scale: float = 0.3, *, seed: int | None = None, select=one_dimensional):
    """Add ``scale``·N(0, 1) to the parameters ``select(name, p)`` picks, so that a mapping that swaps or drops a
    norm weight or a bias cannot hide behind its initial value. ``seed=None`` draws from torch's global generator
    (the one that just initialised the module); a seed draws from a fresh generator. Returns the module in eval
    mode."""
    torch = _torch()
    g = None if seed is None else torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if select(name, p):
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module.eval()


def reference(cls, *, seed: int = 0, scale: float = 0.3, select=one_dimensional, **config):
    """``cls(**config)`` initialised after ``torch.manual_seed(seed)``, then :func:`perturb`-ed, in eval mode."""
    _torch().manual_seed(seed)
    return perturb(cls(**config), scale, select=select)


def state_dict_numpy(module) -> dict[str, np.ndarray]:
    """The module's state dict as numpy arrays (copies)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def save(module, folder) -> Path:
    """``save_pretrained`` into ``folder`` (``config.json`` + safetensors weights); returns the folder."""
    module.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def save_and_load(module, folder, **load_options):
    """:func:`save` the reference into ``folder`` and load it back through ``converters.load``."""
    import converters

    return converters.load(save(module, folder), **load_options)


def to_torch(x):
    """Channels-last numpy (B, T, H, W, C) → channels-first torch (B, C, T, H, W)."""
    return _torch().from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 4, 1, 2, 3)))


def to_numpy(t) -> np.ndarray:
    """Channels-first torch or numpy (B, C, T, H, W) → channels-last numpy (B, T, H, W, C)."""
    return np.asarray(_as_numpy(t)).transpose(0, 2, 3, 4, 1)


def _as_torch(x):
    if isinstance(x, (np.ndarray, np.generic)):
        return _torch().from_numpy(np.array(x))  # a copy: contiguous, writable, 0-d kept
    return x


def _as_numpy(x):
    torch = sys.modules.get("torch")  # not imported: x is no tensor
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, (tuple, list)):
        items = [_as_numpy(v) for v in x]
        return type(x)(*items) if hasattr(x, "_fields") else type(x)(items)  # a namedtuple takes fields
    return x


def torch_call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` without autograd; numpy arguments go in as torch tensors, and tensors (also inside
    tuples and lists) come out as numpy. Other results (a ``ModelOutput``) are returned as they are."""
    with _torch().no_grad():
        out = fn(*(_as_torch(a) for a in args), **{k: _as_torch(v) for k, v in kwargs.items()})
    return _as_numpy(out)


@nnx.jit(static_argnames=("method", "options"))
def _jitted(model, x, method, options=()):
    return getattr(model, method)(x, **dict(options))


def run_jitted(model, x, method: str, **options) -> np.ndarray:
    """``model.<method>(x, **options)`` (a VAE's ``encode``/``decode``) jitted: one compile per graph, input shape
    and options, shared by equal models."""
    return np.asarray(_jitted(model, jnp.asarray(x), method, tuple(sorted(options.items()))))


def check(ours, want, tol: float = TOL, what: str = "") -> float:
    """Assert ``max_rel_err(ours, want) <= tol`` (float32 parity); returns the error, printed with ``what``."""
    err = max_rel_err(ours, want)
    if what:
        print(f"{what}: max relative error {err:.2e}")
    assert err <= tol, f"{what or 'output'}: max relative error {err:.2e} > {tol:.0e}"
    return err


def assert_same_tensors(a, b) -> None:
    """Two ``name → array`` mappings hold the same names and bitwise the same values (export round trips)."""
    a, b = dict(a), dict(b)
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))[:10]
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
