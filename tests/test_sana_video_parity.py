"""Parity of SanaVideoTransformer with diffusers ``SanaVideoTransformer3DModel`` (float32, tiny random configs)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.parity import assert_same_tensors, check, save_and_load, state_dict_numpy
from tests.sana_refs import make_reference, run_reference, tiny_kwargs, to_original_layout, torch

import converters  # noqa: E402
from sana_jax.models.sana_video import SanaVideoConfig  # noqa: E402

CASES = {
    # name: (channels, patch, latent (T, H, W)) — non-square latents, odd frame counts
    "480p-style": (16, (1, 2, 2), (5, 6, 10)),
    "720p-style": (128, (1, 1, 1), (3, 4, 7)),
}


def inputs(channels, thw, caption=20, length=9, seed=1):
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((2, *thw, channels)).astype(np.float32)
    text = rng.standard_normal((2, length, caption)).astype(np.float32)
    mask = np.ones((2, length), np.int64)
    mask[0, 5:] = 0  # padded prompt in sample 0
    timestep = np.array([17.0, 903.0], np.float32)  # different timestep per sample
    return latents, text, timestep, mask


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    channels, patch, thw = CASES[request.param]
    ref = make_reference(**tiny_kwargs(in_channels=channels, patch=patch))
    folder = tmp_path_factory.mktemp(request.param) / "transformer"
    model = save_and_load(ref, folder)
    return request.param, ref, folder, model, inputs(channels, thw)


def test_parity_with_diffusers(case):
    name, ref, _, model, (latents, text, timestep, mask) = case
    check(model(latents, text, timestep, mask), run_reference(ref, latents, text, timestep, mask), what=name)


def test_parity_per_frame_timesteps(case):
    """Per-frame timesteps (image-to-video: frame 0 at t=0) equal diffusers fed the same per token."""
    name, ref, _, model, (latents, text, _, mask) = case
    cfg = model.config
    grid = (latents.shape[1] // cfg.patch_size[0], latents.shape[2] // cfg.patch_size[1],
            latents.shape[3] // cfg.patch_size[2])
    per_frame = np.tile(np.linspace(0.0, 990.0, grid[0], dtype=np.float32), (2, 1))
    per_frame[1] *= 0.5
    per_token = np.repeat(per_frame, grid[1] * grid[2], axis=1)
    check(model(latents, text, per_frame, mask), run_reference(ref, latents, text, per_token, mask))


def test_original_pth_layout_loads_identically(case, tmp_path):
    name, ref, folder, from_diffusers, (latents, text, timestep, mask) = case
    path = tmp_path / "sana_video.pth"
    torch.save({"state_dict": to_original_layout(ref.state_dict())}, path)
    from_pth = converters.load(path, config=folder / "config.json")
    np.testing.assert_array_equal(np.asarray(from_pth(latents, text, timestep, mask)),
                                  np.asarray(from_diffusers(latents, text, timestep, mask)))


def test_no_mask_and_bare_safetensors_with_inferred_config(case):
    """A bare .safetensors (no config.json beside it is used when config= is given explicitly)."""
    name, ref, folder, _, (latents, text, timestep, _) = case
    cfg = SanaVideoConfig.from_json(folder / "config.json")
    model = converters.load(folder / "diffusion_pytorch_model.safetensors", config=cfg)
    check(model(latents, text, timestep), run_reference(ref, latents, text, timestep, None))


def test_export_round_trip_to_diffusers(case, tmp_path):
    """JAX → diffusers folder → diffusers model gives the reference's weights again."""
    name, ref, _, model, _ = case
    out = converters.export_safetensors(model, tmp_path / "exported")
    import diffusers

    again = diffusers.SanaVideoTransformer3DModel.from_pretrained(out).eval()
    assert_same_tensors(state_dict_numpy(ref), state_dict_numpy(again))
