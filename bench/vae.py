"""Video VAE encode/decode: sana-jax vs diffusers, same weights and inputs, time and peak memory.

    python bench/vae.py                                   # small LTX-2 and Wan configs on CPU (committed)
    python bench/vae.py --family ltx2 --config full --frames 81 --height 704 --width 1280 --dtype bfloat16 \
        --tile 16                                         # the published-figure shape, on a GPU

Each measurement runs in a child process that loads the model from one diffusers folder (written once with random
weights) and times the operation. Peak memory is the child's peak RSS minus that of a child that only loads the
model (CPU), or the allocator's peak (GPU: ``torch.cuda.max_memory_allocated``, JAX ``peak_bytes_in_use``).
For JAX the compiled plan's temporary and output bytes (``memory_analysis``) are reported too: on CPU the RSS
delta is dominated by loading and compilation, which peak above the operation itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import device_description, write_result  # noqa: E402
from sana_jax.config import read_json  # noqa: E402

SMALL = {
    "ltx2": dict(latent_channels=32, block_out_channels=(32, 64, 128, 256), layers_per_block=(1, 1, 1, 1, 1),
                 decoder_block_out_channels=(32, 64, 128), decoder_layers_per_block=(1, 1, 1, 1),
                 timestep_conditioning=True, decoder_causal=False),
    "wan": dict(base_dim=32, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1),
}


def make_folder(family: str, config: str, folder: Path) -> None:
    import diffusers
    import torch

    torch.manual_seed(0)
    if family == "ltx2":
        kw = SMALL["ltx2"] if config == "small" else dict(timestep_conditioning=True, decoder_causal=False)
        model = diffusers.AutoencoderKLLTX2Video(**kw)
    else:
        model = diffusers.AutoencoderKLWan(**(SMALL["wan"] if config == "small" else {}))
    model.save_pretrained(folder, safe_serialization=True)


def shapes(family: str, args) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(video shape, latent shape), channels-last."""
    cfg = read_json(Path(args.folder) / "config.json")
    if family == "ltx2":
        t, s, c = 8, 32, cfg["latent_channels"]
    else:
        t, s, c = 4, 8, cfg["z_dim"]
    video = (1, args.frames, args.height, args.width, 3)
    latent = (1, 1 + (args.frames - 1) // t, args.height // s, args.width // s, c)
    return video, latent


def child(args) -> dict:
    """Load, run the operation ``repeats`` times, report the median time and peak memory."""
    video_shape, latent_shape = shapes(args.family, args)
    rng = np.random.default_rng(0)
    video = rng.uniform(-1, 1, video_shape).astype(np.float32)
    latents = rng.standard_normal(latent_shape).astype(np.float32)
    times, gpu_peak, xla = [], None, {}
    if args.impl == "jax":
        import jax
        import jax.numpy as jnp
        from flax import nnx

        import converters

        model = converters.load(args.folder, dtype=args.dtype)
        graphdef, state = nnx.split(model)
        kw = {} if args.tile is None else {"tile": args.tile * (32 if args.family == "ltx2" else 8) if args.op ==
                                           "encode" else args.tile}
        if args.op == "decode" and args.family == "wan":
            kw["chunked"] = True
        fn = jax.jit(lambda st, x: getattr(nnx.merge(graphdef, st), args.op)(x, **kw))
        x = jnp.asarray(video if args.op == "encode" else latents)
        for _ in range(args.repeats + 1 if args.op != "none" else 0):
            start = time.perf_counter()
            fn(state, x).block_until_ready()
            times.append(time.perf_counter() - start)
        stats = jax.devices()[0].memory_stats() or {}
        gpu_peak = stats.get("peak_bytes_in_use")
        if args.op != "none":
            plan = fn.lower(state, x).compile().memory_analysis()
            xla = {"xla_temp_bytes": int(plan.temp_size_in_bytes), "xla_output_bytes": int(plan.output_size_in_bytes)}
    else:
        import diffusers
        import torch

        cls = diffusers.AutoencoderKLLTX2Video if args.family == "ltx2" else diffusers.AutoencoderKLWan
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
        model = cls.from_pretrained(args.folder, torch_dtype=dtype).to(dev).eval()
        if args.tile is not None:
            model.enable_tiling()
        x = torch.from_numpy((video if args.op == "encode" else latents).transpose(0, 4, 1, 2, 3).copy())
        x = x.to(dev, dtype)
        for _ in range(args.repeats + 1 if args.op != "none" else 0):
            start = time.perf_counter()
            with torch.inference_mode():
                if args.op == "encode":
                    model.encode(x).latent_dist.mean
                else:
                    t = torch.zeros(1, device=dev, dtype=dtype) if args.family == "ltx2" else None
                    model.decode(x, t) if t is not None else model.decode(x)
            if dev == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        if dev == "cuda":
            gpu_peak = torch.cuda.max_memory_allocated()
    out = {"times_s": times[1:], "median_s": float(np.median(times[1:])) if times[1:] else None,
           "first_call_s": times[0] if times else None,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if gpu_peak is not None:
        out["gpu_peak_bytes"] = int(gpu_peak)
    return {**out, **xla}


def run_child(args, impl: str, op: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--op", op, "--family", args.family,
           "--folder", str(args.folder), "--frames", str(args.frames), "--height", str(args.height),
           "--width", str(args.width), "--dtype", args.dtype, "--repeats", str(args.repeats)]
    if args.tile is not None:
        cmd += ["--tile", str(args.tile)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise RuntimeError(f"{impl} {op} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=["ltx2", "wan", "both"], default="both")
    p.add_argument("--config", choices=["small", "full"], default="small")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--tile", type=int, default=None, help="latent pixels per decode tile (encode: ×compression)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=["jax", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--op", choices=["encode", "decode", "none"], help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    families = ["ltx2", "wan"] if args.family == "both" else [args.family]
    for family in families:
        args.family = family
        args.frames = args.frames or (17 if family == "ltx2" else 9)
        with tempfile.TemporaryDirectory() as tmp:
            args.folder = Path(tmp) / "vae"
            make_folder(family, args.config, args.folder)
            result = {"benchmark": "vae", "family": family, "config": args.config, "dtype": args.dtype,
                      "video_shape_bthwc": list(shapes(family, args)[0]),
                      "latent_shape_bthwc": list(shapes(family, args)[1]), "tile": args.tile,
                      "device": device_description(), "method": __doc__.split("\n\n")[-1].strip()}
            for impl in ("jax", "torch"):
                base = run_child(args, impl, "none")
                for op in ("encode", "decode"):
                    r = run_child(args, impl, op)
                    r["peak_rss_delta_bytes"] = r["peak_rss_bytes"] - base["peak_rss_bytes"]
                    result[f"{impl}_{op}"] = r
                    plan = f", XLA temp {r['xla_temp_bytes'] / 2**20:.1f} MiB" if "xla_temp_bytes" in r else ""
                    print(f"{family} {impl:5s} {op}: {r['median_s'] * 1e3:8.1f} ms, "
                          f"peak +{r['peak_rss_delta_bytes'] / 2**20:7.1f} MiB RSS{plan}", flush=True)
            for op in ("encode", "decode"):
                ratio = result[f"torch_{op}"]["median_s"] / result[f"jax_{op}"]["median_s"]
                result[f"{op}_speedup_vs_diffusers"] = ratio
            name = f"vae_{family}_{args.config}_{args.dtype}_{result['device']['jax_backend']}"
            print("→", write_result(name, result))
        args.frames = None
    return 0


if __name__ == "__main__":
    sys.exit(main())
