"""LTX-2 transformer checkpoints: ltx-core's native single file (parity with its ``LTXModel``), the same weights
from a diffusers folder, a native file and orbax, and LoRA files in three namings fused while loading (float32,
the tiny random config of tests/test_ltx2_transformer.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import converters
from converters import ltx2_transformer as conv
from converters import tables
from converters.nnx_state import flat_params
from converters.safetensors_io import open_safetensors, save_safetensors
from sana_jax.errors import CheckpointError
from sana_jax.models.ltx2_transformer import LTX2Transformer, LTX2TransformerConfig
from tests.parity import assert_same_tensors, torch, torch_call
from tests.test_ltx2_transformer import check_both, inputs, run_reference, tiny  # noqa: F401 (tiny: a fixture)

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
def native_file(tiny, tmp_path_factory):
    ref, _, _ = tiny
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
    v, a = torch_call(native, vm, am, BatchedPerturbationConfig.empty(b))
    return v.reshape(video.shape), a


def test_native_file_matches_ltx_core(native_file):
    """Native single file (config from its metadata, other components ignored) vs ltx-core's ``LTXModel``, which
    takes the a↔v modulation from the *other* modality's σ (``use_cross_timestep=True``)."""
    native, path = native_file
    model = converters.load(path, component=conv.FAMILY)
    assert isinstance(model, LTX2Transformer) and model.config.rope_type == "split"
    video, audio, vtext, atext, mask = inputs(seed=6)
    sigma, audio_sigma = np.array([0.909375, 0.4], np.float32), np.array([0.7, 0.2], np.float32)
    check_both(model(video, audio, vtext, atext, sigma, audio_sigma=audio_sigma, fps=16.0, video_text_mask=mask,
                     audio_text_mask=mask, use_cross_timestep=True),
               run_native(native, video, audio, vtext, atext, mask, sigma, audio_sigma))


def test_folder_native_and_orbax_loads_agree(tiny, native_file, tmp_path):
    _, folder, model = tiny
    _, path = native_file
    from_folder = converters.load(folder)
    from_native = converters.load(path, component=conv.FAMILY)
    converters.save_orbax(from_native, tmp_path / "orbax")
    from_orbax = converters.load(tmp_path / "orbax")
    for other in (from_folder, from_native, from_orbax):
        assert_same_tensors(flat_params(model), flat_params(other))
    exported = conv.export(model)
    ref_sd = open_safetensors(folder / "diffusion_pytorch_model.safetensors")
    assert exported.keys() == set(ref_sd)
    np.testing.assert_array_equal(exported["transformer_blocks.1.audio_to_video_attn.to_q.weight"],
                                  ref_sd["transformer_blocks.1.audio_to_video_attn.to_q.weight"])


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


def test_lora_fusion_native_names_on_diffusers_folder(tiny, tmp_path, rel_err):
    """ltx-core naming (``diffusion_model.<native>.lora_{A,B}.weight``, no alpha: W += s·B@A) fused while loading."""
    ref, folder, _ = tiny
    lora = _lora_weights(ref)
    tensors = {}
    for native, a, b in lora.values():
        tensors[f"diffusion_model.{native}.lora_A.weight"] = a
        tensors[f"diffusion_model.{native}.lora_B.weight"] = b
    tensors["text_embedding_projection.aggregate_embed.lora_A.weight"] = np.zeros((2, 3), np.float32)
    save_safetensors(tensors, tmp_path / "lora.safetensors")
    lora_source = open_safetensors(tmp_path / "lora.safetensors")
    with pytest.warns(UserWarning, match="1 LoRA tensors target the text connectors"):
        model = conv.load(open_safetensors(folder / "diffusion_pytorch_model.safetensors"),
                          LTX2TransformerConfig.from_json(folder / "config.json"), where="lora",
                          loras=[(lora_source, 0.7)])
    video, audio, vtext, atext, mask = inputs(seed=10)
    sigma = np.array([0.9, 0.5], np.float32)
    want = _run_with_adapters(ref, lora, 0.7, video, audio, vtext, atext, mask, sigma)
    check_both(model(video, audio, vtext, atext, sigma, fps=16.0, video_text_mask=mask, audio_text_mask=mask), want)
    plain_v, _ = run_reference(ref, video, audio, vtext, atext, mask, sigma)
    assert rel_err(plain_v, want[0]) > 1e-3  # the LoRA does change the output


def test_lora_fusion_peft_and_kohya_names_on_native_file(tiny, native_file, tmp_path):
    """diffusers/peft naming (``transformer.<module>.lora_A.weight``, ``lora_alpha / r`` from the adapter metadata)
    and ``lora_down/lora_up`` + ``alpha`` naming, fused into a native single file."""
    ref, _, _ = tiny
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
    want = _run_with_adapters(ref, lora, 0.5 * 2, video, audio, vtext, atext, mask, sigma)
    check_both(model(video, audio, vtext, atext, sigma, fps=16.0, video_text_mask=mask, audio_text_mask=mask), want)


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


def test_lora_that_does_not_fit_is_refused(tiny):
    ref, folder, _ = tiny
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
