"""Checks of numbers given by a user, shared by the Python API (an :class:`InputError` naming the argument) and the
command line (``argparse`` types from :mod:`sana_jax.commands.options`, so ``--frames 0`` is refused at parse
time). A value is honoured or refused with its range: never replaced by a default, never NaN or infinite."""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from sana_jax.errors import InputError, NumericsError

#: the seeds a JAX PRNG key takes (a signed 64-bit integer; negative ones are refused to keep one spelling each)
SEED_RANGE = (0, 2**63 - 1)


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '≥'} {_plain(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '≤'} {_plain(high)}")
    return " and ".join(parts)


def _plain(value) -> str:
    return str(value) if isinstance(value, numbers.Integral) else f"{value:g}"


def integer_problem(value, low=None, high=None) -> str | None:
    """Why ``value`` is not an integer in [low, high] (None: it is)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return f"must be an integer, got {value!r}"
    if (low is not None and value < low) or (high is not None and value > high):
        return f"must be an integer {_range_text(low, high, False, False)}, got {value}"
    return None


def number_problem(value, low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> str | None:
    """Why ``value`` is not a finite number in the range (``low_open``: > low rather than ≥) (None: it is)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"must be a number, got {value!r}"
    if not math.isfinite(value):
        return f"must be a finite number, got {value}"
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        return f"must be {_range_text(low, high, low_open, high_open)}, got {_plain(value)}"
    return None


def check_integer(name: str, value, low=None, high=None) -> int:
    """``value`` (an integer in [low, high]) or an :class:`InputError` naming ``name`` and the range."""
    problem = integer_problem(value, low, high)
    if problem:
        raise InputError(f"{name} {problem}")
    return int(value)


def check_number(name: str, value, low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` (a finite number in the range) or an :class:`InputError` naming ``name`` and the range."""
    problem = number_problem(value, low, high, low_open=low_open, high_open=high_open)
    if problem:
        raise InputError(f"{name} {problem}")
    return float(value)


def check_seed(value, name: str = "seed") -> int:
    return check_integer(name, value, *SEED_RANGE)


def check_finite(array, stage: str) -> None:
    """A :class:`NumericsError` naming ``stage`` unless every value of ``array`` is finite (:func:`all_finite`). Give
    it the host copy the caller makes anyway."""
    if not all_finite(array):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(np.asarray(array))))
        raise NumericsError(f"{stage} produced {bad:,} NaN/Inf values of {np.size(array):,}: check the checkpoint's "
                            "weights and the settings (guidance, scheduler, steps)")


def all_finite(tree) -> bool:
    """Whether every floating-point value of a pytree of arrays is finite. Arrays in host memory (NumPy, or JAX on
    CPU, read without a copy) are tested by NumPy; otherwise one compiled reduction per tree structure runs on the
    device and one boolean comes back."""
    import jax

    leaves = jax.tree.leaves(tree)
    if all(not isinstance(x, jax.Array) or (x.is_fully_addressable and {d.platform for d in x.devices()} == {"cpu"})
           for x in leaves):
        return all(bool(np.isfinite(a).all()) for a in map(np.asarray, leaves) if _inexact(a.dtype))
    return bool(_all_finite_jit()(tree))


def _inexact(dtype) -> bool:
    return np.dtype(dtype).kind in "fc" or "float" in np.dtype(dtype).name  # bfloat16's kind is "V"


@functools.cache
def _all_finite_jit():
    import jax
    import jax.numpy as jnp

    @jax.jit
    def all_finite_(tree):
        checks = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
        return jnp.stack(checks).all() if checks else jnp.array(True)

    return all_finite_


def check_token_inputs(input_ids, attention_mask, vocab_size: int):
    """A text encoder's inputs checked: ``(ids, keep)``, integer ids (B, L) within [0, ``vocab_size``) (not checked
    on traced values) and a boolean key mask of the same shape (all True when ``attention_mask`` is None); an
    :class:`InputError` naming what is wrong otherwise."""
    import jax
    import jax.numpy as jnp

    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise InputError(f"input_ids must be integer (B, L), got {input_ids.dtype} {input_ids.shape}")
    if not isinstance(input_ids, jax.core.Tracer) and input_ids.size and (
            int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise InputError(f"input_ids must lie in [0, {vocab_size}), got [{int(input_ids.min())}, "
                         f"{int(input_ids.max())}]")
    if attention_mask is None:
        return input_ids, jnp.ones(input_ids.shape, bool)
    attention_mask = jnp.asarray(attention_mask)
    if attention_mask.shape != input_ids.shape:
        raise InputError(f"attention_mask shape {attention_mask.shape} must equal input_ids shape "
                         f"{input_ids.shape}")
    return input_ids, attention_mask.astype(bool)
