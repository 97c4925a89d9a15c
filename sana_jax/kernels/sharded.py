"""The fused linear-attention kernels inside a sharded program: ``jax.shard_map`` around them.

A ``pallas_call`` is opaque to XLA's SPMD partitioner: left to it, the partitioner would gather the token sequence
around the call and undo context parallelism. Linear attention needs no such gather — the state
S = Σ_m R(φ(k_m)) v_mᵀ, z = Σ_m φ(k_m) is a sum over tokens — so the kernel runs per device inside ``shard_map``
(q, k, v as (B/D, N/P, H/T, d) blocks: batch over ``data``/``fsdp``, tokens over ``context``, heads over
``tensor``; the RoPE tables' rows over ``context``):

1. the state kernel on the device's tokens gives the local part of each chunk's state (tiny: (d + 1)·dv floats per
   head and chunk);
2. non-causal or one chunk (the bidirectional DiT, the streaming step's chunk): **one** ``psum`` over ``context``
   of the packed (S | z) — the layer's only collective for the linear attention. Several chunks across the token
   shards (chunk-causal, e.g. a one-shot block-causal forward): each device cuts its tokens at every chunk boundary
   any device sees (a static split, the same on all devices), one ``all_gather`` over ``context`` of those pieces'
   states gives every chunk's state everywhere (states, never tokens), and each device picks the combinations its
   pieces read (``window``, the carried-in state as on one device);
3. the carried-in state (streaming) is added, and the output kernel reads the device's queries out locally.

Without a ``context`` split (batch and heads only) nothing is communicated. :func:`plan` picks the mesh axes that
divide the shapes; heads or batch that do not divide are replicated over that axis; a token count that does not
divide by ``context`` makes :func:`plan` ask for the XLA reference instead (which XLA partitions without gathering the
tokens). The backward pass is the reference's (:func:`sana_jax.kernels.dispatch.linear_attention`), partitioned by
XLA. ``tests/test_kernels_sharded.py`` checks the numbers and the compiled HLO on 8 fake CPU devices (interpret mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from sana_jax.kernels.linear_attention import (DEFAULT_BLOCK_OUT, DEFAULT_BLOCK_STATE, check_inputs,
                                               chunk_outputs_kernel, chunk_states_kernel, combine_chunks,
                                               padded_dim, split_tokens, state_to_kernel, state_to_natural)
from sana_jax.nn.linear_attention import LinearAttentionState

DATA, FSDP, CONTEXT, TENSOR = "data", "fsdp", "context", "tensor"
#: the named scope around the sharded call: it prefixes the op names of everything inside, in the HLO metadata too
SCOPE = "sana_linear_attention_sharded"


class ShardPlan(NamedTuple):
    """Which mesh axes split q/k/v (B, N, H, d): ``batch`` (a tuple of axes or None), ``tokens`` (``"context"`` or
    None), ``heads`` (``"tensor"`` or None). ``sharded``: some axis applies (else the plain kernel runs);
    ``reference``: the tokens cannot be split over ``context`` (use the XLA reference); ``reason`` says why."""

    batch: tuple[str, ...] | None
    tokens: str | None
    heads: str | None
    sharded: bool
    reference: bool
    reason: str


def _size(mesh, axis: str) -> int:
    return int(dict(mesh.shape).get(axis, 1))


def plan(mesh, shape: Sequence[int]) -> ShardPlan:
    """The split of q (B, N, H, d) on ``mesh`` (a ``Mesh`` or ``AbstractMesh``; None: no mesh)."""
    if mesh is None or int(np.prod(list(dict(mesh.shape).values()))) == 1:
        return ShardPlan(None, None, None, False, False, "no mesh (or one device)")
    b, n, h = int(shape[0]), int(shape[1]), int(shape[2])
    p = _size(mesh, CONTEXT)
    if p > 1 and n % p:
        return ShardPlan(None, None, None, False, True, f"{n} tokens do not split over context={p}: the XLA "
                                                        "reference runs (partitioned by XLA)")
    batch, used = [], 1
    for axis in (DATA, FSDP):
        size = _size(mesh, axis)
        if size > 1 and b % (used * size) == 0:
            batch.append(axis)
            used *= size
    tokens = CONTEXT if p > 1 else None
    t = _size(mesh, TENSOR)
    heads = TENSOR if t > 1 and h % t == 0 else None
    sharded = bool(batch) or tokens is not None or heads is not None
    reason = (f"batch over {tuple(batch) or None}, tokens over {tokens}, heads over {heads}" if sharded else
              "no mesh axis divides the batch, tokens or heads: the kernel runs replicated")
    return ShardPlan(tuple(batch) or None, tokens, heads, sharded, False, reason)


def local_pieces(sizes: tuple[int, ...], n_local: int, shards: int) -> tuple[tuple[int, ...], np.ndarray]:
    """Token pieces of one shard of ``n_local`` tokens (the same split on every shard) such that no piece on any
    shard straddles two of the global chunks ``sizes``; and ``table[s, j]``, the chunk of piece j on shard s."""
    bounds = np.cumsum((0,) + tuple(sizes))
    cuts = sorted({int(e - s * n_local) for e in bounds for s in range(shards) if 0 < e - s * n_local < n_local})
    edges = [0, *cuts, n_local]
    table = np.array([[int(np.searchsorted(bounds, s * n_local + e, side="right")) - 1 for e in edges[:-1]]
                      for s in range(shards)], np.int32)
    return tuple(int(x) for x in np.diff(edges)), table


def _pack(kv, ks):  # one array, so that one collective moves both
    return jnp.concatenate([kv, ks[..., None]], axis=-1)


def _unpack(packed):
    return packed[..., :-1], packed[..., -1]


def sharded_linear_attention_pallas(q: jax.Array, k: jax.Array, v: jax.Array, cos: jax.Array, sin: jax.Array, *,
                                    mesh, layout: ShardPlan, causal_chunk: int | Sequence[int] | None = None,
                                    window: int | None = None, initial_state: LinearAttentionState | None = None,
                                    return_states: bool = False, eps: float = 1e-15,
                                    block_state: int = DEFAULT_BLOCK_STATE, block_out: int = DEFAULT_BLOCK_OUT,
                                    splits: int | None = None, blocks_per_program: int | None = None,
                                    interpret: bool | None = None, precision=None, num_warps: int | None = None,
                                    num_stages: int | None = None):
    """:func:`~sana_jax.kernels.linear_attention.linear_attention_pallas` (same arguments and results) with q, k, v
    split over ``mesh`` as ``layout`` (:func:`plan`) says; call it inside ``jit``."""
    check_inputs(q, k, v, cos, sin)
    n, d, dv = q.shape[1], q.shape[3], v.shape[-1]
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    sizes = split_tokens(n, causal_chunk)
    shards = _size(mesh, CONTEXT) if layout.tokens else 1
    pieces, table = local_pieces(sizes, n // shards, shards)
    n_chunks = len(sizes)
    kernel = dict(interpret=bool(interpret), precision=precision, num_warps=num_warps, num_stages=num_stages)

    def local(q, k, v, cos, sin, *init):
        bl, _, hl, _ = q.shape
        pk, pv = padded_dim(d), padded_dim(dv)
        kv, ks = chunk_states_kernel(k, v, cos, sin, pieces, block_n=block_state, splits=splits, **kernel)
        if shards > 1 and n_chunks == 1:  # the one all-reduce of the layer
            own = tot = _unpack(lax.psum(_pack(kv, ks), CONTEXT))
        elif shards > 1:  # every piece's state everywhere (states only), summed per chunk, combined, picked
            every = lax.all_gather(_pack(kv, ks), CONTEXT, axis=1, tiled=True)  # (b·h, shards·pieces, P, Pv+1)
            own = _unpack(jnp.moveaxis(jax.ops.segment_sum(jnp.moveaxis(every, 1, 0), table.reshape(-1),
                                                           n_chunks, indices_are_sorted=True), 0, 1))
            mine = jnp.asarray(table)[lax.axis_index(CONTEXT)]
            tot = tuple(jnp.take(combine_chunks(a, window, 1), mine, axis=1) for a in own)
        else:
            own = (kv, ks)
            tot = tuple(combine_chunks(a, window, 1) for a in own) if n_chunks > 1 else own
        tot_kv, tot_ks = tot
        if init:
            ikv, iks = state_to_kernel(*init, pk, pv)
            tot_kv, tot_ks = tot_kv + ikv.reshape(bl * hl, 1, pk, pv), tot_ks + iks.reshape(bl * hl, 1, pk)
        out = chunk_outputs_kernel(q, cos, sin, tot_kv, tot_ks, pieces, dv=dv, eps=eps, block_n=block_out,
                                   blocks_per_program=blocks_per_program, **kernel)
        if not return_states:
            return out
        nkv, nks = state_to_natural(*own, d, dv)  # (b·h, K, d, dv)
        return out, LinearAttentionState(jnp.moveaxis(nkv.reshape(bl, hl, n_chunks, d, dv), 2, 1),
                                         jnp.moveaxis(nks.reshape(bl, hl, n_chunks, d), 2, 1))

    tok = P(layout.batch, layout.tokens, layout.heads, None)
    in_specs = [tok, tok, tok, P(layout.tokens, None), P(layout.tokens, None)]
    args = [q, k, v, cos, sin]
    if initial_state is not None:
        in_specs += [P(layout.batch, layout.heads, None, None), P(layout.batch, layout.heads, None)]
        args += [initial_state.kv, initial_state.k_sum]
    out_specs = tok
    if return_states:
        out_specs = (tok, LinearAttentionState(P(layout.batch, None, layout.heads, None, None),
                                               P(layout.batch, None, layout.heads, None)))
    # check_vma off: pallas_call has no varying-axes rule; the states after psum/all_gather are replicated over
    # context by construction (the out_specs say so)
    fn = jax.shard_map(local, mesh=mesh, in_specs=tuple(in_specs), out_specs=out_specs, check_vma=False)
    with jax.named_scope(SCOPE):
        return fn(*args)


__all__ = ["SCOPE", "ShardPlan", "local_pieces", "plan", "sharded_linear_attention_pallas"]
