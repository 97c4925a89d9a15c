"""The block-causal student's training passes on a tiny SANA-Video DiT: the Self-Forcing rollout is streaming
inference when every chunk exits at the last step, and its gradient flows through the exit steps only; chunk-wise
ODE regression reads the state that committing the teacher's endpoints gives (checked against the one-shot
block-causal forward)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sana_jax.distill.rollout import causal_ode_loss, draw_exits, self_forcing_rollout
from sana_jax.models import sana_video_causal as sc
from sana_jax.sampling import longsana_schedule, renoise_step
from tests.helpers import tiny_causal_model

B, H, W, C = 2, 4, 4, 4
CHUNK = 2
FRAMES = 1 + 2 * CHUNK  # LongSANA's split: chunks of 3 and 2 latent frames


@pytest.fixture(scope="module")
def model():
    return tiny_causal_model()


@pytest.fixture(scope="module")
def prompt():
    rng = np.random.default_rng(1)
    return jnp.asarray(rng.standard_normal((B, 5, 8)), jnp.float32), jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


SCHEDULE = longsana_schedule()
TIMESTEPS, COEFFICIENTS = sc.renoise_inputs(SCHEDULE)
N = len(TIMESTEPS)


def rollout(model, prompt, key, exits):
    state = sc.init_state(model, *prompt, height=H, width=W)
    return self_forcing_rollout(model, state, key, jnp.asarray(TIMESTEPS), COEFFICIENTS, exits,
                                shape=(B, FRAMES, H, W, C), chunk=CHUNK)


def test_rollout_exiting_last_is_streaming_inference(model, prompt):
    key = jax.random.key(3)
    video, state = jax.jit(lambda k: rollout(model, prompt, k, jnp.full((2,), N - 1)))(key)
    dit = sc.StreamingDiT(model, donate=False)
    ref_state = dit.init_state(*prompt, height=H, width=W)
    chunks = []
    for c, n in enumerate(sc.split_frames(FRAMES, CHUNK)):
        x, ref_state = dit.sample_chunk(ref_state, key, c, SCHEDULE, shape=(B, n, H, W, C))
        chunks.append(x)
    np.testing.assert_allclose(video, jnp.concatenate(chunks, axis=1), rtol=0, atol=1e-5)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def _exit_pass_inputs(model, prompt, key, exits):
    """The rollout written out step by step: per chunk, the exit step's input and the committed past."""
    recorded = []
    state = sc.init_state(model, *prompt, height=H, width=W)
    for k, (size, e) in enumerate(zip(sc.split_frames(FRAMES, CHUNK), exits)):
        chunk_key = jax.random.fold_in(key, k)
        x = jax.random.normal(jax.random.fold_in(chunk_key, 0), (B, size, H, W, C), jnp.float32)
        for i in range(e):
            v, _ = sc.step(model, state, x, jnp.broadcast_to(TIMESTEPS[i], (B,)))
            noise = jax.random.normal(jax.random.fold_in(chunk_key, i + 1), x.shape, jnp.float32)
            x = renoise_step(x, v, noise, {n: c[i] for n, c in COEFFICIENTS.items()})
        recorded.append((x, state))
        v, _ = sc.step(model, state, x, jnp.broadcast_to(TIMESTEPS[e], (B,)))
        _, state = sc.step(model, state, x - COEFFICIENTS["sigma"][e] * v, jnp.zeros((B,)), commit=True)
    return recorded


def test_rollout_gradient_flows_through_exit_steps_only(model, prompt):
    key, exits = jax.random.key(5), np.array([1, 2])
    weights = jax.random.normal(jax.random.key(6), (B, FRAMES, H, W, C))
    graphdef, params = nnx.split(model)

    def rollout_objective(params):
        video, _ = rollout(nnx.merge(graphdef, params), prompt, key, jnp.asarray(exits))
        return jnp.sum(weights * video)

    recorded = _exit_pass_inputs(model, prompt, key, exits)

    def exit_passes_only(params):  # the exit steps on constant inputs and pasts; the prompt K/V from params
        m = nnx.merge(graphdef, params)
        fresh = sc.init_state(m, *prompt, height=H, width=W)
        total, start = 0.0, 0
        for (x, past), e in zip(recorded, exits):
            past = past._replace(text_k=fresh.text_k, text_v=fresh.text_v)
            v, _ = sc.step(m, past, x, jnp.broadcast_to(TIMESTEPS[e], (B,)))
            x0 = x - COEFFICIENTS["sigma"][e] * v
            total = total + jnp.sum(weights[:, start:start + x.shape[1]] * x0)
            start += x.shape[1]
        return total

    got = jax.jit(jax.grad(rollout_objective))(params)
    want = jax.jit(jax.grad(exit_passes_only))(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    # the text projection gets gradient from the exit steps (the prompt's K/V are part of them)
    assert float(jnp.max(jnp.abs(got["blocks"]["attn2"]["to_k"]["kernel"][...]))) > 0


def test_draw_exits_range():
    exits = draw_exits(jax.random.key(0), 1000, N)
    assert exits.shape == (1000,) and set(np.unique(exits).tolist()) == set(range(N))


def test_causal_ode_loss_reads_committed_endpoints(model, prompt):
    """Two chunks: chunk 0 from its noisy point with no past; chunk 1 from its noisy point with chunk 0's clean
    endpoint as the past — the one-shot block-causal forward with chunk 0 at t = 0 gives the same."""
    rng = np.random.default_rng(2)
    sigmas = SCHEDULE.sigmas[:-1]
    trajectory = jnp.asarray(rng.standard_normal((B, N + 1, FRAMES, H, W, C)), jnp.float32)
    key = jax.random.key(9)
    loss = causal_ode_loss(model, sc.init_state(model, *prompt, height=H, width=W), trajectory, sigmas,
                           jnp.asarray(TIMESTEPS), key, chunk=CHUNK)

    sizes = sc.split_frames(FRAMES, CHUNK)
    idx = [np.asarray(jax.random.randint(jax.random.fold_in(key, k), (B,), 0, N)) for k in range(len(sizes))]
    pick = lambda i, sl: trajectory[np.arange(B), i][:, sl]  # noqa: E731
    first, second = slice(0, sizes[0]), slice(sizes[0], FRAMES)
    x_a = jnp.concatenate([pick(idx[0], first), pick(idx[1], second)], axis=1)
    x_b = jnp.concatenate([trajectory[:, -1, first], pick(idx[1], second)], axis=1)
    t_a = jnp.concatenate([jnp.repeat(TIMESTEPS[idx[0]][:, None], sizes[0], 1),
                           jnp.repeat(TIMESTEPS[idx[1]][:, None], sizes[1], 1)], axis=1)
    t_b = t_a.at[:, first].set(0.0)
    sig = lambda i: jnp.asarray(sigmas)[i].reshape(B, 1, 1, 1, 1)  # noqa: E731
    v_a = sc.causal_forward(model, x_a, *prompt[:1], t_a, prompt[1], chunk=CHUNK)
    v_b = sc.causal_forward(model, x_b, *prompt[:1], t_b, prompt[1], chunk=CHUNK)
    x0_first = x_a[:, first] - sig(idx[0]) * v_a[:, first]
    x0_second = x_b[:, second] - sig(idx[1]) * v_b[:, second]
    want = (jnp.sum((x0_first - trajectory[:, -1, first]) ** 2) +
            jnp.sum((x0_second - trajectory[:, -1, second]) ** 2)) / trajectory[:, 0].size
    np.testing.assert_allclose(loss, want, rtol=1e-5)
