"""Softmax attention pieces shared by the DiTs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# diffusers / Sana turn a {1 keep, 0 drop} text mask into an additive bias of −10000 (not −inf): see the forward of
# huggingface/diffusers:src/diffusers/models/transformers/transformer_sana_video.py.
MASK_BIAS = -10000.0


def mask_to_bias(mask: jax.Array | None, dtype=jnp.float32) -> jax.Array | None:
    """(B, L) keep-mask → (B, 1, 1, L) additive bias with −10000 on dropped keys."""
    if mask is None:
        return None
    return ((1.0 - mask.astype(dtype)) * MASK_BIAS)[:, None, None, :]


def fused_attention_impl(q: jax.Array) -> str | None:
    """cuDNN's fused attention on GPU for 16-bit inputs with head dims ≤ 128 (otherwise the logits are materialised:
    (B, H, N, L) floats, which do not fit for a 480p Wan clip or the refiner's 2K video); XLA's default elsewhere."""
    if jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16) and q.shape[-1] <= 128:
        return "cudnn"
    return None


def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None,
                      mask: jax.Array | None = None) -> jax.Array:
    """Scaled dot-product attention; q (B, N, H, d), k/v (B, L, H, d), ``bias`` (additive) or ``mask`` (bool, True =
    attend) broadcastable to (B, H, N, L).

    ``jax.nn.dot_product_attention`` takes logits and softmax in float32. On GPU with 16-bit inputs it is asked for
    cuDNN's fused kernel (:func:`fused_attention_impl`); a call cuDNN refuses while tracing (a shape or mask it does
    not take) falls back to XLA's, the same maths.
    """
    if bias is not None:
        bias = bias.astype(q.dtype)
    impl = fused_attention_impl(q)
    if impl is not None:
        try:
            return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, implementation=impl)
        except (NotImplementedError, ValueError, RuntimeError):
            pass
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
