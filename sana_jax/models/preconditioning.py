"""EDM-style preconditioning of a flow-matching DiT (a sana-jax option; the released SANA-Video models have none).

Karras et al. 2022 ("Elucidating the design space", Table 1) wrap the network F as
``x0̂ = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, σ)`` so that F's input and target have unit scale at every noise level.
For rectified flow, ``x_σ = (1 − σ)·x0 + σ·ε`` with data std σ_d, the variance of ``x_σ`` is
``D = (1 − σ)²σ_d² + σ²`` and the same derivation gives

    c_skip = (1 − σ)·σ_d² / D,    c_out = σ·σ_d / √D.

The wrapped model still returns the flow velocity ``v̂ = (x − x0̂)/σ`` (what the samplers integrate and the trainer's
loss compares), written without the division so that it stays finite at σ = 0:

    v̂ = a(σ)·x − b(σ)·F,    a = (σ − (1 − σ)·σ_d²) / D,    b = σ_d / √D.

At σ = 1 (where sampling starts and lays the video out) ``c_skip = 0``: F predicts the clip itself, nothing has to be
copied through from the noise as a plain velocity model must.

``c_in`` departs from EDM's ``1/√D``: it is ``1/√((1 − σ)²σ_d² + σ²/s²)`` with ``noise_scale`` s, so the noise part of
F's input never has a std above s while the signal part keeps EDM's scale (s = 1 is EDM). With pure noise in, the
DiT then reads the caption rather than the noise. Measured on the demo DiT trained at σ = 1 alone
(``bench/default_model_sigma1_probe.py``, 2-core CPU, batch 8): with s = 0.1 its prediction moves the shape the
prompted way by the clips' full travel (4.1 latent cells) by step 900 (``…_unnamed_black_cpu.json``), where the plain
velocity model shows no prompted motion after 1,200 steps (``…_probe_cpu.json``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from sana_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class FlowPreconditioning:
    """The constants of the wrapper (module docstring): the data's std and the largest std of F's input noise."""

    sigma_data: float = 1.0
    noise_scale: float = 0.1

    def __post_init__(self):
        for name in ("sigma_data", "noise_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"preconditioning {name} must be a positive number, got {value!r}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], source: str = "config") -> "FlowPreconditioning":
        if not isinstance(config, Mapping):
            raise ConfigError(f"{source}: preconditioning must be an object, got {config!r}")
        unknown = set(config) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"{source}: unknown preconditioning keys {sorted(unknown)}")
        return cls(**config)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def input_scale(self, sigma: jax.Array) -> jax.Array:
        """``c_in(σ)``: multiplies the noisy latents before the patch embedding."""
        sd2 = self.sigma_data ** 2
        return jax.lax.rsqrt(jnp.square(1.0 - sigma) * sd2 + jnp.square(sigma / self.noise_scale))

    def velocity(self, x: jax.Array, out: jax.Array, sigma: jax.Array) -> jax.Array:
        """``v̂ = a(σ)·x − b(σ)·F`` from the noisy latents ``x`` and the network's output ``out`` (float32)."""
        sd2 = self.sigma_data ** 2
        d = jnp.square(1.0 - sigma) * sd2 + jnp.square(sigma)
        a = (sigma - (1.0 - sigma) * sd2) / d
        b = self.sigma_data * jax.lax.rsqrt(d)
        return a * x.astype(jnp.float32) - b * out.astype(jnp.float32)


def sigma_per_frame(timestep: jax.Array, batch: int, frames: int, patch_frames: int = 1) -> jax.Array:
    """σ = timestep / 1000 as (B, T, 1, 1, 1) for latents of ``frames`` frames, from a timestep that is a scalar,
    (B,), or (B, T') per latent frame after the temporal patch ``patch_frames`` (as the DiT accepts it)."""
    t = jnp.asarray(timestep, jnp.float32) / 1000.0
    if t.ndim == 0:
        t = jnp.broadcast_to(t, (batch,))
    if t.ndim == 1:
        t = t[:, None]
    if t.shape[1] not in (1, frames):  # one per latent frame after the patch: one per frame of the patch
        t = jnp.repeat(t, patch_frames, axis=1)
    return jnp.broadcast_to(t, (batch, frames))[:, :, None, None, None]
