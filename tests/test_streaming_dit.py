"""Block-causal SANA-Video DiT: streaming chunk by chunk equals the one-shot block-causal forward, which equals a
dense masked reference; constant-size state, one trace per chunk shape, constant compiled memory."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sana_jax.errors import InputError
from sana_jax.models import sana_video_causal as sc
from sana_jax.nn.attention import mask_to_bias
from sana_jax.nn.layers import layer_norm, modulate
from sana_jax.nn.rope import apply_rope, rope_3d
from tests.conftest import max_rel_err
from tests.helpers import tiny_causal_model

B, H, W = 2, 4, 4  # patch 2×2 → 4 tokens per latent frame, so 50-frame clips stay cheap
TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return tiny_causal_model()


@pytest.fixture(scope="module")
def one_shot(model):
    graphdef, params = nnx.split(model)

    @functools.partial(jax.jit, static_argnames=("chunk", "window", "causal"))
    def fn(params, x, text, ts, mask, chunk=10, window=None, causal=True):
        return sc.causal_forward(nnx.merge(graphdef, params), x, text, ts, mask, chunk=chunk, window=window,
                                 causal=causal)

    return lambda *a, **k: fn(params, *a, **k)


@pytest.fixture(scope="module")
def dit(model):
    return sc.StreamingDiT(model)  # donates the state on commit


def inputs(frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((B, frames, H, W, 4)), jnp.float32)
    text = jnp.asarray(rng.standard_normal((B, 5, 8)), jnp.float32)
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    ts = jnp.asarray(rng.uniform(0, 1000, (B, frames)), jnp.float32)  # a timestep per latent frame
    return x, text, mask, ts


def stream(dit, x, text, mask, ts, sizes, window=None, check_denoise=True):
    """Stream the chunks: (a non-committing call, then) the committing pass on the same input."""
    state = dit.init_state(text, mask, height=H, width=W, window=window)
    outs, start = [], 0
    for c in sizes:
        xc, tc = x[:, start:start + c], ts[:, start:start + c]
        v_denoise, none = dit(state, xc, tc) if check_denoise else (None, None)
        v, state = dit(state, xc, tc, commit=True)  # the old state is donated
        assert none is None
        if check_denoise:  # the same velocity without committing
            assert max_rel_err(v_denoise, v) <= 1e-6
        outs.append(v)
        start += c
    return jnp.concatenate(outs, axis=1), state


def dense_reference(model, x, text, ts, mask, sizes, window=None):
    """Block-causal model written out with an explicit token mask and per-chunk conv padding (Sana's
    ChunkCausalAttention / ChunkGLUMBConvTemp): independent of the state / cumsum code under test."""
    cfg = model.config
    grid = model.check_latents(x.shape)
    t, s = grid[0], grid[1] * grid[2]
    chunk_of = np.repeat(np.repeat(np.arange(len(sizes)), sizes), s)
    lo = -np.inf if window is None else chunk_of[:, None] - window
    allowed = jnp.asarray((chunk_of[None, :] <= chunk_of[:, None]) & (chunk_of[None, :] >= lo), jnp.float32)
    cos, sin = rope_3d(grid, cfg.attention_head_dim)
    h = model.embed_patches(x)
    t6, emb = model.embed_timestep(ts, x.shape[0], t)
    caption, bias = model.embed_text(text), mask_to_bias(mask)
    graphdef, blocks = nnx.split(model.blocks)
    bounds = np.cumsum((0,) + tuple(sizes))
    for layer in range(cfg.num_layers):
        blk = nnx.merge(graphdef, jax.tree.map(lambda a, i=layer: a[i], blocks))
        b, d = h.shape[0], h.shape[-1]
        mods = blk.scale_shift_table[...] + t6.reshape(*t6.shape[:-1], 6, d)
        sh1, sc1, g1, sh2, sc2, g2 = (mods[..., i, :] for i in range(6))
        a = modulate(layer_norm(h, 1e-6), sh1, sc1).reshape(b, t * s, d)
        at = blk.attn1
        q, k, v = (y.reshape(b, t * s, at.heads, -1) for y in
                   (at.norm_q(at.to_q(a)), at.norm_k(at.to_k(a)), at.to_v(a)))
        pq, pk = jax.nn.relu(q), jax.nn.relu(k)
        num = jnp.einsum("bnhd,bmhd,nm,bmhe->bnhe", apply_rope(pq, cos, sin), apply_rope(pk, cos, sin), allowed, v)
        den = jnp.einsum("bnhd,bmhd,nm->bnh", pq, pk, allowed)
        h = h + g1 * at.to_out((num / (den + 1e-15)[..., None]).reshape(b, t * s, d)).reshape(h.shape)
        h = h + blk.attn2(h.reshape(b, t * s, d), caption, bias).reshape(h.shape)
        y = blk.ff.spatial(modulate(layer_norm(h, 1e-6), sh2, sc2).reshape(b, *grid, d))
        kern = blk.ff.conv_temp[...]
        conv = []
        for i, (s0, s1) in enumerate(itertools.pairwise(bounds)):
            left = y[:, s0 - 1:s0] if i else jnp.zeros_like(y[:, :1])
            p = jnp.concatenate([left, y[:, s0:s1], jnp.zeros_like(y[:, :1])], axis=1)
            conv.append(sum(jnp.einsum("bthwc,cd->bthwd", p[:, j:j + s1 - s0], kern[j]) for j in range(3)))
        h = h + g2 * (y + jnp.concatenate(conv, axis=1)).reshape(h.shape)
    return model.unpatchify(h, emb, grid)


@pytest.fixture(scope="module")
def dense(model):
    graphdef, params = nnx.split(model)

    @functools.partial(jax.jit, static_argnames=("sizes", "window"))
    def fn(params, x, text, ts, mask, sizes, window=None):
        return dense_reference(nnx.merge(graphdef, params), x, text, ts, mask, sizes, window)

    return lambda *a, sizes, window=None: fn(params, *a, sizes=tuple(sizes), window=window)


# Each K in {1, 2, 5} and each chunk size in {1, 3, 10}, the 50-frame clip included (every pair would only add
# compile time: each clip length is a new executable).
@pytest.mark.parametrize("num_chunks,chunk", [(1, 3), (2, 10), (5, 1), (5, 3), (5, 10)])
def test_streaming_equals_one_shot(one_shot, dit, num_chunks, chunk):
    x, text, mask, ts = inputs(num_chunks * chunk, seed=num_chunks * 10 + chunk)
    ref = one_shot(x, text, ts, mask, chunk=chunk)
    out, state = stream(dit, x, text, mask, ts, [chunk] * num_chunks, check_denoise=chunk == 3)
    assert max_rel_err(out, ref) <= TOL
    assert int(state.frame) == num_chunks * chunk and int(state.chunks) == num_chunks


def test_one_shot_matches_dense_mask(one_shot, dense):
    x, text, mask, ts = inputs(15, seed=53)
    ref = one_shot(x, text, ts, mask, chunk=3)
    assert max_rel_err(ref, dense(x, text, ts, mask, sizes=[3] * 5)) <= TOL
    assert max_rel_err(one_shot(x, text, ts, mask, causal=False), ref) > 1e-3  # the causal structure is there


def test_sliding_window(one_shot, dense, dit):
    x, text, mask, ts = inputs(15, seed=53)
    ref = one_shot(x, text, ts, mask, chunk=3, window=2)
    assert max_rel_err(ref, dense(x, text, ts, mask, sizes=[3] * 5, window=2)) <= TOL
    out, state = stream(dit, x, text, mask, ts, [3] * 5, window=2, check_denoise=False)
    assert max_rel_err(out, ref) <= TOL
    assert state.kv.shape[1] == 2
    assert max_rel_err(one_shot(x, text, ts, mask, chunk=3), ref) > 1e-4  # the window does cut the past


def test_longsana_split_first_chunk_larger(one_shot, dense, dit):
    assert sc.split_frames(31, 10) == (11, 10, 10) and sc.split_frames(4, 10) == (4,)
    assert sc.split_frames(8, 3) == (5, 3)  # the remainder goes first
    x, text, mask, ts = inputs(8, seed=5)
    ref = one_shot(x, text, ts, mask, chunk=3)
    assert max_rel_err(ref, dense(x, text, ts, mask, sizes=[5, 3])) <= TOL
    out, _ = stream(dit, x, text, mask, ts, [5, 3], check_denoise=False)
    assert max_rel_err(out, ref) <= TOL
    with pytest.raises(InputError):
        one_shot(x, text, ts, mask, chunk=(4, 3))


def test_causal_off_equals_plain_model(model, one_shot):
    x, text, mask, ts = inputs(15, seed=53)
    plain = nnx.jit(lambda m, *a: m(*a))(model, x, text, ts, mask)
    assert max_rel_err(one_shot(x, text, ts, mask, causal=False), plain) <= 1e-6


def test_state_fixed_shape_and_single_trace(model, dit):
    x, text, mask, _ = inputs(12, seed=1)
    state = dit.init_state(text, mask, height=H, width=W)
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), state)
    for c in range(4):
        xc = x[:, 3 * c:3 * c + 3]
        for t in (1000.0, 960.0, 889.0, 727.0):  # python floats and arrays alike: the timestep is traced
            dit(state, xc, t if c % 2 else jnp.full((B,), t))
        _, state = dit(state, xc, 0.0, commit=True)
        assert jax.tree.map(lambda a: (a.shape, a.dtype), state) == shapes
        assert int(state.frame) == 3 * (c + 1)
        if c == 0:
            traces = dit.traces  # the denoise and commit steps are traced for the first chunk only
    assert dit.traces == traces
    cfg = model.config
    assert state.kv.shape == (cfg.num_layers, B, cfg.num_attention_heads, cfg.attention_head_dim,
                              cfg.attention_head_dim)
    assert state.conv_tail.shape == (cfg.num_layers, B, 1, H // 2, W // 2, cfg.inner_dim)
    with pytest.raises(InputError):
        dit(state, x[:1, :3], 0.0)  # wrong batch for this stream
    end = dit.init_state(text, mask, height=H, width=W, t_offset=sc.DEFAULT_MAX_FRAMES - 3)
    assert np.isfinite(dit(end, x[:, :3], 0.0)[0]).all()  # the last frames of the RoPE table: fine
    end = dit.init_state(text, mask, height=H, width=W, t_offset=sc.DEFAULT_MAX_FRAMES - 2)
    assert np.isnan(dit(end, x[:, :3], 0.0)[0]).all()  # past it: NaN, not silently clamped positions
    new = sc.set_prompt(model, state, text[::-1], mask[::-1])
    assert new.text_k.shape == state.text_k.shape and not np.allclose(new.text_k, state.text_k)


def test_memory_constant_in_stream_length(dit):
    x, text, mask, _ = inputs(3, seed=4)
    zero = jnp.zeros((B, 3), jnp.float32)

    def run(num_chunks):
        state = dit.init_state(text, mask, height=H, width=W)
        for _ in range(num_chunks):
            _, state = dit(state, x, zero, commit=True)
        temp = [dit.lower(state, x, zero, commit=c).compile().memory_analysis().temp_size_in_bytes
                for c in (False, True)]
        return state.nbytes, temp

    (bytes4, temp4), (bytes32, temp32) = run(4), run(32)
    assert bytes4 == bytes32
    for a, b in zip(temp4, temp32):
        assert abs(a - b) <= 0.05 * max(a, b)
