"""The denoising loop: one compiled ``lax.scan`` over steps, classifier-free guidance, a progress hook.

``sample(model_fn, params, latents, schedule=..., cond=...)`` runs the whole loop as ONE jitted function.
``model_fn(params, x, t, cond) -> velocity`` is a pure function (build it once from an NNX model, e.g.
``graphdef, state = nnx.split(model)`` and ``lambda p, x, t, c: nnx.merge(graphdef, p)(x, c["text"], t, c["mask"])``)
and is a *static* argument: keep the same function object across calls or every call recompiles. Everything else
(params, latents, cond, the schedule's arrays, the guidance scale) is traced, so a new seed, prompt, schedule of the
same length or guidance value (≠ 1) reuses the compiled loop.

Per step, as diffusers' ``SanaVideoPipeline.__call__`` does it: the model gets ``x`` (float32) and
``t`` = the schedule's timestep broadcast to the model batch, shape (B,) — (2B,) with guidance, as
``t.expand(latent_model_input.shape[0])`` — its output is cast to float32, guided as
``v = v_u + g·(v_c − v_u)`` with the batch ordered [uncond; cond], and passed to the solver (float32).
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.errors import InputError
from sana_jax.sampling.schedules import Schedule
from sana_jax.sampling.solvers import Solver, get_solver

ModelFn = Callable[[Any, jax.Array, jax.Array, Any], jax.Array]

# Progress hooks are looked up by an integer id passed to the callback as a traced value, so a new hook (a new tqdm
# bar per call) neither retraces nor recompiles. The entry is dropped after the last step.
_HOOKS: dict[int, tuple[Callable[[int], None], int]] = {}
_HOOK_IDS = itertools.count(1)
_HOOK_LOCK = threading.Lock()


def _progress_dispatch(hook_id, step, _done) -> None:
    hook_id, step = int(hook_id), int(step)
    with _HOOK_LOCK:
        fn, n = _HOOKS.get(hook_id, (None, 0))
        if step == n - 1:
            _HOOKS.pop(hook_id, None)
    if fn is not None:
        fn(step)


def _devices(tree) -> set:
    out = set()
    for leaf in jax.tree.leaves(tree):
        try:
            out |= set(leaf.sharding.device_set)
        except AttributeError:  # NumPy arrays, Python scalars (jit puts them on the default device), tracers
            continue
    return out


def _single_device(*trees) -> bool:
    """Ordered callbacks are only supported on one device (jax raises for more)."""
    mesh = jax.sharding.get_abstract_mesh()
    return (mesh.empty or mesh.size <= 1) and len(_devices(trees)) <= 1


def sample(model_fn: ModelFn, params, latents, *, schedule: Schedule, cond, uncond=None,
           guidance_scale: float = 1.0, key: jax.Array | None = None,
           progress: Callable[[int], None] | None = None, ordered: bool | None = None,
           keep: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """Denoise ``latents`` (any shape with a leading batch axis B) along ``schedule``; returns float32 latents.

    Args:
      model_fn: ``(params, x, t, cond) -> v``, pure, static (same object ⇒ no recompilation).
      params: pytree passed through to ``model_fn`` (e.g. ``nnx.State``).
      schedule: from ``dpm_flow_schedule`` / ``unipc_flow_schedule`` / ``euler_flow_schedule`` /
        ``distilled_schedule`` / ``longsana_schedule``; its ``solver`` field picks the update rule.
      cond / uncond: pytrees with the same structure whose leaves all have leading batch axis B. With guidance the
        model is called once per step on the batch [uncond; cond] (leaves concatenated once, outside the scan).
      guidance_scale: g; ``g == 1`` (a Python-level, static decision) skips the unconditional half and ``uncond``.
        (diffusers turns guidance off for every g <= 1; a pipeline wanting that passes 1.0 for those.)
      key: PRNG key, required by the ``"renoise"`` solver only (step i draws from the i-th split of ``key``).
      progress: called once per step with the step index 0..n−1, from inside the compiled loop
        (``jax.debug.callback``, after the step's update is computed); ``None`` inserts nothing.
      ordered: ordered callbacks (default: when the computation is on one device; jax refuses them on several).
      keep: ``(mask, values)`` broadcastable to the latents: where ``mask`` is true the latents are reset to
        ``values`` after every step (image-to-video keeps latent frame 0; the solver is elementwise, so this equals
        stepping only the other frames as diffusers' ``SanaImageToVideoPipeline`` does).
    """
    if not isinstance(schedule, Schedule):
        raise InputError(f"schedule must be a sana_jax.sampling.Schedule, got {type(schedule).__name__}")
    guidance_scale = float(guidance_scale)
    use_cfg = guidance_scale != 1.0
    if use_cfg:
        if uncond is None:
            raise InputError(f"guidance_scale={guidance_scale} needs `uncond` (the negative-prompt condition)")
        if jax.tree.structure(uncond) != jax.tree.structure(cond):
            raise InputError("`cond` and `uncond` must be pytrees of the same structure")
    solver = get_solver(schedule.solver)
    coeffs = solver.coefficients(schedule.sigmas)
    n = schedule.num_steps
    hook_id = None
    if progress is not None:
        with _HOOK_LOCK:
            hook_id = next(_HOOK_IDS) % (2**31 - 1)
            _HOOKS[hook_id] = (progress, n)
        hook_id = np.int32(hook_id)
        if ordered is None:
            ordered = _single_device(params, latents, cond, uncond)
    return _sample_jit(model_fn, solver, use_cfg, progress is not None, bool(ordered), params, latents, cond,
                       uncond if use_cfg else None, np.float32(guidance_scale), schedule.timesteps, coeffs, key,
                       hook_id, keep)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _sample_jit(model_fn: ModelFn, solver: Solver, use_cfg: bool, with_progress: bool, ordered: bool, params,
                latents, cond, uncond, guidance_scale, timesteps, coeffs, key, hook_id, keep):
    x = jnp.asarray(latents).astype(jnp.float32)
    if use_cfg:  # diffusers order: torch.cat([negative_prompt_embeds, prompt_embeds])
        cond = jax.tree.map(lambda u, c: jnp.concatenate([u, c], axis=0), uncond, cond)

    def body(carry, xs):
        x, state = carry
        i, t, k = xs
        x_in = jnp.concatenate([x, x], axis=0) if use_cfg else x
        t_in = jnp.broadcast_to(t, (x_in.shape[0],))
        out = model_fn(params, x_in, t_in, cond).astype(jnp.float32)
        if use_cfg:
            v_u, v_c = jnp.split(out, 2, axis=0)
            v = v_u + guidance_scale * (v_c - v_u)
        else:
            v = out
        x, state = solver.step(x, v, state, k)
        if keep is not None:
            x = jnp.where(keep[0], keep[1].astype(x.dtype), x)
        if with_progress:  # depends on the new x, so it fires once the step's work is done
            jax.debug.callback(_progress_dispatch, hook_id, i, jnp.sum(x), ordered=ordered)
        return (x, state), None

    steps = jnp.arange(timesteps.shape[0], dtype=jnp.int32)
    (x, _), _ = jax.lax.scan(body, (x, solver.init(x, key)), (steps, timesteps, coeffs))
    return x
