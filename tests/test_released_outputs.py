"""Refactoring guard: checkpoints in the released layouts load and give bitwise the outputs they gave before.

``tests/data/golden/`` holds two tiny SANA-Video transformers exported in the diffusers layout (a ``config.json``
with the released keys and no sana-jax extras, ``diffusion_pytorch_model.safetensors``): one shaped like the 480p
release (patch 1×2×2), one like the 720p release (patch 1×1×1). ``outputs.npz`` holds what they, and the embedded
default model, produced when it was written: the plain forward, the block-causal forward, streamed chunks, a
``generate`` run and a ``stream`` run. Any change to the code that moves a single bit of these fails here.

``SANA_JAX_WRITE_GOLDEN=1 pytest tests/test_released_outputs.py`` rewrites the files (only when a change of numbers
is intended, and say why in the commit).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import converters
from sana_jax.demo import default_model_path
from sana_jax.models import sana_video_causal as sc

GOLDEN = Path(__file__).parent / "data" / "golden"
WRITE = os.environ.get("SANA_JAX_WRITE_GOLDEN") == "1"
RELEASE_SHAPES = {"480p": dict(patch_size=(1, 2, 2), sample_size=30), "720p": dict(patch_size=(1, 1, 1),
                                                                                    sample_size=22)}


def _inputs(config, seed=0):
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((2, 4, 8, 12, config.in_channels)).astype(np.float32)
    text = rng.standard_normal((2, 7, config.caption_channels)).astype(np.float32)
    mask = np.ones((2, 7), np.int32)
    mask[1, 5:] = 0
    return latents, text, mask


def _transformer_outputs(name: str) -> dict[str, np.ndarray]:
    model = converters.load(GOLDEN / f"transformer_{name}")
    latents, text, mask = _inputs(model.config)
    per_sample = np.array([900.0, 250.0], np.float32)
    per_frame = np.array([[0.0, 300.0, 600.0, 1000.0], [50.0, 50.0, 700.0, 700.0]], np.float32)
    out = {"forward": model(latents, text, per_sample, mask),
           "forward_per_frame": model(latents, text, per_frame, mask),
           "causal": sc.causal_forward(model, latents, text, per_frame, mask, chunk=2)}
    state = sc.init_state(model, text, mask, height=latents.shape[2], width=latents.shape[3])
    chunks = []
    for c in range(2):
        x = latents[:, 2 * c:2 * c + 2]
        v, _ = sc.step(model, state, x, per_sample)
        _, state = sc.step(model, state, x, np.zeros(2, np.float32), commit=True)
        chunks.append(v)
    out["streamed"] = jnp.concatenate(chunks, axis=1)
    return {f"{name}_{k}": np.asarray(v) for k, v in out.items()}


def _default_model_outputs() -> dict[str, np.ndarray]:
    from sana_jax.pipelines import SanaVideoPipeline

    pipe = SanaVideoPipeline.from_pretrained(default_model_path())
    out = pipe("a blue square moving up", seed=0, progress=False)
    two = pipe(["a red circle moving left on a white background", "a green triangle moving down"], seed=1,
               guidance_scale=1.0, num_inference_steps=3, progress=False)
    return {"default_generate_latents": out.latents, "default_generate_frames": out.frames,
            "default_batch_latents": two.latents}


def _write_transformers():
    from flax import nnx

    from tests.helpers import tiny_config
    from sana_jax.models.sana_video import SanaVideoTransformer

    for seed, (name, shape) in enumerate(RELEASE_SHAPES.items()):
        in_channels = 4 if shape["patch_size"][1] == 2 else 8
        model = SanaVideoTransformer(tiny_config(in_channels=in_channels, out_channels=in_channels, **shape),
                                     rngs=nnx.Rngs(seed))
        converters.export_safetensors(model, GOLDEN / f"transformer_{name}")


@pytest.fixture(scope="module")
def golden():
    if WRITE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        _write_transformers()
        outputs = {}
        for name in RELEASE_SHAPES:
            outputs.update(_transformer_outputs(name))
        outputs.update(_default_model_outputs())
        np.savez_compressed(GOLDEN / "outputs.npz", **outputs)
    with np.load(GOLDEN / "outputs.npz") as f:
        return dict(f)


TOLERANCE = 1e-5


def _assert_unchanged(ours: dict, golden: dict):
    for key, value in ours.items():
        want = golden[key]
        assert value.dtype == want.dtype and value.shape == want.shape, key
        if value.dtype == np.uint8:
            levels = np.abs(value.astype(np.int16) - want.astype(np.int16))
            assert levels.max() <= 1 and np.mean(levels > 0) <= 1e-3, f"{key}: frames moved by up to " \
                f"{levels.max()} levels on {np.mean(levels > 0):.2%} of pixels"
            continue
        err = float(np.abs(value.astype(np.float64) - want).max() / np.abs(want).max())
        assert err <= TOLERANCE, f"{key}: differs from the recorded output by {err:.2e} of its scale"


def test_released_config_keys_are_unchanged(golden):
    import json

    for name in RELEASE_SHAPES:
        config = json.loads((GOLDEN / f"transformer_{name}" / "config.json").read_text())
        assert config["_class_name"] == "SanaVideoTransformer3DModel"
        assert "preconditioning" not in config


@pytest.mark.parametrize("name", list(RELEASE_SHAPES))
def test_transformer_outputs_are_unchanged(golden, name):
    _assert_unchanged(_transformer_outputs(name), golden)


@pytest.mark.skipif(not (default_model_path() / "model_index.json").exists(), reason="default model not built")
def test_default_model_outputs_are_unchanged(golden):
    _assert_unchanged(_default_model_outputs(), golden)


def test_the_guard_can_fail(golden):
    """Scaling one of its weights (of ~30,000) by 1.01 is seen."""
    model = converters.load(GOLDEN / "transformer_480p")
    latents, text, mask = _inputs(model.config)
    kernel = model.proj_out.kernel
    kernel[...] = kernel[...].at[0, 0].multiply(1.01)
    ours = np.asarray(model(latents, text, np.array([900.0, 250.0], np.float32), mask))
    with pytest.raises(AssertionError, match="480p_forward: differs"):
        _assert_unchanged({"480p_forward": ours}, golden)
