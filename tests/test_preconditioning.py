"""EDM-style preconditioning of the SANA-Video DiT (sana_jax.models.preconditioning): the maths, the model wrapper
(plain, causal and streaming forms), and its checkpoints (the plain DiT's tensors plus one config key)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import converters
from converters import sana_video as family
from converters.nnx_state import flat_params
from sana_jax.errors import ConfigError
from sana_jax.io.checkpoints import MANIFEST
from sana_jax.models import sana_video_causal as sc
from sana_jax.models.preconditioning import (FlowPreconditioning, PreconditionedConfig, PreconditionedTransformer,
                                             build_transformer, sigma_per_frame)
from sana_jax.models.sana_video import SanaVideoTransformer
from tests.conftest import max_rel_err
from tests.helpers import tiny_config

SIGMAS = np.array([1e-4, 0.05, 0.3, 0.5, 0.8, 0.97, 1.0], np.float32)


@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
def test_velocity_is_the_edm_denoiser_as_a_flow_velocity(sigma_data):
    """v̂ = (x − x0̂)/σ with x0̂ = c_skip·x + c_out·F (Karras et al. 2022, Table 1, for x_σ = (1−σ)x0 + σε)."""
    pre = FlowPreconditioning(sigma_data=sigma_data, noise_scale=0.1)
    rng = np.random.default_rng(0)
    x, out = rng.standard_normal((2, len(SIGMAS), 5)).astype(np.float64)
    s = SIGMAS.astype(np.float64)[:, None]
    d = (1 - s) ** 2 * sigma_data ** 2 + s ** 2
    x0_hat = (1 - s) * sigma_data ** 2 / d * x + s * sigma_data / np.sqrt(d) * out
    want = (x - x0_hat) / s
    got = np.asarray(pre.velocity(jnp.asarray(x, jnp.float32), jnp.asarray(out, jnp.float32), SIGMAS[:, None]))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_the_right_network_output_gives_the_true_velocity():
    """F = (x0 − c_skip·x)/c_out, the unit-scale target EDM trains F towards, makes v̂ = ε − x0 at every σ;
    at σ = 1 that target is the clip itself (c_skip = 0: nothing is copied from the noise)."""
    pre = FlowPreconditioning(sigma_data=1.0)
    rng = np.random.default_rng(1)
    x0, eps = rng.standard_normal((2, len(SIGMAS), 6))
    s = SIGMAS.astype(np.float64)[:, None]
    x = (1 - s) * x0 + s * eps
    d = (1 - s) ** 2 + s ** 2
    target = (x0 - (1 - s) / d * x) / (s / np.sqrt(d))
    v = np.asarray(pre.velocity(jnp.asarray(x, jnp.float32), jnp.asarray(target, jnp.float32), SIGMAS[:, None]))
    np.testing.assert_allclose(v, eps - x0, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(target[-1], x0[-1], atol=1e-6)


def test_x0_target_predicts_the_clean_latents():
    """target "x0": x0̂ = F at every σ (no skip), so F = x0 gives v̂ = ε − x0; the velocity stays finite at σ = 0
    (the commit pass of streaming), where x − σ·v̂ is still F; c_in is the same as EDM's."""
    pre = FlowPreconditioning(sigma_data=1.0, noise_scale=0.1, target="x0")
    rng = np.random.default_rng(2)
    x0, eps = rng.standard_normal((2, len(SIGMAS), 6))
    s = SIGMAS.astype(np.float64)[:, None]
    x = (1 - s) * x0 + s * eps
    v = np.asarray(pre.velocity(jnp.asarray(x, jnp.float32), jnp.asarray(x0, jnp.float32), SIGMAS[:, None]))
    np.testing.assert_allclose(v[1:], (eps - x0)[1:], rtol=1e-4, atol=1e-4)
    at_zero = pre.velocity(jnp.asarray(x0, jnp.float32), jnp.asarray(x0 + 0.5, jnp.float32), jnp.zeros((7, 1)))
    assert np.all(np.isfinite(np.asarray(at_zero)))
    edm = FlowPreconditioning(sigma_data=1.0, noise_scale=0.1)
    np.testing.assert_array_equal(pre.input_scale(jnp.asarray(SIGMAS)), edm.input_scale(jnp.asarray(SIGMAS)))
    assert pre.to_dict() == {"sigma_data": 1.0, "noise_scale": 0.1, "target": "x0"}
    assert "target" not in edm.to_dict()  # folders written before the option stay as they were
    assert FlowPreconditioning.from_dict(pre.to_dict()) == pre


def test_x0_target_trains_on_the_clean_latents_error():
    """With the x0 target's loss weight (σ²) the flow-matching loss is the error of F's own prediction: an F off by
    δ everywhere scores mean(δ²) at whatever noise levels are drawn (unweighted, δ²/σ²)."""
    from sana_jax.training import flow_matching_loss

    pre = FlowPreconditioning(noise_scale=0.1, target="x0")
    rng = np.random.default_rng(3)
    x0 = jnp.asarray(rng.standard_normal((4, 2, 4, 4, 3)), jnp.float32)
    delta = jnp.asarray(rng.standard_normal(x0.shape), jnp.float32) * 0.1
    text, mask = jnp.zeros((4, 1, 2)), jnp.ones((4, 1), jnp.int32)

    def predict(x_t, _text, t, _mask):
        return pre.velocity(x_t, x0 + delta, sigma_per_frame(t, 4, 2))

    key = jax.random.key(0)
    weighted = flow_matching_loss(predict, x0, text, mask, key, loss_weight=pre.loss_weight)
    assert float(weighted) == pytest.approx(float(jnp.mean(jnp.square(delta))), rel=1e-4)
    assert float(flow_matching_loss(predict, x0, text, mask, key)) > 2 * float(weighted)
    # the distillation critic's flow loss takes the same weight (its model's: model_loss_weight)
    from sana_jax.distill.dmd import critic_loss
    from sana_jax.training.flow import model_loss_weight

    wrapped = PreconditionedTransformer(PreconditionedConfig.wrap(tiny_config(), pre), rngs=nnx.Rngs(0))
    assert model_loss_weight(wrapped) == pre.loss_weight
    assert model_loss_weight(SanaVideoTransformer(tiny_config(), rngs=nnx.Rngs(0))) is None
    critic = critic_loss(lambda x_t, t: predict(x_t, None, t, None), x0, key, loss_weight=pre.loss_weight)
    assert float(critic) == pytest.approx(float(jnp.mean(jnp.square(delta))), rel=1e-4)
    np.testing.assert_array_equal(FlowPreconditioning().loss_weight(jnp.asarray(SIGMAS)), np.ones(len(SIGMAS)))


def test_input_scale_bounds_the_noise_and_is_edm_at_scale_one():
    s = jnp.asarray(SIGMAS)
    for scale in (0.1, 0.3):
        c_in = FlowPreconditioning(noise_scale=scale).input_scale(s)
        assert np.all(np.asarray(c_in * s) <= scale * (1 + 1e-6))  # the noise part's std
        assert float(c_in[-1]) == pytest.approx(scale)  # σ = 1: only noise, scaled to s
    edm = FlowPreconditioning(sigma_data=0.5, noise_scale=1.0).input_scale(s)
    np.testing.assert_allclose(edm, 1 / np.sqrt((1 - SIGMAS) ** 2 * 0.25 + SIGMAS ** 2), rtol=1e-6)


@pytest.mark.parametrize("bad", [{"noise_scale": 0.0}, {"sigma_data": -1.0}, {"noise_scale": "big"},
                                 {"scale": 0.1}, {"target": "eps"}])
def test_bad_preconditioning_is_refused(bad):
    with pytest.raises(ConfigError, match="preconditioning"):
        FlowPreconditioning.from_dict(bad)
    with pytest.raises(ConfigError, match="preconditioning"):
        family.CONFIG.from_diffusers({**tiny_config().to_diffusers(), "preconditioning": bad})


def test_the_wrapper_is_built_from_its_config_only():
    pre = FlowPreconditioning(noise_scale=0.2)
    config = PreconditionedConfig.wrap(tiny_config(), pre)
    assert config.preconditioning == pre and config.in_channels == tiny_config().in_channels
    assert config != tiny_config() and PreconditionedConfig.wrap(tiny_config(), pre) == config
    assert type(build_transformer(config, rngs=nnx.Rngs(0))) is PreconditionedTransformer
    assert type(build_transformer(tiny_config(), rngs=nnx.Rngs(0))) is SanaVideoTransformer
    with pytest.raises(ConfigError, match="PreconditionedConfig"):
        PreconditionedTransformer(tiny_config(), rngs=nnx.Rngs(0))


def test_sigma_per_frame_broadcasts_every_timestep_form():
    per_sample = sigma_per_frame(jnp.array([1000.0, 500.0]), 2, 4)
    assert per_sample.shape == (2, 4, 1, 1, 1) and float(per_sample[1, 3, 0, 0, 0]) == 0.5
    assert sigma_per_frame(jnp.float32(250.0), 2, 4).shape == (2, 4, 1, 1, 1)
    patched = sigma_per_frame(jnp.array([[0.0, 1000.0]]), 1, 4, patch_frames=2)  # (B, T') with a temporal patch 2
    np.testing.assert_array_equal(np.asarray(patched).ravel(), [0, 0, 1, 1])
    one = sigma_per_frame(jnp.array([[500.0], [250.0]]), 2, 4, patch_frames=2)  # (B, 1): the whole clip
    np.testing.assert_array_equal(np.asarray(one)[:, :, 0, 0, 0], [[0.5] * 4, [0.25] * 4])


@pytest.fixture(scope="module")
def pair():
    """The same weights with and without preconditioning."""
    pre = FlowPreconditioning(sigma_data=0.8, noise_scale=0.2)
    plain = SanaVideoTransformer(tiny_config(), rngs=nnx.Rngs(jax.random.key(3, impl="rbg")))
    wrapped = PreconditionedTransformer(PreconditionedConfig.wrap(tiny_config(), pre), rngs=nnx.Rngs(0))
    nnx.update(wrapped, nnx.state(plain))  # the same parameter names
    return plain, wrapped, pre


def _inputs(frames=4, per_frame=False):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, frames, 8, 8, 4)), jnp.float32)
    text = jnp.asarray(rng.standard_normal((2, 3, 8)), jnp.float32)
    ts = rng.uniform(0, 1000, (2, frames) if per_frame else (2,))
    return x, text, jnp.asarray(ts, jnp.float32), jnp.ones((2, 3), jnp.int32)


@pytest.mark.parametrize("per_frame", [False, True])
def test_model_wraps_the_same_network(pair, per_frame):
    """With preconditioning the DiT is F(c_in·x) of the plain DiT's weights, turned into a velocity."""
    plain, wrapped, pre = pair
    x, text, ts, mask = _inputs(per_frame=per_frame)
    sigma = sigma_per_frame(ts, 2, 4)
    want = pre.velocity(x, plain(pre.input_scale(sigma) * x, text, ts, mask), sigma)
    assert max_rel_err(wrapped(x, text, ts, mask), want) <= 1e-5
    assert max_rel_err(plain(x, text, ts, mask), wrapped(x, text, ts, mask)) > 1e-2  # it does change the output


def test_causal_and_streaming_forms_wrap_it_too(pair):
    _, wrapped, _ = pair
    x, text, ts, mask = _inputs(per_frame=True)
    full = wrapped(x, text, ts, mask)
    assert max_rel_err(sc.causal_forward(wrapped, x, text, ts, mask, causal=False), full) <= 1e-5
    one_shot = sc.causal_forward(wrapped, x, text, ts, mask, chunk=2)
    dit = sc.StreamingDiT(wrapped, donate=False)
    state = dit.init_state(text, mask, height=8, width=8)
    first, state = dit(state, x[:, :2], ts[:, :2], commit=True)
    second, _ = dit(state, x[:, 2:], ts[:, 2:])
    assert max_rel_err(jnp.concatenate([first, second], axis=1), one_shot) <= 1e-5


@pytest.mark.parametrize("form", ["safetensors", "orbax"])
def test_checkpoints_are_the_plain_tensors_and_one_config_key(pair, tmp_path, form):
    """Written by export_safetensors or save_orbax, the wrapper is the plain DiT's tensors under the same names plus
    the config's "preconditioning" key, and loads back as the wrapper; the plain DiT loads as the plain DiT."""
    plain, wrapped, pre = pair
    write = converters.export_safetensors if form == "safetensors" else converters.save_orbax
    write(wrapped, tmp_path / "pre")
    write(plain, tmp_path / "plain")
    if form == "safetensors":
        keys = [set(converters.open_checkpoint(tmp_path / f / "diffusion_pytorch_model.safetensors"))
                for f in ("pre", "plain")]
        config = json.loads((tmp_path / "pre" / "config.json").read_text())
        assert "preconditioning" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    else:
        keys = [set(flat_params(converters.load(tmp_path / f))) for f in ("pre", "plain")]
        config = json.loads((tmp_path / "pre" / MANIFEST).read_text())["config"]
    assert keys[0] == keys[1]
    assert config == {**tiny_config().to_diffusers(), "preconditioning": pre.to_dict()}
    loaded = converters.load(tmp_path / "pre")
    assert type(loaded) is PreconditionedTransformer and loaded.config == wrapped.config
    assert type(converters.load(tmp_path / "plain")) is SanaVideoTransformer
    x, text, ts, mask = _inputs()
    assert max_rel_err(loaded(x, text, ts, mask), wrapped(x, text, ts, mask)) == 0.0
    assert "preconditioning" not in tiny_config().to_diffusers()  # released configs keep their keys
