"""LTX-2 video VAE: parity with diffusers ``AutoencoderKLLTX2Video`` and with ltx-core's native model (float32)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from tests.parity import (assert_same_tensors, check, save_and_load, state_dict_numpy, to_numpy, to_torch, torch,
                          torch_call)

diffusers = pytest.importorskip("diffusers")

import converters  # noqa: E402
from converters import ltx2_vae, tables  # noqa: E402
from converters.safetensors_io import SafetensorsFile, save_safetensors  # noqa: E402
from sana_jax.errors import InputError  # noqa: E402
from sana_jax.vae.ltx2 import LTX2VAE, LTX2VAEConfig  # noqa: E402
from tests.released_keys import Shapes, read  # noqa: E402

TINY = dict(latent_channels=8, block_out_channels=(16, 32, 64, 128), layers_per_block=(1, 1, 1, 1, 1),
            decoder_block_out_channels=(16, 32, 64), decoder_layers_per_block=(1, 1, 1, 1), decoder_causal=False)
NATIVE = {"latent_channels": 8, "decoder_base_channels": 8, "causal_decoder": False,
          "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": 2}],
                             ["res_x", {"num_layers": 1}], ["compress_time_res", {"multiplier": 2}],
                             ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                             ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                             ["res_x", {"num_layers": 1}]],
          "decoder_blocks": [["res_x", {"num_layers": 1}], ["compress_all", {"residual": True, "multiplier": 2}],
                             ["res_x", {"num_layers": 1}], ["compress_all", {"residual": True, "multiplier": 2}],
                             ["res_x", {"num_layers": 1}], ["compress_all", {"residual": True, "multiplier": 2}],
                             ["res_x", {"num_layers": 1}]]}


def randomize(module, seed):
    """Random weights everywhere: 1-D tensors (biases, norms, tables) perturbed so a swapped mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + list(module.named_buffers()):
            if p.ndim <= 2 or "scale_shift_table" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        for name, p in module.named_buffers():
            if "std" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
        for name, p in module.named_parameters():
            if name.endswith("timestep_scale_multiplier"):
                p.fill_(916.0)


@functools.lru_cache(maxsize=2)
def build_reference(timestep_conditioning: bool, folder):
    """The tiny reference (random everywhere), its folder, and our model loaded from it by ``converters.load``."""
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLLTX2Video(**TINY, timestep_conditioning=timestep_conditioning).eval()
    randomize(ref, 1)
    return ref, folder, save_and_load(ref, folder)


def _reference(timestep_conditioning: bool, tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / f"ltx2-vae-{'tcond' if timestep_conditioning else 'no-tcond'}"
    return build_reference(timestep_conditioning, folder)


@pytest.fixture(scope="module", params=[True, False], ids=["tcond", "no-tcond"])
def reference(request, tmp_path_factory):
    return _reference(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def tcond_reference(tmp_path_factory):
    """Tiling, memory and input checks do not depend on timestep conditioning: one variant is enough."""
    return _reference(True, tmp_path_factory)


def video(frames=9, h=64, w=96, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (2, frames, h, w, 3)).astype(np.float32)


def latents(frames=3, h=2, w=3, seed=1):
    return np.random.default_rng(seed).standard_normal((2, frames, h, w, 8)).astype(np.float32)


def ref_normalized_mean(ref, x):
    with torch.no_grad():
        mean = ref.encode(to_torch(x)).latent_dist.mean
    return to_numpy((mean - ref.latents_mean.view(1, -1, 1, 1, 1)) / ref.latents_std.view(1, -1, 1, 1, 1))


def ref_decode(ref, z, t):
    with torch.no_grad():
        raw = to_torch(z) * ref.latents_std.view(1, -1, 1, 1, 1) + ref.latents_mean.view(1, -1, 1, 1, 1)
        temb = torch.as_tensor(np.broadcast_to(t, (z.shape[0],)).astype(np.float32)) \
            if ref.config.timestep_conditioning else None
        return to_numpy(ref.decode(raw, temb).sample)


@pytest.mark.parametrize("frames", [1, 9, 17])
def test_encode_parity(reference, frames):
    ref, _, ours = reference
    x = video(frames)
    check(ours.encode(x), ref_normalized_mean(ref, x))


@pytest.mark.parametrize("t", [0.0, 0.05, np.array([0.3, 0.9], np.float32)], ids=["t0", "t0.05", "per-sample"])
def test_decode_parity(reference, t):
    ref, _, ours = reference
    z = latents()
    check(ours.decode(z, timestep=t), ref_decode(ref, z, t))


def test_decode_noise_mixing_matches_the_diffusers_pipeline(reference):
    """``z ← (1−s)·z + s·ε`` in normalised space, then de-normalise (LTX2Pipeline's order)."""
    ref, _, ours = reference
    z, eps = latents(), latents(seed=5)
    got = ours.decode(z, timestep=0.05, noise_scale=0.025, noise=eps)
    check(got, ref_decode(ref, 0.975 * z + 0.025 * eps, 0.05))


def test_tiled_and_chunked_decode_match_untiled(tcond_reference, rel_err):
    """Tiles and chunks see less context than the whole clip, so inside the blended overlaps the output differs by
    the decoder's sensitivity to what lies beyond the border (3×3×3 convs at four scales: a receptive field wider
    than these tiny tiles, and random weights make it large). Measured (tcond), max relative error: 2×6×7 latents,
    spatial tile 4/overlap 2: 0.30, tile 5/3: 0.21, tile 6/4: 0.14; 5×2×2 latents, temporal chunk 3/overlap 1:
    0.32, 4/2: 0.12. A misaligned blend would not shrink with more overlap; a single tile/chunk is exactly the
    untiled decode. (Spatial and temporal use separate small clips: the decoder upsamples 8× in time and 32× in
    space, and one clip large in both made this the suite's slowest test.)"""
    _, _, ours = tcond_reference

    def errors(z, configs):
        whole = np.asarray(ours.decode(z, timestep=0.05))
        out = []
        for kw in configs:
            tiled = np.asarray(ours.decode(z, timestep=0.05, **kw))
            assert tiled.shape == whole.shape
            out.append(rel_err(tiled, whole))
        return out

    spatial = errors(latents(frames=2, h=6, w=7)[:1], [dict(tile=4, overlap=2), dict(tile=6, overlap=4), dict(tile=8)])
    temporal = errors(latents(frames=5, h=2, w=2)[:1], [dict(frames_per_chunk=3, frame_overlap=1),
                                                         dict(frames_per_chunk=4, frame_overlap=2),
                                                         dict(frames_per_chunk=5)])
    assert spatial[1] < spatial[0] < 0.4 and spatial[2] <= 1e-5, spatial
    assert temporal[1] < temporal[0] < 0.6 and temporal[2] <= 1e-5, temporal


def test_tiled_decode_memory_is_flat_in_resolution(tcond_reference):
    """Compiled working memory (XLA's temp buffers) of a tiled decode hardly grows with the video, while the
    untiled decode's grows with it (measured, jax 0.10.2 CPU: 108 → 111 MB tiled vs 191 → 1,720 MB untiled for
    2×8² → 2×24² latents)."""
    import jax
    from flax import nnx

    graphdef, state = nnx.split(tcond_reference[2])

    def temp(size, tile):
        f = jax.jit(lambda st, z: nnx.merge(graphdef, st).decode(z, timestep=0.05, tile=tile, overlap=2))
        z = jax.ShapeDtypeStruct((1, 2, size, size, 8), np.float32)
        return f.lower(state, z).compile().memory_analysis().temp_size_in_bytes

    tiled, untiled = (temp(8, 6), temp(24, 6)), (temp(8, None), temp(24, None))
    assert tiled[1] < 1.6 * tiled[0], tiled
    assert untiled[1] > 5 * untiled[0], untiled


def test_tiled_encode_shape_and_single_tile_identity(tcond_reference):
    _, _, ours = tcond_reference
    x = video(1, 64, 128)[:1]  # one frame: tiling is spatial only
    whole = np.asarray(ours.encode(x))
    assert np.asarray(ours.encode(x, tile=64, overlap=32)).shape == whole.shape
    np.testing.assert_allclose(np.asarray(ours.encode(x, tile=128)), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,match", [
    ((1, 10, 64, 64, 3), "nearest valid 9 or 17"),
    ((1, 9, 70, 64, 3), "height 70 is not a multiple of 32: nearest valid 64 or 96"),
    ((1, 9, 64, 64, 4), "4 channels, expected 3"),
])
def test_invalid_video(tcond_reference, shape, match):
    with pytest.raises(InputError, match=match):
        tcond_reference[2].encode(np.zeros(shape, np.float32))


def test_invalid_latents(tcond_reference):
    with pytest.raises(InputError, match="16 channels, expected 8"):
        tcond_reference[2].decode(np.zeros((1, 2, 2, 2, 16), np.float32))


# -- native (ltx-core) layout ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    pytest.importorskip("ltx_core")
    from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator, VideoEncoderConfigurator

    cfg = {"vae": {**NATIVE, "timestep_conditioning": True}}
    torch.manual_seed(0)
    enc, dec = VideoEncoderConfigurator.from_config(cfg).eval(), VideoDecoderConfigurator.from_config(cfg).eval()
    randomize(enc, 2)
    randomize(dec, 3)
    dec.decode_noise_scale = 0.0  # ltx-core mixes its own torch noise in; compare the deterministic part
    stats = {k: v for k, v in enc.state_dict().items() if k.startswith("per_channel_statistics.")}
    dec.load_state_dict({**dec.state_dict(), **stats})
    tensors = {f"vae.encoder.{k}": v for k, v in enc.state_dict().items() if not k.startswith("per_channel")}
    tensors.update({f"vae.decoder.{k}": v for k, v in dec.state_dict().items() if not k.startswith("per_channel")})
    tensors.update({f"vae.{k}": v for k, v in stats.items()})
    tensors["vae.per_channel_statistics.mean-of-stds"] = torch.ones(8)  # present in real files, unused
    tensors["model.diffusion_model.other.weight"] = torch.ones(2)  # another component of an all-in-one file
    path = tmp_path_factory.mktemp("native") / "ltx-2-tiny.safetensors"
    save_safetensors({k: v.detach().numpy() for k, v in tensors.items()}, path,
                     metadata={"config": json.dumps(cfg)})
    return enc, dec, path


def ltx_core_decode(dec, z):
    """ltx-core's decoder at timestep 0.05 (its own noise mixing off), channels-last."""
    return to_numpy(torch_call(dec, to_torch(z), timestep=np.full(z.shape[0], 0.05, np.float32)))


def test_native_layout_matches_ltx_core(native):
    enc, dec, path = native
    source = SafetensorsFile(path)
    cfg = ltx2_vae.native_config(source.metadata, str(path))
    ours = ltx2_vae.load(source, cfg, where=str(path))
    x, z = video(9), latents()
    want_z = to_numpy(torch_call(enc, to_torch(x)))
    want_v = ltx_core_decode(dec, z)
    check(ours.encode(x), want_z, what="encode")
    check(ours.decode(z, timestep=0.05), want_v, what="decode")


def test_native_renames_load_into_diffusers_identically(native):
    """The native → diffusers renames, applied to the native file, load strictly into diffusers and give
    ltx-core's outputs: the key table is right independently of our model."""
    enc, dec, path = native
    source = SafetensorsFile(path)
    cfg = ltx2_vae.native_config(source.metadata, str(path))
    renamed = ltx2_vae.as_diffusers(source, cfg, str(path))
    ref = diffusers.AutoencoderKLLTX2Video(**{k: v for k, v in cfg.to_diffusers().items()
                                               if not k.startswith("_")}).eval()
    ref.load_state_dict({k: torch.from_numpy(np.array(renamed[k])) for k in renamed}, strict=True)
    z = latents()
    check(ref_decode(ref, z, 0.05), ltx_core_decode(dec, z))


# -- full-size shapes ------------------------------------------------------------------------------------------------


def test_full_size_keys_match_the_released_checkpoints():
    cfg = LTX2VAEConfig.preset("ltx-2.0")
    ours = ltx2_vae.expected_tensors(cfg)
    want = read("ltx2_diffusers.txt", "DIFFUSERS AutoencoderKLLTX2Video")
    want.update(read("ltx2_diffusers.txt", "extra keys with timestep_conditioning=True"))
    assert ours == want
    native = read("ltx2_native.txt", "NATIVE ltx_core VideoEncoder")
    native_names = {f"vae.encoder.{k}" if not k.startswith("per_channel") else f"vae.{k}": v
                    for k, v in native.items()}
    for section in ("NATIVE ltx_core VideoDecoder", "Extra decoder keys if timestep_conditioning=True"):
        native_names.update({f"vae.decoder.{k}": v for k, v in read("ltx2_native.txt", section).items()
                             if not k.startswith("per_channel")})
    renamed = tables.RenamedSource(Shapes(native_names), ltx2_vae.native_renames(cfg), "key list")
    assert {k: renamed.shape(k) for k in renamed} == want
    assert sum(int(np.prod(s)) for s in want.values()) == 1_246_913_778


def test_converters_load_finds_the_vae_in_folders_and_native_files(tcond_reference, native, tmp_path):
    """``converters.load`` on a diffusers ``vae/`` folder, on a native file (config from its metadata, other
    components ignored), and back from ``sana-jax convert``'s orbax folder."""
    ref, _, ours = tcond_reference
    z = latents()
    from_folder = save_and_load(ref, tmp_path / "vae")
    assert isinstance(from_folder, LTX2VAE)
    np.testing.assert_array_equal(np.asarray(from_folder.decode(z)), np.asarray(ours.decode(z)))
    enc, dec, path = native
    from_native = converters.load(path)
    check(from_native.decode(z, timestep=0.05), ltx_core_decode(dec, z))
    converters.save_orbax(from_native, tmp_path / "vae.jax")
    again = converters.load(tmp_path / "vae.jax")
    np.testing.assert_array_equal(np.asarray(again.decode(z, timestep=0.05)),
                                  np.asarray(from_native.decode(z, timestep=0.05)))


def test_export_round_trip_to_diffusers(tcond_reference, tmp_path):
    ref, _, ours = tcond_reference
    folder = converters.export_safetensors(ours, tmp_path / "vae")
    again = diffusers.AutoencoderKLLTX2Video.from_pretrained(folder).eval()
    assert_same_tensors(state_dict_numpy(ref), state_dict_numpy(again))
