"""Wan2.1 DiT forward: sana-jax vs diffusers ``WanTransformer3DModel``, same weights, same inputs, same process.

    python bench/wan_forward.py                      # small CPU config (committed result)
    python bench/wan_forward.py --preset 1.3B --dtype bfloat16 --frames 21 --height 60 --width 104 \\
        --peak-tflops 989                            # Wan2.1-T2V-1.3B at 480×832, 81 frames (GPU)

The weights are diffusers' random init, written with ``save_pretrained`` and loaded into sana-jax through
``converters.load``; diffusers runs the model cast as ``from_pretrained(torch_dtype=...)`` casts it (its
``_keep_in_fp32_modules`` — time embedding, modulation tables, norms — stay float32, as sana-jax keeps them). Inputs:
normal latents, 512 text tokens of UMT5 features with the rows after the prompt (``--prompt-len``) zero, as the
pipeline pads them, one timestep. Model FLOPs per video token: the GEMMs (self-attention q, k, v, out: 4D²;
cross-attention q, out: 2D²; FFN 2·D·F), softmax attention over every video token (QKᵀ and AV: 2·N·D) and the
cross-attention to the 512 text tokens (2·L·D), at 2 FLOPs per multiply-add; the text's keys/values and embedding
are counted once per sample. MFU against ``--peak-tflops``. XLA's memory plan of the compiled forward
(``memory_analysis``) is reported beside its time, and the largest absolute and relative difference of the outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's spinning OpenMP workers starve XLA (bench/README.md)

from bench.common import device_description, time_calls, write_result  # noqa: E402

#: the small CPU configuration: 4 layers of width 512 (4 heads × 128), FFN 3072 (≈ 1.3B's ratio of 5.8)
SMALL = dict(num_attention_heads=4, attention_head_dim=128, ffn_dim=3072, num_layers=4)
TEXT_LEN = 512  # Wan's UMT5 context, always padded to 512


def flops(cfg, tokens: int, text_len: int = TEXT_LEN, batch: int = 1) -> dict:
    """Forward FLOPs (multiply-add = 2): per video token, and in all for ``batch`` samples of ``tokens`` tokens."""
    d, f, layers = cfg.inner_dim, cfg.ffn_dim, cfg.num_layers
    gemm = 4 * d * d + 2 * d * d + 2 * d * f  # self-attention qkvo, cross-attention q/out, FFN
    attention = 2 * tokens * d  # QKᵀ and AV against every video token (all heads: heads · d = D)
    cross = 2 * text_len * d  # logits and weighted sum over the text tokens
    io = int(np.prod(cfg.patch_size)) * (cfg.in_channels + cfg.out_channels) * d  # patch embedding, proj_out
    per_token = 2 * (layers * (gemm + attention + cross) + io)
    per_sample = 2 * (layers * 2 * text_len * d * d + text_len * (cfg.text_dim * d + d * d))  # text K/V, embedder
    total = batch * (tokens * per_token + per_sample)
    return {"per_token_gflop": per_token / 1e9, "attention_flop_share": layers * attention / (per_token / 2),
            "attention_tflop": batch * tokens * 2 * layers * attention / 1e12,
            "per_sample_text_gflop": per_sample / 1e9, "total_tflop": total / 1e12}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["small", "1.3B"], default="small",
                   help="small: 4 layers × 512 wide (CPU); 1.3B: the released Wan2.1-T2V-1.3B configuration (GPU)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="parameters and compute of both implementations")
    p.add_argument("--batch", type=int, default=1, help="samples per forward")
    p.add_argument("--frames", type=int, default=5, help="latent frames (21 = 81 video frames)")
    p.add_argument("--height", type=int, default=30, help="latent height (60 = 480 pixels)")
    p.add_argument("--width", type=int, default=52, help="latent width (104 = 832 pixels)")
    p.add_argument("--prompt-len", type=int, default=24, help="non-zero text rows of the 512 (the rest padding)")
    p.add_argument("--timestep", type=float, default=500.0, help="the timestep in [0, 1000]")
    p.add_argument("--repeats", type=int, default=5, help="timed calls of each, after one warm-up call")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (e.g. 989 for H100 bf16)")
    p.add_argument("--no-torch", action="store_true", help="time sana-jax only (no diffusers, no difference)")
    p.add_argument("--name", default=None, help="result file name (default: derived from the config)")
    args = p.parse_args(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # on a GPU, torch shares the device

    import diffusers
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    import converters
    from sana_jax.models.wan import WanConfig
    from sana_jax.nn.attention import fused_attention_impl

    cfg = WanConfig(**SMALL) if args.preset == "small" else WanConfig.preset(args.preset)
    kwargs = {k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")}
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    use_cuda = torch.cuda.is_available()
    dev = "cuda" if use_cuda else "cpu"

    rng = np.random.default_rng(0)
    shape = (args.batch, args.frames, args.height, args.width, cfg.in_channels)
    latents = rng.standard_normal(shape).astype(np.float32)
    text = np.zeros((args.batch, TEXT_LEN, cfg.text_dim), np.float32)
    text[:, :args.prompt_len] = rng.standard_normal((args.batch, args.prompt_len, cfg.text_dim))
    timestep = np.full((args.batch,), args.timestep, np.float32)

    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(dev):
        ref = diffusers.WanTransformer3DModel(**kwargs).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp, safe_serialization=True)
        model = converters.load(tmp, dtype=args.dtype)
    if args.no_torch:
        ref = None
    elif torch_dtype != torch.float32:
        diffusers.utils.logging.set_verbosity_error()  # the warning that .to() casts everything: undone below
        ref = ref.to(torch_dtype)
        for name, param in ref.named_parameters():  # what from_pretrained(torch_dtype=) keeps in float32
            if any(m in name.split(".") for m in ref._keep_in_fp32_modules):
                param.data = param.data.float()
    setup_s = time.perf_counter() - start

    graphdef, params = nnx.split(model)

    @jax.jit
    def forward(params, x, y, t):
        return nnx.merge(graphdef, params)(x, y, t)

    jargs = (jnp.asarray(latents, args.dtype), jnp.asarray(text, args.dtype), jnp.asarray(timestep))
    start = time.perf_counter()
    compiled = forward.lower(params, *jargs).compile()
    compile_s = time.perf_counter() - start
    plan = compiled.memory_analysis()
    ours = time_calls(lambda: compiled(params, *jargs).block_until_ready(), args.repeats)
    out_jax = np.asarray(compiled(params, *jargs), np.float32)
    stats = jax.devices()[0].memory_stats() or {}

    grid = model.check_latents(shape)
    tokens = int(np.prod(grid))
    count = flops(cfg, tokens, batch=args.batch)
    result = {
        "benchmark": "wan_forward", "device": device_description(), "preset": args.preset, "dtype": args.dtype,
        "config": cfg.to_diffusers(), "latent_shape_bthwc": list(shape), "tokens_per_sample": tokens,
        "text_len": TEXT_LEN, "prompt_len": args.prompt_len, "timestep": args.timestep, "flops": count,
        "setup_s": setup_s, "load_average_1min": os.getloadavg()[0],
        "sana_jax": {**ours, "tflops": count["total_tflop"] / ours["median_s"], "compile_s": compile_s,
                     "xla_argument_bytes": int(plan.argument_size_in_bytes),
                     "xla_output_bytes": int(plan.output_size_in_bytes),
                     "xla_temp_bytes": int(plan.temp_size_in_bytes),
                     "attention_requested": fused_attention_impl(jargs[1][..., :cfg.attention_head_dim]) or "xla"},
    }
    if "peak_bytes_in_use" in stats:
        result["sana_jax"]["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
    if ref is not None:
        tx = torch.from_numpy(latents.transpose(0, 4, 1, 2, 3).copy()).to(dev, torch_dtype)
        ty = torch.from_numpy(text).to(dev, torch_dtype)
        tt = torch.from_numpy(timestep).to(dev)
        if use_cuda:
            torch.cuda.reset_peak_memory_stats()

        def run_torch():
            with torch.inference_mode():
                out = ref(tx, tt, ty, return_dict=False)[0]
            if use_cuda:
                torch.cuda.synchronize()
            return out

        theirs = time_calls(run_torch, args.repeats)
        out_torch = run_torch().float().cpu().numpy().transpose(0, 2, 3, 4, 1)
        result["diffusers"] = {**theirs, "tflops": count["total_tflop"] / theirs["median_s"],
                               "torch": torch.__version__, "diffusers": diffusers.__version__,
                               "torch_threads": torch.get_num_threads(),
                               "attention_backend": "torch scaled_dot_product_attention (diffusers' default)"}
        if use_cuda:
            result["diffusers"]["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        diff = np.abs(out_jax - out_torch)
        result["speedup_vs_diffusers"] = theirs["median_s"] / ours["median_s"]
        result["max_abs_diff_vs_diffusers"] = float(diff.max())
        result["max_rel_diff_vs_diffusers"] = float(diff.max() / np.abs(out_torch).max())
        result["max_abs_output"] = float(np.abs(out_torch).max())
    if args.peak_tflops:
        result["peak_tflops"] = args.peak_tflops
        result["mfu"] = result["sana_jax"]["tflops"] / args.peak_tflops
        if "diffusers" in result:
            result["mfu_diffusers"] = result["diffusers"]["tflops"] / args.peak_tflops
    name = args.name or f"wan_forward_{args.preset}_{args.dtype}_{result['device']['jax_backend']}"
    path = write_result(name, result)
    print(f"{tokens} tokens, {count['total_tflop'] * 1e3:.1f} GFLOP: sana-jax {ours['median_s'] * 1e3:.1f} ms "
          f"({result['sana_jax']['tflops']:.3f} TFLOP/s, XLA temp {plan.temp_size_in_bytes / 2**20:.1f} MiB)", end="")
    if "diffusers" in result:
        print(f", diffusers {result['diffusers']['median_s'] * 1e3:.1f} ms, speed-up "
              f"×{result['speedup_vs_diffusers']:.2f}, max rel diff {result['max_rel_diff_vs_diffusers']:.1e}", end="")
    if "mfu" in result:
        print(f", MFU {result['mfu']:.1%}", end="")
    print(f" → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
