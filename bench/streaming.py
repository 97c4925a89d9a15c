"""Streaming long video (LongSANA): frames per second and time to first frame of ``StreamingPipeline.stream``.

    python bench/streaming.py                   # small CPU config (committed result)
    python bench/streaming.py --full            # 480p, full 2B DiT + Wan2.1 VAE, random weights, bf16 (GPU)

Random weights and random caption features (the text encoder runs once per prompt and is not part of the chunk
loop). Per configuration: a cold stream (compilation included), then ``--repeats`` warm streams — time to first
frame (prompt → first frames in the mp4), overall FPS, steady FPS (third chunk on) — and one ``profile`` stream
that waits for each stage to split a chunk into DiT (4 steps + the commit pass) and VAE decode. Published LongSANA:
27.5 FPS (961 frames in 35 s at 480p, H100); goal here: 60+.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_description, write_result  # noqa: E402


def build(full: bool, dtype: str, vae_dtype: str):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer
    from sana_jax.pipelines.streaming import StreamingPipeline
    from sana_jax.vae.wan import WanVAE, WanVAEConfig

    if full:
        cfg = SanaVideoConfig.preset("480p")
        vae_cfg = WanVAEConfig.preset("wan2.1")
        size = {"height": 480, "width": 832}
    else:
        cfg = SanaVideoConfig(num_attention_heads=4, attention_head_dim=56, num_cross_attention_heads=4,
                              cross_attention_head_dim=56, cross_attention_dim=224, num_layers=4, caption_channels=256,
                              mlp_ratio=3.0)
        vae_cfg = WanVAEConfig(base_dim=32, dim_mult=(1, 2, 4, 4), num_res_blocks=1)
        size = {"height": 128, "width": 192}
    rngs = nnx.Rngs(jax.random.key(0, impl="rbg"))  # rbg: fast initialisers
    dit = SanaVideoTransformer(cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype), rngs=rngs)
    vae = WanVAE(vae_cfg, dtype=jnp.dtype(vae_dtype), param_dtype=jnp.dtype(vae_dtype), rngs=rngs)
    text = jax.random.normal(jax.random.key(1), (1, 300, cfg.caption_channels), jnp.float32)
    mask = jnp.ones((1, 300), jnp.float32)
    return StreamingPipeline(dit, vae), (text, mask), size, cfg


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def stream_summary(cold, warm: list) -> dict:
    """``{"cold": ..., "warm": ...}`` of ``StreamResult``s: the cold stream's (compilation included) time to first
    frame, total time and FPS; the warm streams' medians of those and of the steady FPS (third chunk on), and the
    last warm stream's chunk latencies."""
    return {"cold": {"time_to_first_frame_s": cold.time_to_first_frame_s, "total_s": cold.total_s, "fps": cold.fps},
            "warm": {"time_to_first_frame_s": median([r.time_to_first_frame_s for r in warm]),
                     "fps": median([r.fps for r in warm]), "steady_fps": median([r.steady_fps for r in warm]),
                     "total_s": median([r.total_s for r in warm]), "repeats": len(warm),
                     "chunk_latency_s": [c.latency_s for c in warm[-1].chunks] if warm else []}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="480p, full 2B config (GPU)")
    p.add_argument("--dtype", default=None, help="DiT dtype (default: float32 small, bfloat16 full)")
    p.add_argument("--vae-dtype", default=None, help="VAE dtype (default: float32 small, bfloat16 full)")
    p.add_argument("--chunks", type=int, default=None, help="chunks per stream (default: 4 small, 6 full)")
    p.add_argument("--chunk-frames", type=int, default=10, help="latent frames per chunk (LongSANA: 10)")
    p.add_argument("--repeats", type=int, default=2, help="warm streams timed (>= 1)")
    p.add_argument("--no-write", action="store_true", help="do not encode the mp4 (generation + decode only)")
    p.add_argument("--name", default=None, help="result file name (default: derived from the config)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    dtype = args.dtype or ("bfloat16" if args.full else "float32")
    vae_dtype = args.vae_dtype or ("bfloat16" if args.full else "float32")
    chunks = args.chunks or (6 if args.full else 4)

    pipe, prompt, size, cfg = build(args.full, dtype, vae_dtype)
    kw = {"num_chunks": chunks, "chunk_frames": args.chunk_frames, **size, "progress": False}

    with tempfile.TemporaryDirectory() as tmp:
        def run(i, **extra):
            out = None if args.no_write else Path(tmp) / f"s{i}.mp4"
            return pipe.stream(prompt, out=out, seed=i, **kw, **extra)

        cold = run(0)
        warm = [run(i + 1) for i in range(args.repeats)]
        prof = run(99, profile=True)
    spec = None
    for chunk in pipe.iter_chunks(prompt, num_chunks=2, chunk_frames=args.chunk_frames, height=size["height"],
                                  width=size["width"]):
        spec = chunk.state_spec
    memory = pipe.chunk_step_memory(spec, latent_frames=args.chunk_frames, **size)

    steady_dit = median([c.dit_s for c in prof.chunks[1:]])
    steady_decode = median([c.decode_s for c in prof.chunks[1:]])
    frames_per_chunk = 4 * args.chunk_frames
    result = {
        "benchmark": "streaming", "config": "480p_full" if args.full else "small", "dtype": dtype,
        "vae_dtype": vae_dtype, **size, "chunk_latent_frames": args.chunk_frames, "chunks": chunks,
        "frames": cold.frames, "mp4_written": not args.no_write, "steps_per_chunk": 4, "forwards_per_chunk": 5,
        "dit_layers": cfg.num_layers, "dit_inner_dim": cfg.inner_dim, "device": device_description(),
        **stream_summary(cold, warm),
        "profile_per_chunk": {"dit_s": steady_dit, "decode_s": steady_decode,
                              "fps_if_serial": frames_per_chunk / (steady_dit + steady_decode),
                              "dit_only_fps": frames_per_chunk / steady_dit},
        "state_bytes": cold.state_bytes, "chunk_step_memory": memory,
        "reference": {"longsana_published_fps": 27.5, "goal_fps": 60},
    }
    name = args.name or f"streaming_{result['config']}_{dtype}_{result['device']['jax_backend']}"
    path = write_result(name, result)
    w = result["warm"]
    print(f"{result['config']}: {cold.frames} frames in {chunks} chunks; warm: first frame "
          f"{w['time_to_first_frame_s']:.2f} s, {w['fps']:.1f} FPS overall, "
          f"{w['steady_fps'] or float('nan'):.1f} FPS steady; cold first frame {cold.time_to_first_frame_s:.1f} s; "
          f"per chunk DiT {steady_dit:.3f} s + decode {steady_decode:.3f} s")
    print("→", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
