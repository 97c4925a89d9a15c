"""Pick the linear-attention implementation: the fused Pallas kernel on GPU (sharded with ``shard_map`` inside a
program on a mesh), the XLA reference elsewhere.

    from sana_jax.kernels.dispatch import linear_attention
    out = linear_attention(q, k, v, cos, sin)                            # = nn.relu_linear_attention
    out = linear_attention(q, k, v, cos, sin, causal_chunk=sizes)        # chunk-causal (streaming)
    out, own = linear_attention(q, k, v, cos, sin, causal_chunk=sizes, return_states=True)

``impl``: ``"auto"`` (the rule below), ``"reference"`` (XLA, :mod:`sana_jax.nn.linear_attention`), ``"pallas"``
(compiled kernel; GPU only), ``"interpret"`` (the kernel in Pallas interpret mode, any backend; slow, for tests).

**The rule.** ``impl="auto"`` resolves, at trace time, to the first of:

1. the choice of an enclosing ``force_impl(impl)``, else ``SANA_JAX_LINEAR_ATTENTION`` when set to other than
   ``"auto"``;
2. ``"pallas"`` when ``jax.default_backend() == "gpu"`` and :func:`kernel_supported` (even d, and d and dv ≤ 128
   once padded to a power of two: SANA-Video's 112 and the Wan-sized 128 fit);
3. ``"reference"`` otherwise (CPU, TPU, larger heads).

Then *where* a kernel choice (``"pallas"``/``"interpret"``) runs: inside ``linear_attention_mesh(mesh)`` — which
the sharded entry points (``sana_jax.parallel.dit.sharded_forward``, ``SanaVideoPipeline`` with a mesh, the trainers
with a mesh) enter while tracing — the kernel runs sharded, ``shard_map`` around it
(:mod:`sana_jax.kernels.sharded`: local state, one ``psum`` over ``context``, local read-out); when the token count
does not divide by the mesh's ``context`` axis the reference runs instead (XLA partitions it without gathering the
tokens); outside a mesh context, the plain kernel. There is no token-count threshold: the kernel computes the same
two small matmuls per token block as the reference, and no GPU timing in this repository says where, if anywhere,
XLA's fused einsums win — one would be a measured addition to step 2.

Every implementation returns the output in q's dtype with float32 maths inside, as the reference does. The kernel
path is differentiable: its backward pass is the reference's (recomputed; on a mesh partitioned by XLA), so
training code may call it too.

``jax_triton`` is not needed: the kernels go through Pallas' Triton lowering, which ships with jaxlib.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from sana_jax.errors import InputError
from sana_jax.kernels import sharded
from sana_jax.kernels.linear_attention import combine_chunks, linear_attention_pallas, padded_dim, split_tokens
from sana_jax.nn.linear_attention import LinearAttentionState, accumulate_state, read_state, relu_linear_attention

IMPLS = ("auto", "reference", "pallas", "interpret")
MAX_KERNEL_HEAD_DIM = 128  # the state tile (P × P float32, two halves) must fit the registers of one program


def kernel_supported(q: jax.Array, v: jax.Array) -> bool:
    """Whether the fused kernel handles these head dims (even d ≤ 128, dv ≤ 128)."""
    d, dv = q.shape[-1], v.shape[-1]
    return d % 2 == 0 and padded_dim(d) <= MAX_KERNEL_HEAD_DIM and padded_dim(dv) <= MAX_KERNEL_HEAD_DIM


_FORCED: contextvars.ContextVar[str | None] = contextvars.ContextVar("sana_jax_linear_attention", default=None)


@contextlib.contextmanager
def force_impl(impl: str):
    """Within the block (at trace time), ``impl="auto"`` resolves to ``impl``."""
    if impl not in IMPLS:
        raise InputError(f"impl must be one of {IMPLS}, got {impl!r}")
    token = _FORCED.set(impl)
    try:
        yield
    finally:
        _FORCED.reset(token)


_MESH: contextvars.ContextVar = contextvars.ContextVar("sana_jax_linear_attention_mesh", default=None)


@contextlib.contextmanager
def linear_attention_mesh(mesh):
    """Within the block (at trace time, i.e. inside the jitted function), the kernel runs sharded over ``mesh``
    (:mod:`sana_jax.kernels.sharded`): how a sharded program tells the model's linear attention where it runs.
    ``mesh=None`` (or a one-device mesh) leaves it unsharded."""
    token = _MESH.set(mesh)
    try:
        yield
    finally:
        _MESH.reset(token)


def active_mesh():
    """The mesh of the enclosing :func:`linear_attention_mesh`, or None."""
    return _MESH.get()


def on_mesh(fn, mesh):
    """``fn`` run inside ``linear_attention_mesh(mesh)`` (for ``jax.jit(on_mesh(step, mesh))``)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with linear_attention_mesh(mesh):
            return fn(*args, **kwargs)
    return wrapped


def resolve_impl(impl: str, q: jax.Array, v: jax.Array) -> str:
    if impl not in IMPLS:
        raise InputError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":  # a forced choice, then SANA_JAX_LINEAR_ATTENTION, then: the kernel on GPU
        impl = _FORCED.get() or os.environ.get("SANA_JAX_LINEAR_ATTENTION", "auto")
        if impl not in IMPLS:
            raise InputError(f"SANA_JAX_LINEAR_ATTENTION must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = "pallas" if jax.default_backend() == "gpu" and kernel_supported(q, v) else "reference"
    if impl == "pallas" and jax.default_backend() != "gpu":
        raise InputError(f"impl='pallas' needs a GPU (backend is {jax.default_backend()!r}); use 'interpret'")
    if impl != "reference" and sharded.plan(active_mesh(), q.shape).reference:
        return "reference"  # tokens that do not split over the mesh's context axis: XLA partitions the reference
    return impl


def reference_linear_attention(q: jax.Array, k: jax.Array, v: jax.Array, cos: jax.Array, sin: jax.Array, *,
                               causal_chunk: int | Sequence[int] | None = None, window: int | None = None,
                               initial_state: LinearAttentionState | None = None, return_states: bool = False,
                               eps: float = 1e-15):
    """The XLA path, built from ``accumulate_state`` / ``read_state`` (exactly ``relu_linear_attention`` when
    non-causal without extras). Same arguments and results as :func:`linear_attention`."""
    if causal_chunk is None and initial_state is None and not return_states:
        return relu_linear_attention(q, k, v, cos, sin, eps)
    sizes = split_tokens(q.shape[1], causal_chunk)
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    own = [accumulate_state(k[:, a:b], v[:, a:b], cos[a:b], sin[a:b]) for a, b in itertools.pairwise(bounds)]
    own = LinearAttentionState(jnp.stack([o.kv for o in own], 1), jnp.stack([o.k_sum for o in own], 1))
    total = jax.tree.map(lambda a: combine_chunks(a, window, 1), own)  # (B, K, H, ...)
    if initial_state is not None:
        total = LinearAttentionState(total.kv + initial_state.kv.astype(jnp.float32)[:, None],
                                     total.k_sum + initial_state.k_sum.astype(jnp.float32)[:, None])
    outs = [read_state(q[:, a:b], LinearAttentionState(total.kv[:, c], total.k_sum[:, c]), cos[a:b], sin[a:b], eps)
            for c, (a, b) in enumerate(itertools.pairwise(bounds))]
    out = jnp.concatenate(outs, axis=1).astype(q.dtype)
    return (out, own) if return_states else out


def linear_attention(q: jax.Array, k: jax.Array, v: jax.Array, cos: jax.Array, sin: jax.Array, *,
                     causal_chunk: int | Sequence[int] | None = None, impl: str = "auto", eps: float = 1e-15,
                     window: int | None = None, initial_state: LinearAttentionState | None = None,
                     return_states: bool = False, **kernel_options):
    """ReLU linear attention with RoPE on the numerator; q, k (B, N, H, d), v (B, N, H, dv), cos/sin (N, d/2).

    * ``causal_chunk=None``: non-causal, identical in meaning to ``nn.linear_attention.relu_linear_attention``.
    * ``causal_chunk=int``: chunks of that many tokens (the last one shorter if needed); a sequence: the token
      count of each chunk (LongSANA puts the remainder first: pass ``[frames_c * tokens_per_frame for ...]``).
      Bidirectional inside a chunk; chunk c reads Σ of the states of chunks ≤ c (``window=w``: chunks c−w..c).
    * ``initial_state``: a carried state ((B, H, d, dv) / (B, H, d)) added to what every chunk reads.
    * ``return_states``: also return each chunk's own state, kv (B, K, H, d, dv), k_sum (B, K, H, d), float32.

    ``kernel_options`` go to :func:`~sana_jax.kernels.linear_attention.linear_attention_pallas` (``block_state``,
    ``block_out``, ``splits``, ``precision``, ``num_warps``, ``num_stages``) and are ignored by the reference.
    """
    impl = resolve_impl(impl, q, v)
    extras = {"causal_chunk": causal_chunk, "window": window, "return_states": return_states, "eps": eps}
    if impl == "reference":
        return reference_linear_attention(q, k, v, cos, sin, initial_state=initial_state, **extras)
    if not kernel_supported(q, v) and impl == "pallas":
        raise InputError(f"the fused kernel needs an even head dim with d, dv <= {MAX_KERNEL_HEAD_DIM}; got "
                         f"d={q.shape[-1]}, dv={v.shape[-1]}")
    interpret = impl == "interpret"
    mesh = active_mesh()
    layout = sharded.plan(mesh, q.shape)

    @jax.custom_vjp
    def fused(q, k, v, cos, sin, init):
        if layout.sharded:
            return sharded.sharded_linear_attention_pallas(q, k, v, cos, sin, mesh=mesh, layout=layout,
                                                           initial_state=init, interpret=interpret, **extras,
                                                           **kernel_options)
        return linear_attention_pallas(q, k, v, cos, sin, initial_state=init, interpret=interpret, **extras,
                                       **kernel_options)

    def fused_fwd(q, k, v, cos, sin, init):
        return fused(q, k, v, cos, sin, init), (q, k, v, cos, sin, init)

    def fused_bwd(res, ct):  # backward pass of the reference, recomputed
        _, vjp = jax.vjp(lambda *a: reference_linear_attention(*a[:5], initial_state=a[5], **extras), *res)
        return vjp(ct)

    fused.defvjp(fused_fwd, fused_bwd)
    return fused(q, k, v, cos, sin, initial_state)
