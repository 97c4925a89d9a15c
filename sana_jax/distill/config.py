"""Distillation settings (:class:`DistillConfig`). No JAX here: the command line builds its parser from these."""

from __future__ import annotations

import dataclasses

from sana_jax.errors import ConfigError
from sana_jax.training.config import COMPUTE_DTYPES, DECAY, NON_NEGATIVE, POSITIVE, SHARE, check_numbers
from sana_jax.validate import SEED_RANGE, number_problem

#: LongSANA's per-chunk timesteps (``configs/sana_video_config/longsana/480ms/*.yaml``: the shift-8 warp of
#: [1000, 750, 500, 250]); what a distilled student runs at inference.
LONGSANA_STUDENT_TIMESTEPS = (1000.0, 960.0, 889.0, 727.0)  # = sampling.LONGSANA_TIMESTEPS (this module loads no JAX)


def default_timesteps(steps: int) -> tuple[float, ...]:
    """The student's timesteps for ``steps`` denoising steps: LongSANA's four, else 1000·(1 − i/steps)."""
    if steps < 1:
        raise ConfigError(f"the student needs >= 1 denoising step, got {steps}")
    if steps == 4:
        return LONGSANA_STUDENT_TIMESTEPS
    return tuple(1000.0 * (1 - i / steps) for i in range(steps))


#: ranges of :class:`DistillConfig`'s numbers (:func:`~sana_jax.training.config.check_numbers`)
_INTEGERS = {"chunk_frames": (1, None), "ode_steps": (0, None), "ode_substeps": (1, None),
             "critic_updates": (1, None), "batch_size": (1, None), "seed": SEED_RANGE}
_NUMBERS = {"student_shift": POSITIVE, "guidance_scale": NON_NEGATIVE, "learning_rate": POSITIVE,
            "critic_learning_rate": POSITIVE, "adam_b1": SHARE, "adam_b2": SHARE, "weight_decay": NON_NEGATIVE,
            "grad_clip": POSITIVE, "ema_decay": DECAY, "dmd_shift": POSITIVE, "dmd_low": DECAY, "dmd_high": DECAY}


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Settings of CausVid-style distillation: ODE regression for ``ode_steps`` optimiser steps, then DMD with a
    Self-Forcing rollout (defaults: Self-Forcing's ``configs/self_forcing_dmd.yaml`` and LongSANA's
    ``longsana/480ms/self_forcing.yaml`` where they state one)."""

    chunk_frames: int = 3  # latent frames per chunk (the first chunk takes the remainder)
    student_timesteps: tuple[float, ...] = LONGSANA_STUDENT_TIMESTEPS
    student_shift: float = 7.0  # σ of each timestep: the shifted FlowMatchScheduler table (longsana_schedule)
    guidance_scale: float = 3.0  # the teacher's CFG, for the ODE pairs and the real score
    ode_steps: int = 0  # optimiser steps of ODE regression before DMD
    ode_substeps: int = 8  # the teacher's Euler steps between two student noise levels
    critic_updates: int = 5  # critic updates per generator update (dfake_gen_update_ratio)
    learning_rate: float = 2e-6  # the generator's AdamW rate
    critic_learning_rate: float = 2e-6  # LongSANA: 2e-6 (Self-Forcing: 4e-7)
    adam_b1: float = 0.0
    adam_b2: float = 0.999
    weight_decay: float = 0.0
    grad_clip: float | None = 10.0
    ema_decay: float | None = 0.99  # EMA of the generator (what is exported); None: none
    dmd_shift: float = 3.0  # DMD's σ draw: uniform in [dmd_low, dmd_high], then this flow shift
    dmd_low: float = 0.02
    dmd_high: float = 0.98
    compute_dtype: str = "float32"
    remat: bool = False
    batch_size: int = 1
    seed: int = 0

    def __post_init__(self):
        check_numbers(self, _INTEGERS, _NUMBERS)
        t = tuple(self.student_timesteps)
        outside = any(number_problem(v, 0, 1000, low_open=True) for v in t)  # NaN, ±inf, a string …
        if not t or outside or any(b >= a for a, b in zip(t, t[1:])):
            raise ConfigError(f"student_timesteps must decrease within (0, 1000], got {list(t)}")
        object.__setattr__(self, "student_timesteps", tuple(float(v) for v in t))
        if self.dmd_low >= self.dmd_high:
            raise ConfigError(f"DMD needs dmd_low < dmd_high, got {self.dmd_low} and {self.dmd_high}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
