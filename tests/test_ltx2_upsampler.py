"""LTX-2 latent upsampler: parity with diffusers ``LTX2LatentUpsamplerModel`` and ltx-core ``LatentUpsampler``
(float32, tiny random configs), full-size keys and parameter count."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.parity import check, perturb, save_and_load, state_dict_numpy, to_numpy, to_torch, torch, torch_call

diffusers = pytest.importorskip("diffusers")

import converters  # noqa: E402
from converters import ltx2_upsampler as conv  # noqa: E402
from converters.safetensors_io import save_safetensors  # noqa: E402
from sana_jax.errors import InputError  # noqa: E402
from sana_jax.models.ltx2_upsampler import LTX2LatentUpsampler, LTX2UpsamplerConfig  # noqa: E402
from tests.released_keys import Shapes, read  # noqa: E402

TINY = dict(in_channels=8, mid_channels=32, num_blocks_per_stage=2)


def randomized(module, seed=0):
    """GroupNorm weights start at one and biases at zero: perturbed (after ``torch.manual_seed(seed)``)."""
    torch.manual_seed(seed)
    return perturb(module)


def latents(shape=(2, 3, 5, 7, 8), seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run_torch(module, x):
    return to_numpy(torch_call(module, to_torch(x)))


@pytest.mark.parametrize("kind", [
    dict(),  # the released ×2: rational resampler, blur stride 1
    dict(use_rational_resampler=False),  # LTX-2.3 ×2 (upsampler.0)
    dict(rational_spatial_scale=1.5),  # ×3 then blur + stride 2
    dict(dims=2),
    dict(temporal_upsample=True, spatial_upsample=False),
    dict(temporal_upsample=True),
])
def test_parity_with_diffusers(kind, tmp_path):
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    ref = randomized(LTX2LatentUpsamplerModel(**TINY, **kind))
    ours = save_and_load(ref, tmp_path / "latent_upsampler")
    assert isinstance(ours, LTX2LatentUpsampler)
    x = latents()
    want = run_torch(ref, x)
    got = ours(x)
    assert got.shape == want.shape
    check(got, want)
    assert conv.export(ours).keys() == set(ref.state_dict())


def test_native_file_matches_ltx_core(tmp_path):
    """ltx-core's ``LatentUpsampler`` (same key names), from a native single file whose metadata holds the config."""
    pytest.importorskip("ltx_core")
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    native_config = {"in_channels": 8, "mid_channels": 32, "num_blocks_per_stage": 2, "dims": 3,
                     "spatial_upsample": True, "temporal_upsample": False, "spatial_scale": 2.0,
                     "rational_resampler": True}
    ref = randomized(LatentUpsamplerConfigurator.from_config(native_config), seed=3)
    path = tmp_path / "ltx-2-spatial-upscaler-x2-tiny.safetensors"
    save_safetensors(state_dict_numpy(ref), path, metadata={"config": json.dumps(native_config)})
    ours = converters.load(path)
    assert ours.config == LTX2UpsamplerConfig(**TINY)
    x = latents(shape=(1, 4, 6, 5, 8), seed=4)
    check(ours(x), run_torch(ref, x))


def test_config_from_shapes_without_metadata(tmp_path):
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    for kind in (dict(), dict(use_rational_resampler=False), dict(dims=2), dict(temporal_upsample=True)):
        ref = LTX2LatentUpsamplerModel(**TINY, **kind)
        inferred = conv.config_from_checkpoint(state_dict_numpy(ref), "bare")
        want = LTX2UpsamplerConfig.from_diffusers(dict(ref.config))
        assert (inferred.dims, inferred.rational, inferred.spatial_upsample, inferred.temporal_upsample,
                inferred.mid_channels) == (want.dims, want.rational, want.spatial_upsample, want.temporal_upsample,
                                           want.mid_channels)


def test_upsample_normalized_wraps_the_raw_model():
    from flax import nnx

    model = LTX2LatentUpsampler(LTX2UpsamplerConfig(**TINY), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(5)
    mean = rng.standard_normal(8).astype(np.float32)
    std = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    z = latents(seed=6)
    got = model.upsample_normalized(z, mean, std)
    want = (np.asarray(model(z * std + mean)) - mean) / std
    check(got, want, tol=1e-5)
    with pytest.raises(InputError, match="channels-last"):
        model(z.transpose(0, 4, 1, 2, 3))


def test_full_size_keys_and_count_in_both_layouts():
    cfg = LTX2UpsamplerConfig.preset("ltx-2-spatial-x2-1.0")
    expected = conv.expected_tensors(cfg)
    assert sum(int(np.prod(s)) for s in expected.values()) == 497_867_929
    assert LTX2UpsamplerConfig.from_diffusers(cfg.to_diffusers()) == cfg
    assert expected == read("ltx2_diffusers.txt", "DIFFUSERS LTX2LatentUpsamplerModel")
    native = read("ltx2_native.txt", "NATIVE LatentUpsampler x2")
    assert expected == native
    plain = conv.expected_tensors(LTX2UpsamplerConfig.preset("ltx-2.3-spatial-x2-1.1"))
    variant = read("ltx2_native.txt", "rational_resampler=False variant")
    assert {k: v for k, v in plain.items() if k.startswith("upsampler.")} == variant
    assert conv.config_from_checkpoint(Shapes(native), "key list") == cfg
