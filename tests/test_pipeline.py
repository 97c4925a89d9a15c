"""End to end: our SanaVideoPipeline on a folder saved by diffusers gives diffusers' latents and frames."""

from __future__ import annotations

import numpy as np
import pytest

from tests.pipeline_refs import build, to_channels_first, torch

from sana_jax.errors import InputError  # noqa: E402
from sana_jax.io.video import read_video, to_uint8  # noqa: E402
from sana_jax.pipelines import SanaVideoPipeline  # noqa: E402

PROMPT = "A Big blue square moving up"
CASES = {  # vae kind: (height, width, frames)
    "wan": (32, 64, 5),
    "ltx2": (64, 96, 9),
}


@pytest.fixture(scope="module", params=list(CASES))
def pipelines(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param) / "pipe"
    ref = build(folder, request.param)
    ours = SanaVideoPipeline.from_pretrained(folder)
    return request.param, ref, ours, folder


def reference_run(ref, noise, h, w, frames, steps, guidance, output_type, image=None):
    # diffusers takes a torch image (1, 3, H, W) in [0, 1] and normalises it to [-1, 1]
    args = (PROMPT,) if image is None else (torch.from_numpy(image.transpose(2, 0, 1)[None].copy()), PROMPT)
    kw = {}
    with torch.no_grad():
        out = ref(*args, negative_prompt="", height=h, width=w, frames=frames, num_inference_steps=steps,
                  guidance_scale=guidance, latents=to_channels_first(noise), output_type=output_type,
                  use_resolution_binning=False, **kw).frames
    return out


def assert_frames_close(ours: np.ndarray, ref_float01: np.ndarray):
    """≤ 1 level on ≥ 99.9% of pixels, as the issue asks."""
    want = np.clip(np.round(ref_float01 * 255.0), 0, 255).astype(np.int32)
    diff = np.abs(ours.astype(np.int32) - want)
    assert ours.shape == want.shape, (ours.shape, want.shape)
    assert np.mean(diff <= 1) >= 0.999, (np.mean(diff <= 1), diff.max())


@pytest.mark.parametrize("guidance", [4.5, 1.0], ids=["cfg", "no-cfg"])
def test_same_latents_and_frames_as_diffusers(pipelines, guidance, rel_err):
    kind, ref, ours, _ = pipelines
    h, w, frames = CASES[kind]
    shape = ours.latent_shape(1, frames, h, w)
    noise = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = ours(PROMPT, height=h, width=w, num_frames=frames, num_inference_steps=4, guidance_scale=guidance,
               latents=noise, progress=False)
    want_latents = reference_run(ref, noise, h, w, frames, 4, guidance, "latent").numpy().transpose(0, 2, 3, 4, 1)
    assert rel_err(out.latents, want_latents) <= 1e-3
    want = reference_run(ref, noise, h, w, frames, 4, guidance, "np")
    assert_frames_close(out.frames, want)


def test_same_seed_same_video_and_invalid_sizes(pipelines):
    kind, _, ours, _ = pipelines
    h, w, frames = CASES[kind]
    a = ours(PROMPT, height=h, width=w, num_frames=frames, num_inference_steps=2, seed=3, progress=False)
    b = ours(PROMPT, height=h, width=w, num_frames=frames, num_inference_steps=2, seed=3, progress=False)
    np.testing.assert_array_equal(a.frames, b.frames)
    with pytest.raises(InputError, match="nearest valid"):
        ours(PROMPT, height=h + 1, width=w, num_frames=frames, num_inference_steps=2, progress=False)
    with pytest.raises(InputError, match="1 \\+"):
        ours(PROMPT, height=h, width=w, num_frames=frames + 1, num_inference_steps=2, progress=False)


def test_save_writes_a_playable_mp4(pipelines, tmp_path):
    kind, _, ours, _ = pipelines
    h, w, frames = CASES[kind]
    out = ours(PROMPT, height=h, width=w, num_frames=frames, num_inference_steps=2, progress=False)
    path = out.save(tmp_path / "x.mp4")
    video = read_video(path)
    assert video.shape == (frames, h, w, 3)


@pytest.fixture(scope="module")
def i2v(tmp_path_factory):
    folder = tmp_path_factory.mktemp("i2v") / "pipe"
    ref = build(folder, "wan", scheduler_kind="euler", image_to_video=True)
    return ref, SanaVideoPipeline.from_pretrained(folder), folder


def test_image_to_video_matches_diffusers(i2v, rel_err):
    ref, ours, _ = i2v
    h, w, frames = CASES["wan"]
    image01 = np.random.default_rng(7).uniform(0, 1, (h, w, 3)).astype(np.float32)
    noise = np.random.default_rng(1).standard_normal(ours.latent_shape(1, frames, h, w)).astype(np.float32)
    out = ours(PROMPT, height=h, width=w, num_frames=frames, num_inference_steps=3, guidance_scale=4.5,
               latents=noise, image=image01 * 2 - 1, progress=False)
    want_latents = reference_run(ref, noise, h, w, frames, 3, 4.5, "latent", image=image01)
    assert rel_err(out.latents, want_latents.numpy().transpose(0, 2, 3, 4, 1)) <= 1e-3
    want = reference_run(ref, noise, h, w, frames, 3, 4.5, "np", image=image01)
    assert_frames_close(out.frames, want)


def test_to_uint8_matches_diffusers_postprocess():
    v = np.linspace(-1.2, 1.2, 97, dtype=np.float32)
    want = (np.clip(v / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(to_uint8(v), want)


def test_cli_generate_writes_playable_mp4(pipelines, tmp_path, capsys):
    from sana_jax import cli

    kind, _, _, folder = pipelines
    h, w, frames = CASES[kind]
    out = tmp_path / "cli.mp4"
    assert cli.main(["generate", PROMPT, "--model", str(folder), "--height", str(h), "--width", str(w),
                     "--frames", str(frames), "--steps", "2", "--out", str(out), "-q"]) == 0
    assert read_video(out).shape == (frames, h, w, 3)
    printed = capsys.readouterr().out
    assert "wrote" in printed and "denoising" in printed and "decoding" in printed


def test_cli_image_to_video(i2v, tmp_path):
    from PIL import Image

    from sana_jax import cli

    _, _, folder = i2v
    h, w, frames = CASES["wan"]
    Image.fromarray(np.full((50, 70, 3), 200, np.uint8)).save(tmp_path / "first.png")
    out = tmp_path / "i2v.mp4"
    assert cli.main(["generate", PROMPT, "--model", str(folder), "--image", str(tmp_path / "first.png"),
                     "--height", str(h), "--width", str(w), "--frames", str(frames), "--steps", "2",
                     "--out", str(out), "-q"]) == 0
    assert read_video(out).shape == (frames, h, w, 3)


def test_cli_rejects_bad_sizes_before_loading(pipelines, tmp_path, capsys):
    """The weights are gone: had anything been loaded, the error would be about them, not about the size."""
    import shutil

    from sana_jax import cli

    kind, _, _, folder = pipelines
    h, w, frames = CASES[kind]
    broken = tmp_path / "pipe"
    shutil.copytree(folder, broken)
    for f in (broken / "transformer").glob("*.safetensors"):
        f.unlink()
    assert cli.main(["generate", PROMPT, "--model", str(broken), "--height", str(h + 8), "--width", str(w),
                     "--frames", str(frames), "--out", str(tmp_path / "x.mp4"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "--height" in err and "nearest valid" in err
    assert cli.main(["generate", PROMPT, "--model", str(broken), "--height", str(h), "--width", str(w),
                     "--frames", str(frames), "--out", str(tmp_path / "x.mp4"), "-q"]) == 2
    assert "no weights found" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()


def test_prompt_encoding_matches_diffusers_encode_prompt(pipelines, rel_err):
    """Same embeddings and mask as ``SanaVideoPipeline.encode_prompt`` (CHI + BOS/last-299 selection, lower-casing,
    motion-score suffix, and the negative prompt without CHI), on the tiny pipeline's Gemma-2 and tokenizer."""
    kind, ref, ours, _ = pipelines
    prompt = "A Big Blue square moving up motion score: 30."
    cond, uncond = ours.encode_prompt([prompt], ["a red circle"])
    with torch.no_grad():
        emb, mask, neg, neg_mask = ref.encode_prompt(
            prompt, do_classifier_free_guidance=True, negative_prompt="a red circle", device="cpu",
            complex_human_instruction=_diffusers_chi(ref))
    assert rel_err(cond["text"], emb.numpy()) <= 1e-5 and rel_err(uncond["text"], neg.numpy()) <= 1e-5
    np.testing.assert_array_equal(np.asarray(cond["mask"]), mask.numpy())
    np.testing.assert_array_equal(np.asarray(uncond["mask"]), neg_mask.numpy())
    assert cond["text"].shape == (1, 300, emb.shape[-1])


def _diffusers_chi(ref):
    import inspect

    return inspect.signature(type(ref).__call__).parameters["complex_human_instruction"].default
