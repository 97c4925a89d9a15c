"""Run in its own process with 8 fake CPU devices (tests/test_parallel.py starts it): sharded == unsharded."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

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


@functools.cache
def _vae_setup():
    """A tiny LTX-2 VAE and its one-device decode (computed once for all meshes). One latent pixel: the halos
    under test are temporal; 8 latent frames so that ``context=8`` gets one each."""
    from sana_jax.vae.ltx2 import LTX2VAE, LTX2VAEConfig

    cfg = LTX2VAEConfig(latent_channels=8, block_out_channels=(16, 32, 64, 128), layers_per_block=(1, 1, 1, 1, 1),
                        decoder_block_out_channels=(16, 32, 64), decoder_layers_per_block=(1, 1, 1, 1))
    graphdef, state = nnx.split(LTX2VAE(cfg, rngs=nnx.Rngs(0)))
    z = np.random.default_rng(3).standard_normal((2, 8, 1, 1, 8)).astype(np.float32)
    fn = jax.jit(lambda st, zz: nnx.merge(graphdef, st).decode(zz, timestep=0.05))
    return graphdef, state, z, fn, fn(state, z)


def case_vae(spec: str) -> dict:
    """LTX-2 VAE decode with the latent frames split over ``context`` (temporal halos in every conv)."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from sana_jax.parallel.rules import shard_state

    graphdef, state, z, fn, want = _vae_setup()
    mesh = make_mesh(spec)
    got = fn(shard_state(state, mesh), jax.device_put(z, NamedSharding(mesh, P("data", "context"))))
    return {"rel": rel(got, want)}


class CountingSource(Mapping):
    """A checkpoint source that records what the loader reads: slices (``read_slice``) and whole tensors."""

    def __init__(self, source):
        self.source, self.slices, self.full = source, [], []

    def __getitem__(self, name):
        self.full.append(name)
        return self.source[name]

    def read_slice(self, name, index):
        block = self.source.read_slice(name, index)
        self.slices.append((name, block.nbytes, self.source[name].nbytes))
        return block

    def shape(self, name):
        return self.source.shape(name)

    def dtype(self, name):
        return self.source.dtype(name)

    def __iter__(self):
        return iter(self.source)

    def __len__(self):
        return len(self.source)


@functools.lru_cache(maxsize=1)
def _refiner_setup():
    """The tiny LTX-2 refiner (8 video heads, so that Ulysses splits them on every test mesh, 2 audio heads), saved
    as safetensors; its inputs; and the one-device forward and 3-step refine results."""
    import tempfile
    from pathlib import Path

    from converters import ltx2_transformer as conv
    from converters.safetensors_io import save_safetensors
    from sana_jax.models.ltx2_transformer import LTX2Transformer, LTX2TransformerConfig
    from sana_jax.pipelines.refine import refine_latents

    cfg = LTX2TransformerConfig(in_channels=8, out_channels=8, num_attention_heads=8, attention_head_dim=8,
                                cross_attention_dim=64, audio_in_channels=8, audio_out_channels=8,
                                audio_num_attention_heads=2, audio_attention_head_dim=8, audio_cross_attention_dim=16,
                                num_layers=2, caption_channels=24, rope_type="split")
    model = LTX2Transformer(cfg, rngs=nnx.Rngs(0))
    folder = Path(tempfile.mkdtemp(prefix="refiner_case_"))
    atexit.register(shutil.rmtree, folder, True)
    save_safetensors(conv.export(model), folder / "transformer.safetensors")
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(4)
    # 8×3×3 = 72 video tokens: a count no other tensor dimension has, so an all-gather of the sequence is visible
    ins = dict(video=rng.standard_normal((2, 8, 3, 3, 8)).astype(np.float32),
               audio=rng.standard_normal((2, 6, 8)).astype(np.float32),
               vtext=rng.standard_normal((2, 5, 24)).astype(np.float32),
               atext=rng.standard_normal((2, 5, 24)).astype(np.float32), sigma=np.array([0.9, 0.4], np.float32))
    text = (ins["vtext"], ins["atext"], np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32))
    fwd = jax.jit(lambda st, v, a, vt, at, s: nnx.merge(graphdef, st)(v, a, vt, at, s, fps=16.0))
    want = fwd(state, ins["video"], ins["audio"], ins["vtext"], ins["atext"], ins["sigma"])
    refined = refine_latents((graphdef, state), ins["video"], text, key=jax.random.key(0))
    return cfg, folder / "transformer.safetensors", state, ins, text, want, refined


def case_refiner(spec: str) -> dict:
    """The LTX-2 transformer (both streams) loaded shard by shard onto the mesh, run with video tokens over
    ``context`` (Ulysses self-attention) and heads/MLP over ``tensor``; and the 3-step refine stage on the mesh."""
    from converters import ltx2_transformer as conv
    from converters.loader import mesh_shardings
    from converters.nnx_state import flatten
    from converters.safetensors_io import open_safetensors
    from converters.tables import sharded_loading
    from sana_jax.pipelines.refine import refine_latents

    cfg, path, state, ins, text, want, refined = _refiner_setup()
    mesh = make_mesh(spec)
    # shard-aware loading: identical parameters, each placed as the rules say, only slices read
    source = CountingSource(open_safetensors(path))
    shardings = mesh_shardings(conv, cfg, mesh)
    with sharded_loading(shardings):
        loaded = conv.load(source, cfg, where=str(path), dtype="float32")
    graphdef, params = nnx.split(loaded)
    flat_ref, flat = flatten(nnx.to_pure_dict(state)), flatten(nnx.to_pure_dict(params))
    load_diff = max(float(np.abs(np.asarray(flat[k]) - np.asarray(v)).max()) for k, v in flat_ref.items())
    misplaced = [k for k, v in flat.items() if not v.sharding.is_equivalent_to(shardings[k], v.ndim)]
    split = [(name, got / full) for name, got, full in source.slices if got < full]
    # the sharded forward
    fwd = jax.jit(lambda st, v, a, vt, at, s: nnx.merge(graphdef, st)(v, a, vt, at, s, fps=16.0, mesh=mesh))
    video = jax.device_put(ins["video"], NamedSharding(mesh, P("data", "context")))
    args = (params, video, ins["audio"], ins["vtext"], ins["atext"], ins["sigma"])
    got = fwd(*args)
    hlo = fwd.lower(*args).compile().as_text()
    tokens = int(np.prod(ins["video"].shape[1:4]))
    token_gathers = [line.strip()[:200] for line in hlo.splitlines()
                     if {tokens, 2 * tokens} & set(_gather_dims(line))]  # (B, N, …) or (B·N, …)
    got_refined = refine_latents((graphdef, params), ins["video"], text, key=jax.random.key(0), mesh=mesh)
    return {"rel_video": rel(got[0], want[0]), "rel_audio": rel(got[1], want[1]),
            "rel_refine": rel(got_refined, refined), "load_max_abs_diff": load_diff, "misplaced": misplaced,
            "full_reads": len(source.full), "bytes_read": sum(b for _, b, _ in source.slices),
            "bytes_total": sum(source.source[k].nbytes for k in source.source),
            "split_reads": len(split), "max_split_fraction": max((f for _, f in split), default=1.0),
            "ulysses_all_to_alls": sum(1 for line in hlo.splitlines()
                                       if " all-to-all(" in line and "shard_map/all_to_all" in line),
            "token_gathers": token_gathers[:3]}


def _gather_dims(line: str) -> list[int]:
    """The result dimensions of an HLO all-gather instruction (``%x = f32[2,48,8]{…} all-gather(…)``), else []."""
    m = re.search(r"= (.*?) all-gather(?:-start)?\(", line)
    return [int(d) for dims in re.findall(r"\[([0-9,]*)\]", m.group(1)) for d in dims.split(",") if d] if m else []


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
    """``sana-jax generate --refine LTX2 --mesh SPEC`` on tiny folders writes the video (returns 0 when it did)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        return _two_stage_cli(Path(tmp), spec)


def _two_stage_cli(tmp, spec: str) -> dict:
    """``generate --refine LTX2 --mesh SPEC`` on tiny folders: stage 1's 2 latent frames do not split over
    context=4, so it runs on one device (with a note); the refiner loads onto the mesh and refines there (its 2
    video heads do not divide by 8: the XLA-partitioned attention fallback, with a warning)."""
    import warnings

    from sana_jax import cli
    from sana_jax.io.video import read_video
    from tests.pipeline_refs import build
    from tests.test_two_stage import build_ltx2

    build(tmp / "sana720", "ltx2")
    build_ltx2(tmp / "ltx2")
    out = tmp / "two_stage.mp4"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli.main(["generate", "a cat surfing", "--model", str(tmp / "sana720"), "--height", "64", "--width",
                       "96", "--frames", "9", "--steps", "2", "--guidance", "3", "--refine", str(tmp / "ltx2"),
                       "--mesh", spec, "--out", str(out), "-q"])
    frames = read_video(out).shape if out.exists() else ()
    return {"refine_rc": rc, "refine_frames_ok": 0.0 if frames == (9, 64, 96, 3) else 1.0}


CASES = {"cli": case_cli, "pipeline": case_pipeline, "dit": case_dit, "sampling": case_sampling,
         "vae": case_vae, "refiner": case_refiner}

if __name__ == "__main__":
    kind, specs = sys.argv[1], sys.argv[2:]
    print(json.dumps({spec: CASES[kind](spec) for spec in specs}))
