from sana_jax.models.preconditioning import FlowPreconditioning
from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer

__all__ = ["FlowPreconditioning", "SanaVideoConfig", "SanaVideoTransformer"]
