"""End to end: our WanPipeline on a tiny Wan2.1 folder saved by diffusers' ``WanPipeline`` gives diffusers' latents
and frames (UniPC and flow-Euler schedulers), and ``sana-jax generate --model <Wan folder>`` writes the video."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from sana_jax.errors import ConfigError, InputError
from sana_jax.io.video import read_video
from sana_jax.pipelines import WanPipeline
from tests.bad_inputs import assert_refused
from tests.parity import perturb, to_torch, torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

PROMPT = "a cat surfing on the big blue wave"
NEGATIVE = "the blue cat"
H, W, FRAMES, STEPS = 32, 32, 5, 3
PIECES = ["▁a", "▁cat", "▁surf", "ing", "▁on", "▁the", "▁wave", "▁big", "▁blue", "▁", "a", "c", "t", "s", "u",
          "r", "f", "i", "n", "g", "o", "e", "h", "w", "v", "b", "l"]


def build(folder, scheduler):
    """A tiny random diffusers ``WanPipeline`` (UMT5, Wan DiT, Wan VAE with non-trivial latents_mean/std) saved to
    ``folder``; returns it."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -1.0 - i / 10) for i, p in enumerate(PIECES)]
    tokenizer = transformers.T5TokenizerFast(vocab=vocab, extra_ids=0)
    torch.manual_seed(0)
    text_encoder = perturb(transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu")), 0.3, seed=1)
    transformer = perturb(diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=40, num_layers=2), 0.3, seed=2)
    perturb(transformer, 0.3, seed=4, select=lambda name, _: "attn2" in name)  # so that the prompts matter more
    vae = perturb(diffusers.AutoencoderKLWan(
        base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.8, 1.2, 2.0]), 0.2, seed=3)
    pipe = diffusers.WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                                 scheduler=scheduler)
    pipe.save_pretrained(folder)
    return pipe


SCHEDULERS = {
    "unipc": lambda: diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                       flow_shift=3.0),
    "euler": lambda: diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0),
}


@pytest.fixture(scope="module")
def unipc(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan") / "pipe"
    ref = build(folder, SCHEDULERS["unipc"]())
    return ref, WanPipeline.from_pretrained(folder), folder


def reference_run(ref, noise, prompt, negative, guidance, output_type):
    with torch.no_grad():
        return ref(prompt, negative_prompt=negative, height=H, width=W, num_frames=FRAMES,
                   num_inference_steps=STEPS, guidance_scale=guidance, latents=to_torch(noise),
                   output_type=output_type).frames


def test_unipc_latents_and_frames_match_diffusers(unipc, rel_err):
    ref, ours, _ = unipc
    noise = np.random.default_rng(0).standard_normal(ours.latent_shape(1, FRAMES, H, W)).astype(np.float32)
    out = ours(PROMPT, negative_prompt=NEGATIVE, height=H, width=W, num_frames=FRAMES, num_inference_steps=STEPS,
               guidance_scale=5.0, latents=noise, progress=False)
    want = reference_run(ref, noise, PROMPT, NEGATIVE, 5.0, "latent").numpy().transpose(0, 2, 3, 4, 1)
    assert rel_err(out.latents, want) <= 1e-4
    frames = reference_run(ref, noise, PROMPT, NEGATIVE, 5.0, "np")  # float in [0, 1]
    want = np.clip(np.round(frames * 255.0), 0, 255).astype(np.int32)
    assert out.frames.shape == (1, FRAMES, H, W, 3) and out.fps == 16
    assert np.abs(out.frames.astype(np.int32) - want).max() <= 1
    assert out.frames.std() > 1  # not a constant image
    # negative_prompt None is diffusers' "" (and differs from NEGATIVE)
    out = ours(PROMPT, height=H, width=W, num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=5.0,
               latents=noise, decode=False, progress=False)
    want = reference_run(ref, noise, PROMPT, None, 5.0, "latent").numpy().transpose(0, 2, 3, 4, 1)
    assert rel_err(out.latents, want) <= 1e-4


def test_euler_scheduler_without_guidance_matches_diffusers(unipc, tmp_path, rel_err):
    """FlowMatchEulerDiscreteScheduler, a batch of two prompts, guidance 1 (diffusers: no unconditional pass)."""
    ref, _, folder = unipc
    euler = tmp_path / "pipe"
    shutil.copytree(folder, euler)
    SCHEDULERS["euler"]().save_pretrained(euler / "scheduler")
    ours = WanPipeline.from_pretrained(euler)
    ref.scheduler = SCHEDULERS["euler"]()
    noise = np.random.default_rng(1).standard_normal(ours.latent_shape(2, FRAMES, H, W)).astype(np.float32)
    prompts = [PROMPT, "the big wave"]
    out = ours(prompts, height=H, width=W, num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=1.0,
               latents=noise, decode=False, progress=False)
    want = reference_run(ref, noise, prompts, None, 1.0, "latent").numpy().transpose(0, 2, 3, 4, 1)
    assert out.frames is None and rel_err(out.latents, want) <= 1e-4


def test_check_refuses_before_loading(unipc, tmp_path):
    _, _, folder = unipc
    req = WanPipeline.check(folder)
    assert (req.height, req.width, req.num_frames, req.num_inference_steps, req.guidance_scale,
            req.latent_frames) == (480, 832, 81, 50, 5.0, 21)
    with pytest.raises(InputError, match="1 \\+ 4·k; nearest valid 5 or 9"):
        WanPipeline.check(folder, num_frames=6)
    with pytest.raises(InputError, match="--width 40 must be a multiple of 16"):
        WanPipeline.check(folder, width=40)

    broken = tmp_path / "pipe"
    shutil.copytree(folder, broken)
    config = broken / "scheduler" / "scheduler_config.json"
    unipc_config = json.loads(config.read_text())
    for change, message in [({"_class_name": "DPMSolverMultistepScheduler"}, "not supported for Wan2.1"),
                            ({"solver_order": 3}, "solver_order 3"),
                            ({"use_flow_sigmas": False}, "use_flow_sigmas False")]:
        config.write_text(json.dumps({**unipc_config, **change}))
        with pytest.raises(ConfigError, match=message):
            WanPipeline.check(broken)
    config.write_text(json.dumps(unipc_config))
    index = broken / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "boundary_ratio": 0.875}))
    with pytest.raises(ConfigError, match="Wan2.2"):
        WanPipeline.check(broken)


def test_cli_generate_writes_mp4(unipc, tmp_path, capsys):
    from sana_jax import cli

    _, _, folder = unipc
    out = tmp_path / "wan.mp4"
    latents = tmp_path / "wan.npy"
    assert cli.main(["generate", PROMPT, "--model", str(folder), "--height", str(H), "--width", str(W), "--frames",
                     str(FRAMES), "--steps", str(STEPS), "--out", str(out), "--save-latents", str(latents),
                     "-q"]) == 0
    assert read_video(out).shape == (FRAMES, H, W, 3)
    assert np.load(latents).shape == (1, 2, 4, 4, 4)
    printed = capsys.readouterr().out
    assert "wrote" in printed and "16 fps" in printed and "denoising" in printed


@pytest.mark.parametrize("option", [["--motion-score", "30"], ["--prompt-style", "sana"], ["--image", "x.png"],
                                    ["--refine", "ltx2"]])
def test_cli_refuses_sana_only_options(unipc, tmp_path, capsys, option):
    _, _, folder = unipc
    out = tmp_path / "x.mp4"
    assert_refused(["generate", PROMPT, "--model", folder, *option, "--out", out], capsys, option[0], "Wan2.1",
                   status=2)
    assert not out.exists()
