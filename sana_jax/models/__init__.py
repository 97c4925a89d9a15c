from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer
from sana_jax.models.preconditioning import FlowPreconditioning, PreconditionedConfig, PreconditionedTransformer

__all__ = ["FlowPreconditioning", "PreconditionedConfig", "PreconditionedTransformer", "SanaVideoConfig",
           "SanaVideoTransformer"]
