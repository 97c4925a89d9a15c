"""Which block-causal functions a distillation runs: the DiT family of its teacher and student.

Two families, one set of calls (:class:`CausalOps`; :func:`causal_ops` picks it from the model):

* **SANA-Video** (plain or preconditioned; LongSANA's students, :mod:`sana_jax.models.sana_video_causal`): a chunk
  reads running linear-attention sums of the past and the FFN's conv tail; a clip's latent frames split as
  LongSANA splits them (:func:`~sana_jax.models.sana_video_causal.split_frames`: the remainder in the first chunk);
  the text comes with its mask.
* **Wan2.1** (CausVid / Self-Forcing students, :mod:`sana_jax.models.wan_causal`): a chunk reads a KV cache of the
  committed latent frames, sized here to hold the whole training clip (every earlier chunk is seen, as the released
  students were trained); chunks are *aligned* — every chunk has ``chunk_frames`` frames, counted from frame 0 — so
  a clip's latent frames must be a multiple of ``chunk_frames``; the text (UMT5, zero-padded to 512 rows) is
  attended to whole: the mask the data carries (all ones) is not passed.

Both families' chunk steps share one signature, ``step(model, state, latents, timestep, commit=...)``, and both
stream states keep the prompt's cross-attention inputs in ``text_k``/``text_v`` (plus ``text_bias`` for SANA), so
the rollout and the losses (:mod:`sana_jax.distill.rollout`) are written once.
"""

from __future__ import annotations

from flax import nnx

from sana_jax.errors import InputError
from sana_jax.models import sana_video_causal, wan_causal
from sana_jax.models.wan import WanTransformer


class CausalOps:
    """SANA-Video's calls (the base class); :class:`WanOps` overrides what differs."""

    name = "SANA-Video"
    module = sana_video_causal

    @property
    def step(self):
        """The chunk step: ``step(model, state, latents, timestep, commit=False) -> (v, state | None)``."""
        return self.module.step

    def velocity(self, model, x, t, text, mask):
        """The bidirectional DiT's flow velocity (the teacher's and the critic's passes)."""
        return model(x.astype(model.dtype), text, t, mask)

    def init_state(self, model, text, mask, *, latent_shape: tuple[int, ...]):
        """The empty stream for a batch of prompts and clips of ``latent_shape`` = (T, H, W, C)."""
        _, h, w, _ = latent_shape
        return self.module.init_state(model, text.astype(model.dtype), mask, height=h, width=w)

    def chunks(self, frames: int, chunk: int) -> tuple[int, ...]:
        """Latent frames per chunk of a ``frames``-frame clip, as the student streams it."""
        return sana_video_causal.split_frames(frames, chunk)

    def student_copy(self, model: nnx.Module, compute_dtype) -> nnx.Module:
        """The model the student is trained as (a copy when it must differ from the teacher's set-up)."""
        return model


class WanOps(CausalOps):
    name = "Wan2.1"
    module = wan_causal

    def velocity(self, model, x, t, text, mask):
        del mask  # zero-padded text, attended to whole
        return model(x.astype(model.dtype), text, t)

    def init_state(self, model, text, mask, *, latent_shape: tuple[int, ...]):
        frames, h, w, _ = latent_shape  # a cache as long as the clip: every earlier chunk is visible
        return self.module.init_state(model, text.astype(model.dtype), None, height=h, width=w, cache_frames=frames)

    def chunks(self, frames: int, chunk: int) -> tuple[int, ...]:
        if frames < 1 or chunk < 1 or frames % chunk:
            lo = max(frames // chunk, 1) * chunk
            raise InputError(f"{frames} latent frames do not split into chunks of {chunk}: a Wan student streams "
                             f"chunks of chunk_frames latent frames counted from frame 0, so the clip needs a "
                             f"multiple of {chunk} latent frames (e.g. {lo} or {lo + chunk})")
        # a multiple of chunk: split_frames' remainder is 0, every chunk equal
        return sana_video_causal.split_frames(frames, chunk)

    def student_copy(self, model: nnx.Module, compute_dtype) -> nnx.Module:
        # The Wan students run with the time embedding, modulation and residual stream in the compute dtype (as
        # CausVid / Self-Forcing cast the whole network, and as StreamingPipeline.from_wan runs them); the teacher
        # and the critic keep the original Wan's float32 residual stream.
        import jax.numpy as jnp

        copy = nnx.merge(*nnx.split(model))
        copy.set_float32_conditioning(jnp.dtype(compute_dtype) == jnp.float32)
        return copy


SANA, WAN = CausalOps(), WanOps()


def causal_ops(model: nnx.Module) -> CausalOps:
    """The family of ``model``: :data:`WAN` for a :class:`~sana_jax.models.wan.WanTransformer`, else :data:`SANA`
    (a SANA-Video DiT, plain or preconditioned)."""
    if isinstance(model, WanTransformer):
        if model.config.patch_size[0] != 1:
            raise InputError(f"a causal Wan student needs a temporal patch of 1, the model has "
                             f"{model.config.patch_size[0]}")
        return WAN
    return SANA


def matching_ops(teacher: nnx.Module, student: nnx.Module | None) -> CausalOps:
    """:func:`causal_ops` of the teacher, after checking that the student (if given) is of the same family."""
    ops = causal_ops(teacher)
    if student is not None and causal_ops(student) is not ops:
        raise InputError(f"the student must be of the teacher's family: a {ops.name} teacher distils into a "
                         f"{ops.name} student, got a {causal_ops(student).name} one")
    return ops
