"""LTX-2 audio/video transformer: parity with diffusers ``LTX2VideoTransformer3DModel`` (float32, tiny random
configs, both streams), video-only mode, the jitted form, input errors and full-size shapes. The native (ltx-core)
layout and LoRA fusion: tests/test_ltx2_transformer_checkpoints.py."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from tests.parity import check, reference, save_and_load, torch_call

diffusers = pytest.importorskip("diffusers")

from converters import ltx2_transformer as conv  # noqa: E402
from converters.nnx_state import flat_params  # noqa: E402
from converters.safetensors_io import open_safetensors  # noqa: E402
from sana_jax.errors import InputError  # noqa: E402
from sana_jax.models.ltx2_transformer import (  # noqa: E402
    LTX2TransformerConfig,
    audio_num_frames,
    zero_audio_tokens,
)
from tests.released_keys import Shapes, all_blocks, read  # noqa: E402

B, T, H, W, L, LT = 2, 3, 4, 5, 7, 6  # batch, latent frames/height/width, audio tokens, text tokens
TINY = dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
            audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2, audio_attention_head_dim=8,
            audio_cross_attention_dim=16, num_layers=2, caption_channels=24, rope_type="split")


def make_reference(seed=0, **over):
    """A diffusers ``LTX2VideoTransformer3DModel`` at TINY (``over`` changed), every parameter random."""
    return reference(diffusers.LTX2VideoTransformer3DModel, seed=seed, **{**TINY, **over})


def from_reference(ref, where):
    """Our model from the reference's state dict (no file) and its diffusers config."""
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    return conv.load(sd, LTX2TransformerConfig.from_diffusers(dict(ref.config)), where=where)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The TINY reference, its ``save_pretrained`` folder and our model loaded from it by ``converters.load``."""
    ref = make_reference()
    folder = tmp_path_factory.mktemp("ltx2") / "transformer"
    return ref, folder, save_and_load(ref, folder)


def inputs(seed=1, t=T, h=H, w=W, length=L):
    rng = np.random.default_rng(seed)
    video = rng.standard_normal((B, t, h, w, 8)).astype(np.float32)
    audio = rng.standard_normal((B, length, 8)).astype(np.float32)
    vtext = rng.standard_normal((B, LT, 24)).astype(np.float32)
    atext = rng.standard_normal((B, LT, 24)).astype(np.float32)
    mask = np.ones((B, LT), np.int64)
    mask[1, :2] = 0  # left padding on the second sample
    return video, audio, vtext, atext, mask


def run_reference(ref, video, audio, vtext, atext, mask, sig, audio_sig=None, fps=16.0, **kw):
    """diffusers' forward on our channels-last inputs; σ in [0, 1] (diffusers takes σ·1000)."""
    b, t, h, w, c = video.shape
    v, a = torch_call(ref, hidden_states=video.reshape(b, -1, c), audio_hidden_states=audio,
                      encoder_hidden_states=vtext, audio_encoder_hidden_states=atext,
                      timestep=np.asarray(sig, np.float32) * 1000,
                      audio_timestep=None if audio_sig is None else np.asarray(audio_sig, np.float32) * 1000,
                      encoder_attention_mask=mask, audio_encoder_attention_mask=mask, num_frames=t, height=h,
                      width=w, fps=fps, audio_num_frames=audio.shape[1], return_dict=False, **kw)
    return v.reshape(video.shape[:-1] + (-1,)), a


def check_both(got, want, what=""):
    """Video and audio outputs of our model against the reference's."""
    check(got[0], want[0], what=f"{what} video")
    check(got[1], want[1], what=f"{what} audio")


def test_parity_with_diffusers(tiny):
    ref, _, model = tiny
    video, audio, vtext, atext, mask = inputs()
    sigma = np.array([0.909375, 0.3], np.float32)  # per-sample σ
    got = model(video, audio, vtext, atext, sigma, fps=16.0, video_text_mask=mask, audio_text_mask=mask)
    assert got[0].shape == video.shape and got[1].shape == audio.shape
    check_both(got, run_reference(ref, video, audio, vtext, atext, mask, sigma))


def test_parity_odd_sizes_and_per_token_sigma(tiny):
    """Non-square grid, odd frame count, per-token video σ with a separate audio σ, another fps."""
    ref, _, model = tiny
    video, audio, vtext, atext, mask = inputs(seed=2, t=5, h=3, w=6, length=9)
    sigma = np.random.default_rng(3).uniform(0.1, 1.0, (B, 5 * 3 * 6)).astype(np.float32)
    audio_sigma = np.array([0.5, 0.7], np.float32)
    got = model(video, audio, vtext, atext, sigma, audio_sigma=audio_sigma, fps=24.0, video_text_mask=mask,
                audio_text_mask=mask)
    check_both(got, run_reference(ref, video, audio, vtext, atext, mask, sigma, audio_sigma, fps=24.0))


def test_parity_interleaved_rope_and_cross_timestep():
    ref = make_reference(seed=4, rope_type="interleaved", rope_double_precision=False,
                         cross_attn_timestep_scale_multiplier=1)
    model = from_reference(ref, "interleaved")
    video, audio, vtext, atext, mask = inputs(seed=5)
    sigma, audio_sigma = np.array([0.8, 0.2], np.float32), np.array([0.6, 0.9], np.float32)
    want = run_reference(ref, video, audio, vtext, atext, mask, sigma, audio_sigma, sigma=sigma * 1000,
                         audio_sigma=audio_sigma * 1000, use_cross_timestep=True)
    check_both(model(video, audio, vtext, atext, sigma, audio_sigma=audio_sigma, fps=16.0, video_text_mask=mask,
                     audio_text_mask=mask, use_cross_timestep=True), want)


def test_parity_unequal_head_counts():
    """4 video heads vs 2 audio heads: the a↔v RoPE tables keep their own modality's head split."""
    ref = make_reference(seed=14, num_attention_heads=4, attention_head_dim=8)
    model = from_reference(ref, "heads")
    video, audio, vtext, atext, mask = inputs(seed=15)
    sigma = np.array([0.6, 0.6], np.float32)
    check_both(model(video, audio, vtext, atext, sigma, fps=16.0, video_text_mask=mask, audio_text_mask=mask),
               run_reference(ref, video, audio, vtext, atext, mask, sigma))


# -- video-only -----------------------------------------------------------------------------------------------------

def test_video_only_equals_isolated_modalities(tiny):
    """Video-only = diffusers' ``isolate_modalities=True`` video output (no a↔v attention); a model built without
    audio weights from the same checkpoint gives the same numbers and holds none of them."""
    ref, folder, model = tiny
    video, audio, vtext, atext, mask = inputs(seed=7)
    sigma = np.array([0.909375, 0.909375], np.float32)
    want_v, _ = run_reference(ref, video, audio, vtext, atext, mask, sigma, isolate_modalities=True)
    got_v, got_a = model(video, audio, vtext, atext, sigma, fps=16.0, video_text_mask=mask, video_only=True)
    assert got_a is None
    check(got_v, want_v)
    slim = conv.load(open_safetensors(folder / "diffusion_pytorch_model.safetensors"),
                     LTX2TransformerConfig.from_json(folder / "config.json"), where="video-only", video_only=True)
    assert slim.config.video_only and not any("audio" in k for k in flat_params(slim))
    slim_v, slim_a = slim(video, None, vtext, None, sigma, fps=16.0, video_text_mask=mask)
    assert slim_a is None
    np.testing.assert_allclose(np.asarray(slim_v), np.asarray(got_v), rtol=0, atol=1e-6)


def test_video_only_difference(tiny, rel_err):
    """How far video-only is from the full model on the refiner's inputs (σ0 = 0.909375, zero audio latent σ0·ε).
    Random tiny weights: the number only shows the a↔v path matters (reported in the model's docstring)."""
    _, _, model = tiny
    video, _, vtext, atext, mask = inputs(seed=8)
    sigma = np.float32(0.909375)
    audio = zero_audio_tokens(jax.random.key(0), B, num_frames=8 * (T - 1) + 1, fps=16.0, config=model.config)
    full_v, _ = model(video, audio, vtext, atext, sigma, fps=16.0)
    only_v, _ = model(video, audio, vtext, atext, sigma, fps=16.0, video_only=True)
    diff = rel_err(only_v, full_v)
    print(f"\nvideo-only vs full, tiny random config: max|Δv|/max|v| = {diff:.3g}")
    assert 1e-3 < diff < 10


def test_jit_of_split_state_matches_eager(tiny):
    """Pipelines jit a pure function of (graphdef, state, inputs): same numbers as the eager module."""
    _, _, model = tiny
    video, audio, vtext, atext, mask = inputs(seed=13)
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, video, audio, vtext, atext, sigma):
        return nnx.merge(graphdef, state)(video, audio, vtext, atext, sigma, fps=16.0)

    sigma = np.array([0.7, 0.7], np.float32)
    got_v, got_a = forward(state, video, audio, vtext, atext, sigma)
    want_v, want_a = model(video, audio, vtext, atext, sigma, fps=16.0)
    np.testing.assert_allclose(np.asarray(got_v), np.asarray(want_v), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got_a), np.asarray(want_a), rtol=0, atol=1e-5)


def test_zero_audio_latent_shape():
    cfg = LTX2TransformerConfig.preset()
    assert audio_num_frames(81, 16.0, cfg) == 127  # SANA's 81 frames at 16 fps: 5.06 s × 25 latents/s
    assert audio_num_frames(121, 24.0, cfg) == 126
    a = zero_audio_tokens(jax.random.key(1), 2, 81, 16.0, config=cfg)
    assert a.shape == (2, 127, 128)
    assert abs(float(np.std(np.asarray(a))) - 0.909375) < 0.02


# -- shapes, config, errors -------------------------------------------------------------------------------------------

def test_bad_inputs_raise(tiny):
    _, _, model = tiny
    video, audio, vtext, atext, _ = inputs()
    with pytest.raises(InputError, match="channels"):
        model(video[..., :4], audio, vtext, atext, 0.5)
    with pytest.raises(InputError, match="audio must be"):
        model(video, None, vtext, atext, 0.5)
    with pytest.raises(InputError, match="sigma"):
        model(video, audio, vtext, atext, np.zeros((3,), np.float32))


def test_full_size_parameter_count_and_keys_in_both_layouts():
    cfg = LTX2TransformerConfig.preset("ltx-2.0")
    _, _, targets = conv.abstract(cfg)
    assert sum(int(np.prod(s)) for s, _ in targets.values()) == 18_876_174_592
    _, _, video_only = conv.abstract(LTX2TransformerConfig.preset("ltx-2.0", video_only=True))
    assert sum(int(np.prod(s)) for s, _ in video_only.values()) == 13_041_520_768
    assert LTX2TransformerConfig.from_diffusers(cfg.to_diffusers()) == cfg
    # the key lists give block 0 only (3,510 tensors = 54 + 48 × 72)
    want = all_blocks(read("ltx2_diffusers.txt", "DIFFUSERS LTX2VideoTransformer3DModel"), 48)
    assert len(want) == 3510 and conv.expected_tensors(cfg) == want
    assert sum(int(np.prod(s)) for s in want.values()) == 18_876_174_592
    native = Shapes({conv.NATIVE_PREFIX + k: v for k, v in
                     all_blocks(read("ltx2_native.txt", "NATIVE ltx_core LTXModel"), 48).items()})
    native["vae.encoder.conv_in.conv.weight"] = (128, 48, 3, 3, 3)
    native["model.diffusion_model.audio_embeddings_connector.learnable_registers"] = (128, 3840)
    assert conv.detect(native)
    renamed = conv.as_diffusers(native, "key list")
    assert {k: renamed.shape(k) for k in renamed} == want
