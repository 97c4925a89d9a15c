"""Run in its own process with 8 fake CPU devices (tests/test_parallel.py starts it): sharded == unsharded."""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer  # noqa: E402
from sana_jax.parallel import make_mesh  # noqa: E402
from sana_jax.parallel.dit import sharded_forward  # noqa: E402


def tiny_dit():
    cfg = SanaVideoConfig(in_channels=4, out_channels=4, num_attention_heads=4, attention_head_dim=12, num_layers=2,
                          num_cross_attention_heads=4, cross_attention_head_dim=12, cross_attention_dim=48,
                          caption_channels=16, mlp_ratio=2.0, patch_size=(1, 2, 2))
    model = SanaVideoTransformer(cfg, rngs=nnx.Rngs(0))
    # the temporal conv starts at zero: give it weights so the halo exchange matters
    model.blocks.ff.conv_temp[...] = jax.random.normal(jax.random.key(1), model.blocks.ff.conv_temp.shape) * 0.05
    return model


def inputs(batch=2, frames=8):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, frames, 8, 12, 4)).astype(np.float32)
    text = rng.standard_normal((batch, 6, 16)).astype(np.float32)
    mask = np.ones((batch, 6), np.int32)
    mask[0, 4:] = 0
    return x, text, np.array([30.0, 700.0][:batch], np.float32), mask


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def all_gathers(hlo: str) -> list[str]:
    return [line.strip() for line in hlo.splitlines() if "all-gather" in line and "=" in line]


def case_dit(spec: str) -> dict:
    model = tiny_dit()
    x, text, t, mask = inputs()
    want = np.asarray(model(x, text, t, mask))
    mesh = make_mesh(spec)
    fwd, params = sharded_forward(model, mesh)
    got = fwd(params, x, text, t, mask)
    hlo = fwd.lower(params, x, text, t, mask).compile().as_text()
    tokens = x.shape[1] * (x.shape[2] // 2) * (x.shape[3] // 2)
    gathers = all_gathers(hlo)
    token_gathers = [g for g in gathers if str(tokens) in g.split("=")[0] or f",{x.shape[1]}," in g.split("=")[0]]
    return {"rel": rel(got, want), "all_gathers": len(gathers), "token_gathers": token_gathers[:3],
            "sharding": str(got.sharding.spec), "all_reduces": hlo.count("all-reduce("),
            "permutes": hlo.count("collective-permute(")}


if __name__ == "__main__":
    print(json.dumps({spec: case_dit(spec) for spec in sys.argv[1:]}))
