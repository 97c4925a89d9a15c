"""Fused ReLU linear attention with 3-D RoPE as Pallas kernels (Sana ``LiteLAReLURope``,
``NVlabs/Sana:diffusion/model/nets/sana_blocks.py``).

Same maths as :mod:`sana_jax.nn.linear_attention`, per head, φ = ReLU, R = the interleaved 3-D RoPE rotation:

    S = Σ_m R(φ(k_m)) v_mᵀ,  z = Σ_m φ(k_m),  out_n = (R(φ(q_n))ᵀ S) / (φ(q_n) · z + eps)

all in float32 whatever the input dtype. Two ``pallas_call`` s do it:

* **state kernel**, grid (B·H, K chunks, splits): each program loads token blocks of k, v and the RoPE tables,
  applies ReLU + RoPE in registers and accumulates its partial (S, z) over a contiguous run of the chunk's token
  blocks (the splits give the GPU enough programs when B·H·K is small; XLA sums the partials).
* **output kernel**, grid (B·H, K chunks, runs of ``blocks_per_program`` token blocks of the chunk): each program
  loads its chunk's (combined) state once, then per token block loads q, applies ReLU + RoPE, multiplies by the
  state and writes the normalised output in q's dtype.

Non-causal attention is K = 1. Chunk-causal (streaming; bidirectional inside a chunk, causal across) computes the
K per-chunk states, combines them in XLA (inclusive cumulative sum over chunks, optionally over a window of past
chunks, plus an optional carried-in state — all tiny: K·d² floats per head) and reads each chunk against its own
combination. Chunks are static token counts and need not be equal, nor multiples of the block size: every load
and store is masked at the chunk end (and at the padded head dim), so blocks never straddle two chunks.

**RoPE without shuffles.** The rotation mixes interleaved pairs (2i, 2i+1). A loaded (block, d) tile is split into
its even and odd columns (reshape (block, d/2, 2) + ``lax.unstack``: ``tt.split`` on Triton), rotated with the
(block, d/2) cos/sin tiles, and the state is kept *de-interleaved*: rows [0, P/2) hold the even features, rows
[P/2, P) the odd ones (P = head dim padded to a power of two). Since the read-out contracts over exactly that
axis with the same split of q, nothing is ever re-interleaved; :func:`state_to_natural` converts a state to the
reference layout when one is returned.

**Backend.** On GPU the kernels use the Pallas *Triton* backend (``jax.experimental.pallas.triton`` compiler
params, masked ``load``/``store``): it is what ``pallas_call`` lowers to by default in jax 0.10–0.12, it handles
arbitrary (non-multiple-of-64) token offsets with masks, and it is deprecated-but-present in 0.11/0.12 (the
deprecation warning is silenced here). Mosaic GPU was not used: it is Hopper-only, its pipelined copies want
block-aligned tiles while chunks here start at arbitrary token offsets, and nothing in this (GPU-less) task
could validate it. Triton needs power-of-two tile sizes, hence the head dim padded to P (112 → 128) through
masked loads — the arrays are never padded in memory. On CPU the same kernels run with ``interpret=True``.
Without a GPU the Triton path was checked as far as a host allows: the Pallas lowering builds both kernels'
Triton IR (``tests/test_kernels.py::test_lowers_to_triton_without_a_gpu``), and that IR compiled to sm_90 cubins
with Triton 3.6 + ptxas (no register spills at the defaults below with TF32 dots; IEEE-float32 dots,
``precision="highest"``, spill up to ~2 KB per thread at P = 128) — it has not been run on a GPU.

**Precision.** ``precision=None`` follows ``jax_default_matmul_precision`` like the XLA reference: on GPU the
default lets the two small matmuls run in TF32 (as XLA's einsum does); ``"highest"`` forces IEEE float32.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from sana_jax.errors import InputError
from sana_jax.nn.linear_attention import LinearAttentionState

# jax 0.11+ warns on every Triton lowering; the backend choice is documented above.
warnings.filterwarnings("ignore", message=".*Pallas Triton backend is deprecated.*")

DEFAULT_BLOCK_STATE = 64
DEFAULT_BLOCK_OUT = 64
MIN_PADDED_DIM = 32  # Triton dots need every tile side ≥ 16, i.e. P/2 ≥ 16


def _next_pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


def padded_dim(d: int) -> int:
    """The head dim as the kernels tile it: the next power of two, at least 32."""
    return max(_next_pow2(d), MIN_PADDED_DIM)


def split_tokens(n: int, causal_chunk: int | Sequence[int] | None) -> tuple[int, ...]:
    """Token counts per chunk. ``None``: one chunk (non-causal); an int c: chunks of c tokens from the start, the
    last one shorter (token t is in chunk t // c, the usual block-causal mask: the kernel knows nothing of frames);
    a sequence: the sizes themselves (must sum to ``n``). Streaming passes explicit sizes, from LongSANA's frame
    split that puts the remainder first (:func:`sana_jax.models.sana_video_causal.split_frames`)."""
    if causal_chunk is None:
        return (n,)
    if isinstance(causal_chunk, (int,)) or hasattr(causal_chunk, "__index__"):
        c = int(causal_chunk)
        if c < 1:
            raise InputError(f"causal_chunk must be >= 1 token, got {c}")
        return tuple(min(c, n - a) for a in range(0, n, c))
    sizes = tuple(int(s) for s in causal_chunk)
    if not sizes or min(sizes) < 1 or sum(sizes) != n:
        raise InputError(f"chunk sizes {sizes} must be positive and sum to the {n} tokens")
    return sizes


def _select(idx, values: Sequence[int]):
    """values[idx] for a traced scalar ``idx`` and a short static table (unrolled, no gather)."""
    if all(v == values[0] for v in values):
        return values[0]
    if len(values) > 2 and all(values[i + 1] - values[i] == values[1] - values[0] for i in range(len(values) - 1)):
        return values[0] + idx * (values[1] - values[0])  # arithmetic progression (uniform chunks)
    out = values[0]  # Σ of steps, not jnp.where: Triton's select lowering mishandles scalar literals
    for j in range(1, len(values)):
        if values[j] != values[j - 1]:
            out = out + (idx >= j).astype(jnp.int32) * (values[j] - values[j - 1])
    return out


def _resolve_precision(precision):
    if precision is None:
        cfg = jax.config.jax_default_matmul_precision
        return lax.Precision.HIGHEST if cfg in ("highest", "float32", "HIGHEST") else lax.Precision.DEFAULT
    if isinstance(precision, str):
        return {"highest": lax.Precision.HIGHEST, "float32": lax.Precision.HIGHEST,
                "default": lax.Precision.DEFAULT, "tensorfloat32": lax.Precision.DEFAULT,
                "tf32": lax.Precision.DEFAULT}[precision.lower()]
    return precision


# -- in-kernel pieces ----------------------------------------------------------------------------------------------


def _rope_features(x_ref, cos_ref, sin_ref, t0, end, *, block_n: int, d: int):
    """Load rows [t0, t0 + block_n) ∩ [.., end) of a (N, P) ref and the tables; return φ and R(φ) de-interleaved:
    (φ_even, φ_odd, R_even, R_odd), each (block_n, P/2) float32, zero outside the valid rows/columns."""
    p = x_ref.shape[-1]
    ph = p // 2
    rows = t0 + jnp.arange(block_n, dtype=jnp.int32)
    rmask = (rows < end)[:, None]
    x = plgpu.load(x_ref.at[pl.ds(t0, block_n), :], mask=rmask & (jnp.arange(p) < d)[None, :], other=0.0)
    phi = jnp.maximum(x.astype(jnp.float32), 0.0)
    even, odd = lax.unstack(phi.reshape(block_n, ph, 2), axis=2)
    tmask = rmask & (jnp.arange(ph) < d // 2)[None, :]
    cos = plgpu.load(cos_ref.at[pl.ds(t0, block_n), :], mask=tmask, other=0.0).astype(jnp.float32)
    sin = plgpu.load(sin_ref.at[pl.ds(t0, block_n), :], mask=tmask, other=0.0).astype(jnp.float32)
    return even, odd, even * cos - odd * sin, even * sin + odd * cos


def _state_kernel(k_ref, v_ref, cos_ref, sin_ref, kv_ref, ks_ref, *, d: int, dv: int, block_n: int,
                  starts: tuple[int, ...], sizes: tuple[int, ...], splits: int, precision):
    c, s = pl.program_id(1), pl.program_id(2)
    start, size = _select(c, starts), _select(c, sizes)
    end = start + size
    n_blocks = lax.div(size + block_n - 1, block_n)  # lax.div: jnp's floor division does not lower to Triton
    per_split = lax.div(n_blocks + splits - 1, splits)
    lo = s * per_split
    hi = jnp.minimum(lo + per_split, n_blocks)
    pk, pv = k_ref.shape[-1], v_ref.shape[-1]
    ph = pk // 2
    vmask_cols = (jnp.arange(pv) < dv)[None, :]

    def body(j, carry):
        acc_e, acc_o, z_e, z_o = carry
        t0 = start + j * block_n
        phi_e, phi_o, rot_e, rot_o = _rope_features(k_ref, cos_ref, sin_ref, t0, end, block_n=block_n, d=d)
        rmask = ((t0 + jnp.arange(block_n, dtype=jnp.int32)) < end)[:, None]
        v = plgpu.load(v_ref.at[pl.ds(t0, block_n), :], mask=rmask & vmask_cols, other=0.0).astype(jnp.float32)
        dims = (((0,), (0,)), ((), ()))  # contract over tokens: R(φ(k))ᵀ v
        acc_e = acc_e + lax.dot_general(rot_e, v, dims, precision=precision, preferred_element_type=jnp.float32)
        acc_o = acc_o + lax.dot_general(rot_o, v, dims, precision=precision, preferred_element_type=jnp.float32)
        return acc_e, acc_o, z_e + jnp.sum(phi_e, axis=0), z_o + jnp.sum(phi_o, axis=0)

    init = (jnp.zeros((ph, pv), jnp.float32), jnp.zeros((ph, pv), jnp.float32),
            jnp.zeros((ph,), jnp.float32), jnp.zeros((ph,), jnp.float32))
    acc_e, acc_o, z_e, z_o = lax.fori_loop(lo, hi, body, init)
    kv_ref[pl.ds(0, ph), :] = acc_e
    kv_ref[pl.ds(ph, ph), :] = acc_o
    ks_ref[pl.ds(0, ph)] = z_e
    ks_ref[pl.ds(ph, ph)] = z_o


def _output_kernel(q_ref, cos_ref, sin_ref, kv_ref, ks_ref, o_ref, *, d: int, dv: int, block_n: int,
                   blocks_per_program: int, starts: tuple[int, ...], sizes: tuple[int, ...], eps: float,
                   precision):
    c, j = pl.program_id(1), pl.program_id(2)
    start, size = _select(c, starts), _select(c, sizes)
    end = start + size
    ph = q_ref.shape[-1] // 2
    pv = o_ref.shape[-1]
    # the chunk's state is loaded once per program and reused for its `blocks_per_program` token blocks
    kv_e = kv_ref[pl.ds(0, ph), :]
    kv_o = kv_ref[pl.ds(ph, ph), :]
    z_e = ks_ref[pl.ds(0, ph)]
    z_o = ks_ref[pl.ds(ph, ph)]
    n_blocks = lax.div(size + block_n - 1, block_n)
    lo = j * blocks_per_program
    hi = jnp.minimum(lo + blocks_per_program, n_blocks)

    def body(i, carry):
        t0 = start + i * block_n
        phi_e, phi_o, rot_e, rot_o = _rope_features(q_ref, cos_ref, sin_ref, t0, end, block_n=block_n, d=d)
        num = (jnp.dot(rot_e, kv_e, precision=precision, preferred_element_type=jnp.float32)
               + jnp.dot(rot_o, kv_o, precision=precision, preferred_element_type=jnp.float32))
        den = jnp.sum(phi_e * z_e[None, :], axis=1) + jnp.sum(phi_o * z_o[None, :], axis=1)
        out = num * (1.0 / (den + eps))[:, None]
        rmask = ((t0 + jnp.arange(block_n, dtype=jnp.int32)) < end)[:, None]
        plgpu.store(o_ref.at[pl.ds(t0, block_n), :], out.astype(o_ref.dtype),
                    mask=rmask & (jnp.arange(pv) < dv)[None, :])
        return carry

    lax.fori_loop(lo, hi, body, 0)


# -- pallas_call wrappers ------------------------------------------------------------------------------------------


def _check_block(name: str, b: int):
    if b < 16 or b & (b - 1):
        raise InputError(f"{name} must be a power of two >= 16, got {b}")


def _token_spec(p: int, *, n: int, h: int) -> pl.BlockSpec:
    """All N tokens of one (batch, head) of a (B, N, H, d) array, head dim padded to p (lax.div/rem: jnp's
    floor division does not lower to Triton)."""
    return pl.BlockSpec((None, n, None, p), lambda bh, c, s: (lax.div(bh, h), 0, lax.rem(bh, h), 0))


def _default_warps(pk: int, pv: int) -> int:
    # ptxas -v (sm_90, Triton 3.6, 64-token blocks): 4 warps spill from P = Pv = 64 up, 8 warps do not (TF32)
    return 4 if pk * pv < 64 * 64 else 8


def _default_splits(bhk: int, max_blocks: int) -> int:
    try:
        cores = int(getattr(jax.devices()[0], "core_count", 0)) or 132
    except Exception:  # noqa: BLE001 - a device query failure only costs the heuristic
        cores = 132
    return max(1, min(max_blocks, math.ceil(4 * cores / bhk)))


def chunk_states_kernel(k: jax.Array, v: jax.Array, cos: jax.Array, sin: jax.Array, sizes: tuple[int, ...], *,
                        block_n: int = DEFAULT_BLOCK_STATE, splits: int | None = None, interpret: bool = False,
                        precision=None, num_warps: int | None = None, num_stages: int | None = None):
    """Per-chunk states in the kernel layout: (kv (B·H, K, P, Pv), k_sum (B·H, K, P)), float32, de-interleaved."""
    b, n, h, d = k.shape
    dv = v.shape[-1]
    pk, pv = padded_dim(d), padded_dim(dv)
    _check_block("block_n (state)", block_n)
    starts = (0, *itertools.accumulate(sizes))[:-1]
    max_blocks = max(-(-s // block_n) for s in sizes)
    if splits is None:
        splits = 1 if interpret else _default_splits(b * h * len(sizes), max_blocks)
    splits = max(1, min(int(splits), max_blocks))
    kernel = functools.partial(_state_kernel, d=d, dv=dv, block_n=block_n, starts=starts, sizes=sizes,
                               splits=splits, precision=_resolve_precision(precision))
    tok = functools.partial(_token_spec, n=n, h=h)
    tab = pl.BlockSpec((n, pk // 2), lambda bh, c, s: (0, 0))
    kv, ks = pl.pallas_call(
        kernel,
        grid=(b * h, len(sizes), splits),
        in_specs=[tok(pk), tok(pv), tab, tab],
        out_specs=[pl.BlockSpec((None, None, None, pk, pv), lambda bh, c, s: (bh, c, s, 0, 0)),
                   pl.BlockSpec((None, None, None, pk), lambda bh, c, s: (bh, c, s, 0))],
        out_shape=[jax.ShapeDtypeStruct((b * h, len(sizes), splits, pk, pv), jnp.float32),
                   jax.ShapeDtypeStruct((b * h, len(sizes), splits, pk), jnp.float32)],
        compiler_params=plgpu.CompilerParams(num_warps=num_warps or _default_warps(pk, pv),
                                             num_stages=num_stages or 2),
        interpret=interpret,
        name="sana_linear_attention_state",
    )(k, v, cos, sin)
    return kv.sum(axis=2), ks.sum(axis=2)


def chunk_outputs_kernel(q: jax.Array, cos: jax.Array, sin: jax.Array, kv: jax.Array, ks: jax.Array,
                         sizes: tuple[int, ...], *, dv: int, eps: float = 1e-15,
                         block_n: int = DEFAULT_BLOCK_OUT, blocks_per_program: int | None = None,
                         interpret: bool = False, precision=None, num_warps: int | None = None,
                         num_stages: int | None = None) -> jax.Array:
    """Outputs (B, N, H, dv) in q's dtype from per-chunk *combined* states in the kernel layout (B·H, K, P, Pv)."""
    b, n, h, d = q.shape
    pk, pv = padded_dim(d), padded_dim(dv)
    _check_block("block_n (output)", block_n)
    starts = (0, *itertools.accumulate(sizes))[:-1]
    max_blocks = max(-(-s // block_n) for s in sizes)
    if blocks_per_program is None:  # enough programs to fill the GPU, fewer state reloads than one per block
        blocks_per_program = 1 if interpret else -(-max_blocks // _default_splits(b * h * len(sizes), max_blocks))
    blocks_per_program = max(1, min(int(blocks_per_program), max_blocks))
    kernel = functools.partial(_output_kernel, d=d, dv=dv, block_n=block_n, blocks_per_program=blocks_per_program,
                               starts=starts, sizes=sizes, eps=float(eps), precision=_resolve_precision(precision))
    tok = functools.partial(_token_spec, n=n, h=h)
    tab = pl.BlockSpec((n, pk // 2), lambda bh, c, j: (0, 0))
    return pl.pallas_call(
        kernel,
        grid=(b * h, len(sizes), -(-max_blocks // blocks_per_program)),
        in_specs=[tok(pk), tab, tab,
                  pl.BlockSpec((None, None, pk, pv), lambda bh, c, j: (bh, c, 0, 0)),
                  pl.BlockSpec((None, None, pk), lambda bh, c, j: (bh, c, 0))],
        out_specs=tok(pv),
        out_shape=jax.ShapeDtypeStruct((b, n, h, dv), q.dtype),
        compiler_params=plgpu.CompilerParams(num_warps=num_warps or _default_warps(pk, pv),
                                             num_stages=num_stages or 2),
        interpret=interpret,
        name="sana_linear_attention_output",
    )(q, cos, sin, kv, ks)


# -- layouts -------------------------------------------------------------------------------------------------------


def state_to_natural(kv: jax.Array, ks: jax.Array, d: int, dv: int) -> tuple[jax.Array, jax.Array]:
    """Kernel layout (..., P, Pv) / (..., P) → reference layout (..., d, dv) / (..., d) (re-interleave, unpad)."""
    ph = kv.shape[-2] // 2
    kv = jnp.stack([kv[..., : d // 2, :dv], kv[..., ph: ph + d // 2, :dv]], axis=-2)  # (..., d/2, 2, dv)
    ks = jnp.stack([ks[..., : d // 2], ks[..., ph: ph + d // 2]], axis=-1)
    return kv.reshape(*kv.shape[:-3], d, dv), ks.reshape(*ks.shape[:-2], d)


def state_to_kernel(kv: jax.Array, ks: jax.Array, p: int, pv: int) -> tuple[jax.Array, jax.Array]:
    """Reference layout (..., d, dv) / (..., d) → kernel layout (..., P, Pv) / (..., P) (de-interleave, pad)."""
    d, dv = kv.shape[-2:]
    ph = p // 2
    pad_kv = [(0, 0)] * (kv.ndim - 2) + [(0, ph - d // 2), (0, pv - dv)]
    pad_ks = [(0, 0)] * (ks.ndim - 1) + [(0, ph - d // 2)]
    kv = kv.astype(jnp.float32)
    ks = ks.astype(jnp.float32)
    kv = jnp.concatenate([jnp.pad(kv[..., 0::2, :], pad_kv), jnp.pad(kv[..., 1::2, :], pad_kv)], axis=-2)
    ks = jnp.concatenate([jnp.pad(ks[..., 0::2], pad_ks), jnp.pad(ks[..., 1::2], pad_ks)], axis=-1)
    return kv, ks


def combine_chunks(own: jax.Array, window: int | None, axis: int) -> jax.Array:
    """State read by each chunk: its own plus the ``window`` previous ones (all previous when ``window`` is None)."""
    if window is None:
        return jnp.cumsum(own, axis=axis)
    total = own
    k = own.shape[axis]
    for j in range(1, min(int(window), k - 1) + 1):
        shifted = lax.slice_in_dim(own, 0, k - j, axis=axis)
        pad = [(0, 0)] * own.ndim
        pad[axis] = (j, 0)
        total = total + jnp.pad(shifted, pad)
    return total


# -- public entry point --------------------------------------------------------------------------------------------


def check_inputs(q, k, v, cos, sin) -> None:
    """q, k (B, N, H, d), v (B, N, H, dv), cos/sin (N, d/2) for an even d, or an InputError."""
    if q.ndim != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise InputError(f"q, k, v must be (B, N, H, d) with matching B, N, H; got {q.shape}, {k.shape}, {v.shape}")
    n, d = q.shape[1], q.shape[3]
    if d % 2 or cos.shape != (n, d // 2) or sin.shape != (n, d // 2):
        raise InputError(f"cos/sin must be (N, d/2) = {(n, d // 2)} for an even head dim; got {cos.shape}, "
                         f"{sin.shape}")


@functools.partial(jax.jit, static_argnames=("sizes", "window", "return_states", "eps", "block_state", "block_out",
                                             "splits", "blocks_per_program", "interpret", "precision", "num_warps",
                                             "num_stages"))
def _fused(q, k, v, cos, sin, init_kv, init_ks, *, sizes, window, return_states, eps, block_state, block_out,
           splits, blocks_per_program, interpret, precision, num_warps, num_stages):
    b, _, h, d = q.shape
    dv = v.shape[-1]
    pk, pv = padded_dim(d), padded_dim(dv)
    kv, ks = chunk_states_kernel(k, v, cos, sin, sizes, block_n=block_state, splits=splits, interpret=interpret,
                                 precision=precision, num_warps=num_warps, num_stages=num_stages)
    tot_kv, tot_ks = kv, ks
    if len(sizes) > 1:
        tot_kv, tot_ks = combine_chunks(kv, window, 1), combine_chunks(ks, window, 1)
    if init_kv is not None:
        ikv, iks = state_to_kernel(init_kv, init_ks, pk, pv)  # (B, H, P, Pv)
        tot_kv = tot_kv + ikv.reshape(b * h, 1, pk, pv)
        tot_ks = tot_ks + iks.reshape(b * h, 1, pk)
    out = chunk_outputs_kernel(q, cos, sin, tot_kv, tot_ks, sizes, dv=dv, eps=eps, block_n=block_out,
                               blocks_per_program=blocks_per_program,
                               interpret=interpret, precision=precision, num_warps=num_warps,
                               num_stages=num_stages)
    if not return_states:
        return out
    nkv, nks = state_to_natural(kv, ks, d, dv)  # (B·H, K, d, dv)
    k_chunks = len(sizes)
    nkv = jnp.moveaxis(nkv.reshape(b, h, k_chunks, d, dv), 2, 1)
    nks = jnp.moveaxis(nks.reshape(b, h, k_chunks, d), 2, 1)
    return out, LinearAttentionState(nkv, nks)


def linear_attention_pallas(q: jax.Array, k: jax.Array, v: jax.Array, cos: jax.Array, sin: jax.Array, *,
                            causal_chunk: int | Sequence[int] | None = None, window: int | None = None,
                            initial_state: LinearAttentionState | None = None, return_states: bool = False,
                            eps: float = 1e-15, block_state: int = DEFAULT_BLOCK_STATE,
                            block_out: int = DEFAULT_BLOCK_OUT, splits: int | None = None,
                            blocks_per_program: int | None = None,
                            interpret: bool | None = None, precision=None, num_warps: int | None = None,
                            num_stages: int | None = None):
    """Fused ReLU + RoPE linear attention. q, k (B, N, H, d), v (B, N, H, dv); cos, sin (N, d/2).

    ``causal_chunk=None``: non-causal (the reference ``relu_linear_attention``). Otherwise chunk-causal: an int is
    the chunk length in tokens (last chunk shorter if it does not divide N), a sequence the token counts of the
    chunks; chunk c reads the states of chunks ≤ c (``window``: only the ``window`` previous ones and itself),
    plus ``initial_state`` ((B, H, d, dv) / (B, H, d), e.g. a streaming cache) when given.

    Returns the output (B, N, H, dv) in q's dtype and, with ``return_states``, each chunk's *own* state as a
    :class:`LinearAttentionState` with kv (B, K, H, d, dv), k_sum (B, K, H, d) in the reference layout.
    ``interpret=None`` interprets everywhere but on GPU.
    """
    check_inputs(q, k, v, cos, sin)
    n = q.shape[1]
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    sizes = split_tokens(n, causal_chunk)
    if isinstance(precision, lax.Precision):
        precision = precision.name.lower()
    init_kv = init_ks = None
    if initial_state is not None:
        init_kv, init_ks = initial_state.kv, initial_state.k_sum
    return _fused(q, k, v, cos, sin, init_kv, init_ks, sizes=sizes, window=None if window is None else int(window),
                  return_states=bool(return_states), eps=float(eps), block_state=int(block_state),
                  block_out=int(block_out), splits=None if splits is None else int(splits),
                  blocks_per_program=None if blocks_per_program is None else int(blocks_per_program),
                  interpret=bool(interpret), precision=precision, num_warps=num_warps, num_stages=num_stages)
