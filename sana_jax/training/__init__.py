"""Training: the flow-matching objective, the trainer (optax, EMA, bf16, remat, sharding, orbax resume), the
latent/text cache, and the 2K adaptation recipe."""

from sana_jax.training.data import LatentDataset, build_cache, cache_video_folder
from sana_jax.training.flow import flow_matching_loss, sample_sigmas
from sana_jax.training.trainer import TrainConfig, Trainer

__all__ = ["LatentDataset", "TrainConfig", "Trainer", "build_cache", "cache_video_folder", "flow_matching_loss",
           "sample_sigmas"]
