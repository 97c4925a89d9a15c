"""Fused linear-attention kernels (sana_jax/kernels) against the XLA reference (sana_jax/nn/linear_attention.py).

On CPU the Pallas kernels run in interpret mode (the same kernel code, executed as a JAX loop over the grid);
the compiled GPU tests are marked ``gpu`` and skip elsewhere. Tolerances: float32 ≤ 1e-5 max relative error
(max |ours − ref| / max |ref|; measured 3e-7 – 5e-7); bfloat16 inputs ≤ 4e-3 — both sides compute in float32
from the same bfloat16 values and round the output to bfloat16, so they differ by at most one bfloat16 ulp
(2⁻⁸ ≈ 3.9e-3 relative) where the float32 results straddle a rounding boundary (measured 1e-7 – 1.3e-5). The
compiled GPU test at the 720p shape allows 1e-4 in float32: sums of 9,680 tokens in another order.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.errors import InputError
from sana_jax.kernels.dispatch import linear_attention
from sana_jax.kernels.linear_attention import (combine_chunks, linear_attention_pallas, split_tokens, state_to_kernel,
                                               state_to_natural)
from sana_jax.nn.linear_attention import LinearAttentionState, accumulate_state, read_state, relu_linear_attention
from sana_jax.nn.rope import rope_3d
from tests.conftest import max_rel_err

GRID = (5, 3, 7)  # latent (t, h, w): N = 105 tokens, 21 per frame; not a multiple of any block size used
N = int(np.prod(GRID))
F32_TOL = 1e-5
BF16_TOL = 4e-3
gpu = pytest.mark.skipif(jax.default_backend() != "gpu", reason="compiled Pallas kernels need a GPU")


def _inputs(d: int, *, b: int = 1, h: int = 2, grid=GRID, dtype=jnp.float32, seed: int = 0):
    cos, sin = rope_3d(grid, d)
    n = int(np.prod(grid))
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(seed), 3)
    q, k, v = (jax.random.normal(key, (b, n, h, d), jnp.float32).astype(dtype) for key in (kq, kk, kv))
    return q, k, v, cos, sin


@functools.partial(jax.jit, static_argnames="sizes")
def chunk_causal_reference(q, k, v, cos, sin, sizes, initial=None):
    """Chunk c reads (Σ_{j<c} own_j) + own_c: an exclusive cumulative sum over chunks plus its own state."""
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    sl = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    own = [accumulate_state(k[:, s], v[:, s], cos[s], sin[s]) for s in sl]
    past = LinearAttentionState(jnp.zeros_like(own[0].kv), jnp.zeros_like(own[0].k_sum))
    if initial is not None:
        past = initial
    outs = []
    for s, o in zip(sl, own):
        outs.append(read_state(q[:, s], LinearAttentionState(past.kv + o.kv, past.k_sum + o.k_sum), cos[s], sin[s]))
        past = LinearAttentionState(past.kv + o.kv, past.k_sum + o.k_sum)  # exclusive prefix for the next chunk
    return jnp.concatenate(outs, axis=1).astype(q.dtype), own


@functools.partial(jax.jit, static_argnames=("impl", "causal_chunk", "window", "return_states"))
def _dispatch(q, k, v, cos, sin, impl="reference", causal_chunk=None, window=None, return_states=False):
    return linear_attention(q, k, v, cos, sin, impl=impl, causal_chunk=causal_chunk, window=window,
                            return_states=return_states, block_state=16, block_out=16)


@pytest.mark.parametrize("d", [32, 64, 112, 128])
def test_noncausal_matches_reference(d):
    q, k, v, cos, sin = _inputs(d)
    ref = jax.jit(relu_linear_attention)(q, k, v, cos, sin)
    # blocks of 16 tokens over N = 105: the state reduction split over 3 programs per head, 3 output blocks
    # per program (the last program gets one)
    out = linear_attention_pallas(q, k, v, cos, sin, interpret=True, block_state=16, block_out=16, splits=3,
                                  blocks_per_program=3)
    assert out.dtype == q.dtype and out.shape == ref.shape
    assert max_rel_err(out, ref) <= F32_TOL


@pytest.mark.parametrize("d", [32, 64, 112, 128])
def test_chunk_causal_matches_reference(d):
    q, k, v, cos, sin = _inputs(d)
    chunk = 2 * 21  # two latent frames: chunks of 42, 42, 21 tokens, none a multiple of the block sizes
    ref, _ = chunk_causal_reference(q, k, v, cos, sin, split_tokens(N, chunk))
    kw = {"causal_chunk": chunk, "interpret": True, "block_state": 16, "block_out": 16, "splits": 2,
          "blocks_per_program": 2}
    out = linear_attention_pallas(q, k, v, cos, sin, **kw)
    assert max_rel_err(out, ref) <= F32_TOL
    # causality: changing the last chunk's k/v leaves the earlier chunks' outputs unchanged
    k2 = k.at[:, 84:].set(k[:, 84:] * -3.0 + 1.0)
    out2 = linear_attention_pallas(q, k2, v, cos, sin, **kw)
    np.testing.assert_array_equal(np.asarray(out2[:, :84]), np.asarray(out[:, :84]))
    assert not np.allclose(np.asarray(out2[:, 84:]), np.asarray(out[:, 84:]))


def test_chunk_causal_uneven_chunks_states_and_initial_state():
    """LongSANA's remainder-first split (3 + 2 frames), a carried-in state, and the returned per-chunk states."""
    q, k, v, cos, sin = _inputs(64, b=2)
    sizes = (3 * 21, 2 * 21)
    init = accumulate_state(*_inputs(64, b=2, seed=1)[1:])  # some earlier chunk's state
    ref, own = chunk_causal_reference(q, k, v, cos, sin, sizes, initial=init)
    out, states = linear_attention_pallas(q, k, v, cos, sin, causal_chunk=sizes, initial_state=init,
                                          return_states=True, interpret=True, block_state=32, block_out=32)
    assert max_rel_err(out, ref) <= F32_TOL
    assert states.kv.shape == (2, 2, 2, 64, 64) and states.k_sum.shape == (2, 2, 2, 64)
    for c in range(2):
        assert max_rel_err(states.kv[:, c], own[c].kv) <= F32_TOL
        assert max_rel_err(states.k_sum[:, c], own[c].k_sum) <= F32_TOL


def test_windowed_chunks_match_dispatcher_reference():
    q, k, v, cos, sin = _inputs(32)
    kw = {"causal_chunk": 42, "window": 1}  # chunks of 42, 42, 21 tokens, each reading itself and the one before
    ref = _dispatch(q, k, v, cos, sin, **kw)
    out = _dispatch(q, k, v, cos, sin, impl="interpret", **kw)
    assert max_rel_err(out, ref) <= F32_TOL
    own = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    np.testing.assert_allclose(combine_chunks(own, 1, 0), own + jnp.pad(own[:-1], ((1, 0), (0, 0))), rtol=1e-6)
    np.testing.assert_allclose(combine_chunks(own, 9, 0), jnp.cumsum(own, 0), rtol=1e-6)  # wide = all past


def test_bf16_inputs():
    q, k, v, cos, sin = _inputs(112, dtype=jnp.bfloat16)
    ref = _dispatch(q, k, v, cos, sin, causal_chunk=42)
    out = _dispatch(q, k, v, cos, sin, impl="interpret", causal_chunk=42)
    assert out.dtype == jnp.bfloat16 and ref.dtype == jnp.bfloat16
    assert max_rel_err(out, ref) <= BF16_TOL


def test_dispatcher():
    q, k, v, cos, sin = _inputs(64)
    ref = relu_linear_attention(q, k, v, cos, sin)
    if jax.default_backend() != "gpu":
        np.testing.assert_array_equal(np.asarray(linear_attention(q, k, v, cos, sin)), np.asarray(ref))
        with pytest.raises(InputError, match="needs a GPU"):
            linear_attention(q, k, v, cos, sin, impl="pallas")
    with pytest.raises(InputError, match="impl"):
        linear_attention(q, k, v, cos, sin, impl="cuda")
    # the non-causal reference with return_states is the same computation
    out, states = _dispatch(q, k, v, cos, sin, return_states=True)
    assert max_rel_err(out, ref) <= F32_TOL and states.kv.shape == (1, 1, 2, 64, 64)


def test_kernel_path_gradient_is_the_reference_gradient():
    """The kernel path is a custom_vjp whose backward pass is the reference's."""
    q, k, v, cos, sin = _inputs(32, grid=(2, 3, 7))

    def loss(impl, q, k, v):
        return jnp.sum(linear_attention(q, k, v, cos, sin, impl=impl, block_state=16, block_out=16) ** 2)

    g_ref = jax.jit(jax.grad(lambda *a: loss("reference", *a), argnums=(0, 1, 2)))(q, k, v)
    g_ker = jax.jit(jax.grad(lambda *a: loss("interpret", *a), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(g_ker, g_ref, strict=True):
        assert max_rel_err(a, b) <= F32_TOL


def test_state_layout_round_trip():
    kv = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 112, 112))
    ks = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 112))
    back = state_to_natural(*state_to_kernel(kv, ks, 128, 128), 112, 112)
    np.testing.assert_array_equal(np.asarray(back[0]), np.asarray(kv))
    np.testing.assert_array_equal(np.asarray(back[1]), np.asarray(ks))


def test_bad_arguments():
    q, k, v, cos, sin = _inputs(32)
    with pytest.raises(InputError, match="sum to"):
        linear_attention_pallas(q, k, v, cos, sin, causal_chunk=(50, 50), interpret=True)
    with pytest.raises(InputError, match="power of two"):
        linear_attention_pallas(q, k, v, cos, sin, block_state=24, interpret=True)
    with pytest.raises(InputError, match="cos/sin"):
        linear_attention_pallas(q, k, v, cos[:, :8], sin[:, :8], interpret=True)


def test_lowers_to_triton_without_a_gpu():
    """The GPU path builds its Triton IR (power-of-two tiles, supported ops) at the 720p SANA head shape; this
    lowering runs on the host, so it is checked here even without a GPU (compiling the IR to PTX is not)."""
    pytest.importorskip("jax._src.pallas.triton.lowering")
    cos, sin = rope_3d((3, 22, 40), 112)
    x = jax.ShapeDtypeStruct((1, 3 * 880, 20, 112), jnp.bfloat16)
    fn = functools.partial(linear_attention_pallas, causal_chunk=(880, 1760), return_states=True, interpret=False)
    assert cuda_lowering(fn, x, x, x, cos, sin).count("xla.gpu.triton") == 2  # the state and the output kernel


def cuda_lowering(fn, *args) -> str:
    """The text of ``jax.jit(fn)`` lowered for CUDA on this host (the Pallas kernels become Triton IR); the test is
    skipped where this jaxlib cannot lower for CUDA."""
    try:
        return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    except Exception as e:
        if "Unknown backend" in str(e) or ("cuda" in str(e).lower() and "platform" in str(e).lower()):
            pytest.skip(f"this jaxlib cannot lower for CUDA: {e}")
        raise


# -- compiled kernels (GPU only) -----------------------------------------------------------------------------------


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-4), (jnp.bfloat16, BF16_TOL)])
@pytest.mark.parametrize("causal_chunk", [None, 3 * 880])
def test_gpu_kernel_720p_shape(dtype, tol, causal_chunk):
    q, k, v, cos, sin = _inputs(112, h=20, grid=(11, 22, 40), dtype=dtype)  # N = 9,680, 20 heads × 112
    ref = linear_attention(q, k, v, cos, sin, impl="reference", causal_chunk=causal_chunk)
    out = linear_attention(q, k, v, cos, sin, impl="pallas", causal_chunk=causal_chunk, precision="highest")
    assert max_rel_err(out, ref) <= tol


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("d", [32, 64, 112, 128])
def test_gpu_kernel_head_dims(d):
    q, k, v, cos, sin = _inputs(d, b=2, h=3, grid=(4, 9, 13))
    for chunk in (None, 2 * 117):
        ref = linear_attention(q, k, v, cos, sin, impl="reference", causal_chunk=chunk)
        out = linear_attention(q, k, v, cos, sin, impl="pallas", causal_chunk=chunk, precision="highest")
        assert max_rel_err(out, ref) <= F32_TOL


def test_auto_resolution_can_be_forced_and_overridden(monkeypatch):
    """``force_impl`` and SANA_JAX_LINEAR_ATTENTION steer impl="auto"."""
    from sana_jax.errors import InputError
    from sana_jax.kernels.dispatch import force_impl, resolve_impl

    q = jnp.zeros((1, 4, 2, 8))
    assert resolve_impl("auto", q, q) == ("pallas" if jax.default_backend() == "gpu" else "reference")
    with force_impl("reference"):
        assert resolve_impl("auto", q, q) == "reference"
    monkeypatch.setenv("SANA_JAX_LINEAR_ATTENTION", "interpret")
    assert resolve_impl("auto", q, q) == "interpret"
    monkeypatch.setenv("SANA_JAX_LINEAR_ATTENTION", "fast")
    with pytest.raises(InputError, match="SANA_JAX_LINEAR_ATTENTION"):
        resolve_impl("auto", q, q)
