"""Parity of WanTransformer with diffusers ``WanTransformer3DModel`` (float32, tiny random configs), the original Wan
and CausVid / Self-Forcing layouts, and the released key lists at full size."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests import released_keys
from tests.parity import check, reference, save_and_load, state_dict_numpy, torch

import converters  # noqa: E402
from converters import wan_transformer  # noqa: E402
from converters.safetensors_io import save_safetensors  # noqa: E402
from sana_jax.errors import ConfigError  # noqa: E402
from sana_jax.models.wan import WanConfig  # noqa: E402

CASES = {
    # name: (reference config, latent (T, H, W)): odd frame counts, non-square latents
    "base": (dict(), (3, 6, 10)),
    "no-cross-norm": (dict(cross_attn_norm=False, num_layers=3), (5, 4, 8)),
    "patch-1x1x1": (dict(patch_size=(1, 1, 1), in_channels=6, out_channels=6), (2, 3, 5)),
}


def tiny_kwargs(**over):
    kwargs = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                  text_dim=4096, freq_dim=32, ffn_dim=40, num_layers=2)
    return {**kwargs, **over}


def inputs(channels, thw, seed=1):
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((2, *thw, channels)).astype(np.float32)
    text = rng.standard_normal((2, 9, 4096)).astype(np.float32)
    text[0, 5:] = 0  # a shorter prompt, zero-padded as the pipeline pads it
    return latents, text, np.array([17.0, 903.0], np.float32)


def run_reference(ref, latents, text, timestep):
    with torch.no_grad():
        out = ref(torch.from_numpy(latents).permute(0, 4, 1, 2, 3), torch.from_numpy(timestep),
                  torch.from_numpy(text)).sample
    return out.permute(0, 2, 3, 4, 1).numpy()


def build(name, tmp_path_factory):
    from diffusers import WanTransformer3DModel

    over, thw = CASES[name]
    kwargs = tiny_kwargs(**over)
    ref = reference(WanTransformer3DModel, **kwargs)
    model = save_and_load(ref, tmp_path_factory.mktemp(name) / "transformer")
    return name, ref, model, inputs(kwargs["in_channels"], thw)


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    return build(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The layout checks need one configuration the original config.json can state."""
    return build("base", tmp_path_factory)


def test_parity_with_diffusers(case):
    name, ref, model, (latents, text, timestep) = case
    check(model(latents, text, timestep), run_reference(ref, latents, text, timestep), what=name)


def test_parity_per_frame_timesteps(case):
    """Per-frame timesteps (the causal students' input) equal diffusers fed the same per token (its Wan2.2 path)."""
    name, ref, model, (latents, text, _) = case
    grid = model.check_latents(latents.shape)
    per_frame = np.tile(np.linspace(0.0, 990.0, grid[0], dtype=np.float32), (2, 1))
    per_frame[1] *= 0.5
    per_token = np.repeat(per_frame, grid[1] * grid[2], axis=1)
    check(model(latents, text, per_frame), run_reference(ref, latents, text, per_token), what=name)


# -- the original layout (Wan-AI/Wan2.1-T2V-*), and CausVid / Self-Forcing generator dicts ------------------------

#: diffusers → original names, written from diffusers' scripts/convert_wan_to_diffusers.py (inverted) independently
#: of the converter's table
_TO_ORIGINAL = [
    (r"condition_embedder\.time_embedder\.linear_1", "time_embedding.0"),
    (r"condition_embedder\.time_embedder\.linear_2", "time_embedding.2"),
    (r"condition_embedder\.time_proj", "time_projection.1"),
    (r"condition_embedder\.text_embedder\.linear_1", "text_embedding.0"),
    (r"condition_embedder\.text_embedder\.linear_2", "text_embedding.2"),
    (r"^scale_shift_table", "head.modulation"), (r"^proj_out", "head.head"),
    (r"\.scale_shift_table", ".modulation"), (r"\.norm2\.", ".norm3."),
    (r"\.attn1\.", ".self_attn."), (r"\.attn2\.", ".cross_attn."),
    (r"\.to_q\.", ".q."), (r"\.to_k\.", ".k."), (r"\.to_v\.", ".v."), (r"\.to_out\.0\.", ".o."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."), (r"\.ffn\.net\.2\.", ".ffn.2."),
]


def to_original(state: dict) -> dict:
    out = {}
    for name, value in state.items():
        for pattern, new in _TO_ORIGINAL:
            name = re.sub(pattern, new, name)
        out[name] = value
    return out


def original_config(cfg: WanConfig) -> dict:
    """The original ``config.json`` of a model (Wan-AI/Wan2.1-T2V-1.3B's keys)."""
    return {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": cfg.inner_dim, "eps": cfg.eps,
            "ffn_dim": cfg.ffn_dim, "freq_dim": cfg.freq_dim, "in_dim": cfg.in_channels, "model_type": "t2v",
            "num_heads": cfg.num_attention_heads, "num_layers": cfg.num_layers, "out_dim": cfg.out_channels,
            "text_len": 512}


def test_original_layout_loads_identically(base, tmp_path):
    _, ref, from_diffusers, (latents, text, timestep) = base
    folder = tmp_path / "Wan2.1-T2V-tiny"
    folder.mkdir()
    save_safetensors(to_original(state_dict_numpy(ref)), folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(original_config(from_diffusers.config)))
    model = converters.load(folder)  # the folder's config.json is the original WanModel one
    assert model.config == from_diffusers.config
    check(model(latents, text, timestep), from_diffusers(latents, text, timestep), tol=1e-6)


def test_causvid_and_self_forcing_checkpoints(base, tmp_path):
    """``model.``-prefixed generator dicts; Self-Forcing's ``generator_ema`` is the one taken."""
    _, ref, from_diffusers, (latents, text, timestep) = base
    state = {f"model.{k}": v for k, v in to_original(ref.state_dict()).items()}
    torch.save({"generator": state}, tmp_path / "causvid.pt")
    other = {k: v + 1.0 for k, v in state.items()}
    torch.save({"generator": other, "critic": other, "generator_ema": state}, tmp_path / "self_forcing.pt")
    cfg = from_diffusers.config
    for file in ("causvid.pt", "self_forcing.pt"):
        model = converters.load(tmp_path / file, config=cfg)
        check(model(latents, text, timestep), from_diffusers(latents, text, timestep), tol=1e-6, what=file)


def test_config_from_shapes_and_original_config():
    """Without a config.json the shapes give the configuration; the released original config.json reads as the
    1.3B preset."""
    one = WanConfig.preset("1.3B")
    original = original_config(one)
    assert WanConfig.from_diffusers(original, "config.json") == one
    shapes = released_keys.Shapes(released_keys.all_blocks(
        released_keys.read("wan2.1_t2v.txt", "original WanModel, Wan2.1-T2V-1.3B"), 30, "blocks."))
    assert wan_transformer.config_from_checkpoint(shapes, "ckpt") == one
    with pytest.raises(ConfigError, match="model_type"):
        WanConfig.from_diffusers({**original, "model_type": "i2v"}, "config.json")
    with pytest.raises(ConfigError, match="image_dim"):
        WanConfig.from_diffusers({**one.to_diffusers(), "image_dim": 1280}, "config.json")


# -- full size: the released key lists ----------------------------------------------------------------------------


@pytest.mark.parametrize("preset,section,layers", [
    ("1.3B", "diffusers WanTransformer3DModel, Wan2.1-T2V-1.3B", 30),
    ("14B", "diffusers WanTransformer3DModel, Wan2.1-T2V-14B", 40),
])
def test_full_size_matches_released_keys(preset, section, layers):
    want = released_keys.all_blocks(released_keys.read("wan2.1_t2v.txt", section), layers, "blocks.")
    got = wan_transformer.expected_tensors(WanConfig.preset(preset))
    assert got == want


def test_original_full_size_keys_map_onto_the_model():
    """Every tensor of the released original file (and its ``model.``-prefixed CausVid form) has its place."""
    original = released_keys.all_blocks(
        released_keys.read("wan2.1_t2v.txt", "original WanModel, Wan2.1-T2V-1.3B"), 30, "blocks.")
    want = wan_transformer.expected_tensors(WanConfig.preset("1.3B"))
    for source in (released_keys.Shapes(original),
                   released_keys.Shapes({f"model.{k}": v for k, v in original.items()})):
        renamed = wan_transformer.as_diffusers(source, "ckpt")
        assert {k: tuple(renamed.shape(k)) for k in renamed} == want
