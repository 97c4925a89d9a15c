"""Training settings (:class:`TrainConfig`) and the values its options take. No JAX here: the command line builds
its parser from these without loading it."""

from __future__ import annotations

import dataclasses

from sana_jax.errors import ConfigError
from sana_jax.validate import SEED_RANGE, integer_problem, number_problem

#: Training noise-level distributions (:func:`sana_jax.training.flow.sample_sigmas`).
TIMESTEP_SAMPLING = ("logit_normal", "uniform")
#: Learning-rate schedules after the warm-up (:func:`sana_jax.training.trainer.learning_rate_schedule`).
LR_SCHEDULES = ("constant", "cosine")
#: Activation dtypes of training (weights and optimiser state stay float32).
COMPUTE_DTYPES = ("float32", "bfloat16")


def check_numbers(config, integers: dict, numbers: dict) -> None:
    """A :class:`ConfigError` naming the first field of ``config`` that is not a finite number (an integer) in its
    range, e.g. ``learning_rate must be a finite number, got nan``. ``integers``: field → (low, high); ``numbers``:
    field → :func:`~sana_jax.validate.number_problem`'s range keywords; a field that is None (off) passes."""
    problems = [(name, integer_problem(getattr(config, name), low, high)) for name, (low, high) in integers.items()
                if getattr(config, name) is not None]
    problems += [(name, number_problem(getattr(config, name), **limits)) for name, limits in numbers.items()
                 if getattr(config, name) is not None]
    for name, problem in problems:
        if problem:
            raise ConfigError(f"{name} {problem}")


POSITIVE = {"low": 0, "low_open": True}
NON_NEGATIVE = {"low": 0}
SHARE = {"low": 0, "high": 1, "high_open": True}  # [0, 1)
DECAY = {"low": 0, "high": 1, "low_open": True, "high_open": True}  # (0, 1)

#: ranges of :class:`TrainConfig`'s numbers (:func:`check_numbers`)
_INTEGERS = {"warmup_steps": (0, None), "total_steps": (1, None), "batch_size": (1, None), "seed": SEED_RANGE}
_NUMBERS = {"learning_rate": POSITIVE, "weight_decay": NON_NEGATIVE, "adam_b1": SHARE, "adam_b2": SHARE,
            "grad_clip": POSITIVE, "ema_decay": DECAY, "flow_shift": POSITIVE, "pure_noise_fraction": SHARE,
            "text_dropout": SHARE}


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
        check_numbers(self, _INTEGERS, _NUMBERS)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_schedule == "cosine" and (not self.total_steps or self.total_steps <= self.warmup_steps):
            raise ConfigError(f"lr_schedule='cosine' needs total_steps > warmup_steps ({self.warmup_steps}), "
                              f"got {self.total_steps}")
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ConfigError(f"timestep_sampling must be one of {TIMESTEP_SAMPLING}, got {self.timestep_sampling!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
