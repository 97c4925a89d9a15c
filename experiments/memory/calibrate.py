"""Is the memory estimate of ``sana_jax.pipelines.memory`` right? Estimate against measurement, on this machine.

    python experiments/memory/calibrate.py            # real runs of the embedded default model (a few minutes)
    python experiments/memory/calibrate.py --xla      # also XLA's compiled plans of the released configs

* ``runs``: ``SanaVideoPipeline`` with the embedded default model (64×64×9 up to 512×512×33), each in a child
  process: the estimate ``SanaVideoPipeline.check`` makes, against the child's peak resident memory (``ru_maxrss``)
  less its resident memory when the check ran (what the check compares with the memory available then). Two
  denoising steps: the peak does not depend on their number.
* ``decodes``: the default model's VAE decode and uint8 conversion alone (a child per size), against the estimate's
  decode and conversion phases.
* ``xla`` (``--xla``): the temporary + output bytes of XLA's compiled plan (``memory_analysis``) of the DiT forward
  and of ``decode_for_pipeline`` for the released configs, with abstract weights (nothing is allocated), against the
  estimate's per-token and per-pixel-frame terms. This is where the coefficients in ``memory.py`` come from.

Writes ``results/memory_calibration_<backend>.json`` (``--name``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import device_description, write_result  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = ((64, 64, 9), (256, 256, 33), (256, 256, 129), (512, 512, 33))  # height, width, frames
DECODES = ((33, 32, 32), (129, 32, 32), (33, 64, 64))  # latent frames, height, width
DIT_PLANS = (("default", "float32", (2, 33, 32, 32)), ("480p", "float32", (2, 9, 64, 64)),
             ("480p", "bfloat16", (2, 9, 64, 64)))
VAE_PLANS = (("wan", (2, 32, 32), None), ("wan", (2, 64, 64), 16), ("ltx2", (9, 16, 16), None),
             ("ltx2", (9, 16, 16), 8), ("dcae", (10, 16, 16), None), ("dcae", (20, 8, 8), None),
             ("patch", (33, 32, 32), None))


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_run(height: int, width: int, frames: int) -> dict:
    from sana_jax.demo import default_model_path
    from sana_jax.pipelines import SanaVideoPipeline
    from sana_jax.pipelines.components import PipelineFolder
    from sana_jax.pipelines.memory import ModelSizes, estimate_generation

    folder = PipelineFolder.open(default_model_path())
    req = SanaVideoPipeline.check(folder, height=height, width=width, num_frames=frames, num_inference_steps=2)
    est = estimate_generation(ModelSizes.of_folder(folder), num_frames=frames, height=height, width=width,
                              guidance_scale=req.guidance_scale, platform="cpu")
    at_check = rss()
    pipe = SanaVideoPipeline.from_pretrained(folder.root)
    pipe("a red circle moving left", height=height, width=width, num_frames=frames, num_inference_steps=2,
         progress=False)
    return {"rss_at_check": at_check, "peak_rss": peak_rss(), "estimate": est.peak, "what": est.what,
            "phases": dict(est.phases), "weights": est.weights}


def child_decode(frames: int, height: int, width: int) -> dict:
    import jax
    from flax import nnx

    import converters
    from sana_jax.demo import default_model_path
    from sana_jax.io.video import to_uint8
    from sana_jax.pipelines.components import PipelineFolder
    from sana_jax.pipelines.memory import ModelSizes, decode_bytes, uint8_bytes

    folder = PipelineFolder.open(default_model_path())
    sizes = ModelSizes.of_folder(folder)
    vae = converters.load(folder.component("vae"), dtype="float32")
    graph, params = nnx.split(vae)
    decode = jax.jit(lambda p, z: nnx.merge(graph, p).decode_for_pipeline(z))
    z = jax.random.normal(jax.random.key(0), (1, frames, height, width, sizes.vae.latent_channels))
    video_frames = 1 + (frames - 1) * sizes.vae.temporal_compression
    s = sizes.vae.spatial_compression
    z.block_until_ready()
    at_start = rss()
    to_uint8(decode(params, z))
    work = decode_bytes(sizes, (1, frames, height, width), video_frames, "float32", tile=None, platform="cpu")
    convert = uint8_bytes(1, video_frames, height * s, width * s)
    return {"rss_at_start": at_start, "peak_rss": peak_rss(), "decode_estimate": work, "uint8_estimate": convert,
            "estimate": max(work, convert) + 4 * z.size}


def in_child(kind: str, *args: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, *map(str, args)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def xla_dit(name: str, dtype: str, shape: tuple[int, ...]) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sana_jax.config import read_json
    from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer
    from sana_jax.pipelines.memory import cpu_upcast, dit_token_bytes, dit_tokens

    if name == "default":
        cfg, length = SanaVideoConfig.from_diffusers(read_json(Path("sana_jax/default_model/transformer/config.json")),
                                                     "default"), 12
    else:
        cfg, length = SanaVideoConfig.preset(name), 300
    dt = jnp.dtype(dtype)
    model = nnx.eval_shape(lambda: SanaVideoTransformer(cfg, dtype=dt, param_dtype=dt, rngs=nnx.Rngs(0)))
    graph, state = nnx.split(model)
    spec = jax.ShapeDtypeStruct
    b = shape[0]

    def forward(p, x, text, t, mask):
        return nnx.merge(graph, p)(x.astype(dt), text, t, mask)

    plan = jax.jit(forward).lower(state, spec((*shape, cfg.in_channels), jnp.float32),
                                  spec((b, length, cfg.caption_channels), jnp.float32), spec((b,), jnp.float32),
                                  spec((b, length), jnp.float32)).compile().memory_analysis()
    tokens = dit_tokens(cfg, shape)
    params = sum(x.size for x in jax.tree.leaves(state))
    return {"config": name, "dtype": dtype, "latent_shape": shape, "tokens": tokens,
            "xla_temp_bytes": plan.temp_size_in_bytes,
            # XLA:CPU's plan holds a float32 copy of bf16 weights too (the estimate's cpu_upcast term)
            "estimate_bytes": tokens * dit_token_bytes(cfg, dtype, kernel=False) + cpu_upcast(params, dtype, "cpu")}


def xla_vae(family: str, latent: tuple[int, int, int], tile: int | None) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sana_jax.config import read_json
    from sana_jax.pipelines.memory import ModelSizes, decode_bytes
    from sana_jax.vae import DCAEVConfig, DCAEVideo, LTX2VAE, LTX2VAEConfig, WanVAE, WanVAEConfig, dcae_v, ltx2, wan
    from sana_jax.vae.patch import PatchVAE, PatchVAEConfig

    cls, cfg, name = {
        "wan": (WanVAE, WanVAEConfig(), wan.DIFFUSERS_CLASS), "ltx2": (LTX2VAE, LTX2VAEConfig(), ltx2.DIFFUSERS_CLASS),
        "dcae": (DCAEVideo, DCAEVConfig(), dcae_v.CLASS_NAME),
        "patch": (PatchVAE, PatchVAEConfig.from_diffusers(read_json(Path("sana_jax/default_model/vae/config.json")),
                                                          "patch"), "SanaJaxPatchVAE")}[family]
    model = nnx.eval_shape(lambda: cls(cfg, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0)))
    graph, state = nnx.split(model)
    params = sum(x.size for x in jax.tree.leaves(state))
    channels = getattr(cfg, "z_dim", None) or cfg.latent_channels
    t, h, w = latent
    plan = jax.jit(lambda p, z: nnx.merge(graph, p).decode_for_pipeline(z, tile=tile)).lower(
        state, jax.ShapeDtypeStruct((1, t, h, w, channels), jnp.float32)).compile().memory_analysis()
    frames = t * cfg.temporal_compression if family == "dcae" else 1 + (t - 1) * cfg.temporal_compression
    sizes = ModelSizes(None, name, cfg, {"vae": params})
    return {"family": family, "latent_thw": latent, "tile": tile, "frames": frames,
            "xla_temp_plus_output_bytes": plan.temp_size_in_bytes + plan.output_size_in_bytes,
            "estimate_bytes": decode_bytes(sizes, (1, t, h, w), frames, "float32", tile=tile, platform="cpu"),
            "estimate_gpu_bytes": decode_bytes(sizes, (1, t, h, w), frames, "float32", tile=tile, platform="gpu")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--xla", action="store_true", help="also XLA's plans of the released configs (~15 min)")
    parser.add_argument("--name", default=None, help="result name (default memory_calibration_<backend>)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *numbers = args.child
        print(json.dumps((child_run if kind == "run" else child_decode)(*map(int, numbers))))
        return
    device = device_description()
    result = {"device": device, "runs": [], "decodes": [], "xla": {"dit": [], "vae": []}}
    for height, width, frames in RUNS:
        r = in_child("run", height, width, frames)
        r.update(height=height, width=width, frames=frames, measured=r["peak_rss"] - r["rss_at_check"])
        result["runs"].append(r)
        print(f"run {width}×{height}×{frames}: estimate {r['estimate'] / 2**20:.0f} MiB ({r['what']}), measured "
              f"{r['measured'] / 2**20:.0f} MiB", flush=True)
    for frames, height, width in DECODES:
        r = in_child("decode", frames, height, width)
        r.update(latent_thw=(frames, height, width), measured=r["peak_rss"] - r["rss_at_start"])
        result["decodes"].append(r)
        print(f"decode {frames}×{height}×{width}: estimate {r['estimate'] / 2**20:.0f} MiB, measured "
              f"{r['measured'] / 2**20:.0f} MiB", flush=True)
    if args.xla:
        for plan in DIT_PLANS:
            r = xla_dit(*plan)
            result["xla"]["dit"].append(r)
            print(f"DiT {plan}: XLA {r['xla_temp_bytes'] / 2**20:.0f} MiB, estimate {r['estimate_bytes'] / 2**20:.0f}",
                  flush=True)
        for plan in VAE_PLANS:
            r = xla_vae(*plan)
            result["xla"]["vae"].append(r)
            print(f"VAE {plan}: XLA {r['xla_temp_plus_output_bytes'] / 2**20:.0f} MiB, estimate "
                  f"{r['estimate_bytes'] / 2**20:.0f} (GPU {r['estimate_gpu_bytes'] / 2**20:.0f})", flush=True)
    name = args.name or f"memory_calibration_{device['jax_backend']}"
    print(write_result(name, result, RESULTS))


if __name__ == "__main__":
    main()
