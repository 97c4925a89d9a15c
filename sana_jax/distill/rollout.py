"""Training the block-causal student on its own streaming state: the Self-Forcing rollout and chunk-wise ODE
regression.

**Self-Forcing** (Huang et al., arXiv 2506.08009; ``guandeh17/Self-Forcing:pipeline/self_forcing_training.py``
``inference_with_trajectory``): during training the student generates chunk after chunk exactly as
:func:`sana_jax.models.sana_video_causal.sample_chunk` does at inference — fresh noise, re-noising steps, the
clean t = 0 pass that commits the chunk into the linear-attention state and the FFN's conv tail — so it learns
from the context it will really see (its own outputs), not from the data's. Per chunk a random *exit* step e is
drawn; steps before e run without gradient, step e's x0 prediction is the chunk's output and the only pass the
loss differentiates ("stochastic gradient truncation"), and the commit runs without gradient on that output. The
prompt's cross-attention K/V are computed with gradient (they are part of the exit step).

**Chunk-wise ODE regression** (CausVid's initialisation, made causal the way inference is): for each chunk the
student jumps from a recorded point of the teacher's trajectory to its end, reading the state that committing the
teacher's clean endpoints of the earlier chunks gives (what a stream that had generated them would hold).

Both are written for any chunk step of the shape of :func:`sana_jax.models.sana_video_causal.step` (``step_fn``;
the Wan students': :func:`sana_jax.models.wan_causal.step`, :mod:`sana_jax.distill.families`) whose state keeps
the prompt's cross-attention inputs in the fields :data:`PROMPT_FIELDS`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.distill.ode import _check_student_sigmas
from sana_jax.errors import InputError
from sana_jax.models.sana_video_causal import StreamState, split_frames, step
from sana_jax.sampling.solvers import renoise_step


def frozen_copy(model: nnx.Module) -> nnx.Module:
    """The same model with every parameter behind ``stop_gradient`` (passes that must not be trained)."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(jax.lax.stop_gradient, state))


#: a stream state's prompt fields (the rest is the committed past): SANA's ``text_k``/``text_v``/``text_bias``,
#: the Wan students' ``text_k``/``text_v``
PROMPT_FIELDS = ("text_k", "text_v", "text_bias")


def _video_state_frozen(state: StreamState) -> StreamState:
    """The committed past without gradient; the prompt's K/V keep theirs."""
    return state._replace(**{f: jax.lax.stop_gradient(getattr(state, f)) for f in state._fields
                             if f not in PROMPT_FIELDS})


def _with_prompt_of(state: StreamState, source: StreamState) -> StreamState:
    """``state`` with ``source``'s prompt fields (and the gradient they carry)."""
    return state._replace(**{f: getattr(source, f) for f in PROMPT_FIELDS if f in state._fields})


def draw_exits(key: jax.Array, num_chunks: int, num_steps: int) -> jax.Array:
    """One exit step per chunk, uniform in [0, num_steps) (Self-Forcing ``generate_and_sync_list``)."""
    return jax.random.randint(key, (num_chunks,), 0, num_steps)


def self_forcing_rollout(model, state: StreamState, key: jax.Array, timesteps: jax.Array, coefficients: dict,
                         exits: jax.Array, *, shape: tuple[int, ...], chunk: int, step_fn=step
                         ) -> tuple[jax.Array, StreamState]:
    """Generate latents of ``shape`` (B, T, H, W, C) chunk by chunk on the student's own outputs, split as
    streaming splits them (:func:`~sana_jax.models.sana_video_causal.split_frames` of T by ``chunk``).

    ``state``: :func:`~sana_jax.models.sana_video_causal.init_state` of ``model`` (computed inside the
    differentiated function, so that the prompt's K/V carry gradient). ``timesteps``/``coefficients``:
    :func:`~sana_jax.models.sana_video_causal.renoise_inputs` of the student's schedule. ``exits`` (K,) int, one per
    chunk: chunk k's output is step ``exits[k]``'s x0 prediction. The noise is drawn as
    :func:`~sana_jax.models.sana_video_causal.sample_chunk` draws it (chunk k from ``fold_in(key, k)``), so with
    every exit at the last step the output is what streaming inference produces. ``step_fn``: the model's chunk
    step (default SANA-Video's). Returns (the clean latents (B, T, H, W, C) float32, the state after the last
    commit)."""
    b, frames, *pixels = shape
    sizes = split_frames(frames, chunk)
    if exits.shape != (len(sizes),):
        raise InputError(f"{frames} latent frames in chunks of {chunk} make {len(sizes)} chunks; got exits of shape "
                         f"{exits.shape}")
    timesteps = jnp.asarray(timesteps, jnp.float32)
    coefficients = {n: jnp.asarray(c, jnp.float32) for n, c in coefficients.items()}
    frozen = frozen_copy(model)
    chunks = []
    for index, size in enumerate(sizes):
        chunk_shape = (b, size, *pixels)
        chunk_key = jax.random.fold_in(key, index)
        past = jax.lax.stop_gradient(state)

        def denoise(i, x, past=past, chunk_key=chunk_key, chunk_shape=chunk_shape):
            v, _ = step_fn(frozen, past, x.astype(model.dtype), jnp.broadcast_to(timesteps[i], (b,)))
            noise = jax.random.normal(jax.random.fold_in(chunk_key, i + 1), chunk_shape, jnp.float32)
            return renoise_step(x, v.astype(jnp.float32), noise, {n: c[i] for n, c in coefficients.items()})

        x = jax.random.normal(jax.random.fold_in(chunk_key, 0), chunk_shape, jnp.float32)
        x = jax.lax.fori_loop(0, exits[index], denoise, x)  # no gradient: frozen weights, constant inputs
        e = exits[index]
        v, _ = step_fn(model, _video_state_frozen(state), x.astype(model.dtype),
                       jnp.broadcast_to(timesteps[e], (b,)))
        x0 = x - coefficients["sigma"][e] * v.astype(jnp.float32)
        _, committed = step_fn(frozen, past, jax.lax.stop_gradient(x0).astype(model.dtype), jnp.zeros((b,)),
                               commit=True)
        state = _with_prompt_of(committed, state)
        chunks.append(x0)
    return jnp.concatenate(chunks, axis=1), state


def causal_ode_loss(model, state: StreamState, trajectory: jax.Array, student_sigmas, timesteps: jax.Array,
                    key: jax.Array, *, chunk: int, step_fn=step) -> jax.Array:
    """CausVid's ODE regression for the block-causal student, chunk by chunk on its own streaming state.

    ``trajectory`` (B, n + 1, T, H, W, C): :func:`sana_jax.distill.ode.teacher_trajectory` of the whole clip at the
    student's n noise levels ``student_sigmas`` (fed to the model as ``timesteps``). The clip is split as
    streaming splits it (:func:`~sana_jax.models.sana_video_causal.split_frames`); chunk k's input is point i
    (uniform per sample and chunk) of its frames, its target their endpoint, and its past the state after
    committing the endpoints of chunks < k with the clean t = 0 pass (differentiated: the commit pass is trained
    to summarise a chunk for the next). ``step_fn``: as :func:`self_forcing_rollout`'s. Returns the mean squared
    error over every chunk.
    """
    sigmas = jnp.asarray(_check_student_sigmas(student_sigmas))
    n = sigmas.shape[0]
    if trajectory.ndim != 6 or trajectory.shape[1] != n + 1:
        raise InputError(f"trajectory must be (B, {n + 1}, T, H, W, C) for {n} student sigmas, got "
                         f"{trajectory.shape}")
    b = trajectory.shape[0]
    errors, start = [], 0
    for k, size in enumerate(split_frames(trajectory.shape[2], chunk)):
        frames = trajectory[:, :, start:start + size]
        index = jax.random.randint(jax.random.fold_in(key, k), (b,), 0, n)
        x_i = jnp.take_along_axis(frames, index.reshape(b, 1, 1, 1, 1, 1), axis=1)[:, 0]
        target = frames[:, -1].astype(jnp.float32)
        v, _ = step_fn(model, state, x_i.astype(model.dtype), timesteps[index])
        x0 = x_i.astype(jnp.float32) - sigmas[index].reshape(b, 1, 1, 1, 1) * v.astype(jnp.float32)
        errors.append(jnp.sum(jnp.square(x0 - target)))
        _, state = step_fn(model, state, target.astype(model.dtype), jnp.zeros((b,)), commit=True)
        start += size
    return sum(errors) / trajectory[:, 0].size
