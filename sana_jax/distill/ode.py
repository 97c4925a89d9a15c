"""ODE-pair initialisation (CausVid §4.3, ``tianweiy/CausVid:causvid/ode_regression.py``,
``causvid/models/wan/generate_ode_pairs.py``): the teacher's deterministic sampler, run with guidance from noise,
is recorded at the student's noise levels; the student then learns to jump from any recorded point straight to the
trajectory's end.

A trajectory is an array (B, n + 1, ...): entry i < n is the teacher's latent at the student's σ_i (entry 0 is the
starting noise, σ_0 = 1), entry n the clean endpoint. The student's step i maps entry i to entry n. For the
block-causal student the same regression runs chunk by chunk on its own streaming state
(:func:`sana_jax.distill.rollout.causal_ode_loss`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.distill.dmd import Denoiser
from sana_jax.errors import InputError
from sana_jax.sampling.loop import ModelFn, sample
from sana_jax.sampling.schedules import Schedule


def _check_student_sigmas(sigmas) -> np.ndarray:
    s = np.asarray(sigmas, np.float32)
    if s.ndim != 1 or s.size < 1 or not np.all(np.diff(s) < 0) or s[-1] <= 0 or s[0] > 1:
        raise InputError(f"student sigmas must decrease within (0, 1] (the noise levels its steps start from, "
                         f"without the final 0), got {s.tolist()}")
    return s


def interval_schedule(start: float, end: float, substeps: int) -> Schedule:
    """Flow Euler with ``substeps`` equal steps from σ = ``start`` down to ``end`` (the teacher's sampler between
    two of the student's noise levels)."""
    if substeps < 1:
        raise InputError(f"substeps must be >= 1, got {substeps}")
    s = np.linspace(start, end, substeps + 1).astype(np.float32)
    return Schedule(s, s[:-1] * np.float32(1000), "euler")


def teacher_trajectory(model_fn: ModelFn, params, noise: jax.Array, student_sigmas, *, cond, uncond=None,
                       guidance_scale: float = 1.0, substeps: int = 8) -> jax.Array:
    """The teacher's probability-flow ODE from ``noise`` (at σ = ``student_sigmas[0]``) to σ = 0, with
    ``substeps`` Euler steps (and guidance) between consecutive student noise levels; returns the trajectory
    (B, n + 1, ...) float32 recorded at each of the n student sigmas and at the end. ``model_fn``/``params``/
    ``cond``/``uncond``/``guidance_scale``: as :func:`sana_jax.sampling.sample` (the same compiled loop)."""
    s = _check_student_sigmas(student_sigmas)
    ends = np.concatenate([s, np.zeros(1, np.float32)])
    x = jnp.asarray(noise, jnp.float32)
    points = [x]
    for start, end in zip(ends[:-1], ends[1:]):
        x = sample(model_fn, params, x, schedule=interval_schedule(float(start), float(end), substeps), cond=cond,
                   uncond=uncond, guidance_scale=guidance_scale)
        points.append(x)
    return jnp.stack(points, axis=1)


def ode_regression_loss(student: Denoiser, trajectory: jax.Array, student_sigmas, key: jax.Array) -> jax.Array:
    """Mean ‖student(x_i, σ_i) − x_end‖² with one recorded point i drawn uniformly per sample
    (CausVid ``ODERegression.generator_loss``; a student with no time axis of chunks)."""
    s = jnp.asarray(_check_student_sigmas(student_sigmas))
    n = s.shape[0]
    if trajectory.shape[1] != n + 1:
        raise InputError(f"trajectory has {trajectory.shape[1]} points, expected {n + 1} (the student's {n} sigmas "
                         "and the end)")
    index = jax.random.randint(key, (trajectory.shape[0],), 0, n)
    x_i = jnp.take_along_axis(trajectory, index.reshape((-1, 1) + (1,) * (trajectory.ndim - 2)), axis=1)[:, 0]
    pred = student(x_i, s[index])
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - trajectory[:, -1].astype(jnp.float32)))
