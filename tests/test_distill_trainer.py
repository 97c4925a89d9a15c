"""The distillation trainer on a tiny SANA-Video teacher: ODE pairs are the teacher's sampler, the phases follow
the schedule, a killed run resumes bit-exactly, and the trainer's metrics match its losses written out by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.distill.config import DistillConfig
from sana_jax.distill.data import DistillData, make_ode_pairs
from sana_jax.distill.trainer import DistillTrainer, student_schedule
from sana_jax.errors import ConfigError, InputError
from tests.helpers import tiny_causal_model

LATENT = (5, 4, 4, 4)  # 5 latent frames in chunks of 2: (3, 2)
CONFIG = DistillConfig(chunk_frames=2, ode_steps=2, critic_updates=2, guidance_scale=2.0, ode_substeps=2,
                       learning_rate=1e-3, critic_learning_rate=1e-3, batch_size=2, ema_decay=0.9)


@pytest.fixture(scope="module")
def teacher():
    return tiny_causal_model(0.2, 3)


@pytest.fixture(scope="module")
def pairs(teacher):
    rng = np.random.default_rng(0)
    text = rng.standard_normal((3, 5, 8)).astype(np.float32)
    mask = np.ones((3, 5), np.int32)
    mask[1, 3:] = 0
    return make_ode_pairs(teacher, text, mask, np.zeros((1, 5, 8), np.float32), np.ones((1, 5), np.int32),
                          count=4, latent_shape=LATENT, student_sigmas=student_schedule(CONFIG).sigmas[:-1],
                          guidance_scale=CONFIG.guidance_scale, substeps=CONFIG.ode_substeps, batch_size=3,
                          progress=False)


def test_ode_pairs_are_the_teacher_sampler(teacher, pairs):
    """Each pair starts from its own noise, belongs to prompt i mod 3, and ends where the teacher's sampler ends;
    the pair does not depend on how pairs are batched."""
    assert pairs.latents.shape == (4, 5, *LATENT) and list(pairs.caption_index) == [0, 1, 2, 0]
    noise = jax.random.normal(jax.random.fold_in(jax.random.key(0), 3), LATENT)
    np.testing.assert_array_equal(pairs.latents[3, 0], noise)
    one = make_ode_pairs(teacher, pairs.text, pairs.mask, pairs.null_text, pairs.null_mask, count=4,
                         latent_shape=LATENT, student_sigmas=student_schedule(CONFIG).sigmas[:-1],
                         guidance_scale=CONFIG.guidance_scale, substeps=CONFIG.ode_substeps, batch_size=1,
                         progress=False)
    np.testing.assert_allclose(one.latents, pairs.latents, rtol=0, atol=2e-5)
    assert np.all(np.isfinite(pairs.latents)) and np.abs(pairs.latents[:, -1] - pairs.latents[:, 0]).mean() > 0.1


def test_phases(teacher):
    trainer = DistillTrainer(teacher, CONFIG, latent_shape=LATENT)
    assert [trainer.phase(s) for s in range(6)] == ["ode", "ode", "generator", "critic", "generator", "critic"]
    assert trainer.chunks == (3, 2)


def _leaves(state):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(state)}


def test_resume_is_bit_exact_and_every_phase_trains(teacher, pairs, tmp_path):
    data = DistillData(pairs, CONFIG.ode_steps)
    logs = []
    trainer = DistillTrainer(teacher, CONFIG, latent_shape=LATENT)  # holds no run state: one for the three runs
    full = trainer.fit(data, 5, run_dir=tmp_path / "full", progress=False, log_every=1,
                       on_metrics=lambda s, m: logs.append(m))
    assert set(logs[0]) == {"loss", "grad_norm"} and "dmd_loss" in logs[2] and "dmd_loss" not in logs[3]
    assert all(np.isfinite(v) for m in logs for v in m.values())

    trainer.fit(data, 3, run_dir=tmp_path / "cut", progress=False, save_every=1)
    resumed = trainer.fit(data, 5, run_dir=tmp_path / "cut", progress=False)
    a, b = _leaves(full), _leaves(resumed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    initial = DistillTrainer(teacher, CONFIG, latent_shape=LATENT).init_state()
    for part in ("student", "critic", "ema"):
        moved = max(float(np.abs(np.asarray(full[part][n]) - np.asarray(initial[part][n])).max())
                    for n in full[part])
        assert moved > 0, part

    with pytest.raises(ConfigError, match="different distill"):
        DistillTrainer(teacher, DistillConfig(**{**CONFIG.to_dict(), "critic_updates": 3}),
                       latent_shape=LATENT).fit(data, 6, run_dir=tmp_path / "full", progress=False)


def test_generator_step_descends_the_dmd_loss(teacher, pairs):
    """The generator step's ``dmd_loss`` is distribution_matching_loss of the rollout written out here."""
    from sana_jax.distill.dmd import distribution_matching_loss, guided_denoiser

    cfg = DistillConfig(**{**CONFIG.to_dict(), "ode_steps": 0})
    trainer = DistillTrainer(teacher, cfg, latent_shape=LATENT)
    data = DistillData(pairs, 0)
    batch = data.batch(0, cfg.batch_size, cfg.seed)
    state = trainer.init_state()
    _, metrics = trainer.step(state, batch)

    key_gen = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), 0))[0]
    k_rollout, k_dmd = jax.random.split(key_gen)
    fresh = trainer.init_state()
    video = trainer._rollout(fresh["student"], jax.tree.map(jnp.asarray, batch), k_rollout)
    text, mask = jnp.asarray(batch["text"]), jnp.asarray(batch["mask"])
    velocity = lambda m: lambda x, t, tx, mk: m(x, tx, t, mk)  # noqa: E731
    null = (jnp.broadcast_to(batch["null_text"], text.shape), jnp.broadcast_to(batch["null_mask"], mask.shape))
    real = guided_denoiser(velocity(teacher), (text, mask), null, cfg.guidance_scale)
    fake = guided_denoiser(velocity(teacher), (text, mask))
    want, _ = distribution_matching_loss(video, k_dmd, real, fake, trainer.dmd)
    np.testing.assert_allclose(float(metrics["dmd_loss"]), float(want), rtol=1e-4)


def test_bad_settings(teacher, pairs):
    with pytest.raises(ConfigError, match="student_timesteps"):
        DistillConfig(student_timesteps=(500, 900))
    with pytest.raises(InputError, match="ODE pairs"):
        DistillData(make_ode_pairs(teacher, pairs.text, pairs.mask, pairs.null_text, pairs.null_mask, count=0,
                                   latent_shape=LATENT, student_sigmas=[1.0], guidance_scale=1.0, substeps=1,
                                   progress=False), ode_steps=3)
    with pytest.raises(InputError, match="latent_shape"):
        DistillTrainer(teacher, CONFIG, latent_shape=(4, 4, 4))
