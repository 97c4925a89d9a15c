"""SanaVideoPipeline with a DC-AE-V VAE: a tiny pipeline folder (``"vae": ["sana_jax", "DCAEVideo"]``, random
weights) run end to end, its latent normalisation and frame rule (t·k frames), the folder helpers without weights,
and the VAE pipeline protocol of all three VAEs. One compiled shape: 12 frames of 16×24 → latents (1, 3, 2, 3, 4)
(a whole 8-frame chunk plus a partial one)."""

from __future__ import annotations

import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.pipeline_refs import build_dcae_v

import converters  # noqa: E402
from sana_jax.errors import InputError  # noqa: E402
from sana_jax.io.video import to_uint8  # noqa: E402
from sana_jax.pipelines import SanaVideoPipeline  # noqa: E402
from sana_jax.pipelines.components import PipelineFolder, VAESpec, check_video_size  # noqa: E402
from sana_jax.vae import DCAEVConfig, DCAEVideo, LTX2VAE, LTX2VAEConfig, WanVAE, WanVAEConfig  # noqa: E402

PROMPT = "A Big blue square moving up"
# spatial 8 (5 stages), temporal 4, chunks of 8 frames / 2 latents; scaling factor 0.7241 (the released one)
VAE = DCAEVConfig(latent_channels=4, chunk_frames=8, width_list=(4, 8, 8, 8, 8), depth_list=(0, 1, 1, 1, 1))
H, W, FRAMES = 16, 24, 12


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dcae_v") / "pipe"
    build_dcae_v(folder, VAE)
    return SanaVideoPipeline.from_pretrained(folder), folder


@nnx.jit
def _decode_raw(vae, z):
    return vae.decode(z, normalized=False)


def test_generate_end_to_end_and_normalisation(pipe):
    ours, folder = pipe
    assert ours.vae_factors == (4, 8) and ours.vae.causal_first_frame is False
    shape = ours.latent_shape(1, FRAMES, H, W)
    assert shape == (1, 3, 2, 3, 4) == PipelineFolder.open(folder).latent_shape(1, FRAMES, H, W)
    out = ours(PROMPT, height=H, width=W, num_frames=FRAMES, num_inference_steps=2, guidance_scale=4.5, seed=0,
               progress=False)
    assert out.frames.shape == (1, FRAMES, H, W, 3) and out.frames.dtype == np.uint8
    assert out.latents.shape == shape
    # the frames are DC-AE-V's decode of the latents divided by the scaling factor (done here by hand)
    vae = converters.load(folder / "vae")
    assert isinstance(vae, DCAEVideo) and vae.config.scaling_factor == pytest.approx(0.7241)
    want = to_uint8(_decode_raw(vae, jnp.asarray(out.latents) / vae.config.scaling_factor))
    diff = np.abs(out.frames.astype(np.int32) - want.astype(np.int32))
    assert diff.max() <= 1 and np.mean(diff == 0) >= 0.999, (diff.max(), np.mean(diff == 0))
    unscaled = to_uint8(_decode_raw(vae, jnp.asarray(out.latents)))  # forgetting the normalisation shows
    assert np.mean(np.abs(unscaled.astype(np.int32) - want.astype(np.int32))) > 1.0


def test_image_to_video_fixes_latent_frame_zero(pipe):
    """Frame 0's latent is the image repeated 4× and encoded (DC-Gen's image rule), normalised, kept fixed."""
    ours, _ = pipe
    image = np.random.default_rng(0).uniform(-1, 1, (H, W, 3)).astype(np.float32)
    noise = np.random.default_rng(1).standard_normal(ours.latent_shape(1, FRAMES, H, W)).astype(np.float32)
    out = ours(PROMPT, height=H, width=W, num_frames=FRAMES, num_inference_steps=2, guidance_scale=4.5,
               latents=noise, image=image, progress=False)
    z0 = ours.vae.encode(jnp.repeat(jnp.asarray(image)[None, None], 4, axis=1))
    assert z0.shape == (1, 1, 2, 3, 4)
    np.testing.assert_allclose(out.latents[:, :1], np.asarray(z0), rtol=1e-5, atol=1e-5)
    assert out.frames.shape == (1, FRAMES, H, W, 3)


def test_frame_rule_errors(pipe):
    ours, _ = pipe
    with pytest.raises(InputError, match=r"--frames 13: the frame count must be a multiple of 4 .*nearest valid "
                                         r"12 or 16"):
        ours(PROMPT, height=H, width=W, num_frames=13, num_inference_steps=2, progress=False)  # 1 + 4·3
    with pytest.raises(InputError, match="nearest valid 80 or 84"):
        ours(PROMPT, height=H, width=W, num_frames=81, num_inference_steps=2, progress=False)
    with pytest.raises(InputError, match="--height 20 must be a multiple of 8; nearest valid 16 or 24"):
        ours(PROMPT, height=20, width=W, num_frames=FRAMES, num_inference_steps=2, progress=False)


def test_folder_helpers_and_cli_without_weights(pipe, tmp_path, capsys):
    """Compression, frame rule and latent shape come from the configs alone; the CLI checks the DC-AE-V rule
    before loading anything (had it loaded, the error would be about the missing weights)."""
    from sana_jax import cli

    _, folder = pipe
    broken = tmp_path / "pipe"
    shutil.copytree(folder, broken)
    for f in broken.glob("*/*.safetensors"):
        f.unlink()
    pf = PipelineFolder.open(broken)
    assert pf.class_name("vae") == "DCAEVideo"
    assert pf.vae_spec() == VAESpec(4, 8, False)
    assert pf.vae_factors() == (4, 8)
    assert pf.latent_shape(2, 80, 64, 96) == (2, 20, 8, 12, 4)
    check_video_size(H, W, 80, *pf.vae_factors(), pf.patch_size(), causal_first_frame=False)
    with pytest.raises(InputError, match="multiple of 4"):
        check_video_size(H, W, 81, *pf.vae_factors(), pf.patch_size(), causal_first_frame=False)
    check_video_size(H, W, 81, 4, 8, causal_first_frame=True)  # plain ints: 1 + t·k, or say which rule
    with pytest.raises(InputError, match=r"must be 1 \+ 4·k; nearest valid 9 or 13"):
        check_video_size(H, W, 12, 4, 8)
    with pytest.raises(InputError, match="nearest valid 4$"):
        check_video_size(H, W, 1, 4, 8, causal_first_frame=False)

    args = ["generate", PROMPT, "--model", str(broken), "--height", str(H), "--width", str(W),
            "--out", str(tmp_path / "x.mp4"), "-q"]
    assert cli.main(args + ["--frames", "13"]) == 2
    assert "multiple of 4" in capsys.readouterr().err
    assert cli.main(args + ["--frames", str(FRAMES)]) == 2
    assert "no weights found" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()
    helped = _generate_help(cli, capsys)
    assert "4k (DC-AE-V" in helped


def _generate_help(cli, capsys) -> str:
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_vae_protocol_of_every_vae():
    """compression / causal_first_frame / latent_frames agree with each VAE's frame rule (abstract models)."""
    wan = nnx.eval_shape(lambda: WanVAE(WanVAEConfig(base_dim=8, z_dim=4, dim_mult=(1, 2, 2, 2),
                                                     latents_mean=(0.0,) * 4, latents_std=(1.0,) * 4),
                                        rngs=nnx.Rngs(0)))
    ltx = nnx.eval_shape(lambda: LTX2VAE(LTX2VAEConfig(latent_channels=8, block_out_channels=(16, 32, 64, 128),
                                                       layers_per_block=(1, 1, 1, 1, 1),
                                                       decoder_block_out_channels=(16, 32, 64),
                                                       decoder_layers_per_block=(1, 1, 1, 1)), rngs=nnx.Rngs(0)))
    dc = nnx.eval_shape(lambda: DCAEVideo(VAE, rngs=nnx.Rngs(0)))
    assert (wan.compression, wan.causal_first_frame, wan.latent_frames(81)) == ((4, 8), True, 21)
    assert (ltx.compression, ltx.causal_first_frame, ltx.latent_frames(121)) == ((8, 32), True, 16)
    assert (dc.compression, dc.causal_first_frame, dc.latent_frames(80)) == ((4, 8), False, 20)
    for vae in (wan, ltx, dc):
        assert callable(vae.decode_for_pipeline) and callable(vae.encode_for_pipeline)
