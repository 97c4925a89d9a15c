"""Layer-level properties of sana_jax.nn that later pieces (streaming, context parallelism) rely on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.nn.glumb import temporal_conv
from sana_jax.nn.linear_attention import LinearAttentionState, accumulate_state, read_state, relu_linear_attention
from sana_jax.nn.rope import rope_3d


def test_rope_tables_match_diffusers():
    torch = pytest.importorskip("torch")
    from diffusers.models.transformers.transformer_sana_video import WanRotaryPosEmbed

    ref = WanRotaryPosEmbed(112, (1, 2, 2), 1024)
    cos_ref, sin_ref = ref(torch.zeros(1, 1, 5, 14, 22))
    cos, sin = rope_3d((5, 7, 11), 112)
    np.testing.assert_array_equal(np.asarray(cos), cos_ref[0, :, 0, 0::2].numpy())
    np.testing.assert_array_equal(np.asarray(sin), sin_ref[0, :, 0, 1::2].numpy())


def test_rope_temporal_offset_is_a_row_shift():
    cos_all, _ = rope_3d((6, 2, 3), 24)
    cos_tail, _ = rope_3d((2, 2, 3), 24, t_offset=4)
    np.testing.assert_array_equal(np.asarray(cos_all)[4 * 6:], np.asarray(cos_tail))


def _qkv(n, seed=0, heads=3, d=24):
    k = jax.random.split(jax.random.key(seed), 3)
    return [jax.random.normal(key, (2, n, heads, d)) for key in k]


def test_linear_attention_state_is_additive_over_token_chunks():
    """Σ over chunks of the per-chunk states equals the state of all tokens (the basis of streaming/psum)."""
    grid = (4, 2, 3)
    n = 24
    q, k, v = _qkv(n)
    cos, sin = rope_3d(grid, 24)
    full = relu_linear_attention(q, k, v, cos, sin)
    parts = [accumulate_state(k[:, s], v[:, s], cos[s], sin[s]) for s in (slice(0, 10), slice(10, 24))]
    state = LinearAttentionState(*(sum(p[i] for p in parts) for i in range(2)))
    np.testing.assert_allclose(np.asarray(read_state(q, state, cos, sin)), np.asarray(full), rtol=1e-5, atol=1e-6)


def test_linear_attention_bf16_inputs_accumulate_in_float32():
    q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(48))
    cos, sin = rope_3d((2, 4, 6), 24)
    out = relu_linear_attention(q, k, v, cos, sin)
    ref = relu_linear_attention(*(x.astype(jnp.float32) for x in (q, k, v)), cos, sin)
    assert out.dtype == jnp.bfloat16
    assert float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref)) / jnp.max(jnp.abs(ref))) < 1e-2


def test_temporal_conv_halos_reproduce_the_whole_clip():
    x = jax.random.normal(jax.random.key(1), (2, 7, 3, 5))
    kernel = jax.random.normal(jax.random.key(2), (3, 5, 5))
    whole = temporal_conv(x, kernel)
    left = temporal_conv(x[:, :3], kernel, nxt=x[:, 3:4])
    right = temporal_conv(x[:, 3:], kernel, prev=x[:, 2:3])
    np.testing.assert_allclose(np.concatenate([left, right], 1), whole, rtol=1e-5, atol=1e-5)
