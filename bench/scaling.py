"""Communication per strategy for the SANA-Video DiT forward at the real 720p shape, from the compiled HLO on 8
(fake CPU) devices, and a projected 8×H100 speed-up.

    python bench/scaling.py            # 2B config, 720p latents 16×22×40 (121 frames), batch 2 (CFG), bf16

81 frames give 11 latent frames, which do not split by whole frames over 4 or 8 devices (the pipeline refuses
that with a clear error); 121 frames (16 latent frames) are used so every strategy runs the same shape.

Nothing is allocated: the model is ``eval_shape``d and the forward is lowered and compiled from abstract shapes.
Bytes are the output sizes of every collective in the per-device HLO (an all-reduce moves ~2× its size in a ring;
the projection accounts for that). Projection assumptions (stated in the JSON): H100 SXM bf16 dense peak 989
TFLOP/s at 50% MFU for the model FLOPs (3.69 GFLOP/token; docs/benchmarks.md), NVLink 450 GB/s per direction per
GPU, and no overlap of communication with compute (a pessimistic bound).

    python bench/scaling.py --refiner  # LTX-2 refiner (19 B, both streams) at 2K: 11×44×80 latents, bf16

compares the refiner's video self-attention strategies on 8 devices: Ulysses (``sana_jax.parallel.ulysses``:
all-to-alls) and XLA's own partitioning of tokens-sharded attention (all-gathers of K and V), on ``context=8`` and
``tensor=2,context=4``; the same abstract compile, collective bytes per forward.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from bench.common import device_description, write_result  # noqa: E402
from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer  # noqa: E402
from sana_jax.parallel import make_mesh  # noqa: E402
from sana_jax.parallel.rules import param_shardings  # noqa: E402

STRATEGIES = {"data=2,context=4": "CFG halves over data, frames over context",
              "context=8": "frames over 8 devices",
              "tensor=2,context=4": "heads/MLP over 2, frames over 4",
              "data=2,tensor=4": "CFG over data, heads/MLP over 4 (no context parallelism)"}
DTYPE_BYTES = {"bf16": 2, "f32": 4, "s32": 4, "f16": 2, "u32": 4, "pred": 1, "s64": 8}
COLLECTIVE = re.compile(r"= (.*?) (all-reduce|all-gather|collective-permute|all-to-all|reduce-scatter)(-start)?\(")
ARRAY = re.compile(r"([a-z0-9]+)\[([0-9,]*)\]")
FLOPS_PER_TOKEN = 3.69e9
PEAK, MFU, LINK = 989e12, 0.5, 450e9


def collectives(hlo: str, body_scale: int = 1) -> dict:
    """Count and result bytes of every collective in an HLO text; a tuple result (XLA's CPU all-to-all returns one
    array per peer) counts all its arrays, an async ``-start`` (input, output) tuple its output. Collectives of the
    scanned block body (``while/body`` in their metadata) count ``body_scale`` times."""
    out: dict[str, dict] = {}
    for line in hlo.splitlines():
        m = COLLECTIVE.search(line)
        if m is None:
            continue
        result, op, start = m.groups()
        arrays = ARRAY.findall(result)
        if start and arrays:
            arrays = arrays[-1:]
        size = 0
        for dtype, dims in arrays:
            n = 1
            for d in filter(None, dims.split(",")):
                n *= int(d)
            size += n * DTYPE_BYTES.get(dtype, 4)
        times = body_scale if "while/body" in line else 1
        entry = out.setdefault(op, {"count": 0, "bytes": 0})
        entry["count"] += times
        entry["bytes"] += size * times
    return out


def refiner() -> int:
    """The LTX-2 refiner's collectives per forward at 2K on 8 devices, Ulysses vs XLA-partitioned attention."""
    from sana_jax.models.ltx2_transformer import LTX2Transformer, LTX2TransformerConfig, audio_num_frames
    from sana_jax.parallel import ulysses

    cfg = LTX2TransformerConfig.preset("ltx-2.0")
    abstract = nnx.eval_shape(lambda: LTX2Transformer(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
                                                      rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    video, text_len = (1, 11, 44, 80, 128), 1024  # 81 frames at 1408×2560 (×2 upsampled 720p)
    audio_len = audio_num_frames(81, 16.0, cfg)
    tokens, layers = 11 * 44 * 80, cfg.num_layers
    results = {}
    default_fn = ulysses.self_attention_fn
    for spec in ("context=8", "tensor=2,context=4"):
        mesh = make_mesh(spec)
        pshard = param_shardings(state, mesh)
        rep = NamedSharding(mesh, P())
        args = (jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s), state, pshard),
                jax.ShapeDtypeStruct(video, jnp.bfloat16, sharding=rep),
                jax.ShapeDtypeStruct((1, audio_len, 128), jnp.bfloat16, sharding=rep),
                jax.ShapeDtypeStruct((1, text_len, cfg.caption_channels), jnp.bfloat16, sharding=rep),
                jax.ShapeDtypeStruct((1,), jnp.float32, sharding=rep))

        for strategy in ("ulysses", "xla"):
            def forward(params, v, a, t, s, mesh=mesh):  # a new function per strategy: jit caches traces by it
                return nnx.merge(graphdef, params)(v, a, t, t, s, fps=16.0, mesh=mesh)

            ulysses.self_attention_fn = default_fn if strategy == "ulysses" else (lambda _mesh, _heads: None)
            try:
                hlo = jax.jit(forward).lower(*args).compile().as_text()
            finally:
                ulysses.self_attention_fn = default_fn
            coll = collectives(hlo, body_scale=layers)
            moved = sum(v["bytes"] * (2 if op == "all-reduce" else 1) for op, v in coll.items())
            results[f"{spec} {strategy}"] = {"collectives_per_forward": coll, "bytes_per_device_per_forward": moved}
            print(f"{spec:20s} {strategy:8s} {moved / 2**30:8.2f} GiB/device/forward", flush=True)
    result = {"benchmark": "scaling_refiner", "device": device_description(),
              "config": f"LTX-2.0 19 B (video+audio), video 11×44×80 = {tokens} tokens (81 frames at 1408×2560), "
                        f"audio {audio_len}, text {text_len}, batch 1, bf16",
              "note": "bytes: per-device HLO collective result sizes, those in the scanned block × layers, all-reduce "
                      "×2 (ring), from an abstract compile on 8 fake CPU devices. XLA:CPU computes bf16 in f32, so "
                      "the activations cross as f32 here: on GPU (bf16) the bytes are about half. Ulysses: one "
                      "all-to-all of the stacked q/k/v and one of the output per layer; xla: an all-gather of K and "
                      "of V with the full token sequence per layer. The tensor axis adds XLA's own tensor-parallel "
                      "collectives (all-gathers of the hidden activations, all-reduces) to both.",
              "strategies": results}
    print("→", write_result("scaling_refiner_2k_8dev", result))
    return 0


def main() -> int:
    cfg = SanaVideoConfig.preset("720p")
    abstract = nnx.eval_shape(lambda: SanaVideoTransformer(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
                                                           rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    shape = (2, 16, 22, 40, 128)  # CFG batch of 2, 121 frames at 704×1280
    tokens = 16 * 22 * 40
    layers = cfg.num_layers
    results = {}
    for spec, what in STRATEGIES.items():
        mesh = make_mesh(spec)
        pshard = param_shardings(state, mesh)
        lat = NamedSharding(mesh, P("data", "context"))
        batch = NamedSharding(mesh, P("data"))

        def forward(params, x, text, t, mask):
            return nnx.merge(graphdef, params)(x, text, t, mask)

        args = (jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s), state, pshard),
                jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=lat),
                jax.ShapeDtypeStruct((2, 300, 2304), jnp.bfloat16, sharding=batch),
                jax.ShapeDtypeStruct((2,), jnp.float32, sharding=batch),
                jax.ShapeDtypeStruct((2, 300), jnp.int32, sharding=batch))
        hlo = jax.jit(forward, out_shardings=lat).lower(*args).compile().as_text()
        coll = collectives(hlo)
        # collectives inside the scanned block body run once per layer
        per_step = sum(v["bytes"] for v in coll.values())
        body_scale = layers if "while" in hlo else 1
        moved = sum(v["bytes"] * (2 if op == "all-reduce" else 1) for op, v in coll.items()) * body_scale
        flops = FLOPS_PER_TOKEN * tokens * 2
        t1 = flops / (PEAK * MFU)
        t8 = flops / (8 * PEAK * MFU) + moved / LINK
        results[spec] = {"strategy": what, "collectives_in_hlo": coll, "bytes_per_device_per_forward": moved,
                         "bytes_in_hlo_text": per_step, "projected_speedup_8xH100": t1 / t8,
                         "projected_forward_ms_8xH100": t8 * 1e3, "single_gpu_forward_ms": t1 * 1e3}
        print(f"{spec:22s} {moved / 2**20:9.1f} MiB/device/forward  ×{t1 / t8:.2f} projected", flush=True)
    result = {"benchmark": "scaling", "device": device_description(),
              "config": "720p 2B, 16×22×40 latents (121 frames: the 11 latent frames of 81 do not split "
              "over 4 or 8 devices), CFG 2",
              "assumptions": {"peak_bf16_tflops": PEAK / 1e12, "mfu": MFU, "link_GBps": LINK / 1e9,
                              "overlap": "none (pessimistic)", "flops_per_token": FLOPS_PER_TOKEN,
                              "collectives_in_scan_body": f"×{layers} layers"},
              "strategies": results}
    print("→", write_result("scaling_dit_720p_8dev", result))
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refiner", action="store_true", help="compare the LTX-2 refiner's attention strategies "
                        "instead of the SANA-Video DiT's meshes")
    sys.exit(refiner() if parser.parse_args().refiner else main())
