"""What distillation reads: encoded prompts (DMD needs no videos) and the teacher's ODE trajectories for them.

Both live in one :class:`~sana_jax.training.LatentDataset` (the latent cache format, written atomically): its
``latents`` are the trajectories (N, n + 1, T, H, W, C) — the teacher's latents at the student's n noise levels and
the clean end (:func:`sana_jax.distill.ode.teacher_trajectory`) — and its text the U distinct prompts; pair i
belongs to prompt i mod U. N may be 0 (DMD only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.distill.ode import teacher_trajectory
from sana_jax.errors import InputError
from sana_jax.progress import progress_bar
from sana_jax.training.data import LatentDataset


def teacher_model_fn(graphdef):
    """``sampling.sample``'s model function for a DiT split into ``graphdef`` and parameters (SANA-Video's takes the
    text mask, Wan2.1's not: :func:`sana_jax.distill.families.causal_ops`)."""
    from flax import nnx

    from sana_jax.distill.families import causal_ops

    def model_fn(params, x, t, cond):
        model = nnx.merge(graphdef, params)
        return causal_ops(model).velocity(model, x, t, cond["text"], cond["mask"])

    return model_fn


def make_ode_pairs(teacher, text, mask, null_text, null_mask, *, count: int, latent_shape: tuple[int, ...],
                   student_sigmas, guidance_scale: float, substeps: int, seed: int = 0, captions=(),
                   batch_size: int = 1, progress: bool = True, mesh=None) -> LatentDataset:
    """``count`` teacher trajectories, pair i from prompt i mod U (``text`` (U, L, D), ``mask`` (U, L)) and the
    noise of ``fold_in(key(seed), i)``; ``latent_shape`` = (T, H, W, C). Returns the dataset (in memory). The
    batches go round-robin to ``mesh``'s devices, else to one device per process, and every process ends with all
    pairs (:func:`sana_jax.training.data.batches_over_devices`)."""
    from flax import nnx

    from sana_jax.parallel.multihost import is_writer
    from sana_jax.training.data import batches_over_devices, spread_devices

    text, mask = np.asarray(text, np.float32), np.asarray(mask, np.int32)
    if text.ndim != 3 or mask.shape != text.shape[:2]:
        raise InputError(f"prompts must be (U, L, D) with a (U, L) mask, got {text.shape}, {mask.shape}")
    if count < 0:
        raise InputError(f"the number of ODE pairs must be >= 0, got {count}")
    n = len(student_sigmas)
    graphdef, params = nnx.split(teacher)
    model_fn = teacher_model_fn(graphdef)
    key = jax.random.key(seed)
    bar = progress_bar(progress and count > 0 and is_writer(), count, "ODE pairs", unit="pair")

    def trajectories_of(start: int, stop: int):
        ids = np.arange(start, stop)
        prompt = ids % len(text)
        noise = jnp.stack([jax.random.normal(jax.random.fold_in(key, int(i)), latent_shape) for i in ids])
        cond = {"text": jnp.asarray(text[prompt]), "mask": jnp.asarray(mask[prompt])}
        b = len(ids)
        uncond = {"text": jnp.broadcast_to(jnp.asarray(null_text, jnp.float32), (b, *text.shape[1:])),
                  "mask": jnp.broadcast_to(jnp.asarray(null_mask, jnp.int32), (b, text.shape[1]))}
        out = teacher_trajectory(model_fn, params, noise, student_sigmas, cond=cond, uncond=uncond,
                                 guidance_scale=guidance_scale, substeps=substeps)
        bar.update(b)
        return out

    try:
        trajectories = (batches_over_devices(count, batch_size, trajectories_of, spread_devices(mesh)) if count
                        else np.zeros((0, n + 1, *latent_shape), np.float32))
    finally:
        bar.close()
    return LatentDataset(np.asarray(trajectories, np.float32), text, mask, np.arange(count) % len(text),
                         np.asarray(null_text, np.float32), np.asarray(null_mask, np.int32), captions=captions,
                         meta={"kind": "ode_pairs", "guidance_scale": guidance_scale, "substeps": substeps,
                               "student_sigmas": [float(s) for s in student_sigmas], "seed": seed})


class DistillData:
    """Batches for the distillation trainer: ODE pairs for steps < ``ode_steps``, prompts after (drawn uniformly
    from ``(seed, step)``, so a resumed run sees what the uninterrupted one saw)."""

    def __init__(self, pairs: LatentDataset, ode_steps: int):
        if ode_steps and pairs.size == 0:
            raise InputError(f"{ode_steps} ODE regression steps need ODE pairs (--ode-pairs > 0)")
        self.pairs, self.ode_steps = pairs, ode_steps

    @property
    def size(self) -> int:
        return len(self.pairs.text)

    def signature(self) -> dict:
        return {**self.pairs.signature(), "prompts": len(self.pairs.text)}

    def batch(self, step: int, batch_size: int, seed: int = 0) -> dict:
        if step < self.ode_steps:
            out = self.pairs.batch(step, batch_size, seed)
            out["trajectory"] = out.pop("latents")
            return out
        caption = np.random.default_rng([seed, step, 1]).integers(0, len(self.pairs.text), batch_size)
        return {"text": np.asarray(self.pairs.text[caption], np.float32),
                "mask": np.asarray(self.pairs.mask[caption], np.int32),
                "null_text": np.asarray(self.pairs.null_text, np.float32),
                "null_mask": np.asarray(self.pairs.null_mask, np.int32)}
