"""Small builders shared by tests that need no PyTorch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flax import nnx

from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer


def tiny_config(**over) -> SanaVideoConfig:
    kw = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2,
              num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=8,
              mlp_ratio=2.0, patch_size=(1, 2, 2), sample_size=8)
    kw.update(over)
    return SanaVideoConfig(**kw)


def tiny_model(seed: int = 0, **over) -> SanaVideoTransformer:
    return SanaVideoTransformer(tiny_config(**over), rngs=nnx.Rngs(seed))


def tiny_causal_model(conv_scale: float = 0.3, conv_seed: int = 7) -> SanaVideoTransformer:
    """:func:`tiny_config`'s DiT for the block-causal tests. Its temporal conv initialises to zero: it gets random
    weights so that the conv tail carried from chunk to chunk matters. (An "rbg" key compiles the initialisers
    several times faster than threefry on CPU.)"""
    import jax
    import jax.numpy as jnp
    import numpy as np

    m = SanaVideoTransformer(tiny_config(), rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
    layers, d = m.config.num_layers, m.config.inner_dim
    m.blocks.ff.conv_temp[...] = jnp.asarray(
        conv_scale * np.random.default_rng(conv_seed).standard_normal((layers, 3, d, d)), jnp.float32)
    return m


ROOT = Path(__file__).resolve().parents[1]
#: the meshes of the 8-fake-device tests (tests/parallel_cases.py)
MESHES = ["data=2,context=4", "context=8", "tensor=2,context=4"]


def run_parallel_cases(kind: str, meshes=MESHES) -> dict:
    """Run ``tests/parallel_cases.py KIND MESH...`` in its own process (8 fake CPU devices) and return its JSON."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "parallel_cases.py"), kind, *meshes],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
