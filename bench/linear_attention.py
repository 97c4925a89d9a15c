"""SANA ReLU linear attention with 3-D RoPE: fused Pallas kernel vs the XLA reference vs PyTorch (diffusers' maths).

    python bench/linear_attention.py                                  # small shape on CPU (committed result)
    python bench/linear_attention.py --preset 720p --dtype bfloat16   # GPU: N = 9,680, 20 heads × 112
    python bench/linear_attention.py --preset 480p --dtype bfloat16   # GPU: N = 32,760
    python bench/linear_attention.py --preset 2k --dtype bfloat16     # GPU: N = 38,720
    python bench/linear_attention.py --preset 720p --causal-frames 3  # chunk-causal, chunks of 3 latent frames

Timed, per call (q, k, v (B, N, H, d) in --dtype → output in --dtype, float32 maths):

* ``pallas``: ``sana_jax.kernels.dispatch.linear_attention(impl="pallas")`` (two Pallas-Triton kernels). GPU only:
  on CPU the kernel runs only in interpret mode, a correctness tool whose time means nothing, so it is skipped.
* ``xla``: the reference ``sana_jax.nn.linear_attention`` path under ``jax.jit``.
* ``torch``: diffusers ``SanaLinearAttnProcessor3_0`` maths (its lines between the q/k/v projections and
  ``to_out``: ReLU, interleaved RoPE against float64 tables as diffusers builds them, float32 GEMMs, the
  normaliser), on CUDA when torch sees one, else CPU. Chunk-causal has no torch counterpart.

FLOPs: 4·N·H·d·dv (state + read-out GEMMs: 2·N·d·dv each per head). Bytes: the I/O floor, q, k, v
read + output written in --dtype and the float32 cos/sin tables read once; GB/s = that over the time.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's spinning OpenMP workers starve XLA (bench/README.md)

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_description, time_calls, write_result

# (batch, latent grid (t, h, w) after patching, heads, head dim)
PRESETS = {
    "small": (1, (4, 16, 28), 20, 112),  # N = 1,792: CPU-sized, the real heads
    "720p": (1, (11, 22, 40), 20, 112),  # N = 9,680 (LTX-2 latent 11×22×40, patch 1)
    "480p": (1, (21, 30, 52), 20, 112),  # N = 32,760 (Wan latent 21×60×104, patch 1×2×2)
    "2k": (1, (11, 44, 80), 20, 112),  # N = 38,720 (LTX-2 latent of 81 frames at 1408×2560, patch 1)
}


def torch_sana_linear_attention(torch, q, k, v, freqs_cos, freqs_sin):
    """diffusers ``SanaLinearAttnProcessor3_0.__call__`` from the ReLU to the (B, N, H·d) output, q/k/v (B, N, H, d);
    ``freqs_*`` (1, N, 1, d) repeat-interleaved, float64 as diffusers' ``WanRotaryPosEmbed`` builds them."""
    import torch.nn.functional as F

    original_dtype = q.dtype
    query, key, value = F.relu(q), F.relu(k), v

    def apply_rotary_emb(hidden_states, freqs_cos, freqs_sin):
        x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
        cos = freqs_cos[..., 0::2]
        sin = freqs_sin[..., 1::2]
        out = torch.empty_like(hidden_states)
        out[..., 0::2] = x1 * cos - x2 * sin
        out[..., 1::2] = x1 * sin + x2 * cos
        return out.type_as(hidden_states)

    query_rotate = apply_rotary_emb(query, freqs_cos, freqs_sin)
    key_rotate = apply_rotary_emb(key, freqs_cos, freqs_sin)
    query, key = query.permute(0, 2, 3, 1), key.permute(0, 2, 3, 1)
    query_rotate, key_rotate = query_rotate.permute(0, 2, 3, 1), key_rotate.permute(0, 2, 3, 1)
    value = value.permute(0, 2, 3, 1)
    query_rotate, key_rotate, value = query_rotate.float(), key_rotate.float(), value.float()
    z = 1 / (key.sum(dim=-1, keepdim=True).transpose(-2, -1) @ query + 1e-15)
    scores = torch.matmul(value, key_rotate.transpose(-1, -2))
    hidden_states = torch.matmul(scores, query_rotate)
    hidden_states = hidden_states * z
    hidden_states = hidden_states.flatten(1, 2).transpose(1, 2)
    return hidden_states.to(original_dtype)


def inputs(b: int, grid, h: int, d: int, dtype: str, seed: int = 0):
    """``(host, device, cos, sin)``: q, k, v (B, N, H, d) as float32 NumPy (``host``) and as JAX arrays in ``dtype``
    (``device``), N = prod(grid), and the 3-D RoPE tables (N, d/2) of ``grid``."""
    import jax.numpy as jnp

    from sana_jax.nn.rope import rope_3d

    n = int(np.prod(grid))
    cos, sin = rope_3d(tuple(grid), d)
    rng = np.random.default_rng(seed)
    host = [rng.standard_normal((b, n, h, d)).astype(np.float32) for _ in range(3)]
    return host, [jnp.asarray(a).astype(dtype) for a in host], cos, sin


def cost(b: int, n: int, h: int, d: int, dtype: str) -> tuple[float, float]:
    """(FLOPs, bytes) of one call: the state and read-out GEMMs; the I/O floor (q, k, v read, the output written,
    in ``dtype``, and the float32 cos/sin tables read once)."""
    import jax.numpy as jnp

    itemsize = jnp.dtype(dtype).itemsize
    return 4.0 * b * n * h * d * d, 4.0 * b * n * h * d * itemsize + 2.0 * n * (d // 2) * 4


def time_jax(impl: str, q, k, v, cos, sin, *, repeats: int, causal_chunk=None, deadline: float | None = None,
             **kernel_options) -> tuple[dict, np.ndarray]:
    """``sana_jax.kernels.dispatch.linear_attention(impl=...)`` under ``jax.jit``: one call (compiling; the warm-up),
    then ``repeats`` timed calls (fewer past ``deadline``). Returns (timing, the output as float32 NumPy)."""
    import jax

    from sana_jax.kernels.dispatch import linear_attention

    fn = jax.jit(lambda *a: linear_attention(*a, impl=impl, causal_chunk=causal_chunk, **kernel_options))
    out = np.asarray(fn(q, k, v, cos, sin).block_until_ready(), np.float32)
    return time_calls(lambda: fn(q, k, v, cos, sin).block_until_ready(), repeats, warmup=0, deadline=deadline), out


def max_rel_diff(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: small on CPU, 720p on GPU")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="default: float32 on CPU, bfloat16 on GPU")
    p.add_argument("--causal-frames", type=int, default=None,
                   help="chunk-causal with chunks of this many latent frames (default: non-causal)")
    p.add_argument("--repeats", type=int, default=None, help="default: 5 on CPU, 50 on GPU")
    p.add_argument("--precision", default=None, help="kernel dot precision (None: JAX default; 'highest')")
    p.add_argument("--block-state", type=int, default=None)
    p.add_argument("--block-out", type=int, default=None)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--name", default=None, help="result file name (default: derived from the config)")
    args = p.parse_args(argv)

    import jax

    on_gpu = jax.default_backend() == "gpu"
    preset = args.preset or ("720p" if on_gpu else "small")
    dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
    repeats = args.repeats or (50 if on_gpu else 5)
    b, grid, h, d = PRESETS[preset]
    n = int(np.prod(grid))
    chunk = None if args.causal_frames is None else args.causal_frames * grid[1] * grid[2]
    (q_np, k_np, v_np), (q, k, v), cos, sin = inputs(b, grid, h, d, dtype)
    flops, io_bytes = cost(b, n, h, d, dtype)

    def rates(t: dict) -> dict:
        return {**t, "tflops": flops / t["median_s"] / 1e12, "gbps": io_bytes / t["median_s"] / 1e9}

    kernel_opts = {k_: v_ for k_, v_ in (("precision", args.precision), ("block_state", args.block_state),
                                          ("block_out", args.block_out)) if v_ is not None}
    xla_time, out_xla = time_jax("reference", q, k, v, cos, sin, repeats=repeats, causal_chunk=chunk)
    result = {
        "benchmark": "linear_attention", "device": device_description(), "preset": preset, "dtype": dtype,
        "shape_bnhd": [b, n, h, d], "latent_grid": list(grid), "causal_chunk_tokens": chunk,
        "gflop": flops / 1e9, "io_floor_mb": io_bytes / 1e6,
        "host_load_avg_1min": os.getloadavg()[0],  # other processes sharing the CPU skew CPU timings
        "xla": rates(xla_time),
    }
    if on_gpu:
        pallas_time, out_k = time_jax("pallas", q, k, v, cos, sin, repeats=repeats, causal_chunk=chunk, **kernel_opts)
        result["pallas"] = {**rates(pallas_time), "backend": "pallas-triton", "options": kernel_opts,
                            "max_rel_diff_vs_xla": max_rel_diff(out_k, out_xla)}
        result["speedup_pallas_vs_xla"] = result["xla"]["median_s"] / result["pallas"]["median_s"]
    else:
        result["pallas"] = {"skipped": "needs a GPU: on CPU the Pallas kernel only runs in interpret mode, which "
                                       "is a correctness check (tests/test_kernels.py), not something to time"}

    if not args.no_torch and chunk is None:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            dev = "cuda" if torch.cuda.is_available() else "cpu"
            tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
            tq, tk, tv = (torch.from_numpy(a).to(dev, tdt) for a in (q_np, k_np, v_np))
            fc = torch.from_numpy(np.repeat(np.asarray(cos, np.float64), 2, -1)).to(dev)[None, :, None]
            fs = torch.from_numpy(np.repeat(np.asarray(sin, np.float64), 2, -1)).to(dev)[None, :, None]

            def run_torch():
                with torch.inference_mode():
                    out = torch_sana_linear_attention(torch, tq, tk, tv, fc, fs)
                if dev == "cuda":
                    torch.cuda.synchronize()
                return out

            out_t = run_torch().float().cpu().numpy().reshape(b, n, h, d)
            result["torch"] = {**rates(time_calls(run_torch, repeats)), "device": dev, "torch": torch.__version__,
                               "torch_threads": torch.get_num_threads()}
            result["torch"]["max_rel_diff_vs_xla"] = max_rel_diff(out_t, out_xla)
            result["speedup_xla_vs_torch"] = result["torch"]["median_s"] / result["xla"]["median_s"]
            if "median_s" in result["pallas"]:
                result["speedup_pallas_vs_torch"] = result["torch"]["median_s"] / result["pallas"]["median_s"]

    causal = "" if chunk is None else f"_causal{args.causal_frames}f"
    name = args.name or f"linear_attention_{preset}{causal}_{dtype}_{result['device']['jax_backend']}"
    path = write_result(name, result)
    parts = [f"{k_} {result[k_]['median_s'] * 1e3:.3f} ms ({result[k_]['gbps']:.3g} GB/s, "
             f"{result[k_]['tflops']:.3g} TFLOP/s)" for k_ in ("pallas", "xla", "torch")
             if k_ in result and "median_s" in result[k_]]
    print(f"{preset} {dtype} N={n}: " + "; ".join(parts) + f" → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
