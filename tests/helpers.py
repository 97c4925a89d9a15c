"""Small builders shared by tests that need no PyTorch."""

from __future__ import annotations

from flax import nnx

from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer


def tiny_config(**over) -> SanaVideoConfig:
    kw = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2,
              num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=8,
              mlp_ratio=2.0, patch_size=(1, 2, 2), sample_size=8)
    kw.update(over)
    return SanaVideoConfig(**kw)


def tiny_model(seed: int = 0, **over) -> SanaVideoTransformer:
    return SanaVideoTransformer(tiny_config(**over), rngs=nnx.Rngs(seed))
