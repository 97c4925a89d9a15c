"""One LTX-2 refiner step: sana-jax vs diffusers ``LTX2VideoTransformer3DModel``, same config and inputs, one process.

    python bench/refiner.py                               # small config on CPU (committed result)
    python bench/refiner.py --full --dtype bfloat16       # LTX-2.0 (19 B) at SANA's 704×1280×81 shape, on a GPU
    python bench/refiner.py --full --dtype bfloat16 --upsampled    # the 2K shape after the ×2 upsampler

A step is what the refine loop does per sigma: the joint audio/video DiT forward (video tokens = latent voxels,
the zero-audio-latent tokens, 1024 text tokens from the connectors) and the float32 Euler update. sana-jax runs the
model function ``sana_jax.pipelines.refine_loop`` builds for ``sample`` (flattened (video | audio) state); diffusers
runs the transformer as ``LTX2Pipeline`` does (precomputed RoPE coordinates, ``use_cross_timestep=True``) and
``x + dt·v``. The weights are diffusers' random init handed to sana-jax through ``converters.ltx2_transformer``
(``--full``: torch runs first, its weights are then moved to the host and loaded into JAX, so only one copy of the
19 B model is on the device at a time).

Memory: XLA's compiled plan (``memory_analysis``: arguments, outputs, temporaries) for the jitted step; the
process's resident set (VmRSS) after each stage and its peak (VmHWM); on a GPU also JAX's ``peak_bytes_in_use``
and ``torch.cuda.max_memory_allocated``. FLOPs: the dense matmuls of every stream (2 per multiply-add; the video
stream alone is ≈ 2·12.9e9 per video token at full size) plus attention (QKᵀ and PV: 4·N_q·N_k·d per layer);
the caption projections and adaLN MLPs (< 0.1 %) are left out.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's spinning OpenMP threads starve XLA (bench/README.md)

from bench.common import device_description, time_calls, write_result  # noqa: E402

SMALL = dict(in_channels=128, out_channels=128, num_attention_heads=4, attention_head_dim=64, cross_attention_dim=256,
             audio_in_channels=128, audio_out_channels=128, audio_num_attention_heads=4, audio_attention_head_dim=32,
             audio_cross_attention_dim=128, num_layers=4, caption_channels=256, rope_type="split")
SIGMA0, SIGMA1 = 0.909375, 0.725


def _status(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss() -> dict:
    return {"rss_bytes": _status("VmRSS"), "peak_rss_bytes": _status("VmHWM")}


def flops(cfg, n: int, audio: int | None, text: int, batch: int = 1) -> dict:
    """Forward FLOPs of the joint DiT (multiply-add = 2), split into dense and attention terms; ``audio=None``: the
    video stream alone (a video-only model: no audio stream, no a↔v attention)."""
    d, da, layers = cfg.inner_dim, cfg.audio_inner_dim, cfg.num_layers
    video_only, audio = audio is None, audio or 0
    # per block, per token: self-attn q,k,v,o (4d²), text cross-attn q,o (2d²), FF (8d²)
    video_dense = n * 14 * d * d + text * 2 * d * d  # + text cross-attn k,v over the text tokens
    audio_dense = 0 if video_only else audio * 14 * da * da + text * 2 * da * da
    # a2v: q (d→da) and out (da→d) on video, k/v (da→da) on audio; v2a: q/out (da) on audio, k/v (d→da) on video
    av_dense = 0 if video_only else n * 2 * d * da + audio * 2 * da * da + audio * 2 * da * da + n * 2 * d * da
    dense = 2 * layers * (video_dense + audio_dense + av_dense)
    attn = 4 * layers * (n * n * d + n * text * d + audio * audio * da + audio * text * da + 2 * n * audio * da)
    io = 2 * (n * 2 * cfg.in_channels * d + audio * 2 * cfg.audio_in_channels * da)
    video_stream_params = layers * 16 * d * d  # attn1 + attn2 + FF weights (12.9e9 at full size)
    return {"dense_tflop": batch * (dense + io) / 1e12, "attention_tflop": batch * attn / 1e12,
            "total_tflop": batch * (dense + io + attn) / 1e12,
            "brief_formula_tflop": batch * (2 * video_stream_params * n + attn) / 1e12,
            "video_stream_params": video_stream_params}


def step_inputs(cfg, grid, n_audio: int | None, text_len: int, seed: int = 0) -> dict:
    """float32 NumPy inputs of one step: video latents (1, T, H, W, C) for ``grid`` (T, H, W), the audio latents
    (1, n_audio, C_audio) at σ0 (None for a video-only model), video and audio caption features (1, L, C_text) and
    an all-ones mask."""
    rng = np.random.default_rng(seed)
    video = rng.standard_normal((1, *grid, cfg.in_channels)).astype(np.float32)
    audio = None if n_audio is None else (SIGMA0 * rng.standard_normal((1, n_audio, cfg.audio_in_channels))
                                          ).astype(np.float32)
    vtext = rng.standard_normal((1, text_len, cfg.caption_channels)).astype(np.float32)
    atext = rng.standard_normal((1, text_len, cfg.caption_channels)).astype(np.float32)
    return {"video": video, "audio": audio, "video_text": vtext, "audio_text": atext,
            "mask": np.ones((1, text_len), np.int64)}


def jax_step(model, inputs: dict, fps: float, dtype: str):
    """``(compiled, args)``: one iteration of the refine loop compiled for ``inputs`` (:func:`step_inputs`) — the
    model function ``refine_loop`` builds for ``sample`` (flattened (video | audio) state; video only when
    ``inputs["audio"]`` is None) and the float32 Euler update — and the arguments to call it with."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sana_jax.pipelines.refine_loop import _refine_model_fn

    graphdef, params = nnx.split(model)
    video, audio = inputs["video"], inputs["audio"]
    audio_shape = None if audio is None else audio.shape[1:]
    model_fn = _refine_model_fn(graphdef, video.shape[1:], audio_shape, float(fps), 1000.0)

    @jax.jit
    def step(params, x, t, cond):  # one iteration of the refine loop: DiT forward + float32 Euler update
        return x + jnp.float32(SIGMA1 - SIGMA0) * model_fn(params, x, t, cond).astype(jnp.float32)

    x = jnp.concatenate([jnp.asarray(a).reshape(1, -1) for a in (video, audio) if a is not None], axis=1)
    t = jnp.full((1,), SIGMA0 * 1000, jnp.float32)
    cond = {"video_text": jnp.asarray(inputs["video_text"], dtype),
            "audio_text": jnp.asarray(inputs["audio_text"], dtype), "mask": jnp.asarray(inputs["mask"])}
    args = (params, x, t, cond)
    return step.lower(*args).compile(), args


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="the released LTX-2.0 transformer (needs a large GPU)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="default: float32 (small), bfloat16 (--full)")
    p.add_argument("--frames", type=int, default=None, help="pixel frames (default 17 small, 81 full)")
    p.add_argument("--height", type=int, default=None, help="pixels (default 256 small, 704 full)")
    p.add_argument("--width", type=int, default=None, help="pixels (default 384 small, 1280 full)")
    p.add_argument("--upsampled", action="store_true", help="×2 height and width (stage 2 after the upsampler)")
    p.add_argument("--text-len", type=int, default=None, help="text tokens (default 128 small, 1024 full)")
    p.add_argument("--fps", type=float, default=16.0)
    p.add_argument("--repeats", type=int, default=None, help="timed calls (default 5 small, 3 full)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (e.g. 989 H100 bf16 dense)")
    p.add_argument("--no-torch", action="store_true", help="time sana-jax only")
    p.add_argument("--name", default=None, help="result file name (default: derived from the config)")
    args = p.parse_args(argv)
    full = args.full
    args.dtype = args.dtype or ("bfloat16" if full else "float32")
    frames, height, width = (args.frames or (81 if full else 17), args.height or (704 if full else 256),
                             args.width or (1280 if full else 384))
    if args.upsampled:
        height, width = 2 * height, 2 * width
    text_len = args.text_len or (1024 if full else 128)
    repeats = args.repeats or (3 if full else 5)
    if full:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the device

    import diffusers
    import jax
    import torch

    from bench.text import TorchStateDict
    from converters import ltx2_transformer as conv
    from sana_jax.models.ltx2_transformer import LTX2TransformerConfig, audio_num_frames

    cfg = LTX2TransformerConfig.preset("ltx-2.0") if full else LTX2TransformerConfig(**SMALL)
    kwargs = {k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")}
    use_cuda = torch.cuda.is_available()
    dev = "cuda" if use_cuda else "cpu"
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    t_lat, h_lat, w_lat = (frames - 1) // 8 + 1, height // 32, width // 32
    n = t_lat * h_lat * w_lat
    n_audio = audio_num_frames(frames, args.fps, cfg)
    c = cfg.in_channels

    inputs = step_inputs(cfg, (t_lat, h_lat, w_lat), n_audio, text_len)
    video, audio, vtext, atext, mask = (inputs[k] for k in ("video", "audio", "video_text", "audio_text", "mask"))
    result = {"benchmark": "refiner_step", "device": device_description(), "config_name": "ltx-2.0" if full else
              "small", "dtype": args.dtype, "config": cfg.to_diffusers(),
              "pixels_fhw": [frames, height, width], "latent_shape_bthwc": list(video.shape), "video_tokens": n,
              "audio_tokens": n_audio, "text_len": text_len, "fps": args.fps,
              "flops": flops(cfg, n, n_audio, text_len), "method": __doc__.split("\n\n")[1].strip(),
              "load_average_1min": os.getloadavg()[0],
              "memory_start": rss()}

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)  # build in the target dtype (fp32 init of 19 B parameters needs 76 GB)
    try:
        with torch.device(dev):
            ref = diffusers.LTX2VideoTransformer3DModel(**kwargs).eval()
    finally:
        torch.set_default_dtype(default)
    result["memory_after_torch_init"] = rss()

    out_torch = None
    if not args.no_torch:
        tx = torch.from_numpy(video.reshape(1, n, c)).to(dev)
        ta, tv, tat = (torch.from_numpy(a).to(dev, torch_dtype) for a in (audio, vtext, atext))
        tm = torch.from_numpy(mask).to(dev)
        sigma = torch.full((1,), SIGMA0 * 1000, device=dev)
        with torch.inference_mode():
            vcoords = ref.rope.prepare_video_coords(1, t_lat, h_lat, w_lat, tx.device, fps=args.fps)
            acoords = ref.audio_rope.prepare_audio_coords(1, n_audio, tx.device)
        if use_cuda:
            torch.cuda.reset_peak_memory_stats()

        def run_torch():
            with torch.inference_mode():
                v, a = ref(hidden_states=tx.to(torch_dtype), audio_hidden_states=ta, encoder_hidden_states=tv,
                           audio_encoder_hidden_states=tat, timestep=sigma, sigma=sigma, encoder_attention_mask=tm,
                           audio_encoder_attention_mask=tm, num_frames=t_lat, height=h_lat, width=w_lat,
                           fps=args.fps, audio_num_frames=n_audio, video_coords=vcoords, audio_coords=acoords,
                           use_cross_timestep=True, return_dict=False)
                out = (tx + (SIGMA1 - SIGMA0) * v.float(), ta.float() + (SIGMA1 - SIGMA0) * a.float())
            if use_cuda:
                torch.cuda.synchronize()
            return out

        theirs = time_calls(run_torch, repeats)
        out_torch = run_torch()[0].float().cpu().numpy().reshape(video.shape)
        result["diffusers"] = {**theirs, "tflops": result["flops"]["total_tflop"] / theirs["median_s"],
                               "torch": torch.__version__, "diffusers": diffusers.__version__,
                               "torch_threads": torch.get_num_threads(), **rss()}
        if use_cuda:
            result["diffusers"]["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        del tx, ta, tv, tat, tm

    # the weights, once: to the host, then into JAX (only one copy of the model on the device at a time)
    state = {k: v.detach().to("cpu") for k, v in ref.state_dict().items()}
    ref = None  # free the torch model before JAX loads its copy (run_torch above closes over ref)
    gc.collect()
    if use_cuda:
        torch.cuda.empty_cache()
    model = conv.load(TorchStateDict(state), cfg, where="state_dict", dtype=args.dtype)
    del state
    gc.collect()
    result["memory_after_jax_load"] = rss()

    compiled, step_args = jax_step(model, inputs, args.fps, args.dtype)
    plan = compiled.memory_analysis()
    ours = time_calls(lambda: jax.block_until_ready(compiled(*step_args)), repeats)
    out_jax = np.asarray(compiled(*step_args))[:, :n * c].reshape(video.shape)
    result["sana_jax"] = {**ours, "tflops": result["flops"]["total_tflop"] / ours["median_s"],
                          "xla_argument_bytes": int(plan.argument_size_in_bytes),
                          "xla_output_bytes": int(plan.output_size_in_bytes),
                          "xla_temp_bytes": int(plan.temp_size_in_bytes), **rss()}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["sana_jax"]["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
    if out_torch is not None:
        result["speedup_vs_diffusers"] = result["diffusers"]["median_s"] / ours["median_s"]
        result["max_rel_diff_vs_diffusers"] = float(np.max(np.abs(out_jax - out_torch)) / np.max(np.abs(out_torch)))
    if args.peak_tflops:
        result["mfu"] = result["sana_jax"]["tflops"] / args.peak_tflops
    name = args.name or (f"refiner_{'full' if full else 'small'}{'_2k' if args.upsampled else ''}_{args.dtype}_"
                         f"{result['device']['jax_backend']}")
    path = write_result(name, result)
    print(f"refiner step ({n} video + {n_audio} audio tokens, {text_len} text): sana-jax "
          f"{ours['median_s'] * 1e3:.1f} ms ({result['sana_jax']['tflops']:.2f} TFLOP/s, XLA temp "
          f"{plan.temp_size_in_bytes / 2**20:.1f} MiB)", end="")
    if "diffusers" in result:
        print(f", diffusers {result['diffusers']['median_s'] * 1e3:.1f} ms, speed-up "
              f"×{result['speedup_vs_diffusers']:.2f}, max rel diff {result['max_rel_diff_vs_diffusers']:.1e}", end="")
    print(f" → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
