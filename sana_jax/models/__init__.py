from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer

__all__ = ["SanaVideoConfig", "SanaVideoTransformer"]
