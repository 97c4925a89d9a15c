"""Parity of SanaVideoTransformer with diffusers ``SanaVideoTransformer3DModel`` (float32, tiny random configs)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.sana_refs import (make_reference, run_reference, save_diffusers_folder, state_dict_numpy,
                             tiny_kwargs, to_original_layout, torch)

import converters  # noqa: E402
from sana_jax.models.sana_video import SanaVideoConfig  # noqa: E402

TOL = 1e-4
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
    save_diffusers_folder(ref, folder)
    return request.param, ref, folder, inputs(channels, thw)


def test_parity_with_diffusers(case, rel_err):
    name, ref, folder, (latents, text, timestep, mask) = case
    model = converters.load(folder)
    ours = np.asarray(model(latents, text, timestep, mask))
    want = run_reference(ref, latents, text, timestep, mask)
    err = rel_err(ours, want)
    print(f"{name}: max relative error {err:.2e}")
    assert err <= TOL


def test_parity_per_frame_timesteps(case, rel_err):
    """Per-frame timesteps (image-to-video: frame 0 at t=0) equal diffusers fed the same per token."""
    name, ref, folder, (latents, text, _, mask) = case
    model = converters.load(folder)
    cfg = model.config
    grid = (latents.shape[1] // cfg.patch_size[0], latents.shape[2] // cfg.patch_size[1],
            latents.shape[3] // cfg.patch_size[2])
    per_frame = np.tile(np.linspace(0.0, 990.0, grid[0], dtype=np.float32), (2, 1))
    per_frame[1] *= 0.5
    per_token = np.repeat(per_frame, grid[1] * grid[2], axis=1)
    ours = np.asarray(model(latents, text, per_frame, mask))
    err = rel_err(ours, run_reference(ref, latents, text, per_token, mask))
    assert err <= TOL


def test_original_pth_layout_loads_identically(case, tmp_path):
    name, ref, folder, (latents, text, timestep, mask) = case
    path = tmp_path / "sana_video.pth"
    torch.save({"state_dict": to_original_layout(ref.state_dict())}, path)
    from_pth = converters.load(path, config=folder / "config.json")
    from_diffusers = converters.load(folder)
    np.testing.assert_array_equal(np.asarray(from_pth(latents, text, timestep, mask)),
                                  np.asarray(from_diffusers(latents, text, timestep, mask)))


def test_no_mask_and_bare_safetensors_with_inferred_config(case, rel_err):
    """A bare .safetensors (no config.json beside it is used when config= is given explicitly)."""
    name, ref, folder, (latents, text, timestep, _) = case
    cfg = SanaVideoConfig.from_json(folder / "config.json")
    model = converters.load(folder / "diffusion_pytorch_model.safetensors", config=cfg)
    err = rel_err(np.asarray(model(latents, text, timestep)), run_reference(ref, latents, text, timestep, None))
    assert err <= TOL


def test_export_round_trip_to_diffusers(case, tmp_path, rel_err):
    """JAX → diffusers folder → diffusers model gives the reference's outputs again."""
    name, ref, folder, (latents, text, timestep, mask) = case
    out = converters.export_safetensors(converters.load(folder), tmp_path / "exported")
    import diffusers

    again = diffusers.SanaVideoTransformer3DModel.from_pretrained(out).eval()
    sd_a, sd_b = state_dict_numpy(ref), state_dict_numpy(again)
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        np.testing.assert_array_equal(sd_a[k], sd_b[k], err_msg=k)
