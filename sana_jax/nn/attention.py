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


def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None,
                      implementation: str | None = None) -> jax.Array:
    """Scaled dot-product attention; q (B, N, H, d), k/v (B, L, H, d), bias broadcastable to (B, H, N, L).

    ``jax.nn.dot_product_attention`` takes logits and softmax in float32 and, with ``implementation="cudnn"``,
    runs cuDNN's fused kernel on GPU; the default lets XLA choose.
    """
    if bias is not None:
        bias = bias.astype(q.dtype)
    return jax.nn.dot_product_attention(q, k, v, bias=bias, implementation=implementation)
