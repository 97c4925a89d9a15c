"""One command on one H100/H200: the headline measurements of sana-jax in one run (≤ 8 minutes, compilation
included), written to one JSON that names the device.

    python bench/gpu.py                              # every part, full sizes → bench/results/gpu_<device>.json
    python bench/gpu.py --parts dit_forward,t2v      # a subset
    python bench/gpu.py --dry-run                    # every part at tiny sizes on CPU (tests/test_bench_gpu.py)

Parts, in this order (random weights at the released models' full sizes, bf16, batch 1; the refiner last, as the
one most likely to run out of memory):

* ``linear_attention``: the fused Pallas kernel (``dispatch.linear_attention(impl="pallas")``; ``"interpret"`` in
  the dry run) vs the XLA reference at the 480p / 720p / 2K token counts (32,760 / 9,680 / 38,720 tokens, 20 heads
  × 112); the I/O floor in bytes (q, k, v read, output written, RoPE tables), the time that takes at the HBM
  bandwidth (the roofline) and the fraction of it each implementation reaches; the kernel's difference to XLA.
* ``dit_forward``: the SANA-Video 2B DiT forward at 720p (81 frames: 11×22×40 latents, 9,680 tokens, 300 text
  tokens): median time, model FLOPs counted analytically (``bench/dit_forward.flops_per_token``) and MFU; then
  diffusers' ``SanaVideoTransformer3DModel`` on the same weights (``converters.sana_video.export``), CUDA, bf16.
* ``t2v``: ``SanaVideoPipeline`` text-to-video end to end at 720p, 81 frames, 50 steps, guidance 6 (CFG): text
  encoding (Gemma-2 2B at full size, random weights; the tokenizer is a word-level stand-in), denoising, LTX-2 VAE
  decoding to uint8 frames; the first call (compiling) and a warm call, each with its stages.
* ``vae_decode``: the LTX-2 VAE decode of 704×1280×81 (latents 11×22×40×128), untiled unless
  ``sana_jax.pipelines.memory``'s estimate says it does not fit (then 16-latent-pixel tiles; recorded); reuses the
  T2V pipeline's compiled decoder when that part ran.
* ``streaming``: LongSANA streaming with the 480p 2B DiT (chunk-causal) and the Wan2.1 VAE at 480×832, chunks of
  10 latent frames, no mp4 written: a cold stream (compiling) and a warm one; time to first frame, FPS, steady FPS
  (third chunk on).
* ``refiner_step``: one LTX-2.0 refiner step (DiT forward + Euler update) at 2K (81 frames at 1408×2560: 38,720
  video tokens, 1,024 text tokens), the 19B audio+video model, or video-only when its weights do not fit beside
  the step (``--refiner``); compiled from the abstract model first, so a plan larger than the device is reported
  without allocating; FLOPs from ``bench/refiner.flops``, MFU.

Budget: the run has ``--budget`` seconds from the start of the process. A part starts only if its expected time
(``bench/gpu_setup.py``) is left, else it records ``"skipped: budget"``; within a part, repeats stop at the
deadline and optional steps (a warm call, the diffusers comparison) check the time left. A part that fails records
its error and the run goes on. The JSON is rewritten after every part; past the budget by 20 s a watchdog records
the running part as cut off, writes the JSON and ends the process (not in the dry run).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

_T0 = time.perf_counter()
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the device (dit_forward)
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's spinning OpenMP threads starve XLA (bench/README.md)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, device_description, time_calls  # noqa: E402

PARTS = ("linear_attention", "dit_forward", "t2v", "vae_decode", "streaming", "refiner_step")
GRACE_S = 20.0
GiB = 2**30


class Bench:
    """The run: sizes, the budget, the models the parts share, the result and where it is written."""

    def __init__(self, args, sizes, peaks: dict, torch_device: str, start: float):
        self.args, self.sizes, self.peaks, self.torch_device = args, sizes, peaks, torch_device
        self.deadline = start + args.budget
        self.start = start
        self.cache: dict = {}
        self.current: str | None = None
        self.decoder_compiled = False  # the T2V part's first call compiled the VAE decode
        # the linear attention inside the models: "auto" (the fused kernel on GPU), "reference" once the kernel
        # failed in the linear_attention part (the model parts then still measure, on the XLA path) and in the dry
        # run (the CPU's choice; "auto" would pick the kernel on a GPU machine's default backend)
        self.attention_impl = "reference" if args.dry_run else "auto"
        self.lock = threading.Lock()
        self.result: dict = {}

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f} s] {msg}", flush=True)

    def write(self) -> None:
        with self.lock:
            self.result["elapsed_s"] = time.perf_counter() - self.start
            path = Path(self.args.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.result, indent=2, default=str) + "\n")
            os.replace(tmp, path)

    def random_model(self, family, config, dtype: str, seed: int = 0):
        """Random weights drawn on the device (``bench/gpu_setup.py``); in the dry run with NumPy, the host being
        the device (tests/test_bench_gpu.py checks the device draw on its own)."""
        from bench.gpu_setup import random_model

        return random_model(family, config, dtype, seed, on_device=not self.args.dry_run)

    def model(self, key: str, family, config, dtype: str, seed: int = 0):
        """A random-weight model built once per run and shared by the parts that use it."""
        if key not in self.cache:
            self.cache[key] = self.random_model(family, config, dtype, seed)
        return self.cache[key]

    def drop(self, *keys: str) -> None:
        for key in keys:
            self.cache.pop(key, None)
        gc.collect()

    def est(self, part: str) -> float:
        name = "vae_decode_reused" if part == "vae_decode" and self.decoder_compiled else part
        return self.sizes.est_s[name]

    def run(self, name: str, fn) -> None:
        est = self.est(name)
        rec = self.result["parts"][name] = {"status": "running", "expected_s": est}
        left = self.left()
        if left < est:
            rec.update(status="skipped: budget", budget_left_s=left)
            self.log(f"{name}: skipped ({left:.0f} s left, needs ~{est:.0f} s)")
            self.write()
            return
        self.current, t0 = name, time.perf_counter()
        self.log(f"{name}: start ({left:.0f} s left)")
        if name != "linear_attention":
            rec["linear_attention_impl"] = self.attention_impl
        try:
            from sana_jax.kernels.dispatch import force_impl

            with force_impl(self.attention_impl):  # read when the models are traced
                fn(self, rec, min(self.deadline, t0 + 1.5 * est))
            rec["status"] = "ok"
        except Exception as e:  # noqa: BLE001 — record and go on to the next part
            rec.update(status="error", error=f"{type(e).__name__}: {e}"[:3000],
                       traceback=traceback.format_exc().splitlines()[-12:])
        finally:
            rec["elapsed_s"] = time.perf_counter() - t0
            self.current = None
            self.write()
        self.log(f"{name}: {rec['status']} in {rec['elapsed_s']:.1f} s" +
                 (f" — {rec['error'][:300]}" if "error" in rec else ""))

    def watchdog(self) -> None:
        """Past the budget: record the running part as cut off, write the JSON and end the process."""
        part = self.current
        if part is not None:
            self.result["parts"][part].update(status="error", error="cut off: the run reached --budget + "
                                              f"{GRACE_S:.0f} s during this part")
        self.result["cut_off"] = True
        for _ in range(3):  # the main thread may be changing a part's record while this serialises it
            try:
                self.write()
                break
            except RuntimeError:
                time.sleep(0.5)
        self.log(f"budget exhausted during {part}; results written to {self.args.out}")
        os._exit(3)


def rates(timing: dict, flops: float, nbytes: float) -> dict:
    t = timing["median_s"]
    return {**timing, "tflops": flops / t / 1e12, "gbps": nbytes / t / 1e9}


def mfu(bench: Bench, tflops: float):
    peak = bench.peaks["peak_bf16_tflops"]
    return tflops / peak if peak and bench.sizes.dtype == "bfloat16" else None


# -- the parts ------------------------------------------------------------------------------------------------------


def part_linear_attention(bench: Bench, rec: dict, deadline: float) -> None:
    from bench.linear_attention import cost, inputs, max_rel_diff, time_jax

    s = bench.sizes
    h, d = s.kernel_heads
    bw = bench.peaks["peak_hbm_tbps"]
    rec.update(dtype=s.dtype, kernel_impl=s.kernel_impl, kernel_options=s.kernel_options, heads=h, head_dim=d,
               bytes="I/O floor: q, k, v read and the output written in dtype, float32 cos/sin read once",
               roofline="bytes / peak HBM bandwidth; roofline_fraction = that time / the median", shapes={})
    if s.kernel_impl == "interpret":
        rec["note"] = "dry run: the kernel runs in Pallas interpret mode; its time means nothing"
    failed = []
    for name, grid in s.kernel_grids.items():
        n = int(np.prod(grid))
        _, (q, k, v), cos, sin = inputs(1, grid, h, d, s.dtype)
        flops, nbytes = cost(1, n, h, d, s.dtype)
        row = rec["shapes"][name] = {"latent_grid": list(grid), "shape_bnhd": [1, n, h, d], "gflop": flops / 1e9,
                                     "io_bytes": nbytes}
        if bw:
            row["hbm_roofline_s"] = nbytes / (bw * 1e12)
        out = {}
        for impl, key, opts in (("reference", "xla", {}), (s.kernel_impl, "kernel", s.kernel_options)):
            try:  # one implementation failing at one size leaves the others measured
                timing, out[key] = time_jax(impl, q, k, v, cos, sin, repeats=s.repeats["kernel"], deadline=deadline,
                                            **opts)
            except Exception as e:  # noqa: BLE001
                row[key] = {"error": f"{type(e).__name__}: {e}"[:1500]}
                failed.append(f"{name} {key}")
                continue
            row[key] = rates(timing, flops, nbytes)
            if bw:
                row[key]["roofline_fraction"] = row["hbm_roofline_s"] / timing["median_s"]
        if len(out) == 2:
            row["kernel"]["max_rel_diff_vs_xla"] = max_rel_diff(out["kernel"], out["xla"])
            row["speedup_kernel_vs_xla"] = row["xla"]["median_s"] / row["kernel"]["median_s"]
        bench.log(f"  {name} N={n}: " + ", ".join(f"{key} {row[key]['median_s'] * 1e3:.3f} ms" if "median_s" in
                                                   row[key] else f"{key} failed" for key in ("xla", "kernel")))
        bench.write()
    if failed:
        if any(f.endswith("kernel") for f in failed):
            bench.attention_impl = "reference"
            rec["models_after_this"] = "the model parts run the XLA reference linear attention (the kernel failed)"
        raise RuntimeError(f"failed: {', '.join(failed)} (errors under shapes)")


def part_dit_forward(bench: Bench, rec: dict, deadline: float) -> None:
    from bench.dit_forward import flops_per_token, make_inputs, time_diffusers, time_sana_jax, tokens
    from converters import sana_video

    s = bench.sizes
    cfg = s.dit
    inputs = make_inputs(cfg, 1, s.dit_grid, s.text_len)
    shape = inputs["latents"].shape
    flops = flops_per_token(cfg, s.text_len) * tokens(cfg, shape)
    rec.update(dtype=s.dtype, config=cfg.to_diffusers(), latent_shape_bthwc=list(shape), tokens=tokens(cfg, shape),
               text_len=s.text_len, model_tflop=flops / 1e12,
               flops_source="analytic: bench/dit_forward.flops_per_token (docs/benchmarks.md, FLOP counts)")
    model = bench.model("dit", sana_video, cfg, s.dtype)
    ours, out_jax = time_sana_jax(model, inputs, s.dtype, s.repeats["dit"], deadline=deadline)
    rec["sana_jax"] = {**ours, "tflops": flops / ours["median_s"] / 1e12}
    rec["mfu"] = mfu(bench, rec["sana_jax"]["tflops"])
    bench.log(f"  sana-jax {ours['median_s'] * 1e3:.1f} ms, MFU {rec['mfu']}")
    try:
        import diffusers
        import torch
    except ImportError as e:
        rec["diffusers"] = f"diffusers not installed ({e})"
        return
    if bench.left() < 20 * ours["median_s"] * s.repeats["diffusers"] + 0.2 * s.est_s["dit_forward"]:
        rec["diffusers"] = "skipped: budget"
        return
    from bench.gpu_setup import diffusers_dit

    ref = None
    try:
        ref = diffusers_dit(model, bench.torch_device)
        theirs, out_torch = time_diffusers(ref, inputs, s.repeats["diffusers"], deadline=deadline)
        rec["diffusers"] = {**theirs, "tflops": flops / theirs["median_s"] / 1e12, "device": bench.torch_device,
                            "torch": torch.__version__, "diffusers": diffusers.__version__}
        rec["speedup_vs_diffusers"] = theirs["median_s"] / ours["median_s"]
        rec["max_rel_diff_vs_diffusers"] = float(np.max(np.abs(out_jax - out_torch)) / np.max(np.abs(out_torch)))
        bench.log(f"  diffusers {theirs['median_s'] * 1e3:.1f} ms")
    finally:
        del ref
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def vae_tile(bench: Bench, rec: dict) -> int | None:
    """None (decode whole) when ``sana_jax.pipelines.memory``'s estimate of the decode fits in 80 % of what the
    device has free, else 16-latent-pixel tiles."""
    from bench.gpu_setup import parameter_count
    from converters import ltx2_vae
    from sana_jax.pipelines.memory import ModelSizes, decode_bytes, device_memory
    from sana_jax.vae import ltx2

    s, t = bench.sizes, bench.sizes.t2v
    cap = device_memory()
    sizes = ModelSizes(s.dit, ltx2.DIFFUSERS_CLASS, s.vae, {"vae": parameter_count(ltx2_vae, s.vae)})
    spatial, temporal = s.vae.spatial_compression, s.vae.temporal_compression
    latent = (1, 1 + (t["frames"] - 1) // temporal, t["height"] // spatial, t["width"] // spatial)
    need = decode_bytes(sizes, latent, t["frames"], s.vae_dtype, tile=None, platform=cap.platform)
    tile = None if need < 0.8 * cap.device else 16
    rec["vae_tile"] = {"tile_latent_pixels": tile, "untiled_estimate_bytes": need, "device_free_bytes": cap.device,
                       "rule": "untiled when sana_jax.pipelines.memory.decode_bytes < 80 % of the free memory"}
    return tile


def t2v_pipeline(bench: Bench):
    from bench.gpu_setup import stand_in_tokenizer
    from converters import gemma, ltx2_vae, sana_video
    from sana_jax.pipelines import SanaVideoPipeline

    if "t2v_pipe" not in bench.cache:
        s = bench.sizes
        scheduler = {"_class_name": "DPMSolverMultistepScheduler", "flow_shift": 8.0, "use_flow_sigmas": True,
                     "prediction_type": "flow_prediction"}
        bench.cache["t2v_pipe"] = SanaVideoPipeline(
            bench.model("dit", sana_video, s.dit, s.dtype), bench.model("vae", ltx2_vae, s.vae, s.vae_dtype, 2),
            bench.model("gemma", gemma, s.gemma, s.dtype, 1), stand_in_tokenizer(), scheduler)
    return bench.cache["t2v_pipe"]


def part_t2v(bench: Bench, rec: dict, deadline: float) -> None:
    from bench.pipeline import PROMPT

    s, t = bench.sizes, bench.sizes.t2v
    rec.update(dtype=s.dtype, vae_dtype=s.vae_dtype, **t, prompt=PROMPT, scheduler="DPM-Solver++(2M) flow, shift 8",
               text_encoder=f"Gemma-2 ({s.gemma.num_hidden_layers} layers × {s.gemma.hidden_size}; the released "
                            "2B config in a full run), random weights; tokenizer: a word-level stand-in (the prompt's "
                            "words, every other word <unk>), the complex human instruction on as released",
               vae=s.vae.to_diffusers(), what="wall time of SanaVideoPipeline.__call__ (prompt → uint8 frames on "
                                               "the host) and its own stage timings")
    tile = vae_tile(bench, rec)
    pipe = t2v_pipeline(bench)
    rec["latent_shape_bthwc"] = list(pipe.latent_shape(1, t["frames"], t["height"], t["width"]))

    def call(seed: int) -> dict:
        start = time.perf_counter()
        out = pipe(PROMPT, height=t["height"], width=t["width"], num_frames=t["frames"],
                   num_inference_steps=t["steps"], guidance_scale=t["guidance"], seed=seed, vae_tile=tile,
                   progress=False)
        return {**out.timings, "total": time.perf_counter() - start, "frames_shape": list(out.frames.shape)}

    rec["first_call_s"] = call(0)
    bench.decoder_compiled = True
    bench.log(f"  first call {rec['first_call_s']['total']:.1f} s")
    if bench.left() < rec["first_call_s"]["total"]:
        rec["warm_s"] = "skipped: budget"
        return
    rec["warm_s"] = call(1)
    rec["denoising_s_per_step"] = rec["warm_s"]["denoising"] / t["steps"]
    bench.log(f"  warm {rec['warm_s']['total']:.1f} s")


def part_vae_decode(bench: Bench, rec: dict, deadline: float) -> None:
    import jax
    from flax import nnx

    from converters import ltx2_vae

    s, t = bench.sizes, bench.sizes.t2v
    tile = vae_tile(bench, rec)
    pipe = bench.cache.get("t2v_pipe")
    if pipe is not None:  # the T2V pipeline's own compiled decoder (its first call compiled it)
        params, fn = pipe.vae_params, pipe._decode
    else:
        graphdef, params = nnx.split(bench.model("vae", ltx2_vae, s.vae, s.vae_dtype, 2))
        fn = jax.jit(lambda p, z, tile=None: nnx.merge(graphdef, p).decode_for_pipeline(z, tile=tile),
                     static_argnames="tile")
    spatial, temporal = s.vae.spatial_compression, s.vae.temporal_compression
    shape = (1, 1 + (t["frames"] - 1) // temporal, t["height"] // spatial, t["width"] // spatial, s.vae.latent_channels)
    z = jax.random.normal(jax.random.key(3), shape)
    rec.update(vae_dtype=s.vae_dtype, config=s.vae.to_diffusers(), latent_shape_bthwc=list(shape),
               video_fhw=[t["frames"], t["height"], t["width"]], tiled=tile is not None,
               compiled_by="the T2V part" if pipe is not None else "this part",
               what="jitted decode_for_pipeline (normalised latents → float32 video on the device)")
    start = time.perf_counter()
    fn(params, z, tile=tile).block_until_ready()
    rec["first_call_s"] = time.perf_counter() - start
    rec.update(time_calls(lambda: fn(params, z, tile=tile).block_until_ready(), s.repeats["vae"], warmup=0,
                          deadline=deadline))
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        rec["device_peak_bytes_so_far"] = int(stats["peak_bytes_in_use"])
    bench.log(f"  decode {rec['median_s']:.2f} s (first call {rec['first_call_s']:.1f} s)")


def part_refiner_step(bench: Bench, rec: dict, deadline: float) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from bench.gpu_setup import parameter_count
    from bench.refiner import flops, jax_step, step_inputs
    from converters import ltx2_transformer as family
    from sana_jax.models.ltx2_transformer import audio_num_frames
    from sana_jax.pipelines.memory import device_memory

    bench.drop("dit", "gemma", "vae", "t2v_pipe")  # room for the 19B model
    s, v = bench.sizes, bench.sizes.refiner_video
    free = device_memory().device
    full_bytes = parameter_count(family, s.refiner(False)) * jnp.dtype(s.dtype).itemsize
    choice = bench.args.refiner
    video_only = choice == "video-only" or (choice == "auto" and 1.25 * full_bytes + 8 * GiB > free)
    cfg = s.refiner(video_only)
    grid = ((v["frames"] - 1) // 8 + 1, v["height"] // 32, v["width"] // 32)  # the LTX-2 VAE's latent grid
    n = int(np.prod(grid))
    n_audio = None if video_only else audio_num_frames(v["frames"], v["fps"], cfg)
    rec.update(dtype=s.dtype, video_only=video_only, choice=choice, device_free_bytes=free,
               full_model_weight_bytes=full_bytes, parameters=parameter_count(family, cfg), config=cfg.to_diffusers(),
               pixels_fhw=[v["frames"], v["height"], v["width"]], latent_grid=list(grid), video_tokens=n,
               audio_tokens=n_audio, text_len=v["text_len"], fps=v["fps"], flops=flops(cfg, n, n_audio, v["text_len"]),
               flops_source="analytic: bench/refiner.flops (dense matmuls + attention)",
               rule="auto: video-only when 1.25 × the full model's weights + 8 GiB exceed the free device memory")
    inputs = step_inputs(cfg, grid, n_audio, v["text_len"])
    graphdef, abstract_state, _ = family.abstract(cfg, jnp.dtype(s.dtype))
    start = time.perf_counter()
    compiled, args = jax_step(nnx.merge(graphdef, abstract_state), inputs, v["fps"], s.dtype)
    plan = compiled.memory_analysis()
    need = int(plan.argument_size_in_bytes + plan.output_size_in_bytes + plan.temp_size_in_bytes)
    rec.update(compile_s=time.perf_counter() - start,
               xla_plan={"argument_bytes": int(plan.argument_size_in_bytes),
                         "output_bytes": int(plan.output_size_in_bytes), "temp_bytes": int(plan.temp_size_in_bytes)})
    bench.write()
    free = device_memory().device
    if need > free:
        logits = n * n * cfg.num_attention_heads * 4  # float32 logits of one video self-attention, if materialised
        raise MemoryError(f"XLA's plan for the step needs {need / GiB:.1f} GiB (temporaries "
                          f"{plan.temp_size_in_bytes / GiB:.1f} GiB); the device has {free / GiB:.1f} GiB free. "
                          f"Materialised float32 attention logits of {n} video tokens would be {logits / GiB:.0f} GiB "
                          "per layer")
    params = nnx.split(bench.random_model(family, cfg, s.dtype))[1]
    args = (params, *args[1:])
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    rec["first_call_s"] = time.perf_counter() - start
    ours = time_calls(lambda: jax.block_until_ready(compiled(*args)), s.repeats["refiner"], warmup=0,
                      deadline=deadline)
    rec["sana_jax"] = {**ours, "tflops": rec["flops"]["total_tflop"] / ours["median_s"]}
    rec["mfu"] = mfu(bench, rec["sana_jax"]["tflops"])
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        rec["device_peak_bytes_so_far"] = int(stats["peak_bytes_in_use"])
    bench.log(f"  step {ours['median_s']:.2f} s ({'video-only' if video_only else 'audio+video'})")


def part_streaming(bench: Bench, rec: dict, deadline: float) -> None:
    import jax
    import jax.numpy as jnp

    from bench.streaming import stream_summary
    from converters import sana_video, wan_vae
    from sana_jax.pipelines.streaming import StreamingPipeline

    bench.drop("dit", "gemma", "vae", "t2v_pipe")
    s, st = bench.sizes, bench.sizes.stream
    pipe = StreamingPipeline(bench.random_model(sana_video, s.stream_dit, s.dtype, 4),
                             bench.random_model(wan_vae, s.stream_vae, s.dtype, 5))
    text = jax.random.normal(jax.random.key(6), (1, st["text_len"], s.stream_dit.caption_channels), jnp.float32)
    prompt = (text, jnp.ones((1, st["text_len"]), jnp.float32))
    kw = dict(chunk_frames=st["chunk_frames"], height=st["height"], width=st["width"], progress=False)
    rec.update(dtype=s.dtype, vae_dtype=s.dtype, dit_layers=s.stream_dit.num_layers, **st,
               what="StreamingPipeline.stream with random caption features, no mp4 (frames reach the host and are "
                    "dropped); LongSANA schedule (4 steps + the commit pass per chunk)",
               reference={"longsana_published_fps": 27.5, "published_on": "H100, 480p (bench/streaming.py)"})
    cold = pipe.stream(prompt, num_chunks=st["cold_chunks"], seed=0, **kw)
    rec.update(stream_summary(cold, []))
    bench.log(f"  cold stream {cold.total_s:.1f} s, first frame {cold.time_to_first_frame_s:.1f} s")
    bench.write()
    if bench.left() < cold.total_s * st["warm_chunks"] / st["cold_chunks"]:
        rec["warm"] = "skipped: budget"
        return
    warm = pipe.stream(prompt, num_chunks=st["warm_chunks"], seed=1, **kw)
    rec.update(stream_summary(cold, [warm]))
    rec["warm"].update(frames=warm.frames, chunks_that_compiled=sum(c.traced for c in warm.chunks),
                       state_bytes=warm.state_bytes)
    bench.log(f"  warm: first frame {warm.time_to_first_frame_s:.2f} s, {warm.fps:.1f} FPS, steady "
              f"{warm.steady_fps} FPS")


def summary(result: dict) -> list[str]:
    """One line per part with its headline figures (the JSON has the rest)."""
    def ms(x):
        return f"{x * 1e3:.2f} ms" if isinstance(x, (int, float)) else str(x)

    def f(x, spec=".2f"):
        return format(x, spec) if isinstance(x, (int, float)) else str(x)

    lines = []
    for name, r in result["parts"].items():
        if r["status"] != "ok":
            lines.append(f"{name}: {r['status']}" + (f" — {r['error'][:200]}" if "error" in r else ""))
        elif name == "linear_attention":
            lines += [f"linear_attention {k} (N={v['shape_bnhd'][1]}): kernel {ms(v['kernel']['median_s'])} "
                      f"({f(v['kernel'].get('roofline_fraction'))} of the HBM roofline), XLA {ms(v['xla']['median_s'])}"
                      for k, v in r["shapes"].items()]
        elif name == "dit_forward":
            d = r.get("diffusers")
            lines.append(f"dit_forward: {ms(r['sana_jax']['median_s'])}, MFU {f(r['mfu'])}; diffusers "
                         + (f"{ms(d['median_s'])} (×{r['speedup_vs_diffusers']:.2f})" if isinstance(d, dict) else d))
        elif name == "t2v":
            w = r["warm_s"] if isinstance(r["warm_s"], dict) else r["first_call_s"]
            lines.append(f"t2v: {f(w['total'], '.1f')} s (text {f(w['text_encoding'])}, denoising "
                         f"{f(w['denoising'], '.1f')}, decoding {f(w['decoding'], '.1f')}); first call "
                         f"{f(r['first_call_s']['total'], '.1f')} s")
        elif name == "vae_decode":
            lines.append(f"vae_decode: {f(r['median_s'])} s ({'tiled' if r['tiled'] else 'untiled'})")
        elif name == "refiner_step":
            lines.append(f"refiner_step ({'video-only' if r['video_only'] else 'audio+video'}): "
                         f"{f(r['sana_jax']['median_s'])} s, MFU {f(r['mfu'])}")
        elif name == "streaming":
            w = r["warm"]
            lines.append("streaming: " + (f"first frame {f(w['time_to_first_frame_s'])} s, {f(w['fps'], '.1f')} FPS, "
                                          f"steady {f(w['steady_fps'], '.1f')} FPS" if isinstance(w, dict) else
                                          f"warm {w}; cold first frame {f(r['cold']['time_to_first_frame_s'])} s"))
    return lines


PART_FNS = {"linear_attention": part_linear_attention, "dit_forward": part_dit_forward, "t2v": part_t2v,
            "vae_decode": part_vae_decode, "streaming": part_streaming, "refiner_step": part_refiner_step}


# -- the command ----------------------------------------------------------------------------------------------------


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("jax", "jaxlib", "flax", "numpy", "torch", "diffusers", "transformers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated parts to run, in the fixed order (default: all of {', '.join(PARTS)})")
    p.add_argument("--dry-run", action="store_true",
                   help="every part at tiny sizes on the CPU (a check that the script runs; the times mean nothing); "
                        "writes to a temporary file unless --out is given, never into bench/results")
    p.add_argument("--out", default=None, help="the JSON to write (default: bench/results/gpu_<device kind>.json)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole run from the start of the process (default: 450, which with the "
                        "20 s watchdog grace and start-up keeps a run under 8 minutes; dry run: 600)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense bf16 peak in TFLOP/s for MFU (default: from the device kind, e.g. 989 "
                        "for an H100/H200 SXM)")
    p.add_argument("--peak-bandwidth", type=float, default=None,
                   help="the device's HBM bandwidth in TB/s for the linear-attention roofline (default: from the "
                        "device kind: 3.35 H100 SXM, 4.8 H200)")
    p.add_argument("--refiner", choices=["auto", "full", "video-only"], default="auto",
                   help="the refiner step's model: the 19B audio+video model, its video stream only, or auto (the "
                        "full model when its weights fit beside the step, else video-only)")
    p.add_argument("--compile-cache", default=None,
                   help="a folder for JAX's persistent compilation cache (a rerun then compiles less; the first-call "
                        "times it records are then not cold)")
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        p.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    args.parts = [x for x in PARTS if x in parts]
    if args.budget is None:
        args.budget = 600.0 if args.dry_run else 450.0
    return p, args


def main(argv=None) -> int:
    p, args = parse(argv)
    start = time.perf_counter() if args.dry_run or argv is not None else _T0
    if args.dry_run and "jax" not in sys.modules:
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    from bench.gpu_setup import device_peaks, dry_sizes, full_sizes, slug

    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
    device = jax.devices("cpu")[0] if args.dry_run else jax.devices()[0]
    if device.platform == "cpu" and not args.dry_run:
        p.error("no accelerator: the full sizes need a GPU (on a CPU, --dry-run checks that every part runs)")
    if args.out is None:
        folder = Path(tempfile.gettempdir()) if args.dry_run else RESULTS
        args.out = str(folder / f"gpu_{'dryrun_' if args.dry_run else ''}{slug(device.device_kind)}.json")
    if args.dry_run and Path(args.out).resolve().is_relative_to(RESULTS.resolve()):
        p.error("--dry-run does not write into bench/results (its times mean nothing)")
    torch_device = "cpu"
    if not args.dry_run:
        try:
            import torch

            torch_device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            pass
    with jax.default_device(device):
        sizes = dry_sizes() if args.dry_run else full_sizes()
        peaks = device_peaks(device.device_kind, args.peak_tflops, args.peak_bandwidth)
        bench = Bench(args, sizes, peaks, torch_device, start)
        described = device_description()
        if args.dry_run:
            described.update(jax_backend=device.platform, jax_device=device.device_kind)
        stats = device.memory_stats() or {}
        bench.result = {"benchmark": "gpu", "dry_run": args.dry_run, "command": " ".join(sys.argv if argv is None
                                                                                          else ["bench/gpu.py", *argv]),
                        "device": {**described, **peaks, "memory_bytes_limit": stats.get("bytes_limit")},
                        "torch_device": torch_device, "versions": versions(), "budget_s": args.budget,
                        "parts_requested": args.parts, "parts": {}}
        timer = None
        if not args.dry_run:
            timer = threading.Timer(max(0.0, bench.deadline + GRACE_S - time.perf_counter()), bench.watchdog)
            timer.daemon = True
            timer.start()
        try:
            bench.log(f"{device.device_kind}: parts {', '.join(args.parts)}; budget {args.budget:.0f} s → {args.out}")
            for name in args.parts:
                bench.run(name, PART_FNS[name])
        finally:
            if timer is not None:
                timer.cancel()
            bench.cache.clear()
        bench.write()
    for line in summary(bench.result):
        print(line)
    failed = [k for k, v in bench.result["parts"].items() if v["status"] == "error"]
    bench.log(f"done: {len(args.parts) - len(failed)} of {len(args.parts)} parts without error → {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
