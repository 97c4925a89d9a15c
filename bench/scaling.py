"""Communication per strategy for the SANA-Video DiT forward at the real 720p shape, from the compiled HLO on 8
(fake CPU) devices, and a projected 8×H100 speed-up.

    python bench/scaling.py            # 2B config, 720p latents 16×22×40 (121 frames), batch 2 (CFG), bf16

81 frames give 11 latent frames, which do not split by whole frames over 4 or 8 devices (the pipeline refuses
that with a clear error); 121 frames (16 latent frames) are used so every strategy runs the same shape.

Nothing is allocated: the model is ``eval_shape``d and the forward is lowered and compiled from abstract shapes.
Bytes are the output sizes of every collective in the per-device HLO (an all-reduce moves ~2× its size in a ring;
the projection accounts for that). Projection assumptions (stated in the JSON): H100 SXM bf16 dense peak 989
TFLOP/s at 50% MFU for the model FLOPs of spec B (3.69 GFLOP/token), NVLink 450 GB/s per direction per GPU, and
no overlap of communication with compute (a pessimistic bound).
"""

from __future__ import annotations

import json
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
COLLECTIVE = re.compile(r"= ([a-z0-9]+)\[([0-9,]*)\][^=]*? (all-reduce|all-gather|collective-permute|all-to-all|"
                        r"reduce-scatter)(?:-start)?\(")
FLOPS_PER_TOKEN = 3.69e9
PEAK, MFU, LINK = 989e12, 0.5, 450e9


def collectives(hlo: str) -> dict:
    out: dict[str, dict] = {}
    for dtype, dims, op in COLLECTIVE.findall(hlo):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        entry = out.setdefault(op, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += n * DTYPE_BYTES.get(dtype, 4)
    return out


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
    result = {"benchmark": "scaling", "device": device_description(), "config": "720p 2B, 16×22×40 latents (121 frames: the 11 latent frames of 81 do not split over 4 or 8 devices), CFG 2",
              "assumptions": {"peak_bf16_tflops": PEAK / 1e12, "mfu": MFU, "link_GBps": LINK / 1e9,
                              "overlap": "none (pessimistic)", "flops_per_token": FLOPS_PER_TOKEN,
                              "collectives_in_scan_body": f"×{layers} layers"},
              "strategies": results}
    print("→", write_result("scaling_dit_720p_8dev", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
