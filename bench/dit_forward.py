"""SANA-Video DiT forward: sana-jax vs diffusers, same weights, same inputs, same process, same device.

    python bench/dit_forward.py                      # small CPU config (committed result)
    python bench/dit_forward.py --preset 720p --dtype bfloat16 --frames 11 --height 22 --width 40   # GPU

The weights are diffusers' random init, loaded into sana-jax through ``converters`` so both run the same numbers.
Model FLOPs count GEMMs + linear attention + cross-attention + depthwise conv per token (docs/benchmarks.md); MFU
is reported against --peak-tflops when given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_description, time_calls, write_result  # noqa: E402


def flops_per_token(cfg, text_len: int) -> float:
    """Forward FLOPs per video token (multiply-add = 2 FLOPs)."""
    d, h, hd = cfg.inner_dim, cfg.ffn_hidden, cfg.attention_head_dim
    gemm = 4 * d * d + 2 * d * d + d * 2 * h + h * d + 3 * d * d  # attn1 qkvo, attn2 q/out, FFN, temporal conv
    linear_attn = 2 * d * hd  # state accumulation + read-out
    cross = 2 * text_len * d  # logits + weighted sum
    depthwise = 9 * 2 * h
    per_layer = 2 * (gemm + linear_attn + cross + depthwise)
    io = 2 * (np.prod(cfg.patch_size) * cfg.in_channels * d + d * np.prod(cfg.patch_size) * cfg.out_channels)
    return cfg.num_layers * per_layer + io


def make_inputs(cfg, batch: int, grid, text_len: int, seed: int = 0) -> dict:
    """float32 NumPy inputs of one forward: latents (B, T, H, W, C), caption features (B, L, C_text), a mask that
    keeps the first half of the caption, timestep 500."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, text_len), np.int64)
    mask[:, text_len // 2:] = 0
    return {"latents": rng.standard_normal((batch, *grid, cfg.in_channels)).astype(np.float32),
            "text": rng.standard_normal((batch, text_len, cfg.caption_channels)).astype(np.float32),
            "timestep": np.full((batch,), 500.0, np.float32), "mask": mask}


def tokens(cfg, latent_shape) -> int:
    """Video tokens of a (B, T, H, W, C) latent after patching."""
    return int(np.prod(latent_shape[:4])) // int(np.prod(cfg.patch_size))


def time_sana_jax(model, inputs: dict, dtype: str, repeats: int, deadline: float | None = None):
    """The jitted forward of an NNX ``SanaVideoTransformer``: (timing, output as float32 NumPy)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, params = nnx.split(model)

    @jax.jit
    def forward(params, x, y, t, m):
        return nnx.merge(graphdef, params)(x, y, t, m)

    args = [jnp.asarray(inputs[k]) for k in ("latents", "text", "timestep", "mask")]
    args[0], args[1] = args[0].astype(dtype), args[1].astype(dtype)
    timing = time_calls(lambda: forward(params, *args).block_until_ready(), repeats, deadline=deadline)
    return timing, np.asarray(forward(params, *args), np.float32)


def time_diffusers(ref, inputs: dict, repeats: int, deadline: float | None = None):
    """diffusers ``SanaVideoTransformer3DModel`` forward under ``inference_mode`` on its own device and dtype:
    (timing, output as float32 NumPy, channels-last)."""
    import torch

    param = next(ref.parameters())
    dev, dtype = param.device, param.dtype
    tx = torch.from_numpy(inputs["latents"].transpose(0, 4, 1, 2, 3).copy()).to(dev, dtype)
    ty = torch.from_numpy(inputs["text"]).to(dev, dtype)
    tt, tm = torch.from_numpy(inputs["timestep"]).to(dev), torch.from_numpy(inputs["mask"]).to(dev)

    def run():
        with torch.inference_mode():
            out = ref(tx, encoder_hidden_states=ty, timestep=tt, encoder_attention_mask=tm, return_dict=False)[0]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    timing = time_calls(run, repeats, deadline=deadline)
    return timing, run().float().cpu().numpy().transpose(0, 2, 3, 4, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["small", "480p", "720p"], default="small")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=5, help="latent frames")
    p.add_argument("--height", type=int, default=16, help="latent height")
    p.add_argument("--width", type=int, default=28, help="latent width")
    p.add_argument("--text-len", type=int, default=300)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (e.g. 989 for H100 bf16)")
    p.add_argument("--no-torch", action="store_true", help="time sana-jax only")
    p.add_argument("--name", default=None, help="result file name (default: derived from the config)")
    args = p.parse_args(argv)

    import diffusers
    import torch

    import converters
    from sana_jax.models.sana_video import SanaVideoConfig

    if args.preset == "small":
        cfg = SanaVideoConfig(num_attention_heads=4, num_cross_attention_heads=4, cross_attention_dim=448,
                              num_layers=4, caption_channels=256)
    else:
        cfg = SanaVideoConfig.preset(args.preset)
    kwargs = {k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")}

    torch.manual_seed(0)
    ref = diffusers.SanaVideoTransformer3DModel(**kwargs).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp, safe_serialization=True)
        model = converters.load(tmp, dtype=args.dtype)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    ref = ref.to("cuda" if torch.cuda.is_available() else "cpu", torch_dtype)

    inputs = make_inputs(cfg, args.batch, (args.frames, args.height, args.width), args.text_len)
    shape = inputs["latents"].shape
    ours, out_jax = time_sana_jax(model, inputs, args.dtype, args.repeats)
    flops = flops_per_token(cfg, args.text_len) * tokens(cfg, shape)
    result = {
        "benchmark": "dit_forward", "device": device_description(), "preset": args.preset, "dtype": args.dtype,
        "config": cfg.to_diffusers(), "latent_shape_bthwc": list(shape), "tokens": tokens(cfg, shape),
        "text_len": args.text_len, "model_gflop": flops / 1e9,
        "sana_jax": {**ours, "tflops": flops / ours["median_s"] / 1e12},
    }
    if not args.no_torch:
        theirs, out_torch = time_diffusers(ref, inputs, args.repeats)
        result["diffusers"] = {**theirs, "tflops": flops / theirs["median_s"] / 1e12,
                               "torch": torch.__version__, "diffusers": diffusers.__version__,
                               "torch_threads": torch.get_num_threads()}
        result["speedup_vs_diffusers"] = theirs["median_s"] / ours["median_s"]
        result["max_rel_diff_vs_diffusers"] = float(np.max(np.abs(out_jax - out_torch)) / np.max(np.abs(out_torch)))
    if args.peak_tflops:
        result["mfu"] = result["sana_jax"]["tflops"] / args.peak_tflops
    name = args.name or f"dit_forward_{args.preset}_{args.dtype}_{result['device']['jax_backend']}"
    path = write_result(name, result)
    print(f"sana-jax {ours['median_s'] * 1e3:.1f} ms", end="")
    if "diffusers" in result:
        print(f", diffusers {result['diffusers']['median_s'] * 1e3:.1f} ms, "
              f"speed-up ×{result['speedup_vs_diffusers']:.2f}", end="")
    print(f" → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
