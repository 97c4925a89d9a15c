"""CausVid-style distillation: a bidirectional teacher makes a few-step block-causal student that streams.

* :mod:`~sana_jax.distill.dmd` — Distribution Matching Distillation (DMD2): the generator's and the critic's
  losses as pure functions of denoisers;
* :mod:`~sana_jax.distill.ode` — ODE-pair initialisation: the teacher's trajectories and the regression onto them;
* :mod:`~sana_jax.distill.rollout` — the Self-Forcing rollout and chunk-wise ODE regression of the causal student;
* :mod:`~sana_jax.distill.data`, :mod:`~sana_jax.distill.trainer` — the ODE pairs on disk and the trainer that
  runs both phases (orbax resume, bf16, remat, FSDP); :mod:`~sana_jax.distill.config` its settings;
* :mod:`~sana_jax.distill.families` — the causal functions of each DiT family (SANA-Video, Wan2.1);
  :mod:`~sana_jax.distill.teachers` — the teacher folders the command reads and the student folders it writes.

docs/distillation.md (and docs/training.md, "Distillation") shows the command (``sana-jax train distill``) and the
Python API.
"""
