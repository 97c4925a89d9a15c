"""Wan2.1 VAE (diffusers ``AutoencoderKLWan``): parity, chunked/tiled forms, both checkpoint layouts, full-size keys,
input validation and length-independent memory of the chunked decode. CPU float32, tiny random configs."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from converters import wan_vae
from converters.torch_pickle import open_torch_state_dict
from sana_jax.errors import ConfigError, InputError
from sana_jax.vae.wan import WanVAE, WanVAEConfig
from tests.parity import (assert_same_tensors, check, reference as make_reference, run_jitted, save_and_load,
                          state_dict_numpy, to_numpy, to_torch, torch_call)
from tests.released_keys import Shapes, read

# Wan2.1's structure (3 spatial downsamples, the last two also temporal) at a tiny width.
TINY = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True],
            latents_mean=[0.3, -0.7, 0.1, 1.2], latents_std=[1.7, 0.6, 2.2, 1.1])


# ------------------------------------------------------------------------------------------------- references
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random diffusers ``AutoencoderKLWan`` saved with ``save_pretrained``, and our model loaded from it (the
    tests that need no reference run without torch)."""
    diffusers = pytest.importorskip("diffusers")
    # norms (gamma) start at 1 and biases at 0: perturbed so that mapping errors show
    ref = make_reference(diffusers.AutoencoderKLWan, select=lambda name, p: name.endswith(("gamma", "bias")),
                         **TINY)
    folder = tmp_path_factory.mktemp("wan_vae") / "vae"
    return ref, save_and_load(ref, folder), folder


def _video(frames, h=16, w=24, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (2, frames, h, w, 3)).astype(np.float32)


def _latents(frames, h=2, w=3, seed=1):
    return np.random.default_rng(seed).standard_normal((2, frames, h, w, 4)).astype(np.float32)


def ref_encode(ref, video):
    """diffusers posterior mean, normalised with the config's latents_mean/std; channels-last."""
    mu = to_numpy(torch_call(lambda x: ref.encode(x).latent_dist.mean, to_torch(video)))
    return (mu - np.array(TINY["latents_mean"], np.float32)) / np.array(TINY["latents_std"], np.float32)


def ref_decode(ref, latents):
    z = latents * np.array(TINY["latents_std"], np.float32) + np.array(TINY["latents_mean"], np.float32)
    return to_numpy(torch_call(lambda x: ref.decode(x).sample, to_torch(z)))


# ------------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("frames", [1, 5, 9])
def test_encode_parity(reference, frames):
    ref, model, _ = reference
    video = _video(frames)
    ours = run_jitted(model, video, "encode")
    assert ours.shape == (2, 1 + (frames - 1) // 4, 2, 3, 4)
    check(ours, ref_encode(ref, video), what=f"encode {frames} frames")  # measured 9.2e-8 … 1.9e-7


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_decode_parity(reference, frames):
    ref, model, _ = reference
    latents = _latents(frames)
    ours = run_jitted(model, latents, "decode")
    assert ours.shape == (2, 1 + 4 * (frames - 1), 16, 24, 3)
    check(ours, ref_decode(ref, latents), what=f"decode {frames} latent frames")  # measured 3.0e-7 … 1.0e-6


def test_chunked_equals_single_pass(reference, rel_err):
    """The ``lax.scan`` over chunks with the cache pytree is the single pass (and diffusers) up to rounding."""
    ref, model, _ = reference
    video, latents = _video(9), _latents(3)
    enc_single, enc_chunked = run_jitted(model, video, "encode"), run_jitted(model, video, "encode", chunked=True)
    dec_single, dec_chunked = run_jitted(model, latents, "decode"), run_jitted(model, latents, "decode", chunked=True)
    errs = {"encode": rel_err(enc_chunked, enc_single), "decode": rel_err(dec_chunked, dec_single)}
    print(f"chunked vs single pass: {errs}")  # measured 1.8e-7 (encode), 8.6e-7 (decode)
    assert max(errs.values()) <= 1e-5
    check(enc_chunked, ref_encode(ref, video), what="chunked encode")
    check(dec_chunked, ref_decode(ref, latents), what="chunked decode")


# ------------------------------------------------------------------------------------------------- tiling
# Tiles see only their own pixels: every conv near a tile border reads zero padding instead of the neighbour's
# pixels, and the mid-block attention mixes all positions of a frame, so each tile's output differs from the
# untiled one everywhere (most near its borders). Blending over the overlap hides the seams but cannot restore
# the lost context, so tiled ≠ untiled beyond rounding; the bound below is a loose sanity check for random weights
# (measured 0.14 decode, 0.07 encode). Exactness is checked where it must hold: chunked + tiled == single + tiled.
TILED_TOL = 0.5


def test_tiled_decode(reference, rel_err):
    _, model, _ = reference
    latents = _latents(2, h=6, w=6, seed=3)
    full = run_jitted(model, latents, "decode")
    tiled = run_jitted(model, latents, "decode", tile=4, overlap=2)  # 2×2 tiles of 4×4 latents (32×32 px)
    tiled_chunked = run_jitted(model, latents, "decode", tile=4, overlap=2, chunked=True)
    err = rel_err(tiled, full)
    print(f"tiled vs untiled decode: max relative error {err:.3f}; chunked+tiled vs tiled "
          f"{rel_err(tiled_chunked, tiled):.1e}")
    assert tiled.shape == full.shape and np.all(np.abs(tiled) <= 1.0)
    assert err <= TILED_TOL
    assert rel_err(tiled_chunked, tiled) <= 1e-5


def test_tiled_encode(reference, rel_err):
    _, model, _ = reference
    video = _video(5, h=48, w=64, seed=4)
    full = run_jitted(model, video, "encode")
    tiled = run_jitted(model, video, "encode", tile=32, overlap=16)  # 2×3 tiles of 32×32 px (4×4 latents)
    err = rel_err(tiled, full)
    print(f"tiled vs untiled encode: max relative error {err:.3f}")
    assert tiled.shape == full.shape
    assert err <= TILED_TOL


# ------------------------------------------------------------------------------------------------- checkpoints
def to_original_layout(sd: dict, num_res_blocks: int) -> dict:
    """diffusers names → original Wan ``WanVAE_`` names (``Wan-Video/Wan2.1:wan/modules/vae.py``; the inverse of
    ``convert_vae`` in ``huggingface/diffusers:scripts/convert_wan_to_diffusers.py``), written independently of the
    converter's table so that a mistake there cannot cancel out."""
    per_stage = num_res_blocks + 2  # decoder.upsamples: num_res_blocks + 1 residual blocks, then the upsampler
    res = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
           "conv2": "residual.6", "conv_shortcut": "shortcut"}
    out = {}
    for key, value in sd.items():
        k = key
        k = re.sub(r"^(encoder|decoder)\.conv_in\.", r"\1.conv1.", k)
        k = re.sub(r"^quant_conv\.", "conv1.", k)
        k = re.sub(r"^post_quant_conv\.", "conv2.", k)
        k = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.head.0.", k)
        k = re.sub(r"^(encoder|decoder)\.conv_out\.", r"\1.head.2.", k)
        k = re.sub(r"^encoder\.down_blocks\.", "encoder.downsamples.", k)
        k = re.sub(r"mid_block\.resnets\.0\.", "middle.0.", k)
        k = re.sub(r"mid_block\.attentions\.0\.", "middle.1.", k)
        k = re.sub(r"mid_block\.resnets\.1\.", "middle.2.", k)
        k = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
                   lambda m: f"decoder.upsamples.{int(m[1]) * per_stage + int(m[2])}.", k)
        k = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                   lambda m: f"decoder.upsamples.{int(m[1]) * per_stage + per_stage - 1}.", k)
        for d, o in res.items():
            k = re.sub(rf"^((?:encoder|decoder)\.(?:downsamples|upsamples|middle)\.\d+)\.{re.escape(d)}(\.|$)",
                       rf"\1.{o}\2", k)
        assert k not in out, k
        out[k] = value
    return out


def test_original_pth_layout_loads_identically(reference, tmp_path):
    torch = pytest.importorskip("torch")
    ref, model, _ = reference
    original = to_original_layout(ref.state_dict(), TINY["num_res_blocks"])
    assert "decoder.upsamples.2.resample.1.weight" in original and "encoder.middle.1.to_qkv.weight" in original
    torch.save(original, tmp_path / "Wan2.1_VAE.pth")
    source = open_torch_state_dict(tmp_path / "Wan2.1_VAE.pth")
    assert wan_vae.is_original_layout(source) and not wan_vae.is_diffusers_layout(source)
    from_pth = wan_vae.load(source, model.config, where="Wan2.1_VAE.pth")
    video, latents = _video(5), _latents(2)
    np.testing.assert_array_equal(run_jitted(from_pth, video, "encode"), run_jitted(model, video, "encode"))
    np.testing.assert_array_equal(run_jitted(from_pth, latents, "decode"), run_jitted(model, latents, "decode"))


def test_export_round_trip(reference):
    ref, model, _ = reference
    assert_same_tensors(wan_vae.export(model), state_dict_numpy(ref))


def test_full_config_matches_released_keys():
    # the full-size Wan2.1 list, then '---- tiny (base_dim=8, z_dim=4) ----'
    keys = {"full": read("wan2.1_vae.txt"), "tiny": read("wan2.1_vae.txt", "tiny")}
    cfg = WanVAEConfig.preset("wan2.1")
    assert len(keys["full"]) == 194
    assert wan_vae.expected_tensors(cfg) == keys["full"]
    _, _, targets = wan_vae.abstract(cfg)
    count = lambda pre: sum(int(np.prod(s)) for p, (s, _) in targets.items() if p.startswith(pre))  # noqa: E731
    assert round(count("") / 1e6, 2) == 126.89
    assert round((count("encoder.") + count("quant_conv.")) / 1e6, 2) == 53.60
    assert round((count("decoder.") + count("post_quant_conv.")) / 1e6, 2) == 73.30
    tiny = WanVAEConfig(base_dim=8, z_dim=4, latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    assert wan_vae.expected_tensors(tiny) == keys["tiny"]
    # Shapes alone give back the released config, from either layout; the original names map onto all 194.
    assert wan_vae.config_from_shapes(Shapes(keys["full"]), "full") == cfg
    original = Shapes(to_original_layout(keys["full"], cfg.num_res_blocks))
    assert "decoder.upsamples.3.time_conv.weight" in original  # Wan2.1's WanVAE_: upsamplers at 3, 7, 11
    assert "decoder.upsamples.14.residual.6.weight" in original
    renamed = wan_vae.as_diffusers(original, cfg, "original")
    assert {k: renamed.shape(k) for k in renamed} == keys["full"]
    assert wan_vae.config_from_shapes(original, "original") == cfg


# ------------------------------------------------------------------------------------------------- validation
@functools.cache
def _model():
    """An abstract tiny model: checks and lowering need shapes only (eager random init compiles per shape)."""
    return nnx.eval_shape(lambda: WanVAE(WanVAEConfig(**TINY), rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("shape,fragments", [
    ((1, 6, 16, 24, 3), ["6 frames", "1 + 4·k", "5 or 9"]),
    ((1, 4, 16, 24, 3), ["4 frames", "1 or 5"]),
    ((1, 5, 20, 24, 3), ["height 20", "16 or 24"]),
    ((1, 5, 16, 30, 3), ["width 30", "24 or 32"]),
    ((1, 5, 16, 24, 4), ["4 channels", "expected 3"]),
    ((5, 16, 24, 3), ["(B, T, H, W, C)"]),
])
def test_invalid_video_raises(shape, fragments):
    with pytest.raises(InputError) as e:
        _model().encode(jnp.zeros(shape))
    for f in fragments:
        assert f in str(e.value)


@pytest.mark.parametrize("shape,fragments", [
    ((1, 2, 2, 3, 16), ["latents has 16 channels", "expected 4"]),
    ((1, 0, 2, 3, 4), ["0 frames", "nearest valid 1"]),
    ((2, 3, 4), ["(B, T, H, W, C)"]),
])
def test_invalid_latents_raise(shape, fragments):
    with pytest.raises(InputError) as e:
        _model().decode(jnp.zeros(shape))
    for f in fragments:
        assert f in str(e.value)


def test_config_validation():
    cfg = WanVAEConfig(**TINY)
    assert WanVAEConfig.from_diffusers(cfg.to_diffusers()) == cfg
    with pytest.raises(ConfigError, match="AutoencoderKLLTX2Video"):
        WanVAEConfig.from_diffusers({"_class_name": "AutoencoderKLLTX2Video"}, "vae/config.json")
    with pytest.raises(ConfigError, match="is_residual"):
        WanVAEConfig.from_diffusers({"_class_name": "AutoencoderKLWan", "is_residual": True})
    with pytest.raises(ConfigError, match="latents_mean has 16 values"):
        WanVAEConfig(z_dim=4)
    with pytest.raises(ConfigError, match="unknown Wan VAE preset"):
        WanVAEConfig.preset("wan2.2")


# ------------------------------------------------------------------------------------------------- memory
def test_chunked_decode_memory_independent_of_length():
    """Compiled temp memory of the chunked decode is the same for 5 and 17 latent frames: the scan carries a
    fixed-size cache and writes each step's frames in place into the output buffer."""
    graphdef, state = nnx.split(_model())

    def temp_bytes(frames, chunked):
        f = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode(z, chunked=chunked))
        z = jax.ShapeDtypeStruct((1, frames, 2, 3, 4), jnp.float32)
        return f.lower(state, z).compile().memory_analysis().temp_size_in_bytes

    short, long = temp_bytes(5, True), temp_bytes(17, True)
    print(f"chunked decode temp bytes: 5 frames {short}, 17 frames {long}")  # measured 1242816 / 1195456 (−4 %)
    assert abs(long - short) <= 0.05 * short


def test_converters_load_finds_the_wan_vae(reference, tmp_path):
    """``converters.load`` on the diffusers folder, on an original ``.pth`` (with config=), and via orbax."""
    import converters
    from sana_jax.vae.wan import WanVAE

    torch = pytest.importorskip("torch")
    ref, model, folder = reference
    latents = _latents(2)
    from_folder = converters.load(folder)
    assert isinstance(from_folder, WanVAE)
    np.testing.assert_array_equal(run_jitted(from_folder, latents, "decode"), run_jitted(model, latents, "decode"))
    torch.save(to_original_layout(ref.state_dict(), TINY["num_res_blocks"]), tmp_path / "Wan2.1_VAE.pth")
    from_pth = converters.load(tmp_path / "Wan2.1_VAE.pth", config=folder / "config.json")
    np.testing.assert_array_equal(run_jitted(from_pth, latents, "decode"), run_jitted(model, latents, "decode"))
    converters.save_orbax(from_pth, tmp_path / "wan.jax")
    again = converters.load(tmp_path / "wan.jax")
    np.testing.assert_array_equal(run_jitted(again, latents, "decode"), run_jitted(model, latents, "decode"))
