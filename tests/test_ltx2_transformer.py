"""LTX-2 audio/video transformer: parity with diffusers ``LTX2VideoTransformer3DModel`` and ltx-core's native
``LTXModel`` (float32, tiny random configs, both streams), LoRA fusion, video-only mode, full-size shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import converters  # noqa: E402
from converters import loader, tables  # noqa: E402
from converters import ltx2_transformer as conv  # noqa: E402
from converters.nnx_state import flat_params  # noqa: E402
from converters.safetensors_io import open_safetensors, save_safetensors  # noqa: E402
from sana_jax.errors import CheckpointError, InputError  # noqa: E402
from sana_jax.models.ltx2_transformer import (  # noqa: E402
    LTX2Transformer,
    LTX2TransformerConfig,
    audio_num_frames,
    zero_audio_tokens,
)

TOL = 1e-4
B, T, H, W, L, LT = 2, 3, 4, 5, 7, 6  # batch, latent frames/height/width, audio tokens, text tokens
TINY = dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
            audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2, audio_attention_head_dim=8,
            audio_cross_attention_dim=16, num_layers=2, caption_channels=24, rope_type="split")
NATIVE_CONFIG = {  # ltx-core's metadata names for TINY (the checks LTXModelConfigurator makes included)
    "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 8, "out_channels": 8, "num_layers": 2,
    "cross_attention_dim": 32, "audio_num_attention_heads": 2, "audio_attention_head_dim": 8, "audio_in_channels": 8,
    "audio_out_channels": 8, "audio_cross_attention_dim": 16, "caption_channels": 24, "rope_type": "split",
    "frequencies_precision": "float64", "av_ca_timestep_scale_multiplier": 1000, "timestep_scale_multiplier": 1000,
    "positional_embedding_max_pos": [20, 2048, 2048], "audio_positional_embedding_max_pos": [20],
    "positional_embedding_theta": 10000.0, "norm_eps": 1e-6, "dropout": 0.0, "attention_bias": True,
    "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000, "use_linear_projection": False,
    "only_cross_attention": False, "cross_attention_norm": True, "double_self_attention": False,
    "upcast_attention": False, "standardization_norm": "rms_norm", "norm_elementwise_affine": False,
    "qk_norm": "rms_norm", "positional_embedding_type": "rope", "use_audio_video_cross_attention": True,
    "share_ff": False, "av_cross_ada_norm": True, "use_middle_indices_grid": True}


@pytest.fixture
def registered(monkeypatch):
    """``converters.load`` with this family registered (restored afterwards)."""
    monkeypatch.setitem(loader.FAMILIES, conv.FAMILY, conv)
    monkeypatch.setitem(loader.BY_CLASS, conv.MODEL_CLASS_NAME, conv)


def make_reference(seed=0, **over):
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(seed)
    ref = LTX2VideoTransformer3DModel(**{**TINY, **over}).eval()
    with torch.no_grad():
        for _, p in ref.named_parameters():
            if p.ndim == 1:  # norms start at one and biases near zero: make every parameter matter
                p.add_(0.3 * torch.randn_like(p))
    return ref


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = make_reference()
    folder = tmp_path_factory.mktemp("ltx2") / "transformer"
    ref.save_pretrained(folder)
    model = conv.load(open_safetensors(folder / "diffusion_pytorch_model.safetensors"),
                      LTX2TransformerConfig.from_json(folder / "config.json"), where=str(folder))
    return ref, folder, model


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
    tt = lambda a: None if a is None else torch.from_numpy(np.asarray(a))  # noqa: E731
    with torch.no_grad():
        v, a = ref(hidden_states=tt(video.reshape(b, -1, c)), audio_hidden_states=tt(audio),
                   encoder_hidden_states=tt(vtext), audio_encoder_hidden_states=tt(atext),
                   timestep=tt(np.asarray(sig, np.float32) * 1000),
                   audio_timestep=None if audio_sig is None else tt(np.asarray(audio_sig, np.float32) * 1000),
                   encoder_attention_mask=tt(mask), audio_encoder_attention_mask=tt(mask), num_frames=t, height=h,
                   width=w, fps=fps, audio_num_frames=audio.shape[1], return_dict=False, **kw)
    return v.numpy().reshape(video.shape[:-1] + (-1,)), a.numpy()


def test_parity_with_diffusers(reference, rel_err):
    ref, _, model = reference
    video, audio, vtext, atext, mask = inputs()
    sigma = np.array([0.909375, 0.3], np.float32)  # per-sample σ
    want_v, want_a = run_reference(ref, video, audio, vtext, atext, mask, sigma)
    got_v, got_a = model(video, audio, vtext, atext, sigma, fps=16.0, video_text_mask=mask, audio_text_mask=mask)
    assert got_v.shape == video.shape and got_a.shape == audio.shape
    assert rel_err(got_v, want_v) <= TOL
    assert rel_err(got_a, want_a) <= TOL


def test_parity_odd_sizes_and_per_token_sigma(reference, rel_err):
    """Non-square grid, odd frame count, per-token video σ with a separate audio σ, another fps."""
    ref, _, model = reference
    video, audio, vtext, atext, mask = inputs(seed=2, t=5, h=3, w=6, length=9)
    sigma = np.random.default_rng(3).uniform(0.1, 1.0, (B, 5 * 3 * 6)).astype(np.float32)
    audio_sigma = np.array([0.5, 0.7], np.float32)
    want_v, want_a = run_reference(ref, video, audio, vtext, atext, mask, sigma, audio_sigma, fps=24.0)
    got_v, got_a = model(video, audio, vtext, atext, sigma, audio_sigma=audio_sigma, fps=24.0,
                         video_text_mask=mask, audio_text_mask=mask)
    assert rel_err(got_v, want_v) <= TOL
    assert rel_err(got_a, want_a) <= TOL


def test_parity_interleaved_rope_and_cross_timestep(tmp_path, rel_err):
    ref = make_reference(seed=4, rope_type="interleaved", rope_double_precision=False,
                         cross_attn_timestep_scale_multiplier=1)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    model = conv.load(sd, LTX2TransformerConfig.from_diffusers(dict(ref.config)), where="interleaved")
    video, audio, vtext, atext, mask = inputs(seed=5)
    sigma, audio_sigma = np.array([0.8, 0.2], np.float32), np.array([0.6, 0.9], np.float32)
    want_v, want_a = run_reference(ref, video, audio, vtext, atext, mask, sigma, audio_sigma,
                                   sigma=torch.from_numpy(sigma * 1000),
                                   audio_sigma=torch.from_numpy(audio_sigma * 1000), use_cross_timestep=True)
    got_v, got_a = model(video, audio, vtext, atext, sigma, audio_sigma=audio_sigma, fps=16.0,
                         video_text_mask=mask, audio_text_mask=mask, use_cross_timestep=True)
    assert rel_err(got_v, want_v) <= TOL
    assert rel_err(got_a, want_a) <= TOL


def test_parity_unequal_head_counts(rel_err):
    """4 video heads vs 2 audio heads: the a↔v RoPE tables keep their own modality's head split."""
    ref = make_reference(seed=14, num_attention_heads=4, attention_head_dim=8)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    model = conv.load(sd, LTX2TransformerConfig.from_diffusers(dict(ref.config)), where="heads")
    video, audio, vtext, atext, mask = inputs(seed=15)
    sigma = np.array([0.6, 0.6], np.float32)
    want_v, want_a = run_reference(ref, video, audio, vtext, atext, mask, sigma)
    got_v, got_a = model(video, audio, vtext, atext, sigma, fps=16.0, video_text_mask=mask, audio_text_mask=mask)
    assert rel_err(got_v, want_v) <= TOL and rel_err(got_a, want_a) <= TOL


# -- native (ltx-core) layout -------------------------------------------------------------------------------------

def _native_state_dict(ref) -> dict[str, np.ndarray]:
    """The reference's weights under native ltx-core names, via the converter's renames run backwards."""
    pytest.importorskip("ltx_core")
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    native = LTXModelConfigurator.from_config({"transformer": NATIVE_CONFIG})
    names = [conv.NATIVE_PREFIX + k for k in native.state_dict()]
    renamed = tables.RenamedSource({n: n for n in names}, conv.native_renames(), "native")
    diffusers_sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    assert set(renamed) == set(diffusers_sd)  # the renames cover both layouts exactly
    sd = {renamed[k]: diffusers_sd[k] for k in renamed}
    native.load_state_dict({k[len(conv.NATIVE_PREFIX):]: torch.from_numpy(v) for k, v in sd.items()},
                           strict=True, assign=True)
    return native.eval(), sd


@pytest.fixture(scope="module")
def native_file(reference, tmp_path_factory):
    ref, _, _ = reference
    native, sd = _native_state_dict(ref)
    sd["vae.encoder.conv_in.conv.weight"] = np.zeros((4, 3, 3, 3, 3), np.float32)  # other components of the file
    sd["model.diffusion_model.video_embeddings_connector.learnable_registers"] = np.zeros((4, 24), np.float32)
    path = tmp_path_factory.mktemp("native") / "ltx-2-tiny.safetensors"
    save_safetensors(sd, path, metadata={"config": json.dumps({"transformer": NATIVE_CONFIG})})
    return native, path


def run_native(native, video, audio, vtext, atext, mask, sigma, audio_sigma):
    from diffusers.models.transformers.transformer_ltx2 import LTX2AudioVideoRotaryPosEmbed
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig
    from ltx_core.model.transformer.modality import Modality

    b, t, h, w, c = video.shape
    vpos = LTX2AudioVideoRotaryPosEmbed(32, modality="video").prepare_video_coords(b, t, h, w, "cpu", fps=16.0)
    apos = LTX2AudioVideoRotaryPosEmbed(16, modality="audio", scale_factors=(4,)).prepare_audio_coords(
        b, audio.shape[1], "cpu")
    tt = torch.from_numpy
    vm = Modality(latent=tt(video.reshape(b, -1, c)), sigma=tt(sigma), timesteps=tt(sigma)[:, None],
                  positions=vpos, context=tt(vtext), context_mask=tt(mask))
    am = Modality(latent=tt(audio), sigma=tt(audio_sigma), timesteps=tt(audio_sigma)[:, None], positions=apos,
                  context=tt(atext), context_mask=tt(mask))
    with torch.no_grad():
        v, a = native(vm, am, BatchedPerturbationConfig.empty(b))
    return v.numpy().reshape(video.shape), a.numpy()


def test_native_file_matches_ltx_core(native_file, registered, rel_err):
    """Native single file (config from its metadata, other components ignored) vs ltx-core's ``LTXModel``, which
    takes the a↔v modulation from the *other* modality's σ (``use_cross_timestep=True``)."""
    native, path = native_file
    model = converters.load(path, component=conv.FAMILY)
    assert isinstance(model, LTX2Transformer) and model.config.rope_type == "split"
    video, audio, vtext, atext, mask = inputs(seed=6)
    sigma, audio_sigma = np.array([0.909375, 0.4], np.float32), np.array([0.7, 0.2], np.float32)
    want_v, want_a = run_native(native, video, audio, vtext, atext, mask, sigma, audio_sigma)
    got_v, got_a = model(video, audio, vtext, atext, sigma, audio_sigma=audio_sigma, fps=16.0,
                         video_text_mask=mask, audio_text_mask=mask, use_cross_timestep=True)
    assert rel_err(got_v, want_v) <= TOL
    assert rel_err(got_a, want_a) <= TOL


def test_folder_native_and_orbax_loads_agree(reference, native_file, registered, tmp_path):
    _, folder, model = reference
    _, path = native_file
    from_folder = converters.load(folder)
    from_native = converters.load(path, component=conv.FAMILY)
    converters.save_orbax(from_native, tmp_path / "orbax")
    from_orbax = converters.load(tmp_path / "orbax")
    for other in (from_folder, from_native, from_orbax):
        a, b = flat_params(model), flat_params(other)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    exported = conv.export(model)
    ref_sd = open_safetensors(folder / "diffusion_pytorch_model.safetensors")
    assert exported.keys() == set(ref_sd)
    np.testing.assert_array_equal(exported["transformer_blocks.1.audio_to_video_attn.to_q.weight"],
                                  ref_sd["transformer_blocks.1.audio_to_video_attn.to_q.weight"])


# -- video-only -----------------------------------------------------------------------------------------------------

def test_video_only_equals_isolated_modalities(reference, rel_err):
    """Video-only = diffusers' ``isolate_modalities=True`` video output (no a↔v attention); a model built without
    audio weights from the same checkpoint gives the same numbers and holds none of them."""
    ref, folder, model = reference
    video, audio, vtext, atext, mask = inputs(seed=7)
    sigma = np.array([0.909375, 0.909375], np.float32)
    want_v, _ = run_reference(ref, video, audio, vtext, atext, mask, sigma, isolate_modalities=True)
    got_v, got_a = model(video, audio, vtext, atext, sigma, fps=16.0, video_text_mask=mask, video_only=True)
    assert got_a is None and rel_err(got_v, want_v) <= TOL
    slim = conv.load(open_safetensors(folder / "diffusion_pytorch_model.safetensors"),
                     LTX2TransformerConfig.from_json(folder / "config.json"), where="video-only", video_only=True)
    assert slim.config.video_only and not any("audio" in k for k in flat_params(slim))
    slim_v, slim_a = slim(video, None, vtext, None, sigma, fps=16.0, video_text_mask=mask)
    assert slim_a is None
    np.testing.assert_allclose(np.asarray(slim_v), np.asarray(got_v), rtol=0, atol=1e-6)


def test_video_only_difference(reference, rel_err):
    """How far video-only is from the full model on the refiner's inputs (σ0 = 0.909375, zero audio latent σ0·ε).
    Random tiny weights: the number only shows the a↔v path matters (reported in the model's docstring)."""
    import jax

    _, _, model = reference
    video, _, vtext, atext, mask = inputs(seed=8)
    sigma = np.float32(0.909375)
    audio = zero_audio_tokens(jax.random.key(0), B, num_frames=8 * (T - 1) + 1, fps=16.0, config=model.config)
    full_v, _ = model(video, audio, vtext, atext, sigma, fps=16.0)
    only_v, _ = model(video, audio, vtext, atext, sigma, fps=16.0, video_only=True)
    diff = rel_err(only_v, full_v)
    print(f"\nvideo-only vs full, tiny random config: max|Δv|/max|v| = {diff:.3g}")
    assert 1e-3 < diff < 10


def test_jit_of_split_state_matches_eager(reference):
    """Pipelines jit a pure function of (graphdef, state, inputs): same numbers as the eager module."""
    import jax
    from flax import nnx

    _, _, model = reference
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
    import jax

    cfg = LTX2TransformerConfig.preset()
    assert audio_num_frames(81, 16.0, cfg) == 127  # SANA's 81 frames at 16 fps: 5.06 s × 25 latents/s
    assert audio_num_frames(121, 24.0, cfg) == 126
    a = zero_audio_tokens(jax.random.key(1), 2, 81, 16.0, config=cfg)
    assert a.shape == (2, 127, 128)
    assert abs(float(np.std(np.asarray(a))) - 0.909375) < 0.02


# -- LoRA -----------------------------------------------------------------------------------------------------------

# (diffusers module, native module, rank)
LORA_TARGETS = [("transformer_blocks.0.attn1.to_q", "transformer_blocks.0.attn1.to_q", 3),
                ("transformer_blocks.1.audio_to_video_attn.to_out.0",
                 "transformer_blocks.1.audio_to_video_attn.to_out.0", 2),
                ("transformer_blocks.0.ff.net.0.proj", "transformer_blocks.0.ff.net.0.proj", 4),
                ("proj_in", "patchify_proj", 2),
                ("time_embed.linear", "adaln_single.linear", 3),
                ("av_cross_attn_video_a2v_gate.linear", "av_ca_a2v_gate_adaln_single.linear", 2)]


def _lora_weights(ref, seed=9):
    rng = np.random.default_rng(seed)
    out = {}
    for name, native, r in LORA_TARGETS:
        w = ref.get_submodule(name).weight
        a = (0.3 * rng.standard_normal((r, w.shape[1]))).astype(np.float32)
        b = (0.3 * rng.standard_normal((w.shape[0], r))).astype(np.float32)
        out[name] = (native, a, b)
    return out


def _run_with_adapters(ref, lora, scale, *args, **kw):
    """The reference with the LoRA applied as adapters (y = Wx + b + scale·B(Ax)), unfused."""
    hooks = [ref.get_submodule(name).register_forward_hook(
        lambda m, inp, out, a=torch.from_numpy(a), b=torch.from_numpy(b): out + scale * (inp[0] @ a.T) @ b.T)
        for name, (_, a, b) in lora.items()]
    try:
        return run_reference(ref, *args, **kw)
    finally:
        for h in hooks:
            h.remove()


def test_lora_fusion_native_names_on_diffusers_folder(reference, tmp_path, rel_err):
    """ltx-core naming (``diffusion_model.<native>.lora_{A,B}.weight``, no alpha: W += s·B@A) fused while loading."""
    ref, folder, _ = reference
    lora = _lora_weights(ref)
    tensors = {}
    for native, a, b in lora.values():
        tensors[f"diffusion_model.{native}.lora_A.weight"] = a
        tensors[f"diffusion_model.{native}.lora_B.weight"] = b
    tensors["text_embedding_projection.aggregate_embed.lora_A.weight"] = np.zeros((2, 3), np.float32)
    save_safetensors(tensors, tmp_path / "lora.safetensors")
    lora_source = open_safetensors(tmp_path / "lora.safetensors")
    model = conv.load(open_safetensors(folder / "diffusion_pytorch_model.safetensors"),
                      LTX2TransformerConfig.from_json(folder / "config.json"), where="lora",
                      loras=[(lora_source, 0.7)])
    video, audio, vtext, atext, mask = inputs(seed=10)
    sigma = np.array([0.9, 0.5], np.float32)
    want_v, want_a = _run_with_adapters(ref, lora, 0.7, video, audio, vtext, atext, mask, sigma)
    got_v, got_a = model(video, audio, vtext, atext, sigma, fps=16.0, video_text_mask=mask, audio_text_mask=mask)
    assert rel_err(got_v, want_v) <= TOL and rel_err(got_a, want_a) <= TOL
    plain_v, _ = run_reference(ref, video, audio, vtext, atext, mask, sigma)
    assert rel_err(plain_v, want_v) > 1e-3  # the LoRA does change the output


def test_lora_fusion_peft_and_kohya_names_on_native_file(reference, native_file, tmp_path, rel_err):
    """diffusers/peft naming (``transformer.<module>.lora_A.weight``, ``lora_alpha / r`` from the adapter metadata)
    and ``lora_down/lora_up`` + ``alpha`` naming, fused into a native single file."""
    ref, _, _ = reference
    _, path = native_file
    lora = _lora_weights(ref, seed=11)
    names = list(lora)
    peft = {}
    for name in names[:3]:
        _, a, b = lora[name]
        peft[f"transformer.{name}.lora_A.weight"], peft[f"transformer.{name}.lora_B.weight"] = a, b
    kohya = {}
    for name in names[3:]:
        native, a, b = lora[name]
        kohya[f"{native}.lora_down.weight"], kohya[f"{native}.lora_up.weight"] = a, b
        kohya[f"{native}.alpha"] = np.float32(2 * a.shape[0])  # scale alpha/rank = 2
    # peft: lora_alpha/r = 2 for every module → the same effective scale 2 for all
    save_safetensors(peft, tmp_path / "peft.safetensors",
                     metadata={"lora_adapter_metadata": json.dumps({"r": 4, "lora_alpha": 8})})
    save_safetensors(kohya, tmp_path / "kohya.safetensors")
    source = open_safetensors(path)
    model = conv.load(source, conv.config_from_checkpoint(source, str(path)), where="native+lora",
                      loras=[(open_safetensors(tmp_path / "peft.safetensors"), 0.5),
                             (open_safetensors(tmp_path / "kohya.safetensors"), 0.5)])
    video, audio, vtext, atext, mask = inputs(seed=12)
    sigma = np.array([0.9, 0.5], np.float32)
    want_v, want_a = _run_with_adapters(ref, lora, 0.5 * 2, video, audio, vtext, atext, mask, sigma)
    got_v, got_a = model(video, audio, vtext, atext, sigma, fps=16.0, video_text_mask=mask, audio_text_mask=mask)
    assert rel_err(got_v, want_v) <= TOL and rel_err(got_a, want_a) <= TOL


class _SliceOnly(dict):
    """A source that serves blocks only (``read_slice``); reading a whole tensor fails the test."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.reads = []

    def __getitem__(self, name):
        raise AssertionError(f"{name} read whole")

    def read_slice(self, name, index):
        self.reads.append((name, index))
        return dict.__getitem__(self, name)[index]

    def shape(self, name):
        return dict.__getitem__(self, name).shape


def test_lora_fused_source_reads_blocks_only():
    """Sharded loading reads ``(W + s·B@A)[rows, cols]`` as ``W[rows, cols] + s·B[rows] @ A[:, cols]``: the same
    block as slicing the fused whole, and never a whole tensor."""
    rng = np.random.default_rng(0)
    w, a, b = (rng.standard_normal(s).astype(np.float32) for s in ((6, 5), (2, 5), (6, 2)))
    bias = rng.standard_normal(6).astype(np.float32)
    source = _SliceOnly({"proj_in.weight": w, "proj_in.bias": bias})
    lora = _SliceOnly({"proj_in.lora_A.weight": a, "proj_in.lora_B.weight": b})
    fused = conv.fuse_lora(source, lora, 0.7)
    whole = w + np.float32(0.7) * (b @ a)
    for index in [(slice(0, 3), slice(None)), (slice(3, 6), slice(1, 4)), (slice(None),), ()]:
        np.testing.assert_allclose(tables.read_slice(fused, "proj_in.weight", index), whole[index], rtol=1e-6)
    np.testing.assert_array_equal(tables.read_slice(fused, "proj_in.bias", (slice(2, 4),)), bias[2:4])
    assert ("proj_in.lora_B.weight", (slice(3, 6), slice(None))) in lora.reads


def test_lora_that_does_not_fit_is_refused(reference):
    ref, folder, _ = reference
    source = conv.as_diffusers(open_safetensors(folder / "diffusion_pytorch_model.safetensors"), "x")
    w = ref.get_submodule("proj_in").weight
    with pytest.raises(CheckpointError, match="no weight"):
        conv.fuse_lora(source, {"diffusion_model.nope.lora_A.weight": np.zeros((2, 8), np.float32),
                                "diffusion_model.nope.lora_B.weight": np.zeros((4, 2), np.float32)})
    with pytest.raises(CheckpointError, match="do not make a delta"):
        conv.fuse_lora(source, {"proj_in.lora_A.weight": np.zeros((2, w.shape[1] + 1), np.float32),
                                "proj_in.lora_B.weight": np.zeros((w.shape[0], 2), np.float32)})
    with pytest.raises(CheckpointError, match="neither"):
        conv.fuse_lora(source, {"proj_in.lora_magnitude_vector": np.zeros((4,), np.float32)})


# -- shapes, config, errors -------------------------------------------------------------------------------------------

def test_bad_inputs_raise(reference):
    _, _, model = reference
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
    keys = Path(__file__).resolve().parents[2] / "shared" / "specs" / "keys"
    if not keys.exists():
        pytest.skip("shared/specs not beside the checkout")
    from tests.test_ltx2_vae import _Shapes, _spec_keys

    # the key files list block 0 only (3,510 tensors = 54 + 48 × 72)
    want = _all_blocks(_spec_keys(keys / "keys_diffusers.txt", "DIFFUSERS LTX2VideoTransformer3DModel"))
    assert len(want) == 3510 and conv.expected_tensors(cfg) == want
    assert sum(int(np.prod(s)) for s in want.values()) == 18_876_174_592
    native = _Shapes({conv.NATIVE_PREFIX + k: v for k, v in
                      _all_blocks(_spec_keys(keys / "keys_native.txt", "NATIVE ltx_core LTXModel")).items()})
    native["vae.encoder.conv_in.conv.weight"] = (128, 48, 3, 3, 3)
    native["model.diffusion_model.audio_embeddings_connector.learnable_registers"] = (128, 3840)
    assert conv.detect(native)
    renamed = conv.as_diffusers(native, "spec")
    assert {k: renamed.shape(k) for k in renamed} == want


def _all_blocks(keys: dict, layers: int = 48) -> dict:
    out = {k: v for k, v in keys.items() if not k.startswith("transformer_blocks.")}
    for i in range(layers):
        out.update({k.replace("transformer_blocks.0.", f"transformer_blocks.{i}.", 1): v
                    for k, v in keys.items() if k.startswith("transformer_blocks.0.")})
    return out
