"""Ulysses context-parallel softmax attention (DeepSpeed-Ulysses) for the LTX-2 refiner's video self-attention.

The refiner's video tokens are sharded over the mesh's ``context`` axis (P devices, N/P tokens each). Full softmax
attention needs every key for every query, so something must move. Ulysses swaps the sharded dimension around a
local attention:

1. one all-to-all turns q, k, v (stacked) from *tokens-sharded* (B, N/P, H, d) into *heads-sharded* (B, N, H/P, d);
2. each device runs ordinary full attention over all N tokens for its H/P heads (any local kernel: XLA here, a
   fused flash kernel on GPU later, unchanged);
3. one all-to-all turns the output back into tokens-sharded (B, N/P, H, d).

**Why Ulysses rather than ring attention.** Per layer and device, with D = H·d and activations of B·N·D elements:

* Ulysses: the q, k, v and output all-to-alls each send (P−1)/P of the device's B·N·D/P block, i.e.
  4·B·N·D/P·(P−1)/P elements, and the volume per device *falls* as 1/P — the swap is bisection traffic, which
  NVLink/NVSwitch serves at full rate;
* ring attention passes each device's K and V blocks (2·B·N·D/P) around the ring P−1 times: 2·(P−1)·B·N·D/P,
  i.e. P/2 times Ulysses' bytes (4× at P = 8), and needs a log-sum-exp merge loop around a custom kernel;
* what XLA's SPMD partitioner does on its own with tokens-sharded attention (the fallback below) is an all-gather
  of K and V over ``context``: 2·B·N·D·(P−1)/P per device, also P/2 times Ulysses, and every device then holds the
  full K/V (2·B·N·D) instead of 3·B·N·D/P.

What the compiled HLO shows (8 fake CPU devices; ``bench/scaling.py --refiner`` →
``bench/results/scaling_refiner_2k_8dev.json``, the released 19 B refiner at 2K: 11×44×80 = 38,720 video tokens,
batch 1): with ``context=8`` the XLA path has, per layer, two ``all-gather`` s of f32[1,38720,32,128] (K and V with
the whole sequence, 1.27 GB), the Ulysses path one ``all-to-all`` of the stacked q/k/v (8 × f32[3,1,4840,4,128])
and one of the output (8 × f32[1,4840,4,128]), 317 MB, and no all-gather of the sequence: 15.2 GB instead of
60.9 GB per forward and device (XLA:CPU keeps bf16 activations in f32; on GPU both are halved: ~17 ms instead of
~68 ms of NVLink time per forward at 450 GB/s, against ~0.57 s of compute: 2,260 TFLOP per forward — dense
matmuls plus 4·N²·D·L of attention, docs/scaling.md — on 8 H100s at 50% MFU). ``tests/test_parallel.py`` checks
the same structure (2 all-to-alls, no sequence all-gather) on the tiny refiner for every test mesh. With
``tensor=2,context=4`` the Ulysses bytes are the same (16 local heads, 4 per device); the heads/MLP split adds XLA's
own tensor-parallel collectives (all-gathers of the local tokens' hidden activations, all-reduces) to both paths.

**Limits.** Ulysses splits heads over ``context``: the heads each device holds (H, or H/T when heads are also
split over a ``tensor`` axis of size T) must divide by P. LTX-2 has 32 video heads, so ``context`` ≤ 32
(``tensor=2,context=8`` gives 2 heads per device). When the heads do not divide, :func:`self_attention_fn` returns
None with the reason (and warns): the model then keeps the XLA-partitioned attention, which is correct but
gathers K/V. A token count that does not divide by P is padded to the next multiple inside the call and the padded
keys are masked out. Only the video *self*-attention uses this: the text cross-attention (≤ a few hundred keys)
and the a↔v attention (≈ 25 audio tokens per second) stay with XLA, whose partitioning keeps the query tokens
sharded and never gathers the video sequence.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from sana_jax.errors import InputError
from sana_jax.nn.attention import softmax_attention

CONTEXT, TENSOR, DATA = "context", "tensor", "data"


class UlyssesPlan(NamedTuple):
    """Whether Ulysses applies on a mesh for a head count: ``head_axis`` is the mesh axis the heads already use
    (``"tensor"`` or None), ``reason`` says why not when ``enabled`` is False."""

    enabled: bool
    head_axis: str | None
    reason: str


def _size(mesh, axis: str) -> int:
    return int(dict(mesh.shape).get(axis, 1))


def plan(mesh, heads: int) -> UlyssesPlan:
    """Decide from the mesh's axis sizes (a ``Mesh`` or ``AbstractMesh``) and the attention's head count."""
    if mesh is None:
        return UlyssesPlan(False, None, "no mesh")
    p, t = _size(mesh, CONTEXT), _size(mesh, TENSOR)
    if p == 1:
        return UlyssesPlan(False, None, "the mesh's context axis has size 1 (tokens are not sharded)")
    if t > 1 and heads % (t * p) == 0:
        return UlyssesPlan(True, TENSOR, f"{heads} heads: {heads // t} per tensor shard, {heads // (t * p)} per "
                                         "device after the all-to-all")
    if heads % p == 0:
        # heads not split over tensor (or not evenly): the attention is replicated over tensor, still no K/V gather
        return UlyssesPlan(True, None, f"{heads} heads, {heads // p} per device after the all-to-all")
    return UlyssesPlan(False, None, f"{heads} heads do not divide by the context axis ({p}): Ulysses gives each "
                                    "device a whole number of heads; the XLA-partitioned attention is used instead "
                                    "(it all-gathers K and V over context)")


def ulysses_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None, *, mesh,
                      head_axis: str | None = None) -> jax.Array:
    """Full softmax attention of q, k, v (B, N, H, d), the tokens sharded over ``context``; returns (B, N, H, d)
    sharded the same way. ``bias`` must be None (the video self-attention has no mask)."""
    if bias is not None:
        raise InputError("Ulysses self-attention takes no attention bias (the video self-attention has none)")
    if not (q.shape == k.shape == v.shape) or q.ndim != 4:
        raise InputError(f"Ulysses self-attention needs q, k, v of one shape (B, N, H, d), got {q.shape}, "
                         f"{k.shape}, {v.shape}")
    b, n, h, _ = q.shape
    p = _size(mesh, CONTEXT)
    local_heads = h // (_size(mesh, TENSOR) if head_axis else 1)
    if local_heads % p:
        raise InputError(f"Ulysses: {local_heads} heads per device group do not divide by context={p}")
    data = _size(mesh, DATA)
    batch_axis = DATA if data > 1 and b % data == 0 else None
    pad = -n % p
    if pad:  # pad the tokens to a multiple of P; the padded keys are masked out, the padded queries dropped
        q, k, v = (jnp.pad(a, ((0, 0), (0, pad), (0, 0), (0, 0))) for a in (q, k, v))
    spec = P(batch_axis, CONTEXT, head_axis, None)

    def local(q, k, v):
        qkv = jnp.stack([q, k, v])  # (3, b, N/P, h, d): one collective instead of three
        qkv = jax.lax.all_to_all(qkv, CONTEXT, split_axis=3, concat_axis=2, tiled=True)  # (3, b, N, h/P, d)
        mask = None
        if pad:
            mask = (jnp.arange(n + pad) < n)[None, None, None, :]
        out = softmax_attention(qkv[0], qkv[1], qkv[2], mask=mask)  # cuDNN on GPU in 16 bits
        return jax.lax.all_to_all(out, CONTEXT, split_axis=1, concat_axis=2, tiled=True)  # (b, N/P, h, d)

    out = jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec)(q, k, v)
    return out[:, :n] if pad else out


@functools.lru_cache(maxsize=64)
def _warn_once(reason: str) -> None:
    warnings.warn(f"context-parallel attention: {reason}", stacklevel=3)


def self_attention_fn(mesh, heads: int) -> Callable | None:
    """The ``attention(q, k, v, bias)`` function the video self-attention uses on ``mesh``: Ulysses when the mesh
    has a ``context`` axis > 1 and the heads divide (:func:`plan`), else None (keep the default attention; a
    warning names the reason when the context axis is > 1)."""
    decision = plan(mesh, heads)
    if not decision.enabled:
        if mesh is not None and _size(mesh, CONTEXT) > 1:
            _warn_once(decision.reason)
        return None
    return functools.partial(ulysses_attention, mesh=mesh, head_axis=decision.head_axis)


def shard_tokens(x: jax.Array, mesh) -> jax.Array:
    """Constrain a (B, N, …) token sequence to batch over ``data`` and tokens over ``context`` (axes that do not
    divide are left unsharded), inside ``jit``."""
    if mesh is None:
        return x
    data, p = _size(mesh, DATA), _size(mesh, CONTEXT)
    spec = P(DATA if data > 1 and x.shape[0] % data == 0 else None, CONTEXT if p > 1 and x.shape[1] % p == 0
             else None)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


__all__ = ["UlyssesPlan", "plan", "self_attention_fn", "shard_tokens", "ulysses_attention"]
