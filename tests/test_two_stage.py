"""Stage 2 (the LTX-2 refiner) and the two-stage 2K pipeline, at tiny random configs:

* the refine loop against diffusers' ``LTX2Pipeline`` called as SANA's script calls it (packed normalised latents,
  the zero audio latent, ``sigmas``, ``noise_scale=σ0``, no guidance, ``output_type="latent"``), with and without
  ``LTX2LatentUpsamplePipeline`` before it — same latents, same noise;
* a tiny SANA-Video (LTX-2 VAE, 8 latent channels) → refiner run end to end, writing an mp4 and its side-by-side;
* ``sana-jax generate --refine`` and ``sana-jax refine`` on a saved latent and on a video.

Compilation dominates on CPU (an LTX-2 VAE decode takes ~10–40 s to compile on 2 shared cores), so the tests reuse
shapes: the end-to-end runs decode one latent shape, through one compiled decode shared by stage 1 and stage 2.

diffusers 0.42's ``LTX2Pipeline`` adds audio CFG (7), STG (1) and modality guidance (3) with rescaling by default,
even at ``guidance_scale=1``; SANA's recipe (ltx2.md §3.3: no guidance) needs them off, as ``NO_GUIDANCE`` does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import jax  # noqa: E402

from sana_jax import cli  # noqa: E402
from sana_jax.errors import ConfigError, InputError  # noqa: E402
from sana_jax.io.video import read_video, write_video  # noqa: E402
from sana_jax.models.ltx2_transformer import audio_num_frames  # noqa: E402
from sana_jax.pipelines import RefinePipeline, SanaVideoPipeline, TwoStagePipeline  # noqa: E402
from sana_jax.io.latents import load_latents, save_latents  # noqa: E402
from sana_jax.pipelines.refine_loop import refine_latents  # noqa: E402
from sana_jax.pipelines.two_stage import resize_frames, side_by_side  # noqa: E402
from tests import pipeline_refs as refs  # noqa: E402

TOL = 1e-3
SIGMA0 = 0.909375
STAGE2_SIGMAS = [0.909375, 0.725, 0.421875]  # diffusers' STAGE_2_DISTILLED_SIGMA_VALUES (the scheduler appends 0)
NO_GUIDANCE = dict(guidance_scale=1.0, audio_guidance_scale=1.0, stg_scale=0.0, audio_stg_scale=0.0,
                   modality_scale=1.0, audio_modality_scale=1.0, guidance_rescale=0.0, audio_guidance_rescale=0.0)
PROMPTS = ["a cat surfing", "big blue square moving up on the wave"]
FPS = 16
HIDDEN, GEMMA_LAYERS = 32, 2
LATENT = (2, 2, 3)  # latent frames, height, width → 9 frames of 64×96


def _perturb(module, seed, scale=0.3):
    """Norm weights start at one and biases near zero: perturb them so every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in module.named_parameters():
            if p.ndim <= 1 or p.shape[0] <= 8:
                p.add_(scale * torch.randn(p.shape, generator=g))
    return module.eval()


def _vae():
    """pipeline_refs' tiny LTX-2 VAE (the one stage 1 uses), with the compression ratios diffusers cannot infer for
    this block layout (it would say 64/16; the network compresses 32/8)."""
    base = refs.ltx2_vae()
    kw = {k: v for k, v in base.config.items() if not k.startswith("_")}
    vae = diffusers.AutoencoderKLLTX2Video(**{**kw, "spatial_compression_ratio": 32, "temporal_compression_ratio": 8})
    vae.load_state_dict(base.state_dict())
    return vae.eval()


def build_ltx2(folder):
    """A tiny diffusers ``LTX2Pipeline`` (8 latent channels, like the tiny SANA-Video's LTX-2 VAE) saved with
    ``save_pretrained``, plus a tiny ``latent_upsampler/``. Returns (pipeline, upsampler)."""
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    torch.manual_seed(0)
    gemma = transformers.Gemma3ForConditionalGeneration(transformers.Gemma3Config(
        text_config=dict(vocab_size=32, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=GEMMA_LAYERS,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
                         query_pre_attn_scalar=16, pad_token_id=0, bos_token_id=2, eos_token_id=1),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14),
        mm_tokens_per_image=1))
    connectors = LTX2TextConnectors(
        caption_channels=HIDDEN, text_proj_in_factor=GEMMA_LAYERS + 1, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=16, video_connector_num_layers=1,
        video_connector_num_learnable_registers=4, audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=16, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=4, rope_type="split")
    transformer = diffusers.LTX2VideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
        audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2, audio_attention_head_dim=8,
        audio_cross_attention_dim=16, num_layers=2, caption_channels=HIDDEN, rope_type="split")
    # audio latent: 2 channels × (16 mel bins / 4) = 8 = the transformer's audio_in_channels
    audio_vae = diffusers.AutoencoderKLLTX2Audio(base_channels=8, ch_mult=(1, 2), num_res_blocks=1, latent_channels=2,
                                                 mel_bins=16, resolution=16)
    with torch.no_grad():  # a non-zero mean: the zero audio latent must come from normalising it
        audio_vae.latents_mean.copy_(torch.linspace(-1.0, 1.0, 8))
        audio_vae.latents_std.copy_(torch.linspace(0.5, 2.0, 8))
    vocoder = LTX2Vocoder(in_channels=8, hidden_channels=8, upsample_kernel_sizes=[4], upsample_factors=[2],
                          resnet_kernel_sizes=[3], resnet_dilations=[[1]])
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False, shift_terminal=None)
    pipe = diffusers.LTX2Pipeline(
        scheduler=scheduler, vae=_vae(), audio_vae=audio_vae, text_encoder=_perturb(gemma, 1, 0.2),
        tokenizer=refs.tokenizer(), connectors=_perturb(connectors, 2), transformer=_perturb(transformer, 3),
        vocoder=vocoder)
    pipe.save_pretrained(folder)
    upsampler = _perturb(LTX2LatentUpsamplerModel(in_channels=8, mid_channels=32, num_blocks_per_stage=1), 4, 0.1)
    upsampler.save_pretrained(folder / "latent_upsampler")
    assert json.loads((folder / "model_index.json").read_text())["transformer"][1] == "LTX2VideoTransformer3DModel"
    return pipe, upsampler


@pytest.fixture(scope="module")
def ltx2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ltx2") / "LTX-2"
    pipe, upsampler = build_ltx2(folder)
    return folder, pipe, upsampler, RefinePipeline.from_pretrained(folder)


@pytest.fixture(scope="module")
def sana(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sana720") / "sana"
    refs.build(folder, "ltx2")
    return folder


def _to_torch(x):  # channels-last (B, T, H, W, C) → (B, C, T, H, W)
    return refs.to_channels_first(np.asarray(x, np.float32))


def _normalised(pipe, raw):
    mean = pipe.vae.latents_mean.view(1, -1, 1, 1, 1)
    std = pipe.vae.latents_std.view(1, -1, 1, 1, 1)
    return ((raw - mean) / std).numpy().transpose(0, 2, 3, 4, 1)


def reference_stage2(pipe, upsampler, latents, prompts, *, upsample, seed=0):
    """SANA's stage 2 with diffusers (sana_video.md §6): [LTX2LatentUpsamplePipeline(latents_normalized=True),
    re-normalise] → pack → LTX2Pipeline(audio_latents = audio VAE mean, sigmas, noise_scale=σ0, no guidance).
    Returns the refined normalised latents (channels-last) and the noise the pipeline drew."""
    x = _to_torch(latents)
    if upsample:
        up = diffusers.LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler)
        with torch.no_grad():
            raw = up(latents=x, latents_normalized=True, output_type="latent", return_dict=False)[0]
        x = torch.from_numpy(_normalised(pipe, raw).transpose(0, 4, 1, 2, 3).copy())
    b, c, f, h, w = x.shape
    packed = diffusers.LTX2Pipeline._pack_latents(x)
    num_frames = (f - 1) * 8 + 1
    length = round(num_frames / FPS * 25)
    mean = pipe.audio_vae.latents_mean.view(2, 4)  # packed audio features are (channel, mel bin), mel fastest
    audio = mean[None, :, None, :].expand(b, 2, length, 4).contiguous()
    g = torch.Generator().manual_seed(seed)  # the pipeline draws the video noise, then the audio noise
    noise = torch.randn(packed.shape, generator=g)
    audio_noise = torch.randn((b, length, 8), generator=g)
    with torch.no_grad():
        raw = pipe(prompt=prompts, latents=packed, audio_latents=audio, height=h * 32, width=w * 32,
                   num_frames=num_frames, frame_rate=FPS, num_inference_steps=3, sigmas=STAGE2_SIGMAS,
                   noise_scale=SIGMA0, generator=torch.Generator().manual_seed(seed), output_type="latent",
                   return_dict=False, **NO_GUIDANCE)[0]
    return (_normalised(pipe, raw), noise.numpy().reshape(b, f, h, w, c), audio_noise.numpy())


@pytest.mark.parametrize("upsample", [False, True])
def test_refine_matches_diffusers_ltx2_pipeline(ltx2, upsample, rel_err):
    _, pipe, upsampler, refiner = ltx2
    latents = np.random.default_rng(0).standard_normal((2, *LATENT, 8)).astype(np.float32)
    want, noise, audio_noise = reference_stage2(pipe, upsampler, latents, PROMPTS, upsample=upsample)
    assert audio_noise.shape[1] == audio_num_frames(9, FPS) == 14

    text = refiner.encode_prompt(PROMPTS)
    with torch.no_grad():
        embeds, mask, _, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False)
        video_text, audio_text, text_mask = pipe.connectors(embeds, mask, padding_side="left")
    assert text.video.shape == (2, 1024, HIDDEN)  # left-padded to 1024 tokens, registers fill the padding
    assert rel_err(text.video, video_text.numpy()) <= 1e-4
    assert rel_err(text.audio, audio_text.numpy()) <= 1e-4
    np.testing.assert_array_equal(np.asarray(text.mask), text_mask.numpy())

    got = refiner.refine(latents, text, noise=noise, audio_noise=audio_noise, upsample=upsample, fps=FPS)
    assert got.shape == want.shape == (2, LATENT[0], LATENT[1] * (1 + upsample), LATENT[2] * (1 + upsample), 8)
    err = rel_err(got, want)
    print(f"stage 2 {'with' if upsample else 'without'} upsampler: max relative error {err:.2e}")
    assert err <= TOL


def test_refine_latents_inputs(ltx2):
    _, _, _, refiner = ltx2
    latents = np.random.default_rng(1).standard_normal((2, *LATENT, 8)).astype(np.float32)
    text = refiner.encode_prompt(PROMPTS)  # the shapes of the parity test: its compiled loop is reused
    a = refine_latents(refiner.transformer, latents, text, key=jax.random.key(3))
    b = refiner.refine(latents, text, key=jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # module or split pair, same result
    assert not np.allclose(np.asarray(a), np.asarray(refiner.refine(latents, text, key=jax.random.key(4))))
    with pytest.raises(InputError, match="channels-last"):
        refine_latents(refiner.transformer, latents[..., :4], text, key=jax.random.key(0))
    with pytest.raises(InputError, match="key"):
        refine_latents(refiner.transformer, latents, text)
    with pytest.raises(InputError, match="audio_noise must have shape"):
        refine_latents(refiner.transformer, latents, text, noise=np.zeros(latents.shape, np.float32),
                       audio_noise=np.zeros((2, 3, 8), np.float32))


def test_lora_is_fused_while_loading(ltx2, tmp_path):
    """SANA's recipe loads the distilled LoRA at strength 1; ltx-core fuses W += s·B@A (no alpha/rank scaling)."""
    from converters.safetensors_io import save_safetensors

    folder, _, _, refiner = ltx2
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 32)).astype(np.float32), rng.standard_normal((32, 2)).astype(np.float32)
    lora = tmp_path / "distilled-lora.safetensors"
    save_safetensors({"diffusion_model.transformer_blocks.1.attn1.to_q.lora_A.weight": a,
                      "diffusion_model.transformer_blocks.1.attn1.to_q.lora_B.weight": b}, lora)
    fused = RefinePipeline.from_pretrained(folder, lora=lora, lora_strength=0.5, upsampler=False)
    base = np.asarray(refiner.transformer.blocks.attn1.to_q.kernel)
    got = np.asarray(fused.transformer.blocks.attn1.to_q.kernel)
    np.testing.assert_array_equal(got[0], base[0])
    np.testing.assert_allclose(got[1], base[1] + 0.5 * (b @ a).T, rtol=1e-6, atol=1e-6)
    assert fused.upsampler is None and refiner.upsampler is not None
    with pytest.raises(InputError, match="no latent upsampler"):
        fused(PROMPTS[0], np.zeros((1, *LATENT, 8), np.float32), upsample=True, progress=False)


def test_checks_need_no_weights(ltx2, sana, tmp_path):
    """RefinePipeline.check / TwoStagePipeline.check read configs and headers only: what the inputs must fit, and
    every path and option, before anything loads."""
    import shutil

    folder = ltx2[0]
    plan = RefinePipeline.check(folder)
    assert (plan.channels, plan.factors, plan.upsampler) == (8, (8, 32), folder / "latent_upsampler")
    assert plan.loras == () and RefinePipeline.check(folder, upsampler=False).upsampler is None
    with pytest.raises(InputError, match="2 LoRA files but 3 strengths"):
        RefinePipeline.check(folder, lora=[tmp_path, tmp_path], lora_strength=[1, 1, 1])
    bare = tmp_path / "LTX-2"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("latent_upsampler"))
    with pytest.raises(InputError, match="--upsample: .* has no latent_upsampler/ folder"):
        RefinePipeline.check(bare, upsampler=True)
    with pytest.raises(InputError, match="channels-last"):
        plan.check_latents((1, *LATENT, 4))
    with pytest.raises(InputError, match=r"1 \+ 8·k"):
        plan.check_frames((10, 64, 96, 3))
    two = TwoStagePipeline.check(sana, folder, height=64, width=96, num_frames=9, upsampler=True)
    assert (two.request.latent_frames, two.request.num_inference_steps) == (2, 50)
    assert two.folder.root == sana and two.refiner.upsampler == folder / "latent_upsampler"
    other = tmp_path / "sana4"
    shutil.copytree(sana, other)
    config = json.loads((other / "transformer" / "config.json").read_text())
    (other / "transformer" / "config.json").write_text(json.dumps({**config, "out_channels": 4}))
    with pytest.raises(ConfigError, match="takes 8-channel latents"):
        TwoStagePipeline.check(other, folder, height=64, width=96, num_frames=9)


def test_side_by_side_resizes_stage1_to_stage2():
    left = np.full((1, 3, 4, 6, 3), 200, np.uint8)
    right = np.zeros((1, 3, 8, 12, 3), np.uint8)
    both = side_by_side(left, right)
    assert both.shape == (1, 3, 8, 24, 3) and both.dtype == np.uint8
    assert (both[..., :12, :] == 200).all() and (both[..., 12:, :] == 0).all()
    ramp = np.tile(np.linspace(0, 255, 6).astype(np.uint8)[None, None, None, :, None], (1, 1, 4, 1, 3))
    up = resize_frames(ramp, 8, 12)
    assert up.shape == (1, 1, 8, 12, 3) and np.all(np.diff(up[0, 0, 0, :, 0].astype(int)) >= 0)
    with pytest.raises(InputError, match="same batch and frame count"):
        side_by_side(left[:, :2], right)


def test_two_stage_end_to_end_writes_mp4_and_side_by_side(ltx2, sana, tmp_path):
    _, _, _, refiner = ltx2
    pipe = TwoStagePipeline(SanaVideoPipeline.from_pretrained(sana), refiner)
    out = pipe("a cat surfing", height=64, width=96, num_frames=9, num_inference_steps=2, guidance_scale=3.0,
               seed=0, side_by_side=True, progress=False)
    assert out.stage1_latents.shape == out.latents.shape == (1, *LATENT, 8)
    assert out.frames.shape == out.stage1_frames.shape == (1, 9, 64, 96, 3) and out.frames.dtype == np.uint8
    assert {"stage1_denoising", "refining", "refiner_decoding", "stage1_decoding"} <= set(out.timings)
    # stage 2's input is stage 1's output, its noise fold_in(key(seed), 1)
    again = refiner.refine(out.stage1_latents, refiner.encode_prompt("a cat surfing"),
                           key=jax.random.fold_in(jax.random.key(0), 1))
    np.testing.assert_allclose(np.asarray(again), out.latents, atol=1e-5)
    video = read_video(out.save(tmp_path / "two_stage.mp4"))
    assert video.shape == (9, 64, 96, 3)
    both = read_video(out.save_side_by_side(tmp_path / "compare.mp4"))
    assert both.shape == (9, 64, 192, 3)
    assert np.abs(both[:, :, 96:].astype(int) - video.astype(int)).mean() < 4  # right half: stage 2 (codec aside)


def test_cli_generate_refine_then_refine_saved_latent_and_video(ltx2, sana, tmp_path, capsys, monkeypatch):
    folder = ltx2[0]
    out, lat = tmp_path / "gen.mp4", tmp_path / "stage1.safetensors"
    rc = cli.main(["generate", "a cat surfing", "--model", str(sana), "--height", "64", "--width", "96",
                   "--frames", "9", "--steps", "2", "--guidance", "3", "--refine", str(folder), "--side-by-side",
                   "--save-latents", str(lat), "--out", str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert read_video(out).shape == (9, 64, 96, 3)
    assert read_video(tmp_path / "gen.side_by_side.mp4").shape == (9, 64, 192, 3)
    stage1 = load_latents(lat)
    assert stage1.shape == (1, *LATENT, 8)

    npy = tmp_path / "stage1.npy"
    save_latents(stage1, npy)
    rc = cli.main(["refine", str(npy), "--model", str(folder), "--prompt", "a cat surfing", "--out",
                   str(tmp_path / "refined.mp4"), "--save-latents", str(tmp_path / "refined.npy"), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert read_video(tmp_path / "refined.mp4").shape == (9, 64, 96, 3)
    refined = np.load(tmp_path / "refined.npy")
    assert refined.shape == (1, *LATENT, 8)

    # a video input is encoded with the LTX-2 VAE first (the encoder has its own parity tests; a stand-in here
    # spares this file one more CPU compilation of it)
    seen = []

    def encode_video(self, frames, tile=None):
        seen.append(frames.shape)
        return stage1

    monkeypatch.setattr(RefinePipeline, "encode_video", encode_video)
    rc = cli.main(["refine", str(out), "--model", str(folder), "--prompt", "a cat surfing", "--out",
                   str(tmp_path / "from_video.mp4"), "--side-by-side", "--save-latents",
                   str(tmp_path / "from_video.npy"), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert seen == [(9, 64, 96, 3)]
    assert read_video(tmp_path / "from_video.mp4").shape == (9, 64, 96, 3)
    assert read_video(tmp_path / "from_video.side_by_side.mp4").shape == (9, 64, 192, 3)
    np.testing.assert_array_equal(np.load(tmp_path / "from_video.npy"), refined)  # same latents, same seed


def test_cli_errors_before_loading(ltx2, sana, tmp_path, capsys):
    folder = ltx2[0]
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 2, 2, 3, 4), np.float32))
    assert cli.main(["refine", str(bad), "--model", str(folder), "--prompt", "p", "-q"]) == 2
    assert "4 channels" in capsys.readouterr().err
    assert cli.main(["refine", str(tmp_path / "missing.npy"), "--model", str(folder), "--prompt", "p"]) == 2
    assert "no such file" in capsys.readouterr().err
    video = tmp_path / "ten.mp4"
    write_video(np.zeros((10, 64, 96, 3), np.uint8), video)
    assert cli.main(["refine", str(video), "--model", str(folder), "--prompt", "p"]) == 2
    assert "1 + 8·k" in capsys.readouterr().err
    assert cli.main(["generate", "p", "--model", str(sana), "--height", "64", "--width", "96", "--frames", "9",
                     "--upsample"]) == 2
    assert "--refine" in capsys.readouterr().err
    assert cli.main(["generate", "p", "--model", str(sana), "--height", "64", "--width", "96", "--frames", "9",
                     "--refine", str(folder), "--lora", str(tmp_path / "none.safetensors")]) == 2
    assert "--lora" in capsys.readouterr().err
