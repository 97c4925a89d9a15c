"""DC-AE-V encode/decode: time and XLA's planned memory, one-shot vs scanned chunk-causal forms.

    python bench/dcae_v.py                                   # small CPU config (committed result)
    python bench/dcae_v.py --config full --dtype bfloat16 --frames 80 --height 704 --width 1280   # a GPU

There is no PyTorch reference to time against: DC-Gen's DC-AE-V code is not installable (its parity is checked
against a stored fixture in tests/test_dcae_v.py), so only sana-jax is timed. Weights are random (the released
architecture at full size, or a narrow copy of it). For each form the compiled plan's temporary and output bytes
(``jit(f).lower(...).compile().memory_analysis()``) are reported, also at twice the clip length: the scanned
form's working memory does not grow with the clip, the one-shot form's does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_description, time_calls, write_result  # noqa: E402

SMALL = dict(latent_channels=32, chunk_frames=8, width_list=(16, 32, 64, 64, 128, 128, 128),
             depth_list=(0, 1, 2, 1, 1, 1, 1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["small", "full"], default="small")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--name", default=None, help="result file name (default: derived from the config)")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sana_jax.vae.dcae_v import DCAEVConfig, DCAEVideo

    cfg = DCAEVConfig(**SMALL) if args.config == "small" else DCAEVConfig.preset("dc-ae-v-f32t4c32-1.0")
    dtype = jnp.dtype(args.dtype)
    model = nnx.jit(lambda: DCAEVideo(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))()
    graphdef, state = nnx.split(model)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))
    sc, tc = cfg.spatial_compression, cfg.temporal_compression
    video_shape = (1, args.frames, args.height, args.width, cfg.in_channels)
    latent_shape = (1, args.frames // tc, args.height // sc, args.width // sc, cfg.latent_channels)
    rng = np.random.default_rng(0)
    inputs = {"encode": jnp.asarray(rng.uniform(-1, 1, video_shape), dtype),
              "decode": jnp.asarray(rng.standard_normal(latent_shape), dtype)}

    def plan(fn, x) -> dict:
        m = fn.lower(state, x).compile().memory_analysis()
        return {"xla_temp_bytes": int(m.temp_size_in_bytes), "xla_output_bytes": int(m.output_size_in_bytes)}

    result = {"benchmark": "dcae_v", "config": args.config, "model_config": cfg.to_diffusers(),
              "parameters": n_params, "dtype": args.dtype, "video_shape_bthwc": list(video_shape),
              "latent_shape_bthwc": list(latent_shape), "device": device_description(),
              "reference": "none: no installable PyTorch DC-AE-V to time against (parity: tests/test_dcae_v.py)",
              "method": __doc__.split("\n\n")[-1].strip()}
    for op in ("encode", "decode"):
        x = inputs[op]
        for chunked in (False, True):
            fn = jax.jit(lambda st, v, op=op, ch=chunked: getattr(nnx.merge(graphdef, st), op)(v, chunked=ch))
            stats = time_calls(lambda fn=fn, x=x: fn(state, x).block_until_ready(), repeats=args.repeats)
            stats.update(plan(fn, x))
            stats["xla_temp_bytes_at_2x_frames"] = plan(fn, jnp.concatenate([x, x], axis=1))["xla_temp_bytes"]
            key = f"{op}_{'scanned' if chunked else 'one_shot'}"
            result[key] = stats
            print(f"{key:16s} {stats['median_s'] * 1e3:8.1f} ms  XLA temp {stats['xla_temp_bytes'] / 2**20:8.1f} MiB "
                  f"(2× frames: {stats['xla_temp_bytes_at_2x_frames'] / 2**20:8.1f} MiB)", flush=True)
    name = args.name or f"dcae_v_{args.config}_{args.dtype}_{result['device']['jax_backend']}"
    print("→", write_result(name, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
