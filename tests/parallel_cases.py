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


def case_sampling(spec: str) -> dict:
    """A 4-step DPM-solver++ loop with CFG: the [uncond; cond] batch goes over ``data``, frames over ``context``."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from sana_jax.parallel.rules import shard_state
    from sana_jax.sampling import dpm_flow_schedule, sample

    model = tiny_dit()
    x, text, _, mask = inputs(batch=1)
    graphdef, state = nnx.split(model)

    def model_fn(params, xx, t, cond):
        return nnx.merge(graphdef, params)(xx, cond["text"], t, cond["mask"])

    cond = {"text": text, "mask": mask}
    uncond = {"text": np.zeros_like(text), "mask": mask}
    kw = dict(schedule=dpm_flow_schedule(4, shift=8.0), cond=cond, uncond=uncond, guidance_scale=4.5)
    want = sample(model_fn, state, x, **kw)
    mesh = make_mesh(spec)
    with jax.sharding.use_mesh(mesh) if hasattr(jax.sharding, "use_mesh") else mesh:
        params = shard_state(state, mesh)
        xs = jax.device_put(x, NamedSharding(mesh, P(None, "context")))
        got = sample(model_fn, params, xs, **kw)
    return {"rel": rel(got, want)}


def case_vae(spec: str) -> dict:
    """LTX-2 VAE decode with the latent frames split over ``context`` (temporal halos in every conv)."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from sana_jax.parallel.rules import shard_state
    from sana_jax.vae.ltx2 import LTX2VAE, LTX2VAEConfig

    cfg = LTX2VAEConfig(latent_channels=8, block_out_channels=(16, 32, 64, 128), layers_per_block=(1, 1, 1, 1, 1),
                        decoder_block_out_channels=(16, 32, 64), decoder_layers_per_block=(1, 1, 1, 1))
    vae = LTX2VAE(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(vae)
    z = np.random.default_rng(3).standard_normal((2, 8, 2, 2, 8)).astype(np.float32)
    fn = jax.jit(lambda st, zz: nnx.merge(graphdef, st).decode(zz, timestep=0.05))
    want = fn(state, z)
    mesh = make_mesh(spec)
    got = fn(shard_state(state, mesh), jax.device_put(z, NamedSharding(mesh, P("data", "context"))))
    return {"rel": rel(got, want)}


def case_refiner(spec: str) -> dict:
    """The LTX-2 transformer (both streams) with video tokens over ``context`` and heads/MLP over ``tensor``."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from sana_jax.models.ltx2_transformer import LTX2Transformer, LTX2TransformerConfig
    from sana_jax.parallel.rules import param_shardings, shard_state

    cfg = LTX2TransformerConfig(in_channels=8, out_channels=8, num_attention_heads=4, attention_head_dim=16,
                                cross_attention_dim=64, audio_in_channels=8, audio_out_channels=8,
                                audio_num_attention_heads=2, audio_attention_head_dim=8, audio_cross_attention_dim=16,
                                num_layers=2, caption_channels=24, rope_type="split")
    model = LTX2Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(4)
    video = rng.standard_normal((2, 8, 2, 3, 8)).astype(np.float32)
    audio = rng.standard_normal((2, 6, 8)).astype(np.float32)
    vtext = rng.standard_normal((2, 5, 24)).astype(np.float32)
    atext = rng.standard_normal((2, 5, 24)).astype(np.float32)
    sigma = np.array([0.9, 0.4], np.float32)
    fn = jax.jit(lambda st, v, a, vt, at, s: nnx.merge(graphdef, st)(v, a, vt, at, s, fps=16.0))
    want = fn(state, video, audio, vtext, atext, sigma)
    mesh = make_mesh(spec)
    params = shard_state(state, mesh)
    assert param_shardings(state, mesh) is not None
    got = fn(params, jax.device_put(video, NamedSharding(mesh, P("data", "context"))), audio, vtext, atext, sigma)
    return {"rel_video": rel(got[0], want[0]), "rel_audio": rel(got[1], want[1])}


def case_pipeline(spec: str) -> dict:
    """SanaVideoPipeline(mesh=spec) on a tiny diffusers folder gives the single-device latents."""
    import tempfile
    from pathlib import Path

    from sana_jax.pipelines import SanaVideoPipeline
    from tests.pipeline_refs import build

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pipe"
        build(folder, "wan")
        kw = dict(height=32, width=64, num_frames=29, num_inference_steps=3, guidance_scale=4.5, seed=1,
                  progress=False, decode=False)
        want = SanaVideoPipeline.from_pretrained(folder)("a cat", **kw).latents
        got = SanaVideoPipeline.from_pretrained(folder, mesh=spec)("a cat", **kw).latents
    return {"rel": rel(got, want)}


def case_cli(spec: str) -> dict:
    """``sana-jax generate --mesh SPEC`` on a tiny folder writes the video (returns 0 when it did)."""
    import tempfile
    from pathlib import Path

    from sana_jax import cli
    from sana_jax.io.video import read_video
    from tests.pipeline_refs import build

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pipe"
        build(folder, "wan")
        out = Path(tmp) / "x.mp4"
        rc = cli.main(["generate", "a cat", "--model", str(folder), "--height", "32", "--width", "64", "--frames",
                       "29", "--steps", "2", "--mesh", spec, "--out", str(out), "-q"])
        frames = read_video(out).shape[0] if out.exists() else 0
    return {"rc": rc, "frames_ok": 0.0 if frames == 29 else 1.0}


CASES = {"cli": case_cli, "pipeline": case_pipeline, "dit": case_dit, "sampling": case_sampling, "vae": case_vae, "refiner": case_refiner}

if __name__ == "__main__":
    kind, specs = sys.argv[1], sys.argv[2:]
    print(json.dumps({spec: CASES[kind](spec) for spec in specs}))
