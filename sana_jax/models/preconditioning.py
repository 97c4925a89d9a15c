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
DiT then reads the caption rather than the noise (why the embedded default model uses it: docs/default-model.md).

``target="x0"`` drops the skip (``c_skip = 0``, ``c_out = 1``): F predicts the clean latents at every σ, and
``v̂ = (x − F)/σ`` (σ floored at :data:`MIN_SIGMA`, so a clean pass at σ = 0 stays finite). Under EDM's skip
(``target="edm"``), ``c_skip ≈ 1`` below σ ≈ 0.5: the noisy input is copied into x0̂ and F has to cancel its noise,
which F sees scaled by ``c_in`` (its std at most ``noise_scale``), so F must amplify it by ``c_skip/(c_out·c_in)``
— 7 to 21 for 0.05 ≤ σ ≤ 0.5 at noise scale 0.1 (with EDM's own ``c_in``: 1 to 19). A small DiT trained mostly
near σ = 1 never learns that gain: its x0̂ keeps the noise of its input below σ ≈ 0.8, the ODE sampler carries that
noise to the end, and the decoder draws it as blocks of colour (the first embedded default model:
docs/default-model.md). With ``target="x0"`` F simply does not pass the (scaled-down) noise through.

The wrapper is a model of its own, :class:`PreconditionedTransformer` (config :class:`PreconditionedConfig`): the
SANA-Video DiT's parameters under the same names, its call, and ``c_in`` / the velocity composed around the plain
network. The block-causal forms take it through :func:`preconditioned`. The core DiT knows nothing of it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from sana_jax.errors import ConfigError
from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer


TARGETS = ("edm", "x0")
MIN_SIGMA = 1e-3  # target "x0": the velocity's σ floor (the commit pass of streaming runs at σ = 0)


@dataclasses.dataclass(frozen=True)
class FlowPreconditioning:
    """The constants of the wrapper (module docstring): the data's std and the largest std of F's input noise."""

    sigma_data: float = 1.0
    noise_scale: float = 0.1
    target: str = "edm"  # "edm": x0̂ = c_skip·x + c_out·F; "x0": x0̂ = F

    def __post_init__(self):
        for name in ("sigma_data", "noise_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"preconditioning {name} must be a positive number, got {value!r}")
        if self.target not in TARGETS:
            raise ConfigError(f"preconditioning target must be one of {TARGETS}, got {self.target!r}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "FlowPreconditioning":
        """From the ``"preconditioning"`` object of a ``config.json`` (the config reader names the file)."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"preconditioning must be an object, got {config!r}")
        unknown = set(config) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown preconditioning keys {sorted(unknown)}")
        return cls(**config)

    def to_dict(self) -> dict[str, float | str]:
        out = dataclasses.asdict(self)
        if self.target == "edm":  # folders written before the option existed stay byte-identical
            del out["target"]
        return out

    def input_scale(self, sigma: jax.Array) -> jax.Array:
        """``c_in(σ)``: multiplies the noisy latents before the patch embedding."""
        sd2 = self.sigma_data ** 2
        return jax.lax.rsqrt(jnp.square(1.0 - sigma) * sd2 + jnp.square(sigma / self.noise_scale))

    def loss_weight(self, sigma: jax.Array) -> jax.Array:
        """The weight of a sample's velocity error in training: 1 for "edm"; σ² for "x0", so that the loss is the
        squared error of F's own prediction, x0̂ − x0 = −σ·(v̂ − v) (the velocity error alone weighs σ → 0, where
        the clean latents are all but given, by 1/σ²)."""
        if self.target == "x0":
            return jnp.square(sigma)
        return jnp.ones_like(sigma)

    def velocity(self, x: jax.Array, out: jax.Array, sigma: jax.Array) -> jax.Array:
        """``v̂ = a(σ)·x − b(σ)·F`` from the noisy latents ``x`` and the network's output ``out`` (float32); with
        ``target="x0"``, ``(x − F)/max(σ, MIN_SIGMA)``."""
        if self.target == "x0":
            return (x.astype(jnp.float32) - out.astype(jnp.float32)) / jnp.maximum(sigma, MIN_SIGMA)
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


@dataclasses.dataclass(frozen=True)
class PreconditionedConfig(SanaVideoConfig):
    """A :class:`SanaVideoConfig` plus the :class:`FlowPreconditioning` around it. Its ``config.json`` is the DiT's
    with one more key, ``"preconditioning"`` (sana-jax only; diffusers ignores it)."""

    preconditioning: FlowPreconditioning = FlowPreconditioning()

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.preconditioning, Mapping):
            object.__setattr__(self, "preconditioning", FlowPreconditioning.from_dict(self.preconditioning))
        if not isinstance(self.preconditioning, FlowPreconditioning):
            raise ConfigError(f"preconditioning must be an object, got {self.preconditioning!r}")

    @classmethod
    def wrap(cls, config: SanaVideoConfig, preconditioning: FlowPreconditioning) -> "PreconditionedConfig":
        """``config`` with ``preconditioning`` around it."""
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(SanaVideoConfig)}
        return cls(**fields, preconditioning=preconditioning)


class PreconditionedTransformer(SanaVideoTransformer):
    """The SANA-Video DiT wrapped in :class:`FlowPreconditioning`: ``model(latents, text, timestep, text_mask)`` →
    flow velocity ``a(σ)·x − b(σ)·F(c_in(σ)·x)``, with F the plain DiT (the parent class's call, same parameters
    under the same names, so a checkpoint is the plain DiT's tensors plus the config key)."""

    config: PreconditionedConfig

    def __init__(self, config: PreconditionedConfig, **kwargs):
        if not isinstance(config, PreconditionedConfig):
            raise ConfigError(f"PreconditionedTransformer needs a PreconditionedConfig, got {type(config).__name__}")
        super().__init__(config, **kwargs)

    def __call__(self, latents: jax.Array, text: jax.Array, timestep: jax.Array,
                 text_mask: jax.Array | None = None) -> jax.Array:
        out = super().__call__(self.scale_input(latents, timestep), text, timestep, text_mask)
        return self.velocity(latents, out, timestep)

    def _sigma(self, latents: jax.Array, timestep: jax.Array) -> jax.Array:
        return sigma_per_frame(timestep, latents.shape[0], latents.shape[1], self.config.patch_size[0])

    def scale_input(self, latents: jax.Array, timestep: jax.Array) -> jax.Array:
        """``c_in(σ)·latents``: what the plain network is given."""
        self.check_latents(latents.shape)  # the DiT's InputError, before any broadcasting
        pre = self.config.preconditioning
        return (pre.input_scale(self._sigma(latents, timestep)) * latents.astype(jnp.float32)).astype(latents.dtype)

    def velocity(self, latents: jax.Array, out: jax.Array, timestep: jax.Array) -> jax.Array:
        """The flow velocity from the noisy ``latents`` and the plain network's output ``out``."""
        pre = self.config.preconditioning
        return pre.velocity(latents, out, self._sigma(latents, timestep)).astype(out.dtype)


def build_transformer(config: SanaVideoConfig, **kwargs) -> SanaVideoTransformer:
    """The DiT ``config`` describes: a :class:`PreconditionedTransformer` for a :class:`PreconditionedConfig`, else
    the plain :class:`SanaVideoTransformer` (``kwargs``: theirs, e.g. ``rngs``, ``dtype``)."""
    cls = PreconditionedTransformer if isinstance(config, PreconditionedConfig) else SanaVideoTransformer
    return cls(config, **kwargs)


def preconditioned(fn: Callable) -> Callable:
    """Let ``fn(model, …, latents, timestep, …)``, which computes a DiT's output from its pieces (the block-causal
    forms of :mod:`sana_jax.models.sana_video_causal`), take a :class:`PreconditionedTransformer`: ``fn`` runs on
    ``c_in·latents`` and its output (or the first item of a tuple it returns) becomes the flow velocity. A plain DiT
    goes straight through."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        if not isinstance(model, PreconditionedTransformer):
            return fn(model, *args, **kwargs)
        call = signature.bind(model, *args, **kwargs)
        latents, timestep = call.arguments["latents"], call.arguments["timestep"]
        call.arguments["latents"] = model.scale_input(latents, timestep)
        out = fn(*call.args, **call.kwargs)
        if isinstance(out, tuple):
            return (model.velocity(latents, out[0], timestep), *out[1:])
        return model.velocity(latents, out, timestep)

    return wrapper
