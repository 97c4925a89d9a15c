"""Streaming a Wan2.1 student (CausVid / Self-Forcing): time to first frame, frames per second, state size.

    python bench/wan_stream.py                  # small CPU config (committed result)
    python bench/wan_stream.py --preset 1.3B --dtype bfloat16 --height 480 --width 832   # Wan2.1-1.3B, GPU

Random weights; nothing is downloaded. ``small``: a base folder in the diffusers layout (a 4-layer, 512-wide DiT,
a tiny UMT5 and tokenizer, a Wan VAE of base width 16) and a Self-Forcing checkpoint (``{"generator",
"critic", "generator_ema"}``, ``model.``-prefixed original names) are written to a temporary folder and loaded with
``StreamingPipeline.from_wan`` (Self-Forcing's schedule: 4 steps + the commit pass, chunks of 3 latent frames).
``1.3B``: the released DiT and Wan2.1 VAE configurations built in memory (``jax.eval_shape`` + NumPy random arrays;
a 1.3 B folder and the 5.7 B UMT5-XXL would take minutes to write and read) and handed to ``StreamingPipeline`` as
``from_wan`` would. Prompts are random UMT5 features (512 tokens): the text encoder runs once per prompt, outside
the chunk loop.

Per cache configuration — the whole stream (the released behaviour: the KV cache holds every frame) and
``--window W --sink S`` (the last W chunks and the first S kept): a cold stream (compilation included; a fresh
pipeline per configuration), ``--repeats`` warm streams (time to first frame, overall FPS, steady FPS from the third
chunk, per-chunk latency and state bytes) and one ``profile`` stream that waits for each stage (DiT vs VAE decode per
chunk); XLA's memory plan of the compiled chunk step; the DiT state's size against the stream's length.
Self-Forcing (Table 1 of its paper) reports 17.0 FPS and 0.69 s latency, chunk-wise, on one H100 at 480×832, 81
frames. No PyTorch streaming reference is pip-installable (CausVid and Self-Forcing are research repositories), so
only sana-jax is timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_description, write_result  # noqa: E402
from bench.wan_forward import SMALL  # noqa: E402

SMALL_VAE = dict(base_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=1)
TINY_TEXT = dict(vocab_size=64, d_model=4096, d_kv=8, d_ff=48, num_layers=1, num_heads=4)
WORDS = ["▁a", "▁cat", "▁red", "▁circle", "▁moving", "▁left", "▁on", "▁the", "▁sea"]
CHUNK_FRAMES = 3  # the released students' latent frames per chunk
SELF_FORCING = {"fps": 17.0, "latency_s": 0.69, "device": "1× H100", "size": "480×832, 81 frames",
                "source": "Self-Forcing (Huang et al., 2025), Table 1, chunk-wise"}


def random_model(family, config, dtype, seed: int):
    """``converters.nnx_state.random_model``: random weights on the abstract shapes, no eager initialisers."""
    from converters.nnx_state import random_model as build

    return build(family, config, seed=seed, dtype=dtype)


def write_small_folder(root: Path, dit_cfg, vae_cfg, text_cfg) -> tuple[Path, Path]:
    """A diffusers-layout Wan2.1 base folder and a Self-Forcing checkpoint (random weights); returns both paths."""
    import torch
    import transformers

    import converters
    from converters import umt5, wan_transformer, wan_vae

    base = root / "Wan2.1-small"
    for name, model in (("transformer", random_model(wan_transformer, dit_cfg, "float32", 0)),
                        ("text_encoder", random_model(umt5, text_cfg, "float32", 1)),
                        ("vae", random_model(wan_vae, vae_cfg, "float32", 2))):
        converters.export_safetensors(model, base / name)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -1.0 - i / 10) for i, w in enumerate(WORDS)]
    transformers.T5TokenizerFast(vocab=vocab, extra_ids=0).save_pretrained(base / "tokenizer")
    (base / "scheduler").mkdir()
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction", "use_flow_sigmas": True,
        "flow_shift": 3.0, "num_train_timesteps": 1000}))
    (base / "model_index.json").write_text(json.dumps({
        "_class_name": "WanPipeline", "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}))
    student = wan_transformer.export_original(random_model(wan_transformer, dit_cfg, "float32", 5))
    state = {f"model.{k}": torch.from_numpy(np.array(v)) for k, v in student.items()}
    other = {k: v + 1 for k, v in state.items()}  # the EMA weights are the ones a Self-Forcing demo runs
    checkpoint = root / "self_forcing_dmd.pt"
    torch.save({"generator": other, "critic": other, "generator_ema": state}, checkpoint)
    return base, checkpoint


def state_nbytes(tree) -> int:
    import jax

    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["small", "1.3B"], default="small",
                   help="small: a 4-layer DiT through a written folder (CPU); 1.3B: Wan2.1-T2V-1.3B in memory (GPU)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the DiT's dtype")
    p.add_argument("--vae-dtype", choices=["float32", "bfloat16"], default=None, help="the VAE's (default: --dtype)")
    p.add_argument("--height", type=int, default=None, help="pixels (default 128 small, 480 1.3B)")
    p.add_argument("--width", type=int, default=None, help="pixels (default 192 small, 832 1.3B)")
    p.add_argument("--chunks", type=int, default=None,
                   help=f"chunks of {CHUNK_FRAMES} latent frames per stream (default 6 small, 7 = 81 frames 1.3B)")
    p.add_argument("--window", type=int, default=2, help="chunks kept in the rolling KV cache (second configuration)")
    p.add_argument("--sink", type=int, default=1, help="first chunks pinned in the rolling cache (attention sink)")
    p.add_argument("--configs", default="full,window",
                   help="cache configurations to run, comma-separated: full (every frame kept), window")
    p.add_argument("--repeats", type=int, default=2, help="warm streams timed per configuration (>= 1)")
    p.add_argument("--no-write", action="store_true", help="do not encode the mp4 (generation + decode only)")
    p.add_argument("--in-memory", action="store_true", help="small preset: build in memory, skip the folder")
    p.add_argument("--name", default=None, help="result file name (default: derived from the config)")
    args = p.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    full = args.preset == "1.3B"
    size = {"height": args.height or (480 if full else 128), "width": args.width or (832 if full else 192)}
    chunks = args.chunks or (7 if full else 6)
    if args.repeats < 1 or chunks < 2 or not configs or set(configs) - {"full", "window"}:
        p.error("--repeats must be >= 1, --chunks >= 2 (the per-chunk profile skips the first) and --configs a "
                "comma-separated subset of full,window")
    vae_dtype = args.vae_dtype or args.dtype

    import jax
    import jax.numpy as jnp

    from converters import wan_transformer, wan_vae
    from sana_jax.models.umt5 import UMT5Config
    from sana_jax.models.wan import WanConfig
    from sana_jax.pipelines import wan_components as wc
    from sana_jax.pipelines.streaming import StreamingPipeline
    from sana_jax.vae.wan import WanVAEConfig

    dit_cfg = WanConfig.preset("1.3B") if full else WanConfig(**SMALL)
    vae_cfg = WanVAEConfig.preset("wan2.1") if full else WanVAEConfig(**SMALL_VAE)
    rng = np.random.default_rng(0)
    text = np.zeros((1, 512, dit_cfg.text_dim), np.float32)
    text[:, :24] = rng.standard_normal((1, 24, dit_cfg.text_dim))
    prompt = (jnp.asarray(text), None)

    with tempfile.TemporaryDirectory() as tmp:
        if full or args.in_memory:
            dit = random_model(wan_transformer, dit_cfg, args.dtype, 5)
            dit.set_float32_conditioning(jnp.dtype(args.dtype) == jnp.float32)  # as from_wan: bf16 throughout
            vae = random_model(wan_vae, vae_cfg, vae_dtype, 2)

            def make():
                return StreamingPipeline(dit, vae, schedule=wc.student_schedule("self-forcing"),
                                         chunk_frames=CHUNK_FRAMES, size=tuple(size.values()))
            built = "in memory (random weights)"
        else:
            base, checkpoint = write_small_folder(Path(tmp), dit_cfg, vae_cfg, UMT5Config(**TINY_TEXT))

            def make():
                return StreamingPipeline.from_wan(base, checkpoint, dtype=args.dtype, vae_dtype=vae_dtype,
                                                  size=tuple(size.values()))
            built = "StreamingPipeline.from_wan(diffusers-layout folder, Self-Forcing .pt), random weights"

        runs = {}
        for config in configs:
            window, sink = (args.window, args.sink) if config == "window" else (None, 0)
            pipe = make()  # fresh executables: the cold stream compiles everything
            kw = {"num_chunks": chunks, **size, "window": window, "sink": sink, "progress": False}

            def run(i, **extra):
                out = None if args.no_write else Path(tmp) / f"{config}{i}.mp4"
                return pipe.stream(prompt, out=out, seed=i, **kw, **extra)

            cold = run(0)
            warm = [run(i + 1) for i in range(args.repeats)]
            prof = run(99, profile=True)
            h, w = (n // pipe.vae.compression[1] for n in size.values())

            def spec(n_chunks):  # the DiT stream state's shapes for a stream of n_chunks
                return jax.eval_shape(lambda t: pipe.dit.init_state(
                    t, height=h, width=w, window=window, sink=sink, frames=n_chunks * CHUNK_FRAMES,
                    chunk_frames=CHUNK_FRAMES), prompt[0].astype(pipe.transformer.dtype))

            memory = pipe.chunk_step_memory(spec(chunks), latent_frames=CHUNK_FRAMES, **size)

            def med(values):
                values = [v for v in values if v is not None]
                return statistics.median(values) if values else None

            dit_s, decode_s = med([c.dit_s for c in prof.chunks[1:]]), med([c.decode_s for c in prof.chunks[1:]])
            frames_per_chunk = 4 * CHUNK_FRAMES
            runs[config] = {
                "window_chunks": window, "sink_chunks": sink,
                "cache_latent_frames": spec(chunks).slot_frame.shape[0],
                "cold": {"time_to_first_frame_s": cold.time_to_first_frame_s, "total_s": cold.total_s,
                         "fps": cold.fps, "chunks_that_compiled": [c.index for c in cold.chunks if c.traced]},
                "warm": {"time_to_first_frame_s": med([r.time_to_first_frame_s for r in warm]),
                         "fps": med([r.fps for r in warm]), "steady_fps": med([r.steady_fps for r in warm]),
                         "total_s": med([r.total_s for r in warm]), "repeats": len(warm),
                         "chunk_latency_s": [c.latency_s for c in warm[-1].chunks],
                         "chunk_state_bytes": [c.state_bytes for c in warm[-1].chunks]},
                "profile_per_chunk": {"dit_s": dit_s, "decode_s": decode_s,
                                      "fps_if_serial": frames_per_chunk / (dit_s + decode_s),
                                      "dit_only_fps": frames_per_chunk / dit_s},
                "state_bytes": cold.state_bytes, "vae_decoder_state_bytes": pipe.decoder.state_bytes,
                "dit_state_bytes_by_stream_chunks": {n: state_nbytes(spec(n)) for n in (chunks, 2 * chunks,
                                                                                         4 * chunks)},
                "chunk_step_memory": memory,
            }
            frames = cold.frames
            print(f"{config}: {frames} frames in {chunks} chunks; warm: first frame "
                  f"{runs[config]['warm']['time_to_first_frame_s']:.2f} s, {runs[config]['warm']['fps']:.1f} FPS, "
                  f"{runs[config]['warm']['steady_fps'] or float('nan'):.1f} FPS steady; cold first frame "
                  f"{cold.time_to_first_frame_s:.1f} s; per chunk DiT {dit_s:.3f} s + decode {decode_s:.3f} s; "
                  f"state {cold.state_bytes / 2**20:.1f} MiB")

    result = {
        "benchmark": "wan_stream", "preset": args.preset, "dtype": args.dtype, "vae_dtype": vae_dtype, **size,
        "chunk_latent_frames": CHUNK_FRAMES, "chunks": chunks, "frames": frames, "mp4_written": not args.no_write,
        "built": built, "schedule": "self-forcing (t = 1000, 937.5, 833.3, 625, then the commit pass at t = 0)",
        "forwards_per_chunk": 5, "dit_config": dit_cfg.to_diffusers(), "vae_config": vae_cfg.to_diffusers(),
        "prompt": "random UMT5 features, 512 tokens (24 non-zero): text encoding is not timed",
        "device": device_description(), "configs": runs,
        "notes": "state_bytes: DiT state (KV cache, text K/V) + the VAE decoder's cache. Without a window the KV "
                 "cache is allocated for the whole stream when it starts: constant over its chunks, proportional "
                 "to its length (dit_state_bytes_by_stream_chunks); with a window it does not depend on the length.",
        "reference": {"self_forcing_published": SELF_FORCING,
                      "pytorch": "none timed: no PyTorch CausVid / Self-Forcing streaming implementation is "
                                 "pip-installable"},
    }
    name = args.name or f"wan_stream_{args.preset}_{args.dtype}_{result['device']['jax_backend']}"
    print("→", write_result(name, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
