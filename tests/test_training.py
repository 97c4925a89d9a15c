"""The flow-matching trainer: learning, exact resume, interrupted checkpoints, bf16/remat, trainable subsets, EMA,
and export of a fine-tuned model to diffusers."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sana_jax.errors import ConfigError, InputError
from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer
from sana_jax.training import LatentDataset, TrainConfig, Trainer
from sana_jax.training.checkpoints import read_metrics
from sana_jax.training.flow import noisy_and_target, sample_sigmas, shift_sigmas

TINY = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
            num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=8,
            mlp_ratio=2.0, patch_size=(1, 2, 2), sample_size=4)


def tiny_model(seed: int = 0) -> SanaVideoTransformer:
    return SanaVideoTransformer(SanaVideoConfig(**TINY), rngs=nnx.Rngs(seed))


#: warm-up, EMA and text dropout on: the configuration of the resume and export tests (one compiled step for both)
FULL = TrainConfig(learning_rate=1e-3, warmup_steps=2, batch_size=4, ema_decay=0.9, text_dropout=0.25)


@functools.cache
def trainer_for(config: TrainConfig) -> Trainer:
    """One trainer (one compiled step) per configuration for the whole file: trainers keep no training state."""
    return Trainer(tiny_model(), config)


def tiny_dataset(n: int = 8) -> LatentDataset:
    rng = np.random.default_rng(0)
    return LatentDataset(rng.normal(size=(n, 2, 4, 4, 4)).astype(np.float32),
                         rng.normal(size=(3, 5, 8)).astype(np.float32), np.array([[1] * 5, [1] * 3 + [0] * 2,
                                                                                  [1] * 4 + [0]], np.int32),
                         np.arange(n) % 3, np.zeros((1, 5, 8), np.float32), np.array([[1, 0, 0, 0, 0]], np.int32),
                         captions=["a", "b", "c"])


def params_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_flow_objective_pieces():
    assert float(shift_sigmas(jnp.float32(0.5), 3.0)) == pytest.approx(0.75)
    s = sample_sigmas(jax.random.key(0), 4096, shift=3.0)
    assert 0.0 < float(s.min()) and float(s.max()) < 1.0
    assert float(jnp.median(s)) == pytest.approx(0.75, abs=0.03)  # logit-normal median 0.5, shifted by 3
    x0, eps = jnp.ones((2, 3)), jnp.zeros((2, 3))
    x_t, v = noisy_and_target(x0, eps, jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(np.asarray(x_t), [[1, 1, 1], [0, 0, 0]])
    np.testing.assert_allclose(np.asarray(v), -1.0)


def test_pure_noise_fraction_trains_sigma_one():
    """A share of the σ draws becomes exactly 1 (where sampling starts); with 0 the draws are unchanged, so runs
    made before the option existed reproduce."""
    key = jax.random.key(3)
    plain = sample_sigmas(key, 4096, shift=3.0)
    np.testing.assert_array_equal(np.asarray(sample_sigmas(key, 4096, shift=3.0, pure_noise_fraction=0.0)),
                                  np.asarray(plain))
    mixed = np.asarray(sample_sigmas(key, 4096, shift=3.0, sampling="uniform", pure_noise_fraction=0.25))
    assert np.mean(mixed == 1.0) == pytest.approx(0.25, abs=0.03)
    assert float(np.mean(np.asarray(plain) > 0.97)) < 0.02  # logit-normal + shift 3 hardly reaches the top
    with pytest.raises(InputError, match="pure_noise_fraction"):
        sample_sigmas(key, 4, pure_noise_fraction=1.0)
    with pytest.raises(ConfigError, match="pure_noise_fraction"):
        TrainConfig(pure_noise_fraction=-0.1)


def test_loss_decreases_on_tiny_overfit_set():
    data = tiny_dataset(4)
    trainer = Trainer(tiny_model(), TrainConfig(learning_rate=3e-3, batch_size=4, timestep_sampling="uniform"))
    state = trainer.init_state()
    fixed = lambda s: float(trainer.loss(s["params"], s["frozen"], jax.tree.map(jnp.asarray, data.batch(0, 4)),  # noqa: E731
                                         jax.random.key(7)))
    before = fixed(state)
    for step in range(60):
        state, _ = trainer.step(state, data.batch(step, 4))
    after = fixed(state)
    assert after < 0.6 * before, (before, after)


def test_resume_after_interruption_is_exact(tmp_path):
    """A run killed after step 5 (last checkpoint at 3) and resumed equals the run that was never stopped."""
    data = tiny_dataset()
    cfg = FULL
    straight = trainer_for(cfg).fit(data, 8, run_dir=tmp_path / "a", save_every=3, log_every=1,
                                              progress=False)

    class Killed(Exception):
        pass

    def kill_at_5(step, _metrics):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        trainer_for(cfg).fit(data, 8, run_dir=tmp_path / "b", save_every=3, log_every=1, progress=False,
                                       on_metrics=kill_at_5)
    resumed = trainer_for(cfg).fit(data, 8, run_dir=tmp_path / "b", save_every=3, log_every=1,
                                             progress=False)
    assert int(resumed["step"]) == 8
    for part in ("params", "ema", "frozen"):
        params_equal(straight[part], resumed[part])
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")  # the log was rolled back to step 3


def test_resume_refuses_other_settings(tmp_path):
    data = tiny_dataset()
    trainer_for(TrainConfig(batch_size=4)).fit(data, 1, run_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="different train"):
        Trainer(tiny_model(), TrainConfig(batch_size=2)).fit(data, 2, run_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="different train"):
        Trainer(tiny_model(), TrainConfig(batch_size=4, pure_noise_fraction=0.25)).fit(data, 2, run_dir=tmp_path,
                                                                                      progress=False)
    # a run started before a setting existed resumes, as long as the setting keeps its default
    run_file = tmp_path / "run.json"
    signature = json.loads(run_file.read_text())
    del signature["train"]["pure_noise_fraction"]
    run_file.write_text(json.dumps(signature))
    state = trainer_for(TrainConfig(batch_size=4)).fit(data, 2, run_dir=tmp_path, progress=False)
    assert int(state["step"]) == 2


_INTERRUPTED_SAVE = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from test_training import tiny_dataset, tiny_model
    from sana_jax.training import TrainConfig, Trainer
    from sana_jax.training.checkpoints import RunDirectory
    trainer, data = Trainer(tiny_model(), TrainConfig(batch_size=4)), tiny_dataset()
    state = trainer.fit(data, 2, run_dir={run!r}, save_every=2, progress=False)   # step 2 committed
    run = RunDirectory({run!r}, trainer, data)
    for step in range(2, 4):
        state, _ = trainer.step(state, data.batch(step, 4))
    run.save(4, state)   # asynchronous: returns while the files are being written
    os._exit(0)          # the process dies mid-write, as on a kill or a power cut
""")


def test_checkpoint_interrupted_mid_write_is_never_latest(tmp_path):
    run = tmp_path / "run"
    code = _INTERRUPTED_SAVE.format(tests=str(Path(__file__).parent), run=str(run))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300,
                   env={**os.environ, "JAX_PLATFORMS": "cpu"})
    entries = [p.name for p in (run / "checkpoints").iterdir()]
    assert "2" in entries and "4" not in entries, entries
    assert any(name.startswith("4.") and "tmp" in name for name in entries), entries  # the half-written step 4
    trainer, data = trainer_for(TrainConfig(batch_size=4)), tiny_dataset()
    from sana_jax.training.checkpoints import RunDirectory

    directory = RunDirectory(run, trainer, data)
    assert directory.latest_step() == 2
    state = directory.restore_latest()
    directory.close()
    assert int(state["step"]) == 2
    resumed = trainer.fit(data, 4, run_dir=run, save_every=2, progress=False)
    straight = trainer.fit(data, 4, progress=False)
    params_equal(straight["params"], resumed["params"])


def test_bf16_compute_with_remat_keeps_float32_masters():
    data = tiny_dataset()
    f32 = trainer_for(TrainConfig(batch_size=4))
    bf16 = Trainer(tiny_model(), TrainConfig(batch_size=4, compute_dtype="bfloat16", remat=True))
    s32, s16 = f32.init_state(), bf16.init_state()
    batch, key = jax.tree.map(jnp.asarray, data.batch(0, 4)), jax.random.key(1)
    l32 = float(f32.loss(s32["params"], s32["frozen"], batch, key))
    l16 = float(bf16.loss(s16["params"], s16["frozen"], batch, key))
    assert abs(l16 - l32) < 0.05 * l32
    s16, metrics = bf16.step(s16, data.batch(0, 4))
    assert all(v.dtype == jnp.float32 for v in s16["params"].values())
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    model = bf16.model_from(s16)
    assert model.dtype == jnp.float32 and not model.remat  # exported models compute in float32


def test_trainable_pattern_freezes_the_rest_and_ema_follows():
    data = tiny_dataset()
    trainer = Trainer(tiny_model(), TrainConfig(batch_size=4, learning_rate=1e-2, trainable=r"^blocks\.attn2\.",
                                                ema_decay=0.5))
    assert trainer.trainable and all(n.startswith("blocks.attn2.") for n in trainer.trainable)
    state = trainer.init_state()
    frozen0 = {k: np.asarray(v) for k, v in state["frozen"].items()}
    params0 = {k: np.asarray(v) for k, v in state["params"].items()}
    state, _ = trainer.step(state, data.batch(0, 4))
    params_equal(frozen0, state["frozen"])
    assert any(not np.array_equal(params0[k], state["params"][k]) for k in params0)
    for k in params0:  # EMA after one step: d·initial + (1 − d)·new
        np.testing.assert_allclose(state["ema"][k], 0.5 * params0[k] + 0.5 * np.asarray(state["params"][k]),
                                   rtol=1e-6, atol=1e-7)
    with pytest.raises(ConfigError, match="matches no parameter"):
        Trainer(tiny_model(), TrainConfig(trainable="nothing-like-this"))


def test_finetuned_model_round_trips_to_diffusers(tmp_path, rel_err):
    """Train a few steps, export the diffusers layout, load it in diffusers: same outputs as ours."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    import converters
    from tests.sana_refs import run_reference

    data = tiny_dataset()
    trainer = trainer_for(FULL)
    state = trainer.fit(data, 3, progress=False)
    ours = trainer.model_from(state)
    folder = converters.export_safetensors(ours, tmp_path / "transformer")
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "SanaVideoTransformer3DModel"
    theirs = diffusers.SanaVideoTransformer3DModel.from_pretrained(folder).eval()
    rng = np.random.default_rng(3)
    latents = rng.normal(size=(2, 2, 4, 4, 4)).astype(np.float32)
    text = rng.normal(size=(2, 5, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int64)
    timestep = np.array([300.0, 800.0], np.float32)
    with torch.no_grad():
        expected = run_reference(theirs, latents, text, timestep, mask)
    assert rel_err(np.asarray(ours(latents, text, timestep, mask)), expected) < 1e-5
