"""Tiny random diffusers SANA-Video pipelines saved with ``save_pretrained``, for end-to-end parity tests (built with
the harness of tests/parity.py)."""

from __future__ import annotations

import json

import pytest

from tests.parity import perturb, to_torch, torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "a", "cat", "surfing", "on", "the", "wave", "big", "blue", "square",
         "moving", "up", "red", "circle", "left", "motion", "score:", "30.", "user", "prompt:"]
CAPTION = 24


def tokenizer():
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                                pad_token="<pad>", unk_token="<unk>", padding_side="right")


def text_encoder(seed=0):
    cfg = transformers.Gemma2Config(vocab_size=len(WORDS), hidden_size=CAPTION, intermediate_size=48,
                                    num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=12,
                                    sliding_window=8, query_pre_attn_scalar=12, pad_token_id=0, bos_token_id=2,
                                    eos_token_id=1)
    torch.manual_seed(seed)
    model = transformers.Gemma2Model(cfg).eval()
    perturb(model, 0.2, seed=seed)
    return model


def transformer(channels, patch, seed=0):
    torch.manual_seed(seed)
    model = diffusers.SanaVideoTransformer3DModel(
        in_channels=channels, out_channels=channels, num_attention_heads=2, attention_head_dim=12, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=CAPTION,
        mlp_ratio=2.0, patch_size=patch, sample_size=30 if patch[1] == 2 else 22).eval()
    perturb(model, 0.2, seed=seed + 1)
    return model


def wan_vae(seed=0):
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                     temperal_downsample=[False, True, True],
                                     latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.8, 1.2, 2.0]).eval()
    perturb(vae, 0.2, seed=seed + 2)
    return vae


def ltx2_vae(seed=0):
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKLLTX2Video(
        latent_channels=8, block_out_channels=(16, 32, 64, 128), layers_per_block=(1, 1, 1, 1, 1),
        decoder_block_out_channels=(16, 32, 64), decoder_layers_per_block=(1, 1, 1, 1), decoder_causal=False,
        timestep_conditioning=False, spatial_compression_ratio=32, temporal_compression_ratio=8).eval()
    perturb(vae, 0.2, seed=seed + 3)
    with torch.no_grad():
        vae.latents_mean.copy_(torch.linspace(-0.5, 0.5, 8))
        vae.latents_std.copy_(torch.linspace(0.5, 1.5, 8))
    return vae


def scheduler(kind="dpm"):
    if kind == "dpm":
        return diffusers.DPMSolverMultistepScheduler(flow_shift=8.0, use_flow_sigmas=True,
                                                     prediction_type="flow_prediction")
    return diffusers.FlowMatchEulerDiscreteScheduler(shift=8.0)


def build(folder, vae_kind="wan", scheduler_kind="dpm", image_to_video=False):
    """Save a tiny pipeline to ``folder``; returns the torch pipeline."""
    if vae_kind == "wan":
        vae, dit = wan_vae(), transformer(4, (1, 2, 2))
    else:
        vae, dit = ltx2_vae(), transformer(8, (1, 1, 1))
    cls = diffusers.SanaImageToVideoPipeline if image_to_video else diffusers.SanaVideoPipeline
    pipe = cls(tokenizer=tokenizer(), text_encoder=text_encoder(), vae=vae, transformer=dit,
               scheduler=scheduler(scheduler_kind))
    pipe.save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["transformer"][1] == "SanaVideoTransformer3DModel"
    return pipe


def build_dcae_v(folder, vae_config, seed=0):
    """Save a tiny SANA-Video pipeline whose VAE is a random DC-AE-V to ``folder``; returns the JAX ``DCAEVideo``.

    diffusers has no DC-AE-V class: the other components are saved by diffusers' ``save_pretrained`` (without a
    VAE), ``vae/`` is what ``converters.export_safetensors`` writes (``config.json`` with ``_class_name``
    ``DCAEVideo`` + ``diffusion_pytorch_model.safetensors`` in DC-Gen's key names) and ``model_index.json`` lists
    ``"vae": ["sana_jax", "DCAEVideo"]``."""
    from flax import nnx

    import converters
    from sana_jax.vae.dcae_v import CLASS_NAME, DCAEVideo

    pipe = diffusers.SanaVideoPipeline(tokenizer=tokenizer(), text_encoder=text_encoder(), vae=None,
                                       transformer=transformer(vae_config.latent_channels, (1, 1, 1)),
                                       scheduler=scheduler())
    pipe.save_pretrained(folder)
    vae = DCAEVideo(vae_config, rngs=nnx.Rngs(seed))
    converters.export_safetensors(vae, folder / "vae")
    index = json.loads((folder / "model_index.json").read_text())
    index["vae"] = ["sana_jax", CLASS_NAME]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return vae


#: channels-last numpy → channels-first torch (the name the pipeline tests use)
to_channels_first = to_torch
