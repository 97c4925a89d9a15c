"""The distillation trainer: a bidirectional SANA-Video or Wan2.1 teacher makes a few-step block-causal student of
its own family (CausVid; the family's causal functions: :mod:`sana_jax.distill.families`).

Three copies of the DiT: the frozen **teacher** (the real score, with CFG), the **student** (the generator;
initialised from the teacher unless given) and the **critic** (the fake score, initialised from the teacher).
Steps ``[0, ode_steps)`` regress the student onto the teacher's ODE trajectories chunk by chunk
(:func:`~sana_jax.distill.rollout.causal_ode_loss`); every later step rolls the student out on its own outputs
(:func:`~sana_jax.distill.rollout.self_forcing_rollout`, one random exit step per chunk) and updates the critic
with the flow loss on those samples; every ``critic_updates``-th of them first updates the generator with the DMD
loss (:func:`~sana_jax.distill.dmd.distribution_matching_loss`; the critic then trains on the same samples).

The state is one pytree (checkpointed by orbax through :func:`sana_jax.training.trainer.fit`, which resumes it
bit-exactly: every random draw is a function of ``(seed, step)``):
``step``, ``student``/``critic`` (float32 master weights by parameter name), ``student_opt``/``critic_opt``
(optax), ``ema`` (the generator's EMA, or empty). The teacher's weights are not in it (they never change).
With a ``mesh`` all three models and both optimisers are sharded by the FSDP rules and the batch over ``data`` ×
``fsdp``; bf16 compute (``compute_dtype``) and block rematerialisation (``remat``) as for the fine-tuner.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sana_jax.distill.config import DistillConfig
from sana_jax.distill.dmd import DMDSettings, critic_loss, distribution_matching_loss, guided_denoiser
from sana_jax.distill.families import matching_ops
from sana_jax.distill.rollout import causal_ode_loss, draw_exits, self_forcing_rollout
from sana_jax.errors import InputError
from sana_jax.kernels.dispatch import on_mesh
from sana_jax.models import sana_video_causal as sc
from sana_jax.sampling.schedules import Schedule, longsana_schedule
from sana_jax.training.config import TrainConfig
from sana_jax.training.flow import model_loss_weight
from sana_jax.training.params import ParamTree, gathered, place_batch, set_compute, state_shardings
from sana_jax.training.trainer import (abstract_state, ema_update, fit, make_optimizer, state_placement,
                                       step_placement)

SHARED = ("null_text", "null_mask")  # batch entries every sample shares (replicated, not split)


def student_schedule(config: DistillConfig) -> Schedule:
    """The student's per-chunk re-noising schedule (what it is trained for and streams with)."""
    return longsana_schedule(config.student_timesteps, shift=config.student_shift)


class DistillTrainer:
    """``DistillTrainer(teacher, config, latent_shape=(T, H, W, C)).fit(data, steps, run_dir=...)`` with ``data`` a
    :class:`~sana_jax.distill.data.DistillData`. ``teacher`` (and ``student``, default: the teacher's weights) are
    only read; :meth:`model_from` gives the trained student. A Wan2.1 teacher (``WanTransformer``) trains a Wan
    causal student, whose clip must hold a multiple of ``chunk_frames`` latent frames."""

    def __init__(self, teacher: nnx.Module, config: DistillConfig, *, latent_shape: tuple[int, ...],
                 student: nnx.Module | None = None, mesh=None):
        self.config, self.mesh = config, mesh
        if len(latent_shape) != 4:
            raise InputError(f"latent_shape must be (frames, height, width, channels), got {latent_shape}")
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.ops = matching_ops(teacher, student)
        teacher.check_latents((1, *self.latent_shape))
        self.chunks = self.ops.chunks(self.latent_shape[0], config.chunk_frames)
        dtype, remat = config.compute_dtype, config.remat
        self.teacher = ParamTree(teacher, dtype, False, mesh=mesh)
        self.student = ParamTree(self.ops.student_copy(teacher if student is None else student, dtype), dtype, remat,
                                 mesh=mesh)
        self.critic = ParamTree(teacher, dtype, remat, mesh=mesh)
        self._teacher_weights = self.teacher.initial_copy()
        schedule = student_schedule(config)
        timesteps, coefficients = sc.renoise_inputs(schedule)
        self.student_sigmas = schedule.sigmas[:-1]
        self._timesteps = jnp.asarray(timesteps, jnp.float32)
        self._coefficients = {n: jnp.asarray(c, jnp.float32) for n, c in coefficients.items()}
        self.dmd = DMDSettings(config.dmd_shift, config.dmd_low, config.dmd_high)

        def optimizer(lr):
            return make_optimizer(TrainConfig(learning_rate=lr, adam_b1=config.adam_b1, adam_b2=config.adam_b2,
                                              weight_decay=config.weight_decay, grad_clip=config.grad_clip))

        self.tx_student = optimizer(config.learning_rate)
        self.tx_critic = optimizer(config.critic_learning_rate)
        # on a mesh: every leaf of the state keeps one sharding (fresh, stepped or restored alike)
        self.shardings = None if mesh is None else state_shardings(
            mesh, jax.eval_shape(self._build_state, *self._weights(abstract=True)),
            {"student": self.student, "student_opt": self.student, "ema": self.student, "critic": self.critic,
             "critic_opt": self.critic})
        # on a mesh the linear-attention kernel (GPU) runs sharded (sana_jax.kernels.sharded)
        steps = step_placement(mesh, self.shardings)
        self._ode = jax.jit(on_mesh(self._ode_step, mesh), donate_argnums=(0,), **steps)
        self._dmd = jax.jit(on_mesh(self._dmd_step, mesh), donate_argnums=(0,), static_argnums=(3,), **steps)

    # -- state -------------------------------------------------------------------------------------------------

    def _weights(self, abstract: bool = False) -> tuple[dict, dict]:
        """(student, critic) float32 master copies of their initial weights (placed), or their shapes."""
        if abstract:
            return self.student.abstract(dtype=jnp.float32), self.critic.abstract(dtype=jnp.float32)
        return self.student.initial_copy(dtype=jnp.float32), self.critic.initial_copy(dtype=jnp.float32)

    def _build_state(self, student: dict, critic: dict) -> dict:
        return {"step": jnp.zeros((), jnp.int32), "student": student, "critic": critic,
                "student_opt": self.tx_student.init(student), "critic_opt": self.tx_critic.init(critic),
                "ema": jax.tree.map(jnp.copy, student) if self.config.ema_decay else {}}

    def init_state(self) -> dict:
        return jax.jit(self._build_state, donate_argnums=(0, 1), **state_placement(self.shardings))(*self._weights())

    def abstract_state(self) -> dict:
        """The state's shapes, dtypes and (on a mesh) shardings: what a checkpoint restores into."""
        return abstract_state(self._build_state, self._weights(abstract=True), self.shardings)

    def run_signature(self, data) -> dict:
        return {"distill": self.config.to_dict(), "teacher": self.teacher.model_config,
                "student": self.student.model_config, "latent_shape": list(self.latent_shape),
                "data": data.signature()}

    def model_from(self, state: dict, *, ema: bool = True, dtype="float32") -> nnx.Module:
        """The student with the state's weights (its EMA when kept and ``ema``), computing in ``dtype``."""
        weights = state["ema"] if (ema and state["ema"]) else state["student"]
        model = self.student.merge(gathered(weights))  # every process gets every weight
        set_compute(model, dtype, remat=False)
        return model

    # -- losses ------------------------------------------------------------------------------------------------

    def _stream_state(self, model, batch):
        return self.ops.init_state(model, batch["text"], batch["mask"], latent_shape=self.latent_shape)

    def _velocity(self, model):
        return lambda x, t, text, mask: self.ops.velocity(model, x, t, text, mask)

    def _ode_loss(self, student_params, batch, key):
        model = self.student.merge(student_params)
        return causal_ode_loss(model, self._stream_state(model, batch), batch["trajectory"], self.student_sigmas,
                               self._timesteps, key, chunk=self.config.chunk_frames, step_fn=self.ops.step)

    def _rollout(self, student_params, batch, key):
        model = self.student.merge(student_params)
        k_noise, k_exit = jax.random.split(key)
        exits = draw_exits(k_exit, len(self.chunks), len(self.student_sigmas))
        video, _ = self_forcing_rollout(model, self._stream_state(model, batch), k_noise, self._timesteps,
                                        self._coefficients, exits, shape=(batch["text"].shape[0], *self.latent_shape),
                                        chunk=self.config.chunk_frames, step_fn=self.ops.step)
        return video

    def _generator_loss(self, student_params, critic_params, teacher_params, batch, key):
        k_rollout, k_dmd = jax.random.split(key)
        video = self._rollout(student_params, batch, k_rollout)
        text, mask = batch["text"], batch["mask"]
        null = (jnp.broadcast_to(batch["null_text"], text.shape), jnp.broadcast_to(batch["null_mask"], mask.shape))
        real = guided_denoiser(self._velocity(self.teacher.merge(teacher_params)), (text, mask), null,
                               self.config.guidance_scale)
        fake = guided_denoiser(self._velocity(self.critic.merge(jax.lax.stop_gradient(critic_params))), (text, mask))
        loss, metrics = distribution_matching_loss(video, k_dmd, real, fake, self.dmd)
        return loss, (video, metrics)

    def _critic_loss(self, critic_params, video, batch, key):
        critic = self.critic.merge(critic_params)
        return critic_loss(lambda x_t, t: self._velocity(critic)(x_t, t, batch["text"], batch["mask"]), video, key,
                           self.dmd, loss_weight=model_loss_weight(critic))

    # -- steps -------------------------------------------------------------------------------------------------

    def _key(self, step):
        return jax.random.fold_in(jax.random.key(self.config.seed), step)

    def _update_student(self, state, grads):
        updates, opt = self.tx_student.update(grads, state["student_opt"], state["student"])
        student = optax.apply_updates(state["student"], updates)
        return {**state, "student": student, "student_opt": opt,
                "ema": ema_update(state["ema"], student, self.config.ema_decay)}

    def _ode_step(self, state, batch):
        loss, grads = jax.value_and_grad(self._ode_loss)(state["student"], batch, self._key(state["step"]))
        state = self._update_student(state, grads)
        return {**state, "step": state["step"] + 1}, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    def _dmd_step(self, state, batch, teacher_params, update_generator: bool):
        k_gen, k_critic = jax.random.split(self._key(state["step"]))
        metrics = {}
        if update_generator:
            (loss, (video, extra)), grads = jax.value_and_grad(self._generator_loss, has_aux=True)(
                state["student"], state["critic"], teacher_params, batch, k_gen)
            state = self._update_student(state, grads)
            metrics.update(dmd_loss=loss, grad_norm=optax.tree.norm(grads), **extra)
        else:
            video = self._rollout(state["student"], batch, k_gen)
        video = jax.lax.stop_gradient(video)
        c_loss, c_grads = jax.value_and_grad(self._critic_loss)(state["critic"], video, batch, k_critic)
        updates, opt = self.tx_critic.update(c_grads, state["critic_opt"], state["critic"])
        state = {**state, "critic": optax.apply_updates(state["critic"], updates), "critic_opt": opt,
                 "step": state["step"] + 1}
        metrics.update(loss=c_loss, critic_grad_norm=optax.tree.norm(c_grads))
        return state, metrics

    def phase(self, step: int) -> str:
        """What step ``step`` trains: "ode", "generator" (DMD generator + critic) or "critic"."""
        if step < self.config.ode_steps:
            return "ode"
        return "generator" if (step - self.config.ode_steps) % self.config.critic_updates == 0 else "critic"

    def step(self, state: dict, batch: dict, index: int | None = None) -> tuple[dict, dict]:
        """One step (``state`` is donated: use the returned one). On DMD steps ``loss`` is the critic's flow loss
        and, on generator steps, ``dmd_loss`` the generator's. ``index``: the state's step, as the caller counts it
        (``fit`` does), which picks the phase without reading it back from the device."""
        phase = self.phase(int(state["step"]) if index is None else index)
        batch = place_batch(self.mesh, batch, replicated=SHARED)
        if phase == "ode":
            return self._ode(state, batch)
        return self._dmd(state, batch, self._teacher_weights, phase == "generator")

    def fit(self, data, steps: int, **options) -> dict:
        """Train until ``steps`` steps in all (ODE + DMD) are done (:func:`sana_jax.training.trainer.fit`)."""
        return fit(self, data, steps, **options)
