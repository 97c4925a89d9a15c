"""Update rules: flow DPM-solver++ (2M, midpoint), flow Euler, x0-prediction with re-noising, and flow UniPC
(``unipc.py``).

Each solver splits into a host part and a device part:
  * ``coefficients(sigmas)`` — NumPy, once per call: per-step float32 arrays (n,) that the compiled loop scans over.
    Everything that depends only on the schedule (ratios, exponentials, which steps are first order) lives here, so
    the scan body has no Python branching and no transcendental functions.
  * ``step(x, v, state, coeff)`` — jnp, float32: one update given the (guided) velocity ``v`` at ``x``.
The maths is diffusers' (``DPMSolverMultistepScheduler`` / ``FlowMatchEulerDiscreteScheduler`` /
``UniPCMultistepScheduler``), with the same float32 operation order so that results agree to a few ulp (UniPC's
coefficients are computed in float64, then stored float32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.errors import InputError
from sana_jax.sampling.unipc import unipc_coefficients, unipc_init, unipc_step

F32 = np.float32


class Solver(NamedTuple):
    """A hashable bundle (used as a static argument of the compiled loop)."""

    name: str
    coefficients: Callable[[np.ndarray], dict[str, np.ndarray]]  # host: sigmas (n+1,) → {name: (n,) f32}
    init: Callable[[jax.Array, jax.Array | None], Any]  # (latents, key) → solver state carried by the scan
    step: Callable[..., tuple[jax.Array, Any]]  # (x, v, state, coeff) → (x_next, state)


# ----------------------------------------------------------------------------------------------- DPM-solver++ 2M
def dpm_solver_pp_2m_coefficients(sigmas) -> dict[str, np.ndarray]:
    """Per-step coefficients of DPM-solver++ (order 2, midpoint, lower_order_final, flow sigmas).

    From ``DPMSolverMultistepScheduler``: ``_sigma_to_alpha_sigma_t`` (flow: α = 1 − σ), λ = log α − log σ,
    ``dpm_solver_first_order_update`` x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·D0 and
    ``multistep_dpm_solver_second_order_update`` (midpoint) which adds − ½α_t(e^{−h} − 1)·D1,
    D1 = (1/r0)(m0 − m1), r0 = h_0/h. ``step`` selects the order: first at step 0 (``lower_order_nums < 1``) and
    at the last step (``lower_order_final``; always with final_sigmas_type="zero", where σ_t = 0 gives x_t = x0
    exactly), second otherwise. First-order steps get c = d = 0. Float32 in diffusers' order (it uses float32 torch).
    (From 144 steps at shift 8 / 168 at shift 7 the first two integer timesteps are equal (999); diffusers'
    ``index_for_timestep`` then starts at index 1 and its loop fails with an IndexError on the last step. Here step
    i always uses σ_i.)
    """
    s = np.asarray(sigmas, F32)
    n = s.shape[0] - 1
    with np.errstate(divide="ignore"):  # σ = 0 at the end: λ = +inf, h = +inf, e^{-h} = 0 (as in torch)
        alpha = F32(1) - s
        lam = np.log(alpha) - np.log(s)
    out = {k: np.zeros(n, F32) for k in ("sigma", "ratio", "b", "c", "d")}
    for i in range(n):
        h = lam[i + 1] - lam[i]
        out["sigma"][i] = s[i]
        out["ratio"][i] = s[i + 1] / s[i]
        out["b"][i] = alpha[i + 1] * (np.exp(-h) - F32(1))
        if 0 < i < n - 1:  # second order: a previous output exists and this is not the final step
            r0 = (lam[i] - lam[i - 1]) / h
            out["c"][i] = F32(0.5) * out["b"][i]
            out["d"][i] = F32(1) / r0
    return out


def dpm_solver_pp_2m_step(x, v, prev_x0, k):
    """One DPM-solver++ 2M update. ``prev_x0`` is the previous step's data prediction (zeros before step 0).
    Returns ``(x_next, x0)``; ``x0`` becomes the next step's ``prev_x0``."""
    x0 = x - k["sigma"] * v  # convert_model_output, prediction_type="flow_prediction"
    x_next = k["ratio"] * x - k["b"] * x0 - k["c"] * (k["d"] * (x0 - prev_x0))
    return x_next, x0


def _dpm_init(latents, key):
    return jnp.zeros_like(latents, jnp.float32)  # zeros_like keeps the (explicit) sharding of the latents


def _dpm_step(x, v, state, k):
    return dpm_solver_pp_2m_step(x, v, state, k)


# ------------------------------------------------------------------------------------------------------ Euler
def euler_coefficients(sigmas) -> dict[str, np.ndarray]:
    """``FlowMatchEulerDiscreteScheduler.step``: dt = σ_{i+1} − σ_i (float32)."""
    s = np.asarray(sigmas, F32)
    return {"dt": (s[1:] - s[:-1]).astype(F32)}


def euler_step(x, v, dt):
    """x_{i+1} = x_i + (σ_{i+1} − σ_i)·v (equals ltx-core's x0 form x + dt·(x − x0)/σ up to rounding)."""
    return x + dt * v


def _euler_step(x, v, state, k):
    return euler_step(x, v, k["dt"]), state


# ---------------------------------------------------------------------------------------- x0 + re-noise
def renoise(x, noise, sigma0):
    """Re-noise clean latents to ``sigma0``: ``σ0·ε + (1−σ0)·x`` (ltx-core ``GaussianNoiser``; diffusers LTX2
    ``_create_noised_state``), in float32."""
    x, noise = jnp.asarray(x, jnp.float32), jnp.asarray(noise, jnp.float32)
    return sigma0 * noise + (1 - sigma0) * x


def renoise_coefficients(sigmas) -> dict[str, np.ndarray]:
    s = np.asarray(sigmas, F32)
    return {"sigma": s[:-1].copy(), "sigma_next": s[1:].copy()}


def renoise_step(x, v, noise, k):
    """LongLive step: x0 = x − σ·v, then ``add_noise`` to the next σ: (1 − σ')·x0 + σ'·ε.
    With σ' = 0 (the last step) this returns x0 exactly."""
    x0 = x - k["sigma"] * v
    return (1 - k["sigma_next"]) * x0 + k["sigma_next"] * noise


def _renoise_init(latents, key):
    if key is None:
        raise InputError("the 'renoise' solver draws fresh noise at each step: pass key=jax.random.key(...)")
    return key


def _renoise_step(x, v, key, k):
    key, sub = jax.random.split(key)  # step i uses the i-th split of the carried key
    return renoise_step(x, v, jax.random.normal(sub, x.shape, jnp.float32), k), key


SOLVERS: dict[str, Solver] = {
    "dpm++2m": Solver("dpm++2m", dpm_solver_pp_2m_coefficients, _dpm_init, _dpm_step),
    "euler": Solver("euler", euler_coefficients, lambda latents, key: (), _euler_step),
    "renoise": Solver("renoise", renoise_coefficients, _renoise_init, _renoise_step),
    "unipc": Solver("unipc", unipc_coefficients, unipc_init, unipc_step),
}


def get_solver(name: str) -> Solver:
    if name not in SOLVERS:
        raise InputError(f"unknown solver {name!r}; expected one of {tuple(SOLVERS)}")
    return SOLVERS[name]
