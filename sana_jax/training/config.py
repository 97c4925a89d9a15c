"""Training settings (:class:`TrainConfig`) and the values its options take. No JAX here: the command line builds
its parser from these without loading it."""

from __future__ import annotations

import dataclasses

from sana_jax.errors import ConfigError

#: Training noise-level distributions (:func:`sana_jax.training.flow.sample_sigmas`).
TIMESTEP_SAMPLING = ("logit_normal", "uniform")
#: Learning-rate schedules after the warm-up (:func:`sana_jax.training.trainer.learning_rate_schedule`).
LR_SCHEDULES = ("constant", "cosine")
#: Activation dtypes of training (weights and optimiser state stay float32).
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults: SANA-Video's recipe where it states one)."""

    learning_rate: float = 1e-4
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # "constant" after warm-up, or "cosine" decay to 0 at ``total_steps``
    total_steps: int | None = None
    weight_decay: float = 0.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    grad_clip: float | None = 1.0  # global-norm clipping; None: off
    ema_decay: float | None = None  # e.g. 0.999; None: no EMA
    compute_dtype: str = "float32"  # "bfloat16": bf16 activations/matmuls, float32 master weights and optimiser
    remat: bool = False  # rematerialise each DiT block in the backward pass
    flow_shift: float = 3.0
    timestep_sampling: str = "logit_normal"
    pure_noise_fraction: float = 0.0  # share of samples trained at σ = 1 exactly, where sampling starts
    text_dropout: float = 0.0  # probability of training a sample on the empty prompt (for guidance)
    trainable: str | None = None  # regular expression over parameter names (re.search); None: all
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_schedule == "cosine" and (not self.total_steps or self.total_steps <= self.warmup_steps):
            raise ConfigError(f"lr_schedule='cosine' needs total_steps > warmup_steps ({self.warmup_steps}), "
                              f"got {self.total_steps}")
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ConfigError(f"timestep_sampling must be one of {TIMESTEP_SAMPLING}, got {self.timestep_sampling!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        if not 0.0 <= self.pure_noise_fraction < 1.0:
            raise ConfigError(f"pure_noise_fraction must be in [0, 1), got {self.pure_noise_fraction}")
        if not 0.0 <= self.text_dropout < 1.0:
            raise ConfigError(f"text_dropout must be in [0, 1), got {self.text_dropout}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.batch_size < 1 or self.warmup_steps < 0:
            raise ConfigError("batch_size must be ≥ 1 and warmup_steps ≥ 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
