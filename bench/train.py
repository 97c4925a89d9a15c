"""Training throughput: optimiser steps per second, samples per second, compiled memory and process peak memory.

    python bench/train.py                       # the embedded default DiT (CPU-sized), float32 and bf16+remat
    python bench/train.py --full --dtype bfloat16 --remat --batch-size 1   # GPU: the 2B DiT at 720p latent shapes

``--full`` builds the SANA-Video 2B transformer at the 720p preset (128 channels, patch 1) on latents
(B, 11, 22, 40, 128) — the adaptation recipe's shapes — with random weights (no checkpoint needed), and reports
MFU from the model FLOPs (6 × parameters × tokens, plus attention) against ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from bench.common import device_description, write_result  # noqa: E402
from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer  # noqa: E402
from sana_jax.training import LatentDataset, TrainConfig, Trainer  # noqa: E402


def random_dataset(latent_shape, text_len: int, text_dim: int, n: int = 64) -> LatentDataset:
    rng = np.random.default_rng(0)
    return LatentDataset(rng.standard_normal((n, *latent_shape), np.float32),
                         rng.standard_normal((4, text_len, text_dim), np.float32), np.ones((4, text_len), np.int32),
                         np.arange(n) % 4, np.zeros((1, text_len, text_dim), np.float32),
                         np.ones((1, text_len), np.int32))


def run(config: SanaVideoConfig, latent_shape, text_len: int, batch: int, dtype: str, remat: bool, steps: int) -> dict:
    model = SanaVideoTransformer(config, rngs=nnx.Rngs(0))
    data = random_dataset(latent_shape, text_len, config.caption_channels, n=max(64, batch * 2))
    trainer = Trainer(model, TrainConfig(batch_size=batch, compute_dtype=dtype, remat=remat, ema_decay=0.999,
                                         text_dropout=0.1))
    state = trainer.init_state()
    start = time.perf_counter()
    lowered = trainer._step.lower(state, trainer._place_batch(data.batch(0, batch)))
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    state, metrics = trainer.step(state, data.batch(0, batch))
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = trainer.step(state, data.batch(i + 1, batch))
    jax.block_until_ready(metrics)
    per_step = (time.perf_counter() - start) / steps
    params = sum(int(np.prod(v.shape)) for v in state["params"].values())
    t, h, w, _ = latent_shape
    p = config.patch_size
    tokens = batch * (t // p[0]) * (h // p[1]) * (w // p[2])
    # linear attention: per layer and token ≈ 4·D·d (state build + read) multiply-adds; ×3 for forward + backward
    attention = 3 * 2 * 4 * config.num_layers * tokens * config.inner_dim * config.attention_head_dim
    flops = 6 * params * tokens + attention
    return {"dtype": dtype, "remat": remat, "batch": batch, "latent_shape": list(latent_shape),
            "tokens_per_step": tokens, "parameters": params, "compile_s": compile_s, "step_s": per_step,
            "steps_per_s": 1 / per_step, "samples_per_s": batch / per_step, "model_tflop_per_step": flops / 1e12,
            "achieved_tflops": flops / per_step / 1e12,
            "compiled_temp_bytes": getattr(mem, "temp_size_in_bytes", None),
            "compiled_argument_bytes": getattr(mem, "argument_size_in_bytes", None),
            "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "final_loss": float(metrics["loss"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the 2B DiT at 720p latent shapes (GPU)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default: both (small)")
    ap.add_argument("--remat", action="store_true")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (H100 bf16 dense: 989)")
    args = ap.parse_args()
    if args.full:
        config, shape, text_len = SanaVideoConfig.preset("720p"), (11, 22, 40, 128), 300
        batch, variants = args.batch_size or 1, [(args.dtype or "bfloat16", args.remat)]
        name = f"train_2b_720p_{variants[0][0]}_{jax.devices()[0].platform}"
    else:
        from sana_jax.demo import models

        config, text_len = models.transformer_config(), models.MAX_SEQUENCE_LENGTH
        shape = (models.FRAMES, models.SIZE // 8, models.SIZE // 8, config.in_channels)
        batch = args.batch_size or 32
        variants = [(args.dtype, args.remat)] if args.dtype else [("float32", False), ("bfloat16", True)]
        name = f"train_small_{jax.devices()[0].platform}"
    results = []
    for dtype, remat in variants:
        r = run(config, shape, text_len, batch, dtype, remat, args.steps)
        if args.peak_tflops:
            r["mfu"] = r["achieved_tflops"] / args.peak_tflops
        results.append(r)
        print(f"{dtype} remat={remat}: {r['step_s'] * 1e3:.0f} ms/step, {r['samples_per_s']:.1f} samples/s, "
              f"{r['achieved_tflops'] * 1e3:.1f} GFLOP/s, compile {r['compile_s']:.0f} s, temp "
              f"{(r['compiled_temp_bytes'] or 0) / 2 ** 20:.0f} MiB, peak RSS "
              f"{r['process_peak_rss_bytes'] / 2 ** 20:.0f} MiB")
    print("wrote", write_result(name, {"device": device_description(), "config": config.to_diffusers(),
                                       "results": results}))


if __name__ == "__main__":
    main()
